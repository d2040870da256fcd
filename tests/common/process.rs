//! The real `berth` binary as a child process: started on a random loopback
//! port over a data directory, killed with SIGKILL or stopped with SIGTERM,
//! and `berth fsck` run over a directory.
//!
//! Every wait here is bounded, so a server that never prints its address or
//! never exits fails the test instead of hanging it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped (SIGTERM) server may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// A `berth serve` child process.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub data: PathBuf,
    child: Option<Child>,
    /// Where its stderr goes (the log), for failure messages.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `berth serve --listen 127.0.0.1:0 --data DATA`, with its log
    /// (stderr) appended to `log`, and waits for the `berth listening on`
    /// line. Panics (after killing the child) if it does not come.
    pub fn start(data: &Path, log: &Path) -> ServerProcess {
        Self::start_with(data, log, &[])
    }

    /// As [`ServerProcess::start`], with more `berth serve` arguments.
    pub fn start_with(data: &Path, log: &Path, extra: &[&str]) -> ServerProcess {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open server log");
        let mut args = vec![OsStr::new("--data"), data.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let (mut child, url) = spawn_serve(args, "info", log_file, log);
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth serve over {} is not plain HTTP: {url:?}",
                    data.display()
                )
            });
        ServerProcess {
            addr,
            data: data.to_path_buf(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL berth");
            child.wait().expect("reap berth");
        }
    }

    /// SIGTERM (a clean shutdown), then waits for the exit; panics if it
    /// takes longer than the drain timeout allows or the exit is not clean.
    pub fn stop(mut self) {
        if let Some(child) = self.child.take() {
            stop_cleanly(child, &self.log);
        }
    }
}

/// SIGTERM to a `berth serve` child (a clean shutdown), then waits for
/// the exit; panics, with the end of `log`, if it takes longer than the
/// drain timeout allows or the exit is not clean.
pub fn stop_cleanly(mut child: Child, log: &Path) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM failed: {status}");
    match wait_timeout(&mut child, STOP_TIMEOUT) {
        Some(status) => assert!(
            status.success(),
            "berth serve exited with {status} after SIGTERM; log:\n{}",
            tail(log)
        ),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth serve did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                tail(log)
            );
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `berth serve --listen 127.0.0.1:0 ARGS` with `RUST_LOG` set and
/// its stderr in `log_file` (whose path is `log`), and waits for the
/// `berth listening on URL` line; returns the child and the URL. Panics,
/// after killing the child, if the line does not come.
pub fn spawn_serve<A: AsRef<OsStr>>(
    args: impl IntoIterator<Item = A>,
    rust_log: &str,
    log_file: File,
    log: &Path,
) -> (Child, String) {
    spawn_serve_under(&[], args, rust_log, log_file, log)
}

/// As [`spawn_serve`], with `wrapper` (a program and its arguments, such as
/// strace) running the binary; the child is then the wrapper.
pub fn spawn_serve_under<A: AsRef<OsStr>>(
    wrapper: &[&OsStr],
    args: impl IntoIterator<Item = A>,
    rust_log: &str,
    log_file: File,
    log: &Path,
) -> (Child, String) {
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(BERTH);
            command
        }
        None => Command::new(BERTH),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn berth serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth serve printed no address line ({other:?}); log:\n{}",
                tail(log)
            );
        }
    };
    match line.strip_prefix("berth listening on ") {
        Some(url) => {
            let url = url.trim().to_owned();
            (child, url)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line from berth serve: {line:?}")
        }
    }
}

/// The process strace started: the one whose parent is strace.
pub fn tracee(strace: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The parent pid is the second field after the parenthesised name.
            let after_name = stat.rsplit_once(')')?.1;
            let ppid: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == strace).then_some(pid)
        })
}

/// `berth serve --listen 127.0.0.1:0 --ready-json ARGS`: the child and
/// its ready line (url, data directory, pid), as another language's test
/// suite would start it.
pub fn serve_ready(args: &[&str]) -> (Child, serde_json::Value) {
    let mut child = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the first line is no JSON ({e}): {line:?}"));
    assert_eq!(ready["pid"], child.id());
    (child, ready)
}

/// Polls a child until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last lines of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What `berth fsck` printed and how it exited.
#[derive(Debug)]
pub struct FsckOutput {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl FsckOutput {
    /// Every finding line (`missing:`, `corrupt:`, `orphaned:`, `dangling:`).
    pub fn findings(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| {
                ["missing:", "corrupt:", "orphaned:", "dangling:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect()
    }

    /// Finding lines starting with `kind` (e.g. `"corrupt:"`).
    pub fn findings_of(&self, kind: &str) -> Vec<&str> {
        self.findings()
            .into_iter()
            .filter(|l| l.starts_with(kind))
            .collect()
    }

    /// The parsed summary line `N blobs (B bytes) checked, P problems found,
    /// R repaired` as (N, B, P, R); panics if there is none.
    pub fn summary(&self) -> (u64, u64, u64, u64) {
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains("problems found"))
            .unwrap_or_else(|| panic!("fsck printed no summary line: {self:?}"));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(numbers.len(), 4, "summary line {line:?}");
        (numbers[0], numbers[1], numbers[2], numbers[3])
    }
}

/// Runs `berth fsck --data DATA [--repair]` to its end (bounded at 60 s).
pub fn fsck(data: &Path, repair: bool) -> FsckOutput {
    let mut command = Command::new(BERTH);
    command.args(["fsck", "--data"]).arg(data);
    if repair {
        command.arg("--repair");
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth fsck");
    // Read both pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = wait_timeout(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("berth fsck over {} ran over 60 s", data.display())
    });
    FsckOutput {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Every regular file under `dir`, recursively, sorted (empty if `dir` is
/// missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Names of the entries directly in `dir` (sorted; empty if missing).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Fails the test unless it runs as root, for the same reason as
/// `clients::require_programs`: `what` is what needs root, `skip` the
/// `cargo test -- --skip` filter that leaves out the tests needing it.
#[track_caller]
pub fn require_root(what: &str, skip: &str) {
    // Permission checks go by the effective uid: `Uid:` lists real, effective, ...
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    assert!(
        root,
        "{what} needs root: run the tests as root, as .ci/run does, or leave out the \
         tests that need it with `cargo test -- --skip {skip}`"
    );
}
