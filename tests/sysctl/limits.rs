//! `csync2-watch sysctl`'s numbers and its `--write`: the recommendation
//! math, the sysctl.d file's text, the atomic 0644 write, and applying
//! through a /proc/sys stand-in without ever lowering a value. Every test
//! points the writes at temporary files; the machine's real limits are
//! only read.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use csync2_watch::sysctl::{
    apply, read_limits, recommend, write_conf, DirCount, Limit, Limits, Report, SysctlError, Usage,
    INSTANCES_FLOOR, KERNEL_MAX, PROC_INOTIFY_DIR, QUEUED_CEILING, QUEUED_FLOOR, WATCHES_FLOOR,
    WATCHES_STEP,
};
use proptest::prelude::*;

use crate::support::beside_source;

fn limits(w: u64, i: u64, q: u64) -> Limits {
    Limits {
        max_user_watches: w,
        max_user_instances: i,
        max_queued_events: q,
    }
}

fn count(total: u64) -> DirCount {
    DirCount {
        total,
        per_root: vec![(PathBuf::from("/srv/www"), total.saturating_sub(2))],
        outside_roots: total.min(2),
        errors: vec![],
    }
}

/// Parse `key = value` lines of a sysctl.d file as `sysctl -p` does.
fn parse_conf(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key = value");
            (k.trim().to_string(), v.trim().parse().expect("a number"))
        })
        .collect()
}

/// A stand-in for /proc/sys/fs/inotify holding `values`.
fn fake_proc(dir: &Path, values: Limits) -> PathBuf {
    let p = dir.join("proc-inotify");
    fs::create_dir(&p).unwrap();
    for l in Limit::ALL {
        fs::write(p.join(l.file_name()), format!("{}\n", values.get(l))).unwrap();
    }
    p
}

proptest! {
    #![proptest_config(beside_source(ProptestConfig::default()))]
    #[test]
    fn recommendation_covers_need_with_bounded_slack(
        dirs in prop_oneof![0u64..200_000, 0u64..u64::MAX / 2],
        ow in 0u64..100_000,
        oi in 0u64..10_000,
    ) {
        let r = recommend(dirs, Usage { instances: oi, watches: ow });
        let need = dirs.saturating_mul(2).saturating_add(ow);
        if need <= KERNEL_MAX - WATCHES_STEP {
            // Watches: twice the directories plus the others' share, at
            // least the floor, a multiple of the step, less than one step
            // of slack.
            prop_assert!(r.max_user_watches >= need);
            prop_assert!(r.max_user_watches >= WATCHES_FLOOR);
            prop_assert_eq!(r.max_user_watches % WATCHES_STEP, 0);
            prop_assert!(r.max_user_watches < need.max(WATCHES_FLOOR) + WATCHES_STEP);
        } else {
            prop_assert_eq!(r.max_user_watches, KERNEL_MAX);
        }
        // Instances: a power of two with room for twice the others plus the
        // daemon and a `watch` run, and no more than twice that.
        let ineed = (oi + 2) * 2;
        prop_assert!(r.max_user_instances.is_power_of_two());
        prop_assert!(r.max_user_instances >= ineed.max(INSTANCES_FLOOR));
        prop_assert!(r.max_user_instances < 2 * ineed.max(INSTANCES_FLOOR));
        // Queued events: a power of two between floor and ceiling, at least
        // four per directory below the ceiling.
        prop_assert!(r.max_queued_events.is_power_of_two());
        prop_assert!((QUEUED_FLOOR..=QUEUED_CEILING).contains(&r.max_queued_events));
        if dirs.saturating_mul(4) <= QUEUED_CEILING {
            prop_assert!(r.max_queued_events >= dirs * 4);
            prop_assert!(r.max_queued_events < (dirs * 8).max(QUEUED_FLOOR + 1));
        }
    }

    #[test]
    fn target_is_never_below_current(
        dirs in 0u64..1_000_000,
        w in 0u64..4_000_000, i in 0u64..100_000, q in 0u64..4_000_000,
    ) {
        let current = limits(w, i, q);
        let report = Report::new("t".into(), count(dirs), Usage::default(), current);
        let t = report.target();
        for l in Limit::ALL {
            prop_assert_eq!(t.get(l), current.get(l).max(report.recommended.get(l)));
        }
        prop_assert_eq!(
            parse_conf(&report.conf_text()),
            Limit::ALL.iter().map(|l| (l.key().to_string(), t.get(*l))).collect()
        );
    }
}

#[test]
fn recommendation_for_the_notes_trees() {
    // The 17,012-directory tree of the measurements, with root's usual
    // background users (systemd and friends) holding some watches.
    let r = recommend(
        17_012,
        Usage {
            instances: 9,
            watches: 300,
        },
    );
    assert_eq!(r, limits(65_536, 512, 131_072));
    // Ten times that: 340,324 needed, next multiple of 65,536.
    let r = recommend(
        170_120,
        Usage {
            instances: 300,
            watches: 300,
        },
    );
    assert_eq!(r, limits(393_216, 1024, 1_048_576));
    // An empty plan still gets the floors.
    assert_eq!(
        recommend(0, Usage::default()),
        limits(WATCHES_FLOOR, INSTANCES_FLOOR, QUEUED_FLOOR)
    );
}

