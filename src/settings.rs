//! csync2-watch's own settings: `/etc/csync2-watch/csync2-watch.toml`
//! (or `--config FILE`), every field optional with a sysadmin-friendly
//! default, durations in humantime (`"250ms"`, `"1h"`).
//!
//! Owns the file format, the defaults, and the validation: every problem
//! is reported at once as `FILE:LINE:COL: message` naming the fix
//! (unknown keys get the closest known key suggested, values are quoted
//! as written). The file is read as a map of spanned keys and values
//! rather than through `#[serde(deny_unknown_fields)]`, which stops at the
//! first problem and loses the positions of the others; unknown keys are
//! refused all the same. [`Settings::load`] is what the daemon uses
//! (errors out, logs warnings); [`Settings::check`] is for
//! `check-config`, which shows all problems and the effective settings
//! ([`Settings::to_toml`]).
//!
//! Layer: core (it reads the one file it is asked to). Imports
//! [`crate::exit`] only.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Spanned, Value};

/// Default settings path.
pub const DEFAULT_PATH: &str = "/etc/csync2-watch/csync2-watch.toml";

/// Where csync2 is looked for when it is not in `PATH`.
pub const CSYNC2_FALLBACK: &str = "/usr/sbin/csync2";

/// Every key the settings file knows, in the order of [`Settings`].
pub const KEYS: &[&str] = &[
    "csync2",
    "csync2_args",
    "batch_delay",
    "batch_delay_max",
    "max_batch",
    "full_check_threshold",
    "full_sync_interval",
    "full_sync_jitter",
    "quiet_period",
    "parallel_updates",
    "probe_timeout",
    "retry_initial",
    "retry_max",
    "stall_timeout",
    "server",
    "deep_check_interval",
    "blind_poll_interval",
    "degraded_interval",
    "journal_keep_events",
    "metrics_dir",
];

/// The old name of `blind_poll_interval`, still accepted (with a warning).
const OLD_BLIND_POLL_KEY: &str = "network_fs_interval";

/// Where the Prometheus textfile goes by default: outside the (private)
/// state directory, readable by node_exporter.
pub const DEFAULT_METRICS_DIR: &str = "/run/csync2-watch";

/// One setting's documentation: the single source for `csync2-watch.toml(5)`
/// and for the tests that keep it complete and its defaults true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDoc {
    /// The key, as in [`KEYS`].
    pub key: &'static str,
    /// The default as TOML, exactly as `check-config` prints it for an
    /// empty file (`csync2` aside: the file says `"csync2"`, the effective
    /// value is the path found).
    pub default: &'static str,
    /// What it does, plain text; a blank line starts a new paragraph.
    pub doc: &'static str,
}

