//! Running real clients (podman, docker) from tests: the skip convention,
//! commands with a deadline, and users for auth.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::wait_timeout;

/// Real clients may be slow (image pulls unpack layers); none may hang.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether the real-client tests run: `BERTH_SKIP_CLIENT_TESTS=1` skips
/// them; otherwise a missing program is a failure, naming its package.
pub fn client_available(programs: &[(&str, &str)]) -> bool {
    if std::env::var("BERTH_SKIP_CLIENT_TESTS").as_deref() == Ok("1") {
        println!("skipped: BERTH_SKIP_CLIENT_TESTS=1");
        return false;
    }
    for (program, package) in programs {
        let found = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{program} is not on PATH (Debian: `apt-get install -y {package}`); set \
             BERTH_SKIP_CLIENT_TESTS=1 to skip the real-client tests"
        );
    }
    true
}

/// What a client run did: success, and everything it printed, for messages.
pub struct Outcome {
    pub ok: bool,
    pub output: String,
}

/// Runs `program args` with `env`, killed after [`CLIENT_TIMEOUT`].
pub fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let status = wait_timeout(&mut child, CLIENT_TIMEOUT);
    let output = child.wait_with_output().expect("client output");
    Outcome {
        ok: status.is_some_and(|s| s.success()),
        output: format!(
            "{program} {}: {status:?}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Adds a user to an htpasswd file with `berth passwd`.
pub fn htpasswd(path: &Path, user: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["passwd", "--htpasswd"])
        .arg(path)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "berth passwd");
}
