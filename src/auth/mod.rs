//! Who may read and write what. Off by default; with an htpasswd file every
//! listed user may pull and push, anonymous callers nothing, unless an
//! access file or `--anonymous-pull` says otherwise. This module knows
//! users, rules and tokens, not HTTP.

pub mod access;
pub mod htpasswd;
mod limiter;
pub mod token;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::oci::RepoName;
pub use access::Action;
use access::Rules;
use htpasswd::Users;
use limiter::FailureLimiter;
pub use token::KEY_LEN as TOKEN_KEY_LEN;
use token::{Claims, Grant, Signer};

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub htpasswd: PathBuf,
    pub access: Option<PathBuf>,
    pub anonymous_pull: bool,
    pub token_ttl: Duration,
    /// Failed logins from one address before it gets 429 for `failure_window`.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// bcrypt checks running at once; more logins wait their turn, so a
    /// burst of guesses cannot take every CPU from the other requests.
    pub max_concurrent_logins: usize,
}

impl AuthConfig {
    pub fn new(htpasswd: impl Into<PathBuf>) -> AuthConfig {
        AuthConfig {
            htpasswd: htpasswd.into(),
            access: None,
            anonymous_pull: false,
            token_ttl: Duration::from_secs(300),
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            max_concurrent_logins: std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// Authenticated with a password on this request.
    User(String),
    /// Holding a token, which carries its own grants.
    Token(Claims),
}

impl Caller {
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(u) => Some(u),
            Caller::Token(c) => c.sub.as_deref(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    BadCredentials,
    TooManyFailures,
}

/// One requested scope: `repository:<name>:<actions>` or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` and the like name the same thing.
        let kind = kind.split('(').next().unwrap_or(kind).to_owned();
        Some(Scope {
            kind,
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Reads and parses one of auth's files, naming it in any error.
fn load<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, String>) -> io::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    parse(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The longest a token may live: one cannot be taken back from whoever
/// holds it (a copy in a CI log, say) before it expires.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Verified passwords are remembered this long, keyed by a hash of the
/// password, so Basic auth on every request costs one bcrypt per window.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

pub struct Authority {
    users: Users,
    rules: Rules,
    signer: Signer,
    token_ttl: Duration,
    limiter: FailureLimiter,
    bcrypt_slots: Arc<Semaphore>,
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    failed_logins: std::sync::atomic::AtomicU64,
}

impl Authority {
    /// `shared_key`, if given, signs tokens (every node of a cluster must
    /// accept the others' tokens); else a key kept in `data_dir`.
    pub fn open(
        config: &AuthConfig,
        data_dir: &Path,
        shared_key: Option<&[u8]>,
    ) -> io::Result<Authority> {
        let users = load(&config.htpasswd, Users::parse)?;
        let mut rules = match &config.access {
            Some(path) => load(path, Rules::parse)?,
            None => Rules::users_push_all(),
        };
        if config.anonymous_pull {
            rules.allow_anonymous_pull();
        }
        Ok(Authority {
            users,
            rules,
            signer: match shared_key {
                Some(key) => Signer::with_key(key)?,
                None => Signer::load_or_create(&data_dir.join("token.key"))?,
            },
            token_ttl: config.token_ttl,
            limiter: FailureLimiter::new(config.max_failures, config.failure_window),
            bcrypt_slots: Arc::new(Semaphore::new(config.max_concurrent_logins.max(1))),
            verified: Mutex::new(HashMap::new()),
            failed_logins: Default::default(),
        })
    }

    /// Checks a user's password (bcrypt, cached), counting attempts per
    /// address. bcrypt runs on a blocking thread, at most
    /// `max_concurrent_logins` at once.
    pub async fn login(
        self: &Arc<Self>,
        ip: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(), LoginError> {
        if self.limiter.blocked(ip) {
            return Err(LoginError::TooManyFailures);
        }
        let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified
                .get(user)
                .is_some_and(|(f, at)| *f == fingerprint && at.elapsed() < VERIFIED_TTL)
            {
                return Ok(());
            }
        }
        if !self.limiter.reserve(ip) {
            return Err(LoginError::TooManyFailures);
        }
        // The permit travels with the check: a client that hangs up does not
        // stop bcrypt, so it must not give the slot back early either.
        let permit = Arc::clone(&self.bcrypt_slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (this, checked_user, password) =
            (Arc::clone(self), user.to_owned(), password.to_owned());
        let correct = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.users.verify(&checked_user, &password)
        })
        .await
        .expect("bcrypt does not panic");
        if correct {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
            verified.insert(user.to_owned(), (fingerprint, Instant::now()));
            // Success gives back this attempt only, never the address's
            // earlier failures: one valid account must not buy unlimited
            // guesses at the others.
            self.limiter.forgive(ip);
            Ok(())
        } else {
            log::warn!("failed login for user {user:?} from {ip}");
            self.failed_logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(LoginError::BadCredentials)
        }
    }

    /// Logins refused for a wrong user or password since the start.
    pub fn failed_logins(&self) -> u64 {
        self.failed_logins
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the caller may do `action` on `repo`.
    pub fn may(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        match caller {
            Caller::Anonymous => self.rules.allows(None, repo, action),
            Caller::User(user) => {
                self.users.contains(user) && self.rules.allows(Some(user), repo, action)
            }
            Caller::Token(claims) => {
                let grants = |name| claims.grants("repository", repo, name);
                let granted = match action {
                    Action::Pull => grants("pull"),
                    Action::Push => grants("push"),
                    // Docker's token spec names deletes apart; a push grant
                    // covers them as a push rule does.
                    Action::Delete => grants("delete") || grants("push"),
                };
                // Rules tightened since the token was issued take back
                // what they no longer allow at once, not when it expires.
                granted && self.rules.allows(claims.sub.as_deref(), repo, action)
            }
        }
    }

    /// Whether the rules (not a token's grants) let this user do `action`:
    /// tells "ask for a token with that scope" from "you may not".
    pub fn rules_allow(&self, user: Option<&str>, repo: &str, action: Action) -> bool {
        self.rules.allows(user, repo, action)
    }

    /// A token for `user` (`None`: anonymous) with what was asked for and is
    /// allowed; returns the token and its lifetime in seconds.
    pub fn issue(&self, user: Option<&str>, scopes: &[Scope], now: u64) -> (String, u64) {
        let mut access = Vec::new();
        // A name that is no repository name (`bob/../x`) may still match a
        // rule's pattern as text; it is ignored, as Distribution does. The
        // others are granted as the repository they mean, as requests name
        // it (`docker.io/alpine` is `docker.io/library/alpine`).
        let repositories = scopes
            .iter()
            .filter(|s| s.kind == "repository")
            .filter_map(|s| Some((s, RepoName::parse(&s.name)?)));
        for (scope, name) in repositories {
            let may = |action| self.rules.allows(user, name.as_str(), action);
            let mut actions: Vec<String> = Vec::new();
            for asked in &scope.actions {
                let granted: &[&str] = match asked.as_str() {
                    "pull" if may(Action::Pull) => &["pull"],
                    "push" | "delete" if may(Action::Push) => &[asked.as_str()],
                    "*" if may(Action::Push) => &["pull", "push", "delete"],
                    "*" if may(Action::Pull) => &["pull"],
                    _ => &[],
                };
                for g in granted {
                    if !actions.iter().any(|a| a == g) {
                        actions.push((*g).to_owned());
                    }
                }
            }
            if !actions.is_empty() {
                access.push(Grant {
                    kind: scope.kind.clone(),
                    name: name.as_str().to_owned(),
                    actions,
                });
            }
        }
        let ttl = self.token_ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.map(str::to_owned),
            iat: now,
            exp: now + ttl,
            access,
        };
        (self.signer.sign(&claims), ttl)
    }

    pub fn verify_token(&self, token: &str, now: u64) -> Option<Claims> {
        let claims = self.signer.verify(token, now)?;
        // A token outlives nothing: a user removed from htpasswd loses it.
        match &claims.sub {
            Some(user) if !self.users.contains(user) => None,
            _ => Some(claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!(
            Scope::parse("repository:a/b:pull,push"),
            Some(Scope {
                kind: "repository".into(),
                name: "a/b".into(),
                actions: vec!["pull".into(), "push".into()]
            })
        );
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().name, "catalog");
        assert_eq!(
            Scope::parse("repository(plugin):x:pull").unwrap().kind,
            "repository"
        );
        assert_eq!(Scope::parse("nonsense"), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_scope_text_is_judged_without_a_panic(s in any::<String>()) {
            let _ = Scope::parse(&s);
        }

        #[test]
        fn any_htpasswd_or_access_text_is_judged_without_a_panic(
            text in prop_oneof![
                any::<String>(),
                prop::collection::vec("[a-z*/ :$.#\t]{0,30}", 0..8).prop_map(|l| l.join("\n")),
            ],
        ) {
            let _ = htpasswd::Users::parse(&text);
            let _ = access::Rules::parse(&text);
        }
    }
}