/// Every setting with its default and its documentation, in the order of
/// [`KEYS`]. The man page is generated from this table, and a unit test
/// requires an entry for every key and checks each default against
/// [`Settings::default`].
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "csync2",
        default: "\"csync2\"",
        doc: "The csync2 binary. A bare name is looked up in PATH, then /usr/sbin/csync2 is \
              tried; otherwise give an absolute path.",
    },
    SettingDoc {
        key: "csync2_args",
        default: "[]",
        doc: "Extra options for every csync2 client run (never the server), for example \
              [\"-B\", \"-A\"] for csync2's faster, less crash-safe database mode. Options \
              that choose csync2's mode, peers, node, configuration or database are refused: \
              csync2-watch sets those itself (use `csync2-watch run -C/-N/-D/-p`).",
    },
    SettingDoc {
        key: "batch_delay",
        default: "\"5ms\"",
        doc: "After a quiet spell, a batch starts once changes have stopped arriving for this \
              long, so that a burst (an unpacked archive, a deploy) goes into one csync2 run. \
              At most 1 minute.",
    },
    SettingDoc {
        key: "batch_delay_max",
        default: "\"100ms\"",
        doc: "A batch starts no later than this after the first change of a quiet spell, \
              however fast changes keep coming. At most 1 minute.",
    },
    SettingDoc {
        key: "max_batch",
        default: "2000",
        doc: "Most paths handed to one `csync2 -c` run; bigger batches are split. \
              From 1 to 100000.",
    },
    SettingDoc {
        key: "full_check_threshold",
        default: "15000",
        doc: "More queued paths than this become one reconcile of every tree, which is \
              cheaper than naming that many paths.",
    },
    SettingDoc {
        key: "full_sync_interval",
        default: "\"5m\"",
        doc: "Time between reconciles of every tree (a walk compared with the stat cache), \
              the safety net for anything inotify did not report. On 170,000 files one costs \
              about 0.25 s and 0.5 s of CPU when nothing changed (README, Reconciles). \
              \"0s\" disables them; the start-up reconcile always runs.",
    },
    SettingDoc {
        key: "full_sync_jitter",
        default: "\"1m\"",
        doc: "Each periodic reconcile is moved by a random amount up to this, so that the \
              nodes of a cluster do not all walk their trees at the same moment.",
    },
    SettingDoc {
        key: "quiet_period",
        default: "\"250ms\"",
        doc: "No local csync2 client starts while the local csync2 server serves a \
              connection, nor for this long after, so that the two never fight over csync2's \
              database. At most 1 minute.",
    },
    SettingDoc {
        key: "parallel_updates",
        default: "false",
        doc: "true: one `csync2 -u -P PEER` per peer at once; false: one \
              `csync2 -u -P a,b,...`. Parallel runs can make csync2 wait a whole second on its \
              database lock; measure before turning this on.",
    },
    SettingDoc {
        key: "probe_timeout",
        default: "\"1s\"",
        doc: "TCP connect timeout when probing a peer before updating it: csync2 has none and \
              would hang on a dead peer for over a minute. More than 0, at most 1 minute.",
    },
    SettingDoc {
        key: "retry_initial",
        default: "\"1s\"",
        doc: "A peer that failed, or is still dirty after an update, is retried after this, \
              doubling each time up to retry_max, so that a down peer never stalls the others. \
              A csync2 check or full check that failed is retried the same way.",
    },
    SettingDoc {
        key: "retry_max",
        default: "\"5m\"",
        doc: "The longest retry delay for a failing peer. At least retry_initial.",
    },
    SettingDoc {
        key: "stall_timeout",
        default: "\"1m\"",
        doc: "A csync2 client that makes no progress (no I/O, no output) for this long is \
              killed; csync2 has no network timeouts of its own. The systemd watchdog trusts \
              a running csync2 client for as long as this allows.",
    },
    SettingDoc {
        key: "server",
        default: "\"managed\"",
        doc: "\"managed\": csync2-watch runs `csync2 -ii` itself and supervises it. \
              \"external\": inetd, csync2.socket or an init script runs the server; \
              csync2-watch only watches its connections.",
    },
    SettingDoc {
        key: "deep_check_interval",
        default: "\"1d\"",
        doc: "Time between deep checks: csync2's own full check (`csync2 -cr /`, seconds of \
              CPU on a big tree) after a reconcile, which also finds what csync2's database \
              disagrees with (a database edited or restored behind the daemon's back). \
              \"0s\" leaves them to `csync2-watch sync --full --deep`.",
    },
    SettingDoc {
        key: "blind_poll_interval",
        default: "\"10s\"",
        doc: "Reconcile interval for trees inotify cannot see other machines' writes in: \
              network filesystems (NFS, CIFS, ...) and FUSE mounts. inotify still reports \
              this node's own changes there at once. (Formerly `network_fs_interval`, \
              still accepted.)",
    },
    SettingDoc {
        key: "degraded_interval",
        default: "\"5m\"",
        doc: "Full-check interval for trees that could not be watched completely, for \
              example when the inotify watch limit is reached (see `csync2-watch sysctl`).",
    },
    SettingDoc {
        key: "journal_keep_events",
        default: "1000000",
        doc: "How many change events the journal keeps for `csync2-watch events` (queued \
              changes are always kept until synced). 0 keeps none.",
    },
    SettingDoc {
        key: "metrics_dir",
        default: "\"/run/csync2-watch\"",
        doc: "Directory for the Prometheus textfile NODE[_CFG].prom, named like the default \
              state directory. It holds no path names, so it lives outside the private state \
              directory: the directory is made 0755 and the file 0644, for node_exporter's \
              textfile collector (`--collector.textfile.directory=/run/csync2-watch`), which \
              does not run as root. \"\" writes no textfile.",
    },
];

/// Most paths one csync2 check run may be handed (`max_batch`).
pub const MAX_BATCH_LIMIT: usize = 100_000;

/// Who runs the local csync2 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    /// csync2-watch starts `csync2 -ii` as a supervised child.
    Managed,
    /// inetd, csync2.socket or an init script runs it; csync2-watch only
    /// watches its connections.
    External,
}

impl ServerMode {
    /// The word used in the settings file.
    pub fn word(self) -> &'static str {
        match self {
            ServerMode::Managed => "managed",
            ServerMode::External => "external",
        }
    }
}

