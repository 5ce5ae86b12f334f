//! Records the git commit echo-lab is built from, when it is built from a
//! git checkout, so that a saved result (and `echo-lab --version`) can
//! name the build that made it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=ECHO_LAB_GIT_COMMIT={commit}");
    // `echo-lab --version`: the package version, and the commit if known.
    let version = env!("CARGO_PKG_VERSION");
    let line = if commit.is_empty() {
        version.to_owned()
    } else {
        format!("{version} (commit {commit})")
    };
    println!("cargo:rustc-env=ECHO_LAB_VERSION={line}");
}
