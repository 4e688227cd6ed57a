//! The settings file: defaults, the shipped example, every validation
//! message (file, line, column, fix), all problems at once, and the
//! effective-settings printout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csync2_watch::settings::{Checked, ServerMode, Settings, SettingsError, KEYS};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/csync2-watch.toml");

struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(text: &str) -> File {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csync2-watch.toml");
    std::fs::write(&path, text).unwrap();
    File { _dir: dir, path }
}

fn check(text: &str) -> (File, Checked) {
    let f = file(text);
    let c = Settings::check(Some(&f.path)).unwrap();
    (f, c)
}

fn messages(c: &Checked) -> Vec<String> {
    c.errors.iter().map(|p| p.to_string()).collect()
}

fn one_error(text: &str) -> (File, String) {
    let (f, c) = check(text);
    assert_eq!(c.errors.len(), 1, "{:#?}", c.errors);
    let m = c.errors[0].to_string();
    (f, m)
}

#[test]
fn defaults_are_the_documented_ones() {
    let d = Settings::default();
    assert!(d.csync2.is_absolute());
    assert!(d.csync2.ends_with("csync2"));
    assert!(d.csync2_args.is_empty());
    assert_eq!(d.batch_delay, Duration::from_millis(5));
    assert_eq!(d.batch_delay_max, Duration::from_millis(100));
    assert_eq!(d.max_batch, 2000);
    assert_eq!(d.full_check_threshold, 15000);
    assert_eq!(d.full_sync_interval, Duration::from_secs(300));
    assert_eq!(d.full_sync_jitter, Duration::from_secs(60));
    assert_eq!(d.quiet_period, Duration::from_millis(250));
    assert!(!d.parallel_updates);
    assert_eq!(d.probe_timeout, Duration::from_secs(1));
    assert_eq!(d.retry_initial, Duration::from_secs(1));
    assert_eq!(d.retry_max, Duration::from_secs(300));
    assert_eq!(d.stall_timeout, Duration::from_secs(60));
    assert_eq!(d.server, ServerMode::Managed);
    assert_eq!(d.blind_poll_interval, Duration::from_secs(10));
    assert_eq!(d.deep_check_interval, Duration::from_secs(86_400));
    assert_eq!(d.degraded_interval, Duration::from_secs(300));
    assert_eq!(d.journal_keep_events, 1_000_000);
    assert_eq!(d.source, None);
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let (f, c) = check("# nothing here\n");
    assert!(c.errors.is_empty() && c.warnings.is_empty(), "{c:#?}");
    let want = Settings {
        source: Some(f.path.clone()),
        ..Settings::default()
    };
    assert_eq!(c.settings, want);
}

#[test]
fn the_example_file_lists_every_key_commented_out_at_its_default() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    // As shipped (all commented out): the defaults.
    let c = Settings::parse(&text, Some(Path::new(EXAMPLE)));
    assert!(c.errors.is_empty() && c.warnings.is_empty(), "{c:#?}");
    // Every key is there exactly once, commented out, with a comment above.
    let lines: Vec<&str> = text.lines().collect();
    for key in KEYS {
        let at: Vec<usize> = (0..lines.len())
            .filter(|i| lines[*i].starts_with(&format!("# {key} = ")))
            .collect();
        assert_eq!(at.len(), 1, "`# {key} = ...` in the example file");
        assert!(
            at[0] > 0 && lines[at[0] - 1].starts_with('#'),
            "{key} has no comment"
        );
    }
    // Uncommented, the values are exactly the defaults.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if KEYS.iter().any(|k| rest.starts_with(&format!("{k} = "))) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = Settings::parse(&uncommented, None);
    assert!(c.errors.is_empty() && c.warnings.is_empty(), "{c:#?}");
    assert_eq!(c.settings, Settings::default());
}