/// All settings, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The csync2 binary. Default `csync2` looked up in PATH, falling back
    /// to `/usr/sbin/csync2`. A bare name in the file is looked up in PATH
    /// at load; the field always holds the path found.
    pub csync2: PathBuf,
    /// Extra arguments for every csync2 client run (not the server), e.g.
    /// `["-B", "-A"]`. Default empty. Options that choose csync2's mode,
    /// peers, node, config or database are refused (csync2-watch sets
    /// those itself).
    pub csync2_args: Vec<OsString>,
    /// A batch starts once no change has arrived for this long (after a
    /// quiet spell), to catch a change's siblings. Default 5ms.
    pub batch_delay: Duration,
    /// ... but never later than this after the first change of the spell,
    /// however fast changes keep coming. Default 100ms (or `batch_delay`,
    /// if that is longer).
    pub batch_delay_max: Duration,
    /// Most paths handed to one csync2 check run. Default 2000.
    pub max_batch: usize,
    /// A batch with more paths than this becomes one full check (the old
    /// script's num_batched_changes_threshold). Default 15000.
    pub full_check_threshold: usize,
    /// Time between periodic reconciles; zero disables them. Default 5m.
    pub full_sync_interval: Duration,
    /// Each periodic reconcile is moved by a random amount up to this.
    /// Default 1m.
    pub full_sync_jitter: Duration,
    /// No local csync2 client starts while the local server serves a
    /// connection, nor for this long after. Default 250ms.
    pub quiet_period: Duration,
    /// Run `csync2 -u -P peer` for all peers at once instead of one
    /// `csync2 -u -P a,b,...`. Default false (see the benchmark).
    pub parallel_updates: bool,
    /// TCP connect timeout when probing a peer before updating it.
    /// Default 1s.
    pub probe_timeout: Duration,
    /// First retry delay for a peer that failed or is still dirty.
    /// Doubles up to `retry_max`. Default 1s.
    pub retry_initial: Duration,
    /// Default 5m.
    pub retry_max: Duration,
    /// A csync2 client that makes no I/O progress for this long is killed
    /// (csync2 has no network timeouts). Default 60s.
    pub stall_timeout: Duration,
    /// Managed or external local server. Default managed.
    pub server: ServerMode,
    /// Deep-check (`csync2 -cr /`) interval; zero: only on request.
    /// Default 1d.
    pub deep_check_interval: Duration,
    /// Reconcile interval for trees on network and FUSE filesystems,
    /// where inotify cannot see other machines' writes. Default 10s.
    pub blind_poll_interval: Duration,
    /// Full-check interval for trees that could not be watched completely
    /// (watch limit reached). Default 5m.
    pub degraded_interval: Duration,
    /// How many journaled change events to keep for `events`. Default
    /// 1_000_000.
    pub journal_keep_events: u64,
    /// Directory for the Prometheus textfile `NODE[_CFG].prom` (it holds
    /// no path names; the directory is made 0755 and the file 0644, for
    /// node_exporter's textfile collector, which does not run as root).
    /// Empty: no textfile. Default `/run/csync2-watch`.
    pub metrics_dir: PathBuf,
    /// Where the settings came from (`None`: defaults, no file).
    pub source: Option<PathBuf>,
}

/// A settings file problem, printable as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {}: {source} (create it, or leave out --config to use the defaults)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, one `FILE:LINE:COL: message` a line.
    #[error("{0}")]
    Invalid(String),
}

impl SettingsError {
    /// The error as an exit with code [`crate::exit::CONFIG`], for
    /// commands to return.
    pub fn into_exit(self) -> crate::exit::Exit {
        crate::exit::Exit::config(format!("csync2-watch: {self}"))
    }
}

/// One problem (or warning) found in a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The settings file (`None`: the built-in defaults).
    pub file: Option<PathBuf>,
    /// 1-based line and column (characters) of the offending key or value;
    /// 0 when the problem has no place in the file (a default value).
    pub line: usize,
    pub col: usize,
    /// The key concerned, if any.
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) if self.line > 0 => {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    file.display(),
                    self.line,
                    self.col,
                    self.message
                )
            }
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => write!(f, "csync2-watch settings (defaults): {}", self.message),
        }
    }
}

/// Everything [`Settings::check`] found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The effective settings: the file's valid values over the defaults
    /// (a value with an error keeps its default).
    pub settings: Settings,
    /// Problems that make the settings unusable, in file order.
    pub errors: Vec<Problem>,
    /// Legal but doubtful values, in file order.
    pub warnings: Vec<Problem>,
}

impl Checked {
    /// Apply command-line overrides (`--set KEY=VALUE`, later ones win) on
    /// top of these settings. A value that is not TOML by itself is taken
    /// as a string, so `--set quiet_period=500ms` works unquoted. Problems
    /// are reported as `--set:N:COL: ...`, N counting the overrides.
    pub fn with_overrides(mut self, overrides: &[String]) -> Checked {
        if overrides.is_empty() {
            return self;
        }
        let mut lines = String::new();
        for o in overrides {
            let Some((key, value)) = o.split_once('=') else {
                self.errors.push(Problem {
                    file: None,
                    line: 0,
                    col: 0,
                    key: None,
                    message: format!(
                        "--set {o}: expected KEY=VALUE, e.g. --set quiet_period=500ms"
                    ),
                });
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let literal = toml::from_str::<toml::Table>(&format!("x = {value}")).is_ok();
            let value = if literal {
                value.to_string()
            } else {
                Value::String(value.to_string()).to_string()
            };
            lines.push_str(&format!("{key} = {value}\n"));
        }
        let over = Settings::parse(&lines, Some(Path::new("--set")));
        self.errors.extend(over.errors);
        self.warnings.extend(over.warnings);
        let mut merged: toml::Table = toml::from_str(&self.settings.to_toml()).unwrap_or_default();
        if let Ok(table) = toml::from_str::<toml::Table>(&lines) {
            for (k, v) in table {
                if KEYS.contains(&k.as_str()) {
                    merged.insert(k, v);
                }
            }
        }
        let source = self.settings.source.clone();
        let text = toml::to_string(&merged).unwrap_or_default();
        let again = Settings::parse(&text, source.as_deref());
        if again.errors.is_empty() {
            self.settings = again.settings;
            self.settings.source = source;
        }
        self
    }

    /// The settings if there was no error, else every error in one
    /// [`SettingsError::Invalid`].
    pub fn into_result(self) -> Result<Settings, SettingsError> {
        if self.errors.is_empty() {
            Ok(self.settings)
        } else {
            let lines: Vec<String> = self.errors.iter().map(|p| p.to_string()).collect();
            Err(SettingsError::Invalid(lines.join("\n")))
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            csync2: find_in_path(OsStr::new("csync2"))
                .unwrap_or_else(|| PathBuf::from(CSYNC2_FALLBACK)),
            csync2_args: Vec::new(),
            batch_delay: Duration::from_millis(5),
            batch_delay_max: Duration::from_millis(100),
            max_batch: 2000,
            full_check_threshold: 15000,
            full_sync_interval: Duration::from_secs(300),
            full_sync_jitter: Duration::from_secs(60),
            quiet_period: Duration::from_millis(250),
            parallel_updates: false,
            probe_timeout: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            server: ServerMode::Managed,
            deep_check_interval: Duration::from_secs(86_400),
            blind_poll_interval: Duration::from_secs(10),
            degraded_interval: Duration::from_secs(300),
            journal_keep_events: 1_000_000,
            metrics_dir: PathBuf::from(DEFAULT_METRICS_DIR),
            source: None,
        }
    }
}

impl Settings {
    /// Load `path`, or [`DEFAULT_PATH`] when `None` (a missing default file
    /// means defaults; a missing explicit file is an error). Every error
    /// is reported at once; warnings are logged.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_with_overrides(path, &[])
    }

