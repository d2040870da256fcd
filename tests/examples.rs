//! The README's fixture examples for other languages, run as a user would
//! run them against the built binary: the shell one and the pytest one.

mod common;

use std::process::Command;

use common::clients::require_programs;

fn project() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_shell_example_gets_a_registry_with_known_images() {
    require_programs("shell_example", &[("curl", "curl")]);
    let out = Command::new("bash")
        .arg("examples/fixture.sh")
        .current_dir(project())
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said, r#"{"name":"fixtures/app","tags":["1"]}"#);
}

#[test]
fn the_pytest_example_passes() {
    require_programs("pytest", &[("pytest-3", "python3-pytest")]);
    let out = Command::new("pytest-3")
        .args([
            "-q",
            "-p",
            "no:cacheprovider",
            "examples/test_with_berth.py",
        ])
        .current_dir(project())
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("1 passed"), "{said}");
}
