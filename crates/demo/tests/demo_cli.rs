//! `csync2-watch-demo` end to end: the newcomer's command really builds a
//! cluster, syncs, reports, and leaves nothing behind. Run by cargo (which
//! sets `$CARGO`), the demo builds the daemon it runs, as `cargo run
//! --release -p csync2-watch-demo` does on a fresh clone.

use std::process::Command;

#[test]
fn the_demo_shows_changes_arriving_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_csync2-watch-demo"))
        .args(["--changes", "2"])
        .env_remove("CSYNC2_WATCH_BIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "write file-0.txt",
        "write file-1.txt",
        "chmod 600 file-0.txt",
        "rm -rf burst-renamed",
        "byte-identical",
        "no namespace, mount or process of the demo is left",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // Its testbed is gone: no namespace or data path of it remains.
    let id = stdout
        .split("/srv/csw-")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("the demo names its data path");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&format!("csw-{id}-")),
        "namespaces of demo {id} left behind"
    );
    assert!(!std::path::Path::new(&format!("/srv/csw-{id}")).exists());
}