    /// [`Settings::load`] with `run --set KEY=VALUE` overrides applied on
    /// top of the file: what the daemon starts with and re-reads on
    /// SIGHUP. Warnings about the file are logged; every error is
    /// reported at once.
    pub fn load_with_overrides(
        path: Option<&Path>,
        overrides: &[String],
    ) -> Result<Settings, SettingsError> {
        let checked = Self::check(path)?;
        for w in &checked.warnings {
            tracing::warn!("{w}");
        }
        checked.with_overrides(overrides).into_result()
    }

    /// Validate without failing on the first problem: read `path` (or
    /// [`DEFAULT_PATH`] if present, when `None`) and return the effective
    /// settings with every error and warning. Only an unreadable file is
    /// an `Err`.
    pub fn check(path: Option<&Path>) -> Result<Checked, SettingsError> {
        Self::check_with_default(path, Path::new(DEFAULT_PATH))
    }

    fn check_with_default(path: Option<&Path>, default: &Path) -> Result<Checked, SettingsError> {
        let (file, must_exist) = match path {
            Some(p) => (p, true),
            None => (default, false),
        };
        match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Self::parse(&text, Some(file))),
                Err(e) => {
                    let (line, col) = line_col(
                        &String::from_utf8_lossy(e.as_bytes()),
                        e.utf8_error().valid_up_to(),
                    );
                    let mut checked = Self::parse("", Some(file));
                    checked.errors.insert(
                        0,
                        Problem {
                            file: Some(file.to_path_buf()),
                            line,
                            col,
                            key: None,
                            message: "the file is not valid UTF-8 (TOML must be); save it as UTF-8"
                                .into(),
                        },
                    );
                    Ok(checked)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                Ok(Self::parse_source("", None))
            }
            Err(source) => Err(SettingsError::Read {
                path: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Validate settings text; `source` names the file in messages.
    pub fn parse(text: &str, source: Option<&Path>) -> Checked {
        Self::parse_source(text, Some(source.unwrap_or(Path::new("<settings>"))))
            .with_source(source)
    }

    fn parse_source(text: &str, file: Option<&Path>) -> Checked {
        let mut v = Validator {
            text,
            file: file.map(Path::to_path_buf),
            errors: Vec::new(),
            warnings: Vec::new(),
            pos: BTreeMap::new(),
        };
        let mut s = Settings {
            source: file.map(Path::to_path_buf),
            ..Settings::default()
        };
        let mut csync2_set = false;
        match toml::from_str::<BTreeMap<Spanned<String>, Spanned<Value>>>(text) {
            Err(e) => {
                let at = e.span().map(|r| r.start).unwrap_or(0);
                let msg = e.message().trim_end().to_string();
                v.error_at(
                    at,
                    None,
                    format!(
                        "TOML syntax: {msg} (write one `key = value` a line; durations and \
                         words are quoted, e.g. batch_delay = \"5ms\", server = \"managed\")"
                    ),
                );
            }
            Ok(map) => {
                for (key, value) in map {
                    let kstart = key.span().start;
                    let given = key.get_ref().as_str();
                    let given = if given == OLD_BLIND_POLL_KEY {
                        v.warn_at(
                            kstart,
                            format!("`{OLD_BLIND_POLL_KEY}` is now called `blind_poll_interval`; rename it"),
                        );
                        "blind_poll_interval"
                    } else {
                        given
                    };
                    let Some(name) = KEYS.iter().copied().find(|k| *k == given) else {
                        let name = key.get_ref().as_str();
                        v.error_at(kstart, Some(name), unknown_key_message(name));
                        continue;
                    };
                    v.pos.insert(name, kstart);
                    let raw = text.get(value.span()).unwrap_or("?").trim();
                    let val = value.get_ref();
                    let vstart = value.span().start;
                    let r = v.apply(&mut s, name, raw, val);
                    match r {
                        Ok(()) => csync2_set |= name == "csync2",
                        Err(msg) => {
                            v.error_at(vstart, Some(name), format!("`{name} = {raw}`: {msg}"))
                        }
                    }
                }
            }
        }
        if !csync2_set {
            if let Err(msg) = check_executable(&s.csync2) {
                v.error_at_key_or_file(
                    "csync2",
                    format!(
                        "{msg}; install csync2 (apt-get install csync2) or set \
                         `csync2 = \"/path/to/csync2\"`{}",
                        if file.is_none() {
                            format!(" in {DEFAULT_PATH}")
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        if !v.pos.contains_key("batch_delay_max") {
            // The default cap never undercuts a longer batch_delay.
            s.batch_delay_max = s.batch_delay_max.max(s.batch_delay);
        }
        v.cross_checks(&s);
        v.errors.sort_by_key(|p| (p.line, p.col));
        v.warnings.sort_by_key(|p| (p.line, p.col));
        Checked {
            settings: s,
            errors: v.errors,
            warnings: v.warnings,
        }
    }

    /// The effective settings as a complete settings file (every key), for
    /// `check-config` to show. Parsing it back gives the same settings.
    /// (A non-UTF-8 csync2 path or argument, which no settings file can
    /// produce, is shown with replacement characters.)
    pub fn to_toml(&self) -> String {
        let d = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        let s = |s: &OsStr| Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned());
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let values: Vec<(&str, Value)> = vec![
            ("csync2", s(self.csync2.as_os_str())),
            (
                "csync2_args",
                Value::Array(self.csync2_args.iter().map(|a| s(a)).collect()),
            ),
            ("batch_delay", d(self.batch_delay)),
            ("batch_delay_max", d(self.batch_delay_max)),
            ("max_batch", int(self.max_batch as u64)),
            (
                "full_check_threshold",
                int(self.full_check_threshold as u64),
            ),
            ("full_sync_interval", d(self.full_sync_interval)),
            ("full_sync_jitter", d(self.full_sync_jitter)),
            ("quiet_period", d(self.quiet_period)),
            ("parallel_updates", Value::Boolean(self.parallel_updates)),
            ("probe_timeout", d(self.probe_timeout)),
            ("retry_initial", d(self.retry_initial)),
            ("retry_max", d(self.retry_max)),
            ("stall_timeout", d(self.stall_timeout)),
            ("server", Value::String(self.server.word().into())),
            ("deep_check_interval", d(self.deep_check_interval)),
            ("blind_poll_interval", d(self.blind_poll_interval)),
            ("degraded_interval", d(self.degraded_interval)),
            ("journal_keep_events", int(self.journal_keep_events)),
            ("metrics_dir", s(self.metrics_dir.as_os_str())),
        ];
        debug_assert_eq!(values.len(), KEYS.len());
        let mut out = String::new();
        for (k, v) in values {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

impl Checked {
    fn with_source(mut self, source: Option<&Path>) -> Checked {
        self.settings.source = source.map(Path::to_path_buf);
        self
    }
}

/// Offset → 1-based (line, column in characters).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

fn unknown_key_message(name: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&name.replace('-', "_"), k), *k))
        .min();
    match best {
        Some((dist, k)) if dist <= 3.max(k.len() / 3) => {
            format!("unknown key `{name}`; did you mean `{k}`?")
        }
        _ => format!(
            "unknown key `{name}`; remove it (known keys: {})",
            KEYS.join(", ")
        ),
    }
}

/// Look a bare command name up in `PATH`.
fn find_in_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|cand| check_executable(cand).is_ok())
}

fn check_executable(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("csync2 binary {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("csync2 binary {} is not a file", path.display()));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| format!("csync2 binary {} is not executable: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "csync2 binary {} is not executable (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

const DURATION_HINT: &str = "expected a duration like \"250ms\" or \"2s\"";

fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => humantime::parse_duration(s.trim()).map_err(|_| DURATION_HINT.into()),
        Value::Integer(_) | Value::Float(_) => {
            Err(format!("{DURATION_HINT} (a quoted number with a unit)"))
        }
        _ => Err(DURATION_HINT.into()),
    }
}

fn count(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        Value::Integer(_) => Err("expected a whole number of at least 0".into()),
        Value::String(s) if s.trim().parse::<u64>().is_ok() => {
            Err(format!("expected a number without quotes: {}", s.trim()))
        }
        _ => Err("expected a whole number, like 2000".into()),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => {
            Err(format!("expected true or false without quotes: {s}"))
        }
        _ => Err("expected true or false".into()),
    }
}

/// csync2 options (getopt string `W:s:Ftp:G:P:C:D:N:HBAIXULlSTMRvhcuoimfxrd`)
/// and whether csync2_args may carry them.
fn csync2_option(c: char) -> Option<(bool, Result<(), &'static str>)> {
    // (takes an argument, allowed?)
    Some(match c {
        'B' | 'A' | 't' | 'v' | 'l' | 'F' | 'I' | 'X' | 'U' | 'd' => (false, Ok(())),
        's' | 'G' => (true, Ok(())),
        'c' | 'u' | 'x' | 'o' | 'i' | 'm' | 'f' | 'h' | 'H' | 'L' | 'S' | 'T' | 'M' | 'R' => (
            false,
            Err("chooses csync2's mode, which csync2-watch sets for every run; remove it"),
        ),
        'r' => (
            false,
            Err("csync2-watch decides per path whether a check is recursive; remove it"),
        ),
        'P' => (
            true,
            Err("csync2-watch picks the peers of every update itself; remove it"),
        ),
        'C' | 'N' | 'D' | 'p' => (
            true,
            Err("give it to csync2-watch instead (csync2-watch run -C/-N/-D/-p), which passes it to every csync2 it runs"),
        ),
        'W' => (true, Err("is csync2-internal; remove it")),
        _ => return None,
    })
}

fn csync2_args(v: &Value) -> Result<(Vec<OsString>, Vec<String>), String> {
    let Value::Array(items) = v else {
        return Err("expected a list of strings, like [\"-B\", \"-A\"]".into());
    };
    let mut args = Vec::new();
    for item in items {
        match item {
            Value::String(s) => args.push(s.clone()),
            _ => return Err("expected a list of strings, like [\"-B\", \"-A\"]".into()),
        }
    }
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" || !a.starts_with('-') || a.len() < 2 {
            return Err(format!(
                "`{a}` is not a csync2 option; csync2_args holds options only (csync2-watch passes the paths itself)"
            ));
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            let Some((takes_arg, allowed)) = csync2_option(c) else {
                return Err(format!("csync2 has no option -{c} (in `{a}`)"));
            };
            if let Err(why) = allowed {
                let within = if chars.len() > 1 {
                    format!(" (in `{a}`)")
                } else {
                    String::new()
                };
                return Err(format!("-{c}{within} {why}"));
            }
            if c == 'd' {
                warnings.push("-d makes csync2 a dry run: nothing will be synced".to_string());
            }
            if takes_arg {
                if j + 1 == chars.len() {
                    // The argument is the next list item.
                    if i + 1 == args.len() {
                        return Err(format!("-{c} needs an argument"));
                    }
                    i += 1;
                }
                break;
            }
            j += 1;
        }
        i += 1;
    }
    Ok((args.into_iter().map(OsString::from).collect(), warnings))
}

struct Validator<'a> {
    text: &'a str,
    file: Option<PathBuf>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Offset of each key given in the file.
    pos: BTreeMap<&'static str, usize>,
}

