//! Link options for the berth binary.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // A position-independent berth carries some 20,000 relative
    // relocations (24 bytes each, ~470 KiB) that the loader reads at every
    // start, and those pages stay resident. Packed (DT_RELR, glibc 2.36+)
    // they take a few KiB. A linker too old for the option warns and
    // ignores it.
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
