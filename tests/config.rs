//! Settings a server cannot work with are refused at start, through the
//! library and the command line alike, with a message naming the setting.

mod common;

use std::io::{ErrorKind, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::wait_timeout;

type Tune = dyn FnOnce(&mut berth::Config);

fn start_error(tune: impl FnOnce(&mut berth::Config)) -> std::io::Error {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = berth::Config::new(data.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    tune(&mut config);
    match runtime.block_on(berth::Registry::start(config)) {
        Ok(registry) => {
            runtime.block_on(registry.shutdown());
            panic!("the registry started");
        }
        Err(e) => e,
    }
}

#[test]
fn the_library_refuses_limits_that_would_serve_nobody() {
    let cases: [(&str, Box<Tune>); 5] = [
        ("max_connections", Box::new(|c| c.max_connections = 0)),
        ("max_uploads", Box::new(|c| c.max_uploads = 0)),
        (
            "max_uploads_per_repo",
            Box::new(|c| c.max_uploads_per_repo = 0),
        ),
        (
            "header_timeout",
            Box::new(|c| c.header_timeout = Duration::ZERO),
        ),
        (
            "body_idle_timeout",
            Box::new(|c| c.body_idle_timeout = Duration::ZERO),
        ),
    ];
    for (setting, tune) in cases {
        let e = start_error(tune);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{setting}: {e}");
        assert!(e.to_string().contains(setting), "{setting}: {e}");
    }
}

#[test]
fn the_command_line_refuses_them_too() {
    let data = tempfile::tempdir().unwrap();
    for flag in [
        "--max-connections",
        "--max-uploads",
        "--max-uploads-per-repo",
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args([flag, "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let Some(status) = wait_timeout(&mut child, Duration::from_secs(10)) else {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{flag} 0 started a server");
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "{flag} 0: {stderr}");
        let setting = flag.trim_start_matches("--").replace('-', "_");
        assert!(stderr.contains(&setting), "{flag} 0: {stderr}");
    }
}

/// Credentials written into an upstream's URL would be neither sent (they
/// come from `--upstream-auth`) nor kept out of logs, error bodies and the
/// web page: such a URL is refused, without repeating them.
#[test]
fn an_upstream_url_with_credentials_in_it_is_refused_without_repeating_them() {
    let e = start_error(|c| {
        c.upstreams = vec![(
            "docker.io".into(),
            "https://user:s3cret-token@registry-1.docker.io".into(),
        )];
    });
    let message = e.to_string();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{message}");
    assert!(message.contains("--upstream-auth"), "{message}");
    assert!(!message.contains("s3cret-token"), "{message}");
}