impl Validator<'_> {
    fn problem_at(&self, offset: Option<usize>, key: Option<&str>, message: String) -> Problem {
        let (line, col) = match offset {
            Some(o) if self.file.is_some() => line_col(self.text, o),
            _ => (0, 0),
        };
        Problem {
            file: self.file.clone(),
            line,
            col,
            key: key.map(str::to_string),
            message,
        }
    }

    fn error_at(&mut self, offset: usize, key: Option<&str>, message: String) {
        let p = self.problem_at(Some(offset), key, message);
        self.errors.push(p);
    }

    fn error_at_key_or_file(&mut self, key: &str, message: String) {
        let p = self.problem_at(self.pos.get(key).copied(), Some(key), message);
        self.errors.push(p);
    }

    fn warn_at(&mut self, offset: usize, message: String) {
        let p = self.problem_at(Some(offset), None, message);
        self.warnings.push(p);
    }

    fn warn_at_key(&mut self, key: &str, message: String) {
        let p = self.problem_at(self.pos.get(key).copied(), Some(key), message);
        self.warnings.push(p);
    }

    /// Parse one known key's value into `s`, with its own range checks.
    fn apply(
        &mut self,
        s: &mut Settings,
        name: &'static str,
        raw: &str,
        v: &Value,
    ) -> Result<(), String> {
        let nonzero = |d: Duration, why: &str| -> Result<Duration, String> {
            if d.is_zero() {
                Err(format!("must be more than 0; {why}"))
            } else {
                Ok(d)
            }
        };
        let at_most = |d: Duration, max: Duration, why: &str| -> Result<Duration, String> {
            if d > max {
                Err(format!(
                    "{} is too long (at most {}); {why}",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ))
            } else {
                Ok(d)
            }
        };
        let minute = Duration::from_secs(60);
        match name {
            "csync2" => {
                let Value::String(p) = v else {
                    return Err("expected the csync2 binary's path in quotes, like \"/usr/sbin/csync2\"".into());
                };
                let p = Path::new(p);
                let resolved = if p.as_os_str().is_empty() {
                    return Err("expected the csync2 binary's path, like \"/usr/sbin/csync2\"".into());
                } else if !p.as_os_str().as_bytes().contains(&b'/') {
                    find_in_path(p.as_os_str())
                        .or_else(|| {
                            // Like the default: csync2 lives in /usr/sbin,
                            // which a user's PATH may lack.
                            let fallback = Path::new(CSYNC2_FALLBACK);
                            (p == Path::new("csync2") && check_executable(fallback).is_ok())
                                .then(|| fallback.to_path_buf())
                        })
                        .ok_or_else(|| {
                        format!(
                            "no executable `{}` in PATH; give the absolute path, like \"/usr/sbin/csync2\"",
                            p.display()
                        )
                    })?
                } else if p.is_relative() {
                    return Err("give an absolute path or a bare command name, like \"/usr/sbin/csync2\"".into());
                } else {
                    p.to_path_buf()
                };
                check_executable(&resolved).map_err(|m| format!("{m}; install csync2 or fix the path"))?;
                s.csync2 = resolved;
            }
            "csync2_args" => {
                let (args, warnings) = csync2_args(v)?;
                for w in warnings {
                    self.warn_at_key(name, format!("`{name} = {raw}`: {w}"));
                }
                s.csync2_args = args;
            }
            "batch_delay" => {
                let d = at_most(duration(v)?, minute, "changes would wait that long before being synced")?;
                if d > Duration::from_secs(1) {
                    self.warn_at_key(name, format!("`{name} = {raw}`: changes wait this long before reaching the peers; a few milliseconds are enough to catch a burst"));
                }
                s.batch_delay = d;
            }
            "batch_delay_max" => {
                let d = at_most(duration(v)?, minute, "changes would wait that long before being synced")?;
                if d > Duration::from_secs(1) {
                    self.warn_at_key(name, format!("`{name} = {raw}`: during a stream of changes the first one waits this long before reaching the peers; the goal is a second at most"));
                }
                s.batch_delay_max = d;
            }
            "max_batch" => {
                let n = count(v)?;
                if n == 0 {
                    return Err("must be at least 1; the default is 2000".into());
                }
                if n > MAX_BATCH_LIMIT as u64 {
                    return Err(format!(
                        "at most {MAX_BATCH_LIMIT} paths fit one csync2 run; the default is 2000"
                    ));
                }
                s.max_batch = n as usize;
            }
            "full_check_threshold" => {
                let n = count(v)?;
                if n == 0 {
                    return Err("must be at least 1 (0 would turn every change into a full check); the default is 15000".into());
                }
                s.full_check_threshold = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "full_sync_interval" => {
                let d = duration(v)?;
                if !d.is_zero() && d < minute {
                    self.warn_at_key(name, format!("`{name} = {raw}`: a full sync checks every file (seconds of CPU on a big tree); an interval under a minute keeps csync2 busy all the time. \"0s\" disables them"));
                }
                s.full_sync_interval = d;
            }
            "full_sync_jitter" => s.full_sync_jitter = duration(v)?,
            "quiet_period" => {
                s.quiet_period = at_most(duration(v)?, minute, "local changes would wait that long behind every incoming sync")?
            }
            "parallel_updates" => s.parallel_updates = boolean(v)?,
            "probe_timeout" => {
                let d = nonzero(duration(v)?, "every probe would fail at once; the default is 1s")?;
                s.probe_timeout = at_most(d, minute, "a dead peer would hold up every update that long")?;
            }
            "retry_initial" => {
                s.retry_initial = nonzero(duration(v)?, "a failing peer would be retried in a busy loop; the default is 1s")?
            }
            "retry_max" => {
                s.retry_max = nonzero(duration(v)?, "a failing peer would be retried in a busy loop; the default is 5m")?
            }
            "stall_timeout" => {
                let d = nonzero(duration(v)?, "csync2 has no network timeouts of its own; the default is 60s")?;
                if d < Duration::from_secs(5) {
                    self.warn_at_key(name, format!("`{name} = {raw}`: a csync2 run on a busy database can be silent for seconds; this may kill healthy runs"));
                }
                s.stall_timeout = d;
            }
            "server" => {
                let Value::String(w) = v else {
                    return Err("expected \"managed\" or \"external\"".into());
                };
                s.server = match w.as_str() {
                    "managed" => ServerMode::Managed,
                    "external" => ServerMode::External,
                    _ => return Err("expected \"managed\" (csync2-watch runs csync2 -ii) or \"external\" (inetd, csync2.socket or an init script runs it)".into()),
                };
            }
            "deep_check_interval" => {
                let d = duration(v)?;
                if !d.is_zero() && d < Duration::from_secs(600) {
                    self.warn_at_key(name, format!("`{name} = {raw}`: a deep check reads csync2's database for every file (seconds of CPU on a big tree); the reconciles in between already find every change on disk. \"0s\" leaves deep checks to `sync --full --deep`"));
                }
                s.deep_check_interval = d;
            }
            "blind_poll_interval" => {
                s.blind_poll_interval = nonzero(duration(v)?, "inotify cannot see other machines' writes on a network or FUSE filesystem, so these reconciles are the only way to find them; the default is 10s")?
            }
            "degraded_interval" => {
                s.degraded_interval = nonzero(duration(v)?, "a tree inotify cannot fully watch is only synced by these checks; the default is 5m")?
            }
            "journal_keep_events" => s.journal_keep_events = count(v)?,
            "metrics_dir" => {
                let Value::String(dir) = v else {
                    return Err("expected a directory, e.g. \"/run/csync2-watch\", or \"\" for no metrics file".into());
                };
                if !dir.is_empty() && !dir.starts_with('/') {
                    return Err("must be an absolute path (or \"\" for no metrics file); the default is \"/run/csync2-watch\"".into());
                }
                s.metrics_dir = PathBuf::from(dir);
            }
            _ => unreachable!("key {name} is in KEYS but not handled"),
        }
        Ok(())
    }

    fn cross_checks(&mut self, s: &Settings) {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if s.retry_initial > s.retry_max {
            let key = if self.pos.contains_key("retry_initial") {
                "retry_initial"
            } else {
                "retry_max"
            };
            self.error_at_key_or_file(
                key,
                format!(
                    "retry_initial = \"{}\" is longer than retry_max = \"{}\"; make retry_initial at most retry_max",
                    fmt(s.retry_initial),
                    fmt(s.retry_max)
                ),
            );
        }
        if s.batch_delay_max < s.batch_delay {
            self.warn_at_key(
                "batch_delay_max",
                format!(
                    "batch_delay_max = \"{}\" is shorter than batch_delay = \"{}\": batches start batch_delay_max after the first change; make batch_delay_max at least batch_delay",
                    fmt(s.batch_delay_max),
                    fmt(s.batch_delay)
                ),
            );
        }
        if s.full_check_threshold < s.max_batch {
            let key = if self.pos.contains_key("full_check_threshold") {
                "full_check_threshold"
            } else {
                "max_batch"
            };
            self.warn_at_key(
                key,
                format!(
                    "full_check_threshold = {} is below max_batch = {}: a batch that large becomes a full check, so batches never reach max_batch",
                    s.full_check_threshold, s.max_batch
                ),
            );
        }
        if !s.full_sync_interval.is_zero() && s.full_sync_jitter > s.full_sync_interval {
            let key = if self.pos.contains_key("full_sync_jitter") {
                "full_sync_jitter"
            } else {
                "full_sync_interval"
            };
            self.warn_at_key(
                key,
                format!(
                    "full_sync_jitter = \"{}\" is longer than full_sync_interval = \"{}\"; full syncs will come at irregular times",
                    fmt(s.full_sync_jitter),
                    fmt(s.full_sync_interval)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let t = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        let off = t.find('"').unwrap();
        assert_eq!(line_col(t, off), (2, 6));
    }

    #[test]
    fn set_overrides_win_over_the_file_and_need_no_quotes() {
        let file = Settings::parse("quiet_period = \"1s\"\nmax_batch = 10\n", None);
        let c = file.with_overrides(&[
            "quiet_period=500ms".into(),
            "parallel_updates=true".into(),
            "csync2_args=[\"-B\"]".into(),
        ]);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.settings.quiet_period, Duration::from_millis(500));
        assert!(c.settings.parallel_updates);
        assert_eq!(
            c.settings.max_batch, 10,
            "untouched keys keep the file's value"
        );
        assert_eq!(c.settings.csync2_args, vec![std::ffi::OsString::from("-B")]);
    }

    #[test]
    fn a_bad_override_is_an_error_naming_it() {
        let c = Settings::parse("", None).with_overrides(&[
            "quiet_period=fast".into(),
            "no-equals-sign".into(),
            "qiuet_period=1s".into(),
        ]);
        let all: Vec<String> = c.errors.iter().map(|p| p.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all.iter()
                .any(|e| e.contains("--set") && e.contains("fast")),
            "{all:?}"
        );
        assert!(all.iter().any(|e| e.contains("no-equals-sign")), "{all:?}");
        assert!(all.iter().any(|e| e.contains("quiet_period")), "{all:?}");
        assert_eq!(c.settings.quiet_period, Settings::default().quiet_period);
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = Settings::check_with_default(None, &dir.path().join("absent.toml")).unwrap();
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.settings.source, None);
    }

    #[test]
    fn present_default_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("csync2-watch.toml");
        std::fs::write(&f, "max_batch = 7\n").unwrap();
        let c = Settings::check_with_default(None, &f).unwrap();
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.settings.max_batch, 7);
        assert_eq!(c.settings.source.as_deref(), Some(f.as_path()));
    }

    #[test]
    fn every_key_has_its_documentation_in_order() {
        let documented: Vec<&str> = SETTINGS.iter().map(|d| d.key).collect();
        assert_eq!(
            documented, KEYS,
            "SETTINGS must list every key of KEYS, in order"
        );
        for d in SETTINGS {
            assert!(d.doc.len() > 20, "{}: document it", d.key);
        }
    }

    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let defaults = Settings::default();
        let shown: toml::Table = toml::from_str(&defaults.to_toml()).unwrap();
        for d in SETTINGS {
            let one = format!("{} = {}\n", d.key, d.default);
            let parsed: toml::Table = toml::from_str(&one).unwrap_or_else(|e| panic!("{one}: {e}"));
            if d.key == "csync2" {
                // The file says "csync2"; the effective value is where it was found.
                let checked = Settings::parse(&one, None);
                assert_eq!(checked.settings.csync2, defaults.csync2);
                continue;
            }
            let want = &shown[d.key];
            let got = &parsed[d.key];
            // Durations compare as durations ("60s" and "1m" are the same).
            let same = match (want, got) {
                (Value::String(a), Value::String(b)) => {
                    a == b
                        || matches!((humantime::parse_duration(a), humantime::parse_duration(b)), (Ok(x), Ok(y)) if x == y)
                }
                (a, b) => a == b,
            };
            assert!(
                same,
                "{}: documented default {} but the default is {}",
                d.key, d.default, want
            );
        }
    }

    #[test]
    fn csync2_option_table_covers_csync2_getopt_string() {
        for c in "W:s:Ftp:G:P:C:D:N:HBAIXULlSTMRvhcuoimfxrd"
            .chars()
            .filter(|c| *c != ':')
        {
            assert!(csync2_option(c).is_some(), "-{c}");
        }
        let takes: String = "W:s:Ftp:G:P:C:D:N:HBAIXULlSTMRvhcuoimfxrd".to_string();
        for (i, c) in takes.char_indices().filter(|(_, c)| *c != ':') {
            let wants = takes[i + 1..].starts_with(':');
            assert_eq!(csync2_option(c).unwrap().0, wants, "-{c}");
        }
    }
}
