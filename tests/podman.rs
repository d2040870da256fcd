//! podman against berth with auth on: `podman login` with right and wrong
//! passwords, then a push and a pull through the token flow, and a pull
//! refused once logged out.

mod common;

use common::TestRegistry;
use common::clients::{htpasswd, require_programs};
use common::layout;
use common::podman::Podman;

/// A lowercase scratch directory, removed on drop.
struct Lowercase(std::path::PathBuf);

impl Lowercase {
    fn new() -> Lowercase {
        let dir = std::env::temp_dir().join(format!("berth-podman-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Lowercase(dir)
    }
}

impl Drop for Lowercase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn podman_logs_in_pushes_and_pulls_through_auth() {
    require_programs("podman", &[("podman", "podman")]);
    let work = tempfile::tempdir().unwrap();
    let users = work.path().join("users");
    htpasswd(&users, "alice", "correct horse");
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |config| {
        config.auth = Some(berth::auth::AuthConfig::new(&users));
    });
    let host = reg.host();
    let podman = Podman::in_dir(work.path());

    let wrong = podman.run(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wrong",
        &host,
    ]);
    assert!(
        !wrong.ok,
        "a wrong password must not log in: {}",
        wrong.output
    );
    assert!(
        wrong.output.contains("invalid username/password"),
        "{}",
        wrong.output
    );
    let login = podman.run(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "correct horse",
        &host,
    ]);
    assert!(login.ok, "{}", login.output);
    assert!(login.output.contains("Login Succeeded"), "{}", login.output);

    // podman names an image pulled from a layout after its path, and image
    // names must be lowercase: temp dir names are not.
    let layout_dir = Lowercase::new();
    let layout_dir = layout_dir.0.join("layout");
    let image = layout::write_image(&layout_dir, "v1", 31);
    let oci = format!("oci:{}:v1", layout_dir.display());
    let pulled = podman.run(&["pull", &oci]);
    assert!(pulled.ok, "{}", pulled.output);
    // The pulled image's id is its config's digest.
    let config = image.config.digest.trim_start_matches("sha256:").to_owned();
    let target = format!("{host}/team/app:v1");
    let pushed = podman.run(&[
        "push",
        "--tls-verify=false",
        &config,
        &format!("docker://{target}"),
    ]);
    assert!(pushed.ok, "{}", pushed.output);

    let removed = podman.run(&["rmi", "--all", "--force"]);
    assert!(removed.ok, "{}", removed.output);
    let pulled = podman.run(&["pull", "--tls-verify=false", &target]);
    assert!(pulled.ok, "{}", pulled.output);
    let id = podman.run(&["image", "inspect", "--format", "{{.Id}}", &target]);
    assert!(
        id.ok && id.output.contains(&config),
        "image id is the pushed config {config}: {}",
        id.output
    );

    let logout = podman.run(&["logout", &host]);
    assert!(logout.ok, "{}", logout.output);
    let refused = podman.run(&["pull", "--tls-verify=false", &format!("{host}/team/app:v1")]);
    assert!(!refused.ok, "anonymous pulls are off: {}", refused.output);
    assert!(
        refused.output.contains("unauthorized")
            || refused.output.contains("authentication required"),
        "{}",
        refused.output
    );
}
