//! Users from an htpasswd file, bcrypt hashes only: the format docker users
//! know (`htpasswd -B`), and a hash that is slow to brute-force.

use std::collections::HashMap;

/// bcrypt cost for hashes `berth passwd` writes; `htpasswd -B` uses 5 by
/// default, Distribution's docs suggest 10+.
pub const BCRYPT_COST: u32 = 12;

/// A bcrypt hash at `BCRYPT_COST` of a throwaway string, checked against
/// when the user is unknown.
const UNKNOWN_USER_HASH: &str = "$2b$12$qOlir6SE2oHgveD5FySgrOs5bPctfq.s0BY9Fik/GX8DtBIyX6Otq";

#[derive(Debug, Default, Clone)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            if !["$2a$", "$2b$", "$2y$", "$2x$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(format!(
                    "line {}: user {user:?} does not have a bcrypt hash (use htpasswd -B or berth passwd)",
                    n + 1
                ));
            }
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Users { hashes })
    }

    pub fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    /// Checks a password; slow by design (bcrypt). An unknown user costs
    /// the same as a wrong password, so timing does not reveal who exists.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.hashes.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, UNKNOWN_USER_HASH);
                false
            }
        }
    }
}

/// Adds or replaces `user` in the htpasswd text, keeping every other line.
pub fn set_password(text: &str, user: &str, password: &str) -> Result<String, String> {
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(format!("{user:?} is not a valid user name"));
    }
    let hash = bcrypt::hash(password, BCRYPT_COST).map_err(|e| e.to_string())?;
    let mut out: Vec<String> = text
        .lines()
        .filter(|line| line.split_once(':').map(|(u, _)| u) != Some(user))
        .map(str::to_owned)
        .collect();
    out.push(format!("{user}:{hash}"));
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_and_refuses_other_hashes() {
        let text = set_password("# users\n", "alice", "s3cret").unwrap();
        let users = Users::parse(&text).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "s3cret"));
        assert!(Users::parse("bob:{SHA}abc").is_err());
        assert!(Users::parse("nocolon").is_err());
        let replaced = set_password(&text, "alice", "new").unwrap();
        assert_eq!(replaced.matches("alice:").count(), 1);
        assert!(replaced.starts_with("# users\n"));
    }
}
