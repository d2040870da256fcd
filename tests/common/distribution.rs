//! CNCF Distribution (Debian's `docker-registry`) on a free loopback
//! port, the peer registry tests pull from and push to.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::process::tail;

/// How long it may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// CNCF Distribution on a free loopback port, storage in a temp dir; killed
/// on drop.
pub struct Distribution {
    child: Option<Child>,
    port: u16,
    pub dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start() -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        // The port is free when asked for and taken again only by a race;
        // losing one shows as an early exit (or someone else answering),
        // and another port is tried.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(started) = Distribution::start_on(dir.path(), port) {
                return Distribution {
                    child: Some(started),
                    port,
                    dir,
                };
            }
        }
        panic!(
            "docker-registry did not start on three ports; log:\n{}",
            tail(&dir.path().join("registry.log"))
        );
    }

    /// `None` when it exited before answering (its port was taken).
    fn start_on(dir: &Path, port: u16) -> Option<Child> {
        let config = dir.join("config.yml");
        // Sent on every answer, so an answer from whatever else holds the
        // port is not taken for this registry's.
        let mark = format!("{}-{port}", dir.file_name().unwrap().to_string_lossy());
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Berth-Test: [{mark}]
health:
  storagedriver:
    enabled: false
",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn docker-registry");
        let url = format!("http://127.0.0.1:{port}/v2/");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return None;
            }
            let ours = |r: &http::Response| r.header("x-berth-test") == Some(mark.as_str());
            match http::try_request("GET", &url, &[], b"") {
                Ok(resp) if resp.status == 200 && ours(&resp) => return Some(child),
                Ok(resp) if !ours(&resp) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker-registry did not answer {url} within {START_TIMEOUT:?}; log:\n{}",
                    tail(&dir.join("registry.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Killed and reaped: nothing answers on its port afterwards.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A manifest's bytes as Distribution serves them, asking for every
    /// type (it refuses an OCI manifest to a client that does not).
    pub fn manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let url = http::manifest_url(&self.url(), repo, reference);
        let resp = http::request("GET", &url, &[("Accept", &accept)], b"");
        assert_eq!(
            resp.status,
            200,
            "GET {url} from Distribution: {resp:?}; log:\n{}",
            tail(&self.dir.path().join("registry.log"))
        );
        resp.body
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.kill();
    }
}
