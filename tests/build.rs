//! Sets `cfg(root_user)` when the tests are built by root: tests that need root (mounting a
//! tmpfs) run there, as in CI, and show as ignored elsewhere instead of passing untested.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(root_user)");
    println!("cargo::rerun-if-changed=build.rs");
    // A different user has a different home or name; rebuilding then re-decides.
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-env-changed=HOME");
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if uid.as_deref() == Some("0") {
        println!("cargo::rustc-cfg=root_user");
    }
}