#[test]
fn to_toml_prints_every_key_and_parses_back_to_the_same_settings() {
    let d = Settings::default();
    let text = d.to_toml();
    for key in KEYS {
        assert!(text.contains(&format!("\n{key} = ")) || text.starts_with(&format!("{key} = ")));
    }
    assert!(text.contains("batch_delay = \"5ms\""), "{text}");
    assert!(text.contains("full_sync_interval = \"5m\""), "{text}");
    let back = Settings::parse(&text, None);
    assert!(back.errors.is_empty(), "{:#?}", back.errors);
    assert_eq!(back.settings, d);

    let (_f, c) = check(
        "csync2_args = [\"-B\", \"-A\", \"-G\", \"web,db\"]\nbatch_delay = \"1.5ms\"\nmax_batch = 17\n\
         full_sync_interval = \"0s\"\nparallel_updates = true\nserver = \"external\"\n\
         retry_max = \"1h 30m\"\njournal_keep_events = 0\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    let s = c.settings;
    assert_eq!(s.batch_delay, Duration::from_micros(1500));
    assert_eq!(s.retry_max, Duration::from_secs(5400));
    assert_eq!(s.server, ServerMode::External);
    let back = Settings::parse(&s.to_toml(), None);
    assert!(back.errors.is_empty(), "{:#?}", back.errors);
    assert_eq!(back.settings, Settings { source: None, ..s });
}

#[test]
fn a_bad_duration_names_file_line_column_and_the_expected_form() {
    let (f, m) = one_error("max_batch = 10\nquiet_period = \"fast\"\n");
    assert_eq!(
        m,
        format!(
            "{}:2:16: `quiet_period = \"fast\"`: expected a duration like \"250ms\" or \"2s\"",
            f.path.display()
        )
    );
    // A bare number is not a duration either.
    let (_f, m) = one_error("batch_delay = 5\n");
    assert!(
        m.contains(":1:15: `batch_delay = 5`: expected a duration like"),
        "{m}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_the_closest_known_key() {
    let (f, m) = one_error("\n  quiet_perod = \"1s\"\n");
    assert_eq!(
        m,
        format!(
            "{}:2:3: unknown key `quiet_perod`; did you mean `quiet_period`?",
            f.path.display()
        )
    );
    let (_f, m) = one_error("batch-delay = \"5ms\"\n");
    assert!(m.contains("did you mean `batch_delay`?"), "{m}");
    // Nothing close: list the known keys.
    let (_f, m) = one_error("frobnicate = 1\n");
    assert!(m.contains("unknown key `frobnicate`"), "{m}");
    assert!(m.contains("journal_keep_events"), "{m}");
    // Tables are not settings either.
    let (_f, m) = one_error("[daemon]\nmax_batch = 1\n");
    assert!(m.contains(":1:2: unknown key `daemon`"), "{m}");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = "\
max_batch = 0
server = \"inetd\"
quiet_period = \"fast\"
bogus_key = true
retry_initial = \"10m\"
probe_timeout = \"0s\"
";
    let (f, c) = check(text);
    let m = messages(&c);
    assert_eq!(m.len(), 6, "{m:#?}");
    let lines: Vec<usize> = c.errors.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![1, 2, 3, 4, 5, 6]);
    assert!(
        m[0].contains("`max_batch = 0`: must be at least 1"),
        "{}",
        m[0]
    );
    assert!(
        m[1].contains("`server = \"inetd\"`: expected \"managed\""),
        "{}",
        m[1]
    );
    assert!(m[1].contains("\"external\""), "{}", m[1]);
    assert!(m[2].contains("expected a duration"), "{}", m[2]);
    assert!(m[3].contains("unknown key `bogus_key`"), "{}", m[3]);
    assert!(
        m[4].contains("retry_initial = \"10m\" is longer than retry_max = \"5m\""),
        "{}",
        m[4]
    );
    assert!(
        m[5].contains("`probe_timeout = \"0s\"`: must be more than 0"),
        "{}",
        m[5]
    );
    // Valid values among the bad ones still apply; bad ones keep defaults.
    assert_eq!(c.settings.max_batch, 2000);
    assert_eq!(c.settings.retry_initial, Duration::from_secs(600));

    // load() refuses with all of them, and the exit code is CONFIG.
    let err = Settings::load(Some(&f.path)).unwrap_err();
    let SettingsError::Invalid(all) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(all.lines().count(), 6, "{all}");
    assert!(all
        .lines()
        .all(|l| l.starts_with(&f.path.display().to_string())));
    assert_eq!(err.into_exit().code, csync2_watch::exit::CONFIG);
}

#[test]
fn absurd_and_zero_values_are_refused_with_the_fix() {
    for (text, want) in [
        ("max_batch = 1000000\n", "at most 100000 paths"),
        ("max_batch = -3\n", "at least 0"),
        ("max_batch = \"2000\"\n", "without quotes"),
        ("full_check_threshold = 0\n", "must be at least 1"),
        ("batch_delay = \"2h\"\n", "too long"),
        ("quiet_period = \"10m\"\n", "too long"),
        ("stall_timeout = \"0s\"\n", "csync2 has no network timeouts"),
        ("retry_max = \"0s\"\n", "must be more than 0"),
        ("blind_poll_interval = \"0s\"\n", "must be more than 0"),
        ("network_fs_interval = \"0s\"\n", "must be more than 0"),
        ("degraded_interval = \"0ms\"\n", "must be more than 0"),
        ("parallel_updates = \"yes\"\n", "expected true or false"),
        ("parallel_updates = \"true\"\n", "without quotes"),
        ("server = 1\n", "expected \"managed\" or \"external\""),
        ("csync2_args = \"-B\"\n", "expected a list of strings"),
        ("csync2_args = [\"-c\"]\n", "chooses csync2's mode"),
        (
            "csync2_args = [\"-Bx\"]\n",
            "-x (in `-Bx`) chooses csync2's mode",
        ),
        ("csync2_args = [\"-P\", \"peer\"]\n", "picks the peers"),
        ("csync2_args = [\"-N\", \"me\"]\n", "-C/-N/-D/-p"),
        ("csync2_args = [\"-r\"]\n", "recursive"),
        ("csync2_args = [\"/etc/passwd\"]\n", "options only"),
        ("csync2_args = [\"-q\"]\n", "csync2 has no option -q"),
        ("csync2_args = [\"-G\"]\n", "-G needs an argument"),
    ] {
        let (_f, m) = one_error(text);
        assert!(m.contains(want), "{text:?}: {m}");
        assert!(m.contains(":1:"), "{text:?}: {m}");
    }
}

#[test]
fn doubtful_values_are_warnings_not_errors() {
    for (text, want) in [
        ("full_check_threshold = 100\n", "below max_batch"),
        (
            "full_sync_interval = \"10s\"\nfull_sync_jitter = \"1s\"\n",
            "under a minute",
        ),
        (
            "full_sync_interval = \"2m\"\nfull_sync_jitter = \"10m\"\n",
            "irregular",
        ),
        ("csync2_args = [\"-d\"]\n", "dry run"),
        (
            "network_fs_interval = \"30s\"\n",
            "now called `blind_poll_interval`",
        ),
        ("deep_check_interval = \"1m\"\n", "reads csync2's database"),
        ("stall_timeout = \"1s\"\n", "may kill healthy runs"),
        ("batch_delay = \"2s\"\n", "wait this long"),
        ("batch_delay_max = \"3s\"\n", "the goal is a second"),
        (
            "batch_delay = \"20ms\"\nbatch_delay_max = \"10ms\"\n",
            "make batch_delay_max at least batch_delay",
        ),
    ] {
        let (f, c) = check(text);
        assert!(c.errors.is_empty(), "{text:?}: {:#?}", c.errors);
        assert_eq!(c.warnings.len(), 1, "{text:?}: {:#?}", c.warnings);
        let w = c.warnings[0].to_string();
        assert!(w.contains(want), "{text:?}: {w}");
        assert!(w.starts_with(&format!("{}:", f.path.display())), "{w}");
        // load() accepts them.
        Settings::load(Some(&f.path)).unwrap();
    }
}

#[test]
fn csync2_binary_is_checked_at_load_and_named() {
    let (_f, m) = one_error("csync2 = \"/nonexistent/bin/csync2\"\n");
    assert!(m.contains(":1:10: "), "{m}");
    assert!(m.contains("/nonexistent/bin/csync2"), "{m}");
    assert!(m.contains("No such file"), "{m}");

    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("csync2");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_f, m) = one_error(&format!("csync2 = \"{}\"\n", not_exec.display()));
    assert!(m.contains("not executable"), "{m}");
    assert!(m.contains(&not_exec.display().to_string()), "{m}");

    let (_f, m) = one_error(&format!("csync2 = \"{}\"\n", dir.path().display()));
    assert!(m.contains("is not a file"), "{m}");

    let (_f, m) = one_error("csync2 = \"bin/csync2\"\n");
    assert!(m.contains("absolute path"), "{m}");

    let (_f, m) = one_error("csync2 = \"no-such-csync2-binary\"\n");
    assert!(
        m.contains("no executable `no-such-csync2-binary` in PATH"),
        "{m}"
    );

    // An executable elsewhere is accepted as given; a bare name resolves.
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_f, c) = check(&format!("csync2 = \"{}\"\n", not_exec.display()));
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert_eq!(c.settings.csync2, not_exec);
    let (_f, c) = check("csync2 = \"csync2\"\n");
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(c.settings.csync2.is_absolute());
}

