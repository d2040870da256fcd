//! The docker CLI against berth with auth on, through a dockerd this test
//! starts itself (root only: a private socket, vfs storage, no bridge, no
//! iptables): `docker login` with right and wrong passwords, pull, tag,
//! push, and a pull refused once logged out.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{Outcome, htpasswd, require_programs, run};
use common::process::{self, wait_timeout};
use common::{TestRegistry, layout};

/// A dockerd of our own, stopped on drop.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
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

    fn docker(&self, args: &[&str]) -> Outcome {
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

#[test]
fn docker_logs_in_pulls_and_pushes_through_auth() {
    process::require_root("starting a dockerd", "docker_logs_in");
    require_programs(
        "docker_logs_in",
        &[
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
            ("skopeo", "skopeo"),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let users = work.path().join("users");
    htpasswd(&users, "alice", "correct horse");
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |config| {
        config.auth = Some(berth::auth::AuthConfig::new(&users));
    });
    let host = reg.host();

    // An image to pull, pushed with skopeo.
    let layout_dir = work.path().join("layout");
    let image = layout::write_image(&layout_dir, "v1", 41);
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let pushed = run(
        "skopeo",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:correct horse",
            &format!("oci:{}:v1", layout_dir.display()),
            &format!("docker://{host}/team/app:v1"),
        ],
        &[],
    );
    assert!(pushed.ok, "{}", pushed.output);

    let dockerd = Dockerd::start();
    let wrong = dockerd.docker(&["login", "-u", "alice", "-p", "wrong", &host]);
    assert!(
        !wrong.ok,
        "a wrong password must not log in: {}",
        wrong.output
    );
    let login = dockerd.docker(&["login", "-u", "alice", "-p", "correct horse", &host]);
    assert!(
        login.ok && login.output.contains("Login Succeeded"),
        "{}",
        login.output
    );

    let source = format!("{host}/team/app:v1");
    let pulled = dockerd.docker(&["pull", &source]);
    assert!(pulled.ok, "{}", pulled.output);
    let id = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &source]);
    assert!(
        id.ok && id.output.contains(&image.config.digest),
        "image id is the config {}: {}",
        image.config.digest,
        id.output
    );

    let copy = format!("{host}/team/copy:v2");
    assert!(dockerd.docker(&["tag", &source, &copy]).ok);
    let pushed = dockerd.docker(&["push", &copy]);
    assert!(pushed.ok, "{}", pushed.output);
    let removed = dockerd.docker(&["rmi", &source, &copy]);
    assert!(removed.ok, "{}", removed.output);
    let pulled = dockerd.docker(&["pull", &copy]);
    assert!(pulled.ok, "the pushed copy pulls back: {}", pulled.output);

    assert!(dockerd.docker(&["logout", &host]).ok);
    assert!(dockerd.docker(&["rmi", &copy]).ok);
    let refused = dockerd.docker(&["pull", &copy]);
    assert!(!refused.ok, "anonymous pulls are off: {}", refused.output);
}
