//! Users from an htpasswd file, bcrypt hashes only: the format docker users
//! know (`htpasswd -B`), and a hash that is slow to brute-force.

use std::collections::HashMap;

/// bcrypt cost for hashes `berth passwd` writes; `htpasswd -B` uses 5 by
/// default, Distribution's docs suggest 10+.
pub const BCRYPT_COST: u32 = 12;

/// Salt and hash of a bcrypt hash of a throwaway string, checked against
/// when the user is unknown, under the cost of the file's own hashes.
const UNKNOWN_USER_SALT_AND_HASH: &str = "qOlir6SE2oHgveD5FySgrOs5bPctfq.s0BY9Fik/GX8DtBIyX6Otq";

#[derive(Debug, Clone)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// What an unknown user is checked against: bcrypt's time depends only
    /// on the cost written in the hash, and this one carries the highest
    /// cost in the file, so an unknown user is never quicker to refuse than
    /// a known one (`htpasswd -B` writes cost 5, `berth passwd` 12).
    unknown_user_hash: String,
}

/// The cost field of a bcrypt hash (`$2b$NN$...`), if it has a usable one.
fn cost(hash: &str) -> Option<u32> {
    hash.get(4..6)
        .and_then(|c| c.parse().ok())
        .filter(|c| (4..=31).contains(c))
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
        let cost = hashes
            .values()
            .filter_map(|h| cost(h))
            .max()
            .unwrap_or(BCRYPT_COST);
        Ok(Users {
            hashes,
            unknown_user_hash: format!("$2b${cost:02}${UNKNOWN_USER_SALT_AND_HASH}"),
        })
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
                let _ = bcrypt::verify(password, &self.unknown_user_hash);
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
        assert!(users.unknown_user_hash.starts_with("$2b$12$"));
        let replaced = set_password(&text, "alice", "new").unwrap();
        assert_eq!(replaced.matches("alice:").count(), 1);
        assert!(replaced.starts_with("# users\n"));
    }

    #[test]
    fn unknown_users_are_checked_at_the_highest_cost_in_the_file() {
        // Hashes as `htpasswd -B` writes them (cost 5), and one of cost 7.
        let five = "$2y$05$abcdefghijklmnopqrstuu5Jg0Y2bJ5x0H3tO2O9b8Wl6h8r6m1uG";
        let seven = "$2y$07$abcdefghijklmnopqrstuu5Jg0Y2bJ5x0H3tO2O9b8Wl6h8r6m1uG";
        let users = Users::parse(&format!("a:{five}\n")).unwrap();
        assert!(users.unknown_user_hash.starts_with("$2b$05$"));
        assert_eq!(
            bcrypt::verify("x", &users.unknown_user_hash).ok(),
            Some(false),
            "the stand-in is a well-formed hash"
        );
        let users = Users::parse(&format!("a:{five}\nb:{seven}\n")).unwrap();
        assert!(users.unknown_user_hash.starts_with("$2b$07$"));
        let users = Users::parse("# nobody yet\n").unwrap();
        assert!(users.unknown_user_hash.starts_with("$2b$12$"));
    }
}