#[test]
fn toml_syntax_errors_have_a_position_and_a_hint() {
    let (f, m) = one_error("max_batch = 10\nbatch_delay = 5ms\n");
    assert!(m.starts_with(&format!("{}:2:", f.path.display())), "{m}");
    assert!(m.contains("TOML syntax"), "{m}");
    assert!(m.contains("batch_delay = \"5ms\""), "{m}");
    let (_f, m) = one_error("max_batch = 1\nmax_batch = 2\n");
    assert!(m.contains(":2:") && m.contains("duplicate key"), "{m}");
}

#[test]
fn an_explicit_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Settings::load(Some(&missing)).unwrap_err();
    assert!(matches!(err, SettingsError::Read { .. }), "{err:?}");
    let m = err.to_string();
    assert!(m.contains(&missing.display().to_string()), "{m}");
    assert!(m.contains("--config"), "{m}");
}

#[test]
fn a_non_utf8_file_is_refused_with_its_position() {
    let f = file("max_batch = 10\n# caf\u{e9}\n");
    let mut bytes = std::fs::read(&f.path).unwrap();
    let at = bytes.iter().position(|b| *b == 0xc3).unwrap();
    bytes[at] = 0xe9;
    bytes.remove(at + 1);
    std::fs::write(&f.path, &bytes).unwrap();
    let c = Settings::check(Some(&f.path)).unwrap();
    assert_eq!(c.errors.len(), 1, "{:#?}", c.errors);
    let m = c.errors[0].to_string();
    assert!(m.contains(":2:6: ") && m.contains("UTF-8"), "{m}");
}
