//! The live-system package test: `scripts/package-live-test.sh` boots a
//! minimal Debian 12 under a real systemd twice (systemd-nspawn -x, two
//! nodes), installs the .deb built by `scripts/package.sh` with
//! `--no-install-recommends`, and checks sync, reload, a SIGKILL restart,
//! the watchdog, stop and purge. Its step-by-step output with times goes
//! straight to the terminal (not captured).
//!
//! It never skips: without root, debootstrap, systemd-nspawn, or a .deb
//! that is newer than the sources it was built from, it fails and says
//! what to do (`scripts/test.sh` installs the tools and builds the
//! packages first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"))
}

/// The newest modification time of what goes into the .deb.
fn newest_source() -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for dir in ["src", "systemd", "packaging"] {
        for entry in walkdir::WalkDir::new(Path::new(ROOT).join(dir)) {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                newest = newest.max(entry.metadata().unwrap().modified().unwrap());
            }
        }
    }
    for f in ["Cargo.toml", "Cargo.lock", "csync2.cfg.example"] {
        newest = newest.max(
            std::fs::metadata(Path::new(ROOT).join(f))
                .unwrap()
                .modified()
                .unwrap(),
        );
    }
    newest
}

#[test]
fn deb_on_a_minimal_debian_under_systemd() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the live package test needs root (systemd-nspawn, debootstrap)"
    );
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg");
    let arch = String::from_utf8(arch.stdout).unwrap();
    let deb = target_dir()
        .join("debian")
        .join(format!("csync2-watch_{VERSION}-1_{}.deb", arch.trim()));
    let built = std::fs::metadata(&deb)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} does not exist: run scripts/package.sh (scripts/test.sh does)",
                deb.display()
            )
        });
    assert!(
        built >= newest_source(),
        "{} is older than the sources it packages: run scripts/package.sh (scripts/test.sh does)",
        deb.display()
    );
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/package-live-test.sh"))
        .arg(&deb)
        .status()
        .expect("bash scripts/package-live-test.sh");
    eprintln!(
        "package_live: scripts/package-live-test.sh took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "the live package test failed ({status}); its output above says which step"
    );
}
