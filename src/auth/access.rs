//! Who may pull and push which repositories: one rule a line,
//! `USER pull|push PATTERN`. `push` implies pull and delete; `*` as USER is
//! anyone, anonymous included; PATTERN is a name, a prefix ending in `/*`,
//! or `*`.

/// Ordered by what they imply: a push rule allows deletes and pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Delete,
    Push,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    All,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    fn parse(s: &str) -> Pattern {
        if s == "*" {
            Pattern::All
        } else if let Some(prefix) = s.strip_suffix("/*") {
            Pattern::Prefix(format!("{prefix}/"))
        } else {
            Pattern::Exact(s.to_owned())
        }
    }

    fn matches(&self, repo: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Prefix(prefix) => repo.starts_with(prefix.as_str()),
            Pattern::Exact(name) => repo == name,
        }
    }
}

#[derive(Debug, Clone)]
enum Who {
    /// `*`: anyone, anonymous included.
    Anyone,
    /// Every user in the htpasswd file (the rule when there is no access file).
    AnyUser,
    User(String),
}

#[derive(Debug, Clone)]
struct Rule {
    who: Who,
    action: Action,
    pattern: Pattern,
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Every authenticated user may push (and so pull) everything.
    pub fn users_push_all() -> Rules {
        Rules {
            rules: vec![Rule {
                who: Who::AnyUser,
                action: Action::Push,
                pattern: Pattern::All,
            }],
        }
    }

    pub fn parse(text: &str) -> Result<Rules, String> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [user, action, pattern] = words[..] else {
                return Err(format!("line {}: expected USER pull|push PATTERN", n + 1));
            };
            let action = match action {
                "pull" => Action::Pull,
                "push" => Action::Push,
                other => {
                    return Err(format!(
                        "line {}: {other:?} is neither pull nor push",
                        n + 1
                    ));
                }
            };
            let who = if user == "*" {
                Who::Anyone
            } else {
                Who::User(user.to_owned())
            };
            rules.push(Rule {
                who,
                action,
                pattern: Pattern::parse(pattern),
            });
        }
        Ok(Rules { rules })
    }

    /// Lets anyone pull anything (`* pull *`).
    pub fn allow_anonymous_pull(&mut self) {
        self.rules.push(Rule {
            who: Who::Anyone,
            action: Action::Pull,
            pattern: Pattern::All,
        });
    }

    /// Whether `user` (`None`: anonymous) may do `action` on `repo`.
    pub fn allows(&self, user: Option<&str>, repo: &str, action: Action) -> bool {
        self.rules.iter().any(|rule| {
            let who = match (&rule.who, user) {
                (Who::Anyone, _) | (Who::AnyUser, Some(_)) => true,
                (Who::User(u), Some(name)) => u == name,
                (_, None) => false,
            };
            who && rule.action >= action && rule.pattern.matches(repo)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_grant_what_they_say() {
        let rules =
            Rules::parse("alice push team/*\nbob pull team/app # read only\n* pull public\n")
                .unwrap();
        assert!(rules.allows(Some("alice"), "team/app", Action::Push));
        assert!(rules.allows(Some("alice"), "team/x/y", Action::Pull));
        assert!(!rules.allows(Some("alice"), "team", Action::Pull));
        assert!(!rules.allows(Some("alice"), "other/app", Action::Pull));
        assert!(rules.allows(Some("bob"), "team/app", Action::Pull));
        assert!(!rules.allows(Some("bob"), "team/app", Action::Push));
        assert!(!rules.allows(Some("bob"), "team/app2", Action::Pull));
        assert!(rules.allows(None, "public", Action::Pull));
        assert!(rules.allows(Some("carol"), "public", Action::Pull));
        assert!(!rules.allows(None, "public", Action::Push));
        assert!(Rules::parse("alice write x").is_err());
        assert!(Rules::parse("alice push").is_err());
    }

    #[test]
    fn default_rules_let_users_push_and_nobody_else() {
        let mut rules = Rules::users_push_all();
        assert!(rules.allows(Some("anyone"), "a/b", Action::Push));
        assert!(!rules.allows(None, "a/b", Action::Pull));
        rules.allow_anonymous_pull();
        assert!(rules.allows(None, "a/b", Action::Pull));
        assert!(!rules.allows(None, "a/b", Action::Push));
    }
}
