//! A testbed whose construction fails half-way leaves nothing behind. (In
//! a process of its own, [`alone`]: no other testbed of this process may
//! exist meanwhile.)

use crate::support::alone;
use crate::support::testbed::*;

/// Everything on the machine named after a testbed of this process.
fn this_process_footprint() -> Vec<String> {
    let id_prefix = format!("{}-", std::process::id());
    let mut found: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("csw-{id_prefix}")))
        .collect();
    for dir in [base_dir(), "/srv".into()] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&id_prefix) || name.starts_with(&format!("csw-{id_prefix}")) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found.extend(mounts_mentioning(&format!("/{id_prefix}")));
    found.extend(mounts_mentioning(&format!("/csw-{id_prefix}")));
    found
}

#[test]
fn a_testbed_that_fails_half_way_is_torn_down() {
    if !alone(module_path!(), "a_testbed_that_fails_half_way_is_torn_down") {
        return;
    }
    assert_eq!(this_process_footprint(), Vec::<String>::new());
    // Namespaces, mounts and nodes exist by the time the files are written;
    // the second file is refused.
    let opts = TestbedOptions {
        files: vec![
            ("fine".into(), b"ok".to_vec()),
            ("../outside".into(), b"no".to_vec()),
        ],
        ..TestbedOptions::default()
    };
    match Testbed::start(opts) {
        Err(TestbedError::OutsideData(p)) => assert_eq!(p.to_str(), Some("../outside")),
        other => panic!("expected OutsideData, got {other:?}"),
    }
    assert_eq!(this_process_footprint(), Vec::<String>::new());

    // And a failure before any namespace exists (no such csync2 binary).
    let opts = TestbedOptions {
        csync2: "/nonexistent/csync2".into(),
        ..TestbedOptions::default()
    };
    let err = Testbed::start(opts).expect_err("no csync2 binary");
    assert!(err.to_string().contains("csync2 -k"), "{err}");
    assert_eq!(this_process_footprint(), Vec::<String>::new());
}
