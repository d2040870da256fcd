//! skopeo for the real-client suites: a private policy (accept anything)
//! and an empty auth file, so nothing on the machine changes what the tests
//! see; every call killed after a deadline, its output kept for messages.

use std::path::Path;
use std::process::{Command, ExitStatus};

use serde_json::Value;

use super::clients::{CLIENT_TIMEOUT, run_command};

pub struct Skopeo {
    dir: tempfile::TempDir,
}

pub struct Run {
    pub command: String,
    /// `None`: killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {} s", CLIENT_TIMEOUT.as_secs()),
        };
        format!(
            "`{}`: {status}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.command,
            self.stderr.trim_end(),
            String::from_utf8_lossy(&self.stdout).trim_end(),
        )
    }
}

impl Skopeo {
    /// Fails the test when skopeo is missing. Every test that needs skopeo
    /// has `skopeo` in its name, so `--skip skopeo` leaves them all out.
    pub fn new() -> Skopeo {
        super::clients::require_programs("skopeo", &[("skopeo", "skopeo")]);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("auth.json"), "{}").unwrap();
        Skopeo { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `skopeo --policy <ours> <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(self.dir.path().join("policy.json"))
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        let (status, stdout, stderr) = run_command(cmd);
        Run {
            command: format!("skopeo {}", args.join(" ")),
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.succeeded(), "skopeo failed: {}", run.describe());
        run
    }

    /// Runs and insists on failure (not a timeout); returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(run.status.is_some(), "skopeo hung: {}", run.describe());
        assert!(
            !run.succeeded(),
            "skopeo should have failed: {}",
            run.describe()
        );
        run.stderr
    }

    /// Runs, insists on success, and parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let run = self.ok(args);
        serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.describe()))
    }
}
