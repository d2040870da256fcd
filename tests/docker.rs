//! The docker CLI against berth with auth on, through a dockerd this test
//! starts itself (root only: a private socket, vfs storage, no bridge, no
//! iptables): `docker login` with right and wrong passwords, pull, tag,
//! push, and a pull refused once logged out.

mod common;

use common::clients::{htpasswd, require_programs, run};
use common::dockerd::Dockerd;
use common::process;
use common::{TestRegistry, layout};

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
