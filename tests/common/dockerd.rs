//! A dockerd of a test's own (root only: a private socket, vfs storage, no
//! bridge, no iptables), and the docker CLI pointed at it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::clients::{Outcome, run};
use super::process::wait_timeout;

/// Stopped on drop.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver", "vfs"])
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn dockerd");
        let dockerd = Dockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).ok {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                std::fs::read_to_string(dockerd.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    pub fn docker(&self, args: &[&str]) -> Outcome {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        // The client's config (where login stores credentials) is ours too.
        let config: PathBuf = self.dir.path().join("config");
        run("docker", &all, &[("DOCKER_CONFIG", &config)])
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if wait_timeout(&mut self.child, Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
