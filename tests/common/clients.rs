//! Running real clients (skopeo, podman, docker) from tests: what they
//! need, commands with a deadline, and users for auth.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::process::wait_timeout;

/// Real clients may be slow (image pulls unpack layers); none may hang.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Fails the test unless every `(program, Debian package)` runs. A test
/// that cannot run must not pass, so the only way around a missing program
/// is to leave the test out by name, which the message spells out with
/// `skip`, a `cargo test -- --skip` filter matching the tests that need it.
#[track_caller]
pub fn require_programs(skip: &str, programs: &[(&str, &str)]) {
    for (program, package) in programs {
        require_command(skip, program, &["--version"], package);
    }
}

/// As [`require_programs`], for one program that is asked to run with
/// `args` (not every program knows `--version`).
#[track_caller]
pub fn require_command(skip: &str, program: &str, args: &[&str], package: &str) {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not on PATH: install it (Debian: `apt-get install -y {package}`, \
         as .ci/run does), or leave out the tests that need it with \
         `cargo test -- --skip {skip}`"
    );
}

/// What a client run did: success, and everything it printed, for messages.
pub struct Outcome {
    pub ok: bool,
    pub output: String,
}

/// Runs `program args` with `env`, killed after [`CLIENT_TIMEOUT`].
pub fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (status, stdout, stderr) = run_command(cmd);
    Outcome {
        ok: status.is_some_and(|s| s.success()),
        output: format!(
            "{program} {}: {status:?}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Runs a command with no input, reading its output as it comes (so a
/// chatty client never blocks on a full pipe); kills it after
/// [`CLIENT_TIMEOUT`], when the status is `None`.
pub fn run_command(mut cmd: Command) -> (Option<ExitStatus>, Vec<u8>, Vec<u8>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).ok();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let status = wait_timeout(&mut child, CLIENT_TIMEOUT);
    if status.is_none() {
        child.kill().ok();
        child.wait().ok();
    }
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
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