#[test]
fn render_names_every_limit_the_per_user_caveat_and_ends_with_the_file() {
    let report = Report::new(
        "node node1, /etc/csync2.cfg".into(),
        count(17_012),
        Usage {
            instances: 7,
            watches: 123,
        },
        limits(8192, 128, 16384),
    );
    let out = report.render();
    assert!(out.contains("node node1, /etc/csync2.cfg): 17012"), "{out}");
    assert!(out.contains("17010  /srv/www"), "{out}");
    assert!(out.contains("per user"), "{out}");
    assert!(out.contains("123 watches"), "{out}");
    for l in Limit::ALL {
        let line = out
            .lines()
            .find(|x| x.starts_with(l.key()))
            .unwrap_or_else(|| panic!("no line for {}: {out}", l.key()));
        let nums: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(2)
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            nums,
            vec![report.current.get(l), report.recommended.get(l)],
            "{line}"
        );
    }
    assert!(out.ends_with(&report.conf_text()));
}

#[test]
fn write_raises_lower_limits_keeps_higher_ones_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    // max_user_instances is already above any recommendation here.
    let before = limits(8192, 100_000, 16_384);
    let proc = fake_proc(tmp.path(), before);
    let conf = tmp.path().join("sysctl.d").join("60-csync2-watch.conf");

    let current = read_limits(&proc).unwrap();
    assert_eq!(current, before);
    let report = Report::new("t".into(), count(40_000), Usage::default(), current);
    let target = report.target();
    assert_eq!(target.max_user_instances, 100_000);

    write_conf(&conf, &report.conf_text()).unwrap();
    let meta = fs::metadata(&conf).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(
        parse_conf(&fs::read_to_string(&conf).unwrap()),
        Limit::ALL
            .iter()
            .map(|l| (l.key().to_string(), target.get(*l)))
            .collect()
    );
    // Nothing but the file is left in its directory.
    let names: Vec<_> = fs::read_dir(conf.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![conf.file_name().unwrap().to_owned()]);

    let applied = apply(&proc, &target).unwrap();
    for a in &applied {
        assert_eq!(a.before, before.get(a.limit));
        assert_eq!(a.after, before.get(a.limit).max(target.get(a.limit)));
        assert_eq!(
            fs::read_to_string(proc.join(a.limit.file_name()))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap(),
            a.after
        );
    }
    assert!(applied
        .iter()
        .any(|a| a.limit == Limit::MaxUserWatches && a.changed()));
    assert!(applied
        .iter()
        .any(|a| a.limit == Limit::MaxUserInstances && !a.changed()));

    // Again: nothing to change, same file.
    let text = fs::read(&conf).unwrap();
    let report = Report::new(
        "t".into(),
        count(40_000),
        Usage::default(),
        read_limits(&proc).unwrap(),
    );
    write_conf(&conf, &report.conf_text()).unwrap();
    assert_eq!(fs::read(&conf).unwrap(), text);
    assert!(apply(&proc, &report.target())
        .unwrap()
        .iter()
        .all(|a| !a.changed()));

    // A target below what the kernel has never lowers anything.
    let now = read_limits(&proc).unwrap();
    let applied = apply(&proc, &limits(1, 1, 1)).unwrap();
    assert!(applied.iter().all(|a| !a.changed()), "{applied:?}");
    assert_eq!(read_limits(&proc).unwrap(), now);
}

#[test]
fn write_replaces_an_existing_file_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("60-csync2-watch.conf");
    fs::write(&conf, "x".repeat(10_000)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    write_conf(&conf, "fs.inotify.max_user_watches = 65536\n").unwrap();
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        "fs.inotify.max_user_watches = 65536\n"
    );
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o7777,
        0o644
    );
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // The conf file's directory is a regular file.
    let blocker = tmp.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let conf = blocker.join("60-csync2-watch.conf");
    let err = write_conf(&conf, "x\n").unwrap_err();
    assert!(matches!(err, SysctlError::WriteConf { .. }));
    assert!(
        err.to_string().contains(&blocker.display().to_string()),
        "{err}"
    );

    // A limit that cannot be written (a directory stands in its place).
    let proc = fake_proc(tmp.path(), limits(1, 1, 1));
    let watches = proc.join("max_user_watches");
    fs::remove_file(&watches).unwrap();
    fs::create_dir(&watches).unwrap();
    let err = apply(&proc, &limits(65_536, 512, 65_536)).unwrap_err();
    assert!(err.to_string().contains("max_user_watches"), "{err}");

    // A limit file with garbage in it.
    fs::remove_dir(&watches).unwrap();
    fs::write(&watches, "lots\n").unwrap();
    let err = read_limits(&proc).unwrap_err();
    assert!(matches!(err, SysctlError::ParseLimit { .. }), "{err}");
    assert!(err.to_string().contains("max_user_watches"), "{err}");

    // A missing /proc directory.
    let err = read_limits(&tmp.path().join("nope")).unwrap_err();
    assert!(matches!(err, SysctlError::ReadLimit { .. }), "{err}");
}

#[test]
fn reads_the_real_kernel_limits() {
    // Read only: the running kernel's values parse and are positive.
    let real = read_limits(Path::new(PROC_INOTIFY_DIR)).unwrap();
    for l in Limit::ALL {
        assert!(real.get(l) > 0, "{}", l.key());
    }
}
