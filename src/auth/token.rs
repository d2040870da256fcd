//! Bearer tokens: claims in JSON, signed with HMAC-SHA256 under a key that
//! is generated into the data directory on first start. Opaque to clients,
//! as the Docker token flow allows.

use std::io;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const KEY_LEN: usize = 32;

/// What a token grants: to whom, until when, which actions on which names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user; `None` for an anonymous token.
    pub sub: Option<String>,
    /// Issued at and expires at, seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
    pub access: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Claims {
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|g| g.kind == kind && g.name == name && g.actions.iter().any(|a| a == action))
    }
}

pub struct Signer {
    key: [u8; KEY_LEN],
}

impl Signer {
    /// A signer with a key kept elsewhere (shared by every node of a
    /// cluster); it must be the right length.
    pub fn with_key(key: &[u8]) -> io::Result<Signer> {
        let key = key.try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the shared token key is not {KEY_LEN} bytes"),
            )
        })?;
        Ok(Signer { key })
    }

    /// Reads the key, or makes one from the OS's random source. The file is
    /// written whole and readable by its owner only.
    pub fn load_or_create(path: &Path) -> io::Result<Signer> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key = bytes.try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a {KEY_LEN}-byte token key", path.display()),
                    )
                })?;
                return Ok(Signer { key });
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(io::Error::other)?;
        crate::whole_file::replace(path, &key, 0o600)?;
        log::info!("generated a new token signing key in {}", path.display());
        Ok(Signer { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The claims of a token this key signed that has not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Option<Claims> {
        let (payload, signature) = token.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_refuses_forgeries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let signer = Signer::load_or_create(&path).unwrap();
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(signer.key, again.key, "the key persists");
        let other = Signer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(signer.key, other.key, "keys are random, never a constant");

        let claims = Claims {
            sub: Some("alice".into()),
            iat: 100,
            exp: 200,
            access: vec![Grant {
                kind: "repository".into(),
                name: "a".into(),
                actions: vec!["pull".into()],
            }],
        };
        let token = signer.sign(&claims);
        assert_eq!(signer.verify(&token, 150), Some(claims.clone()));
        assert_eq!(signer.verify(&token, 200), None, "expired");
        assert_eq!(other.verify(&token, 150), None, "another key");
        let (payload, signature) = token.split_once('.').unwrap();
        let mut forged = claims;
        forged.access[0].actions.push("push".into());
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{signature}"), 150),
            None
        );
        assert_eq!(signer.verify(payload, 150), None);
        assert_eq!(signer.verify("", 150), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> Signer {
        Signer::with_key(&[7; KEY_LEN]).unwrap()
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_text_is_no_token(token in prop_oneof![any::<String>(), "[A-Za-z0-9_.-]{0,300}"]) {
            prop_assert!(signer().verify(&token, 0).is_none());
        }

        #[test]
        fn a_token_changed_anywhere_is_refused(
            user in proptest::option::of(any::<String>()),
            name in any::<String>(),
            at in any::<prop::sample::Index>(),
            to in "[A-Za-z0-9_.-]",
        ) {
            let signer = signer();
            let claims = Claims {
                sub: user,
                iat: 1,
                exp: 100,
                access: vec![Grant { kind: "repository".into(), name, actions: vec!["pull".into()] }],
            };
            let token = signer.sign(&claims);
            prop_assert!(signer.verify(&token, 50).is_some());
            let i = at.index(token.len());
            let mut changed = token.clone();
            changed.replace_range(i..=i, &to);
            prop_assume!(changed != token);
            // One character of unpadded base64 may differ only in bits the
            // decoder drops; then the bytes, and the MAC, are the same.
            let bytes = |t: &str| t.split_once('.').map(|(p, s)| {
                (URL_SAFE_NO_PAD.decode(p).ok(), URL_SAFE_NO_PAD.decode(s).ok())
            });
            prop_assume!(bytes(&changed) != bytes(&token));
            prop_assert!(signer.verify(&changed, 50).is_none(), "{} accepted", changed);
        }
    }
}
