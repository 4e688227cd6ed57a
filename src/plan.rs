//! This node's plan, computed from csync2.cfg exactly as csync2 computes
//! it: the node's identity (`-N`, else gethostname lowercased), the groups
//! active on it, each group's peers with the identity csync2 uses for them,
//! `%prefix%` paths for this host, the roots to watch, and the path
//! decisions ([`crate::paths`]) behind [`crate::vocab::TreeFilter`].
//!
//! [`Plan::load`] fails on anything csync2 itself would refuse (and on a
//! node that is in no group); [`Plan::analyze`] always returns what could
//! be worked out, with every problem, for `check-config`.
//!
//! Layer: core. Imports the core only: [`crate::config`], [`crate::paths`],
//! [`crate::confirm`], [`crate::vocab`], [`crate::exit`].

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::config::semantic::{self, GroupHost, Resolved};
use crate::config::{Config, Diagnostic, PatternKind, Severity, Span};
use crate::exit::Exit;
use crate::paths::{Decision, Origin, PrefixPath, Rule, RuleGroup, Rules};
use crate::vocab::TreeFilter;

/// csync2's default database directory (Debian's build).
pub const CSYNC2_DBDIR: &str = "/var/lib/csync2";

/// Where to find csync2.cfg and who this node is: the same inputs csync2
/// itself takes (`CSYNC2_SYSTEM_DIR`, `-C`, `-N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// `$CSYNC2_SYSTEM_DIR`, default `/etc`.
    pub system_dir: PathBuf,
    /// `-C NAME`: read `csync2_NAME.cfg` instead of `csync2.cfg`.
    pub cfg_name: Option<String>,
    /// `-N NAME`; `None` means gethostname().
    pub node: Option<String>,
}

impl LoadOptions {
    /// What csync2 itself would use with `-C cfg_name` and `-N node`: the
    /// system directory from `$CSYNC2_SYSTEM_DIR`, else `/etc`.
    pub fn new(cfg_name: Option<String>, node: Option<String>) -> LoadOptions {
        LoadOptions {
            system_dir: std::env::var_os("CSYNC2_SYSTEM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc")),
            cfg_name,
            node,
        }
    }

    /// The main config file as csync2 opens it: `SYSTEM_DIR/csync2.cfg`,
    /// or `SYSTEM_DIR/csync2_NAME.cfg` with `-C NAME` (an empty name
    /// counts as none, as in csync2). Errors when NAME is not
    /// `[a-z0-9]+`.
    pub fn config_path(&self) -> Result<PathBuf, String> {
        match self.cfg_name.as_deref().filter(|n| !n.is_empty()) {
            None => Ok(semantic::system_file(&self.system_dir, b"csync2.cfg")),
            Some(name) => {
                if !name
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
                {
                    return Err(format!(
                        "-C {name}: csync2 limits config names to [a-z0-9]+ (\"Config names \
                         are limited to [a-z0-9]+\"); use a name of lowercase letters and digits"
                    ));
                }
                Ok(semantic::system_file(
                    &self.system_dir,
                    format!("csync2_{name}.cfg").as_bytes(),
                ))
            }
        }
    }

    /// This node's name as csync2 computes it, and where it came from.
    pub fn node_name(&self) -> (Vec<u8>, NodeSource) {
        let (raw, source) = match &self.node {
            Some(n) => (n.as_bytes().to_vec(), NodeSource::Flag),
            None => (
                nix::unistd::gethostname()
                    .map(|h| h.into_vec())
                    .unwrap_or_default(),
                NodeSource::Hostname,
            ),
        };
        // csync2 keeps at most 255 bytes (a 256-byte buffer), lowercased.
        let mut raw = raw;
        if let Some(i) = raw.iter().position(|&c| c == 0) {
            raw.truncate(i);
        }
        raw.truncate(255);
        (semantic::lowercase(&raw), source)
    }
}

/// Where this node's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// `-N NAME`.
    Flag,
    /// gethostname(2).
    Hostname,
}

/// A peer this node pushes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The identity csync2 uses for the peer: `B` of `host A@B`, else the
    /// host name; lowercased. What `-P` matches, what the dirty table
    /// stores, and the name csync2 connects to.
    pub name: String,
    /// Listed in parentheses in at least one shared group (receive only).
    pub slave: bool,
    /// Groups (active on this node) that list the peer.
    pub groups: Vec<String>,
}

/// Why loading failed: every problem found, each printable as
/// `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("csync2 configuration is unusable")]
pub struct LoadError {
    pub diagnostics: Vec<String>,
}

impl LoadError {
    /// The one way a command reports an unusable csync2.cfg: every
    /// problem on a line of its own, then a last line that says so, as a
    /// configuration error (exit code [`crate::exit::CONFIG`]).
    pub fn into_exit(self) -> Exit {
        let mut msg = String::new();
        for d in &self.diagnostics {
            msg.push_str(d);
            msg.push('\n');
        }
        if self.diagnostics.is_empty() {
            msg.push_str(&format!("csync2-watch: {self}"));
        } else {
            msg.push_str(&format!("csync2-watch: {self}; fix the errors above"));
        }
        Exit::config(msg)
    }
}

/// A pattern of a group, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternInfo {
    pub kind: PatternKind,
    /// As written.
    pub pattern: Vec<u8>,
    /// `FILE:LINE:COL`.
    pub location: String,
}

/// A group of the configuration as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// `FILE:LINE:COL` of the `group` keyword.
    pub location: String,
    /// Active on this node.
    pub active: bool,
    /// This node's identity in the group (`B` of `A@B`), when active.
    pub myname: Option<String>,
    /// This node is a slave in the group.
    pub local_slave: bool,
    /// The other hosts: (identity, as written, slave).
    pub hosts: Vec<(String, String, bool)>,
    pub key_file: Option<PathBuf>,
    pub auto: String,
    pub patterns: Vec<PatternInfo>,
}

/// A prefix with its path on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInfo {
    pub name: String,
    pub path: Option<PathBuf>,
    pub location: String,
}

/// What this node syncs, and with whom.
#[derive(Debug, Clone)]
pub struct Plan {
    node: String,
    node_source: NodeSource,
    config_file: PathBuf,
    files: Vec<PathBuf>,
    system_dir: PathBuf,
    cfg_name: Option<String>,
    groups: Vec<GroupInfo>,
    prefixes: Vec<PrefixInfo>,
    peers: Vec<Peer>,
    roots: Vec<PathBuf>,
    tempdir: Option<PathBuf>,
    tempdir_location: Option<String>,
    database: Option<OsString>,
    lock_timeout: u64,
    ignores: crate::confirm::Ignores,
    rules: Rules,
    /// `FILE:LINE:COL` of each root's first include pattern.
    root_origins: Vec<String>,
    warnings: Vec<String>,
}

/// Everything worked out about a configuration, usable or not.
#[derive(Debug)]
pub struct Analysis {
    /// As much of the plan as could be worked out.
    pub plan: Plan,
    /// `FILE:LINE:COL: message` for each error.
    pub errors: Vec<String>,
}

impl Plan {
    /// Read and check csync2's configuration for this node.
    pub fn load(opts: &LoadOptions) -> Result<Plan, LoadError> {
        let a = Plan::analyze(opts);
        if a.errors.is_empty() {
            Ok(a.plan)
        } else {
            Err(LoadError {
                diagnostics: a.errors,
            })
        }
    }

    /// Read csync2's configuration for this node and work out all that
    /// can be, listing every problem. `config` includes are opened
    /// relative to this process's working directory, as csync2 does.
    pub fn analyze(opts: &LoadOptions) -> Analysis {
        let (node, node_source) = opts.node_name();
        let mut plan = Plan {
            node: String::from_utf8_lossy(&node).into_owned(),
            node_source,
            config_file: PathBuf::new(),
            files: Vec::new(),
            system_dir: opts.system_dir.clone(),
            cfg_name: opts.cfg_name.clone().filter(|n| !n.is_empty()),
            groups: Vec::new(),
            prefixes: Vec::new(),
            peers: Vec::new(),
            roots: Vec::new(),
            tempdir: None,
            tempdir_location: None,
            database: None,
            lock_timeout: 12,
            ignores: crate::confirm::Ignores::default(),
            rules: Rules::default(),
            root_origins: Vec::new(),
            warnings: Vec::new(),
        };
        let path = match opts.config_path() {
            Ok(p) => p,
            Err(msg) => {
                return Analysis {
                    plan,
                    errors: vec![format!("-C: {msg}")],
                }
            }
        };
        plan.config_file = path.clone();
        plan.files = vec![path.clone()];
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                let hint = if opts.cfg_name.is_some() {
                    "check -C and CSYNC2_SYSTEM_DIR"
                } else {
                    "check CSYNC2_SYSTEM_DIR, or pass -C NAME for csync2_NAME.cfg"
                };
                return Analysis {
                    plan,
                    errors: vec![format!(
                        "{}:1:1: cannot open csync2's config file: {e}; {hint}",
                        path.display()
                    )],
                };
            }
        };
        let cfg = Config::parse(&path, data, None);
        let resolved = semantic::resolve(&cfg, &node, &opts.system_dir);
        plan.fill(&cfg, &resolved, opts);
        let mut diags: Vec<Diagnostic> = cfg.diagnostics.clone();
        diags.extend(resolved.diagnostics.iter().cloned());
        diags.extend(plan.extra_diagnostics(&cfg, &resolved));
        diags.sort_by_key(|d| d.span);
        diags.dedup();
        let mut errors = Vec::new();
        for d in &diags {
            let line = d.render(&cfg.files);
            match d.severity {
                Severity::Error => errors.push(line),
                Severity::Warning => plan.warnings.push(line),
            }
        }
        Analysis { plan, errors }
    }

    fn loc(cfg: &Config, span: Span) -> String {
        format!("{}:{}:{}", cfg.file(span).display(), span.line, span.col)
    }

    fn fill(&mut self, cfg: &Config, r: &Resolved, _opts: &LoadOptions) {
        self.files = cfg.files.clone();
        let mut rule_groups = Vec::new();
        for g in &r.groups {
            let patterns = g
                .patterns
                .iter()
                .map(|p| PatternInfo {
                    kind: p.kind,
                    pattern: p.word.text.clone(),
                    location: Self::loc(cfg, p.word.span),
                })
                .collect();
            self.groups.push(GroupInfo {
                name: g.name.clone(),
                location: Self::loc(cfg, g.span),
                active: g.active(),
                myname: g
                    .myname
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned()),
                local_slave: g.local_slave,
                hosts: g
                    .hosts
                    .iter()
                    .map(|h: &GroupHost| {
                        (
                            String::from_utf8_lossy(&h.name).into_owned(),
                            h.written.clone(),
                            h.slave,
                        )
                    })
                    .collect(),
                key_file: g.key_file.clone(),
                auto: g.auto.clone(),
                patterns,
            });
            if !g.active() {
                continue;
            }
            for h in &g.hosts {
                let name = String::from_utf8_lossy(&h.name).into_owned();
                match self.peers.iter_mut().find(|p| p.name == name) {
                    Some(p) => {
                        p.slave |= h.slave;
                        if !p.groups.contains(&g.name) {
                            p.groups.push(g.name.clone());
                        }
                    }
                    None => self.peers.push(crate::plan::Peer {
                        name,
                        slave: h.slave,
                        groups: vec![g.name.clone()],
                    }),
                }
            }
            let rules = g
                .patterns
                .iter()
                .map(|p| {
                    Rule::new(
                        p.kind,
                        &p.word.text,
                        Origin {
                            file: cfg.file(p.word.span).to_path_buf(),
                            line: p.word.span.line,
                            col: p.word.span.col,
                            kind: p.kind,
                            written: p.word.text.clone(),
                        },
                    )
                })
                .collect();
            rule_groups.push(RuleGroup {
                name: g.name.clone(),
                rules,
            });
        }
        let prefix_paths: Vec<PrefixPath> = r
            .prefixes
            .iter()
            .filter_map(|p| {
                p.path.as_ref().map(|path| PrefixPath {
                    name: p.name.clone(),
                    path: path.clone(),
                })
            })
            .collect();
        self.prefixes = r
            .prefixes
            .iter()
            .map(|p| PrefixInfo {
                name: String::from_utf8_lossy(&p.name).into_owned(),
                path: p
                    .path
                    .as_ref()
                    .map(|v| PathBuf::from(OsString::from_vec(v.clone()))),
                location: Self::loc(cfg, p.span),
            })
            .collect();
        self.rules = Rules::new(rule_groups, prefix_paths);
        self.tempdir = r
            .tempdir
            .as_ref()
            .map(|w| PathBuf::from(OsString::from_vec(w.text.clone())));
        self.tempdir_location = r.tempdir.as_ref().map(|w| Self::loc(cfg, w.span));
        self.database = r
            .database
            .as_ref()
            .map(|w| OsString::from_vec(w.text.clone()));
        self.lock_timeout = r.lock_timeout;
        self.ignores = crate::confirm::Ignores {
            uid: r.ignore_uid,
            gid: r.ignore_gid,
            mode: r.ignore_mod,
        };
        self.compute_roots(cfg, r);
    }

    /// Roots: for each active include path pattern, its longest prefix of
    /// whole wildcard-free components (after `%prefix%` substitution).
    fn compute_roots(&mut self, cfg: &Config, r: &Resolved) {
        let mut roots: Vec<(Vec<u8>, String)> = Vec::new();
        for g in r.groups.iter().filter(|g| g.active()) {
            for p in &g.patterns {
                if p.kind == PatternKind::Exclude || p.kind == PatternKind::Compare {
                    continue;
                }
                let pat = semantic::strip_trailing_slashes(&p.word.text);
                let loc = Self::loc(cfg, p.word.span);
                let substituted: Vec<Vec<u8>> = match pat.first() {
                    Some(b'/') => vec![pat.clone()],
                    Some(b'%') => self.substitute_prefix(&pat),
                    _ => continue,
                };
                for s in substituted {
                    roots.push((literal_prefix(&s), loc.clone()));
                }
            }
        }
        roots.sort();
        let mut kept: Vec<(Vec<u8>, String)> = Vec::new();
        for (root, loc) in roots {
            if kept.iter().any(|(k, _)| is_at_or_below(&root, k)) {
                continue;
            }
            kept.push((root, loc));
        }
        self.roots = kept
            .iter()
            .map(|(r, _)| PathBuf::from(OsString::from_vec(r.clone())))
            .collect();
        self.root_origins = kept.into_iter().map(|(_, l)| l).collect();
    }

    /// The real paths a `%name%...` pattern can stand for on this host.
    fn substitute_prefix(&self, pat: &[u8]) -> Vec<Vec<u8>> {
        let end = pat[1..].iter().position(|&c| c == b'%').map(|i| i + 1);
        let (name, rest) = match end {
            Some(e) => (&pat[1..e], &pat[e + 1..]),
            None => (&pat[1..], &b""[..]),
        };
        if has_glob(name) {
            // `%*%/x`: any prefix whose `%name%` matches; watch them all.
            return self
                .rules
                .prefixes()
                .iter()
                .map(|p| p.path.clone())
                .collect();
        }
        match self.rules.prefixes().iter().find(|p| p.name == name) {
            Some(p) => {
                let mut v = p.path.clone();
                if v.as_slice() == b"/" && rest.starts_with(b"/") {
                    v.clear();
                }
                v.extend_from_slice(rest);
                if v.is_empty() {
                    v.push(b'/');
                }
                vec![v]
            }
            None => Vec::new(),
        }
    }

    /// Problems csync2-watch adds to csync2's own.
    fn extra_diagnostics(&self, cfg: &Config, r: &Resolved) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let first_span = cfg
            .groups
            .iter()
            .flat_map(|g| g.hosts.first().map(|h| h.host.span))
            .next()
            .or_else(|| cfg.groups.first().map(|g| g.span))
            .unwrap_or(Span {
                file: 0,
                line: 1,
                col: 1,
            });
        let any_syntax_error = cfg.has_errors();
        if !r.groups.iter().any(|g| g.active()) && !any_syntax_error {
            let hosts: Vec<String> = cfg
                .groups
                .iter()
                .flat_map(|g| g.hosts.iter().map(|h| h.host.show().to_ascii_lowercase()))
                .collect();
            let source = match self.node_source {
                NodeSource::Flag => "given with -N",
                NodeSource::Hostname => "from gethostname",
            };
            out.push(Diagnostic::error(
                first_span,
                format!(
                    "this node ({}, {source}) is not a member of any group (csync2: \"This host \
                     is not a member of any configured group\"); hosts named: {}; add it to a \
                     `host` list or pass -N NAME",
                    self.node,
                    if hosts.is_empty() {
                        "none".to_string()
                    } else {
                        hosts.join(", ")
                    }
                ),
            ));
        }
        for (g, rg) in cfg.groups.iter().zip(&r.groups) {
            // The compare quirk.
            let mut i = 0;
            while i < g.patterns.len() {
                if g.patterns[i].kind == PatternKind::CompareInclude {
                    let start = i;
                    while g.patterns[i].kind == PatternKind::CompareInclude {
                        i += 1;
                    }
                    let made: Vec<String> = g.patterns[start..i]
                        .iter()
                        .map(|p| format!("`{}`", p.word.show()))
                        .collect();
                    out.push(Diagnostic::warning(
                        g.patterns[start].word.span,
                        format!(
                            "csync2 reads `compare` lists oddly: {} become include patterns \
                             and only `{}` is a compare pattern; write one pattern per \
                             `compare` statement",
                            made.join(", "),
                            g.patterns[i].word.show()
                        ),
                    ));
                }
                i += 1;
            }
            if !rg.active() {
                continue;
            }
            if !g.patterns.iter().any(|p| {
                p.kind != PatternKind::Exclude
                    && p.kind != PatternKind::Compare
                    && matches!(p.word.text.first(), Some(b'/') | Some(b'%'))
            }) {
                out.push(Diagnostic::warning(
                    g.span,
                    format!(
                        "group `{}` has no include path pattern (starting with `/` or `%`): \
                         csync2 syncs nothing in it",
                        g.name
                    ),
                ));
            }
            for p in &g.patterns {
                if p.word.text.first() != Some(&b'%') {
                    continue;
                }
                let end = p.word.text[1..].iter().position(|&c| c == b'%');
                let Some(e) = end else { continue };
                let name = &p.word.text[1..e + 1];
                if has_glob(name) {
                    continue;
                }
                let defined = r
                    .prefixes
                    .iter()
                    .any(|x| x.name == name && x.path.is_some());
                if !defined {
                    let known = r.prefixes.iter().any(|x| x.name == name);
                    out.push(Diagnostic::warning(
                        p.word.span,
                        if known {
                            format!(
                                "prefix `{}` has no `on` entry matching this host ({}), so \
                                 this pattern matches nothing here",
                                String::from_utf8_lossy(name),
                                self.node
                            )
                        } else {
                            format!(
                                "prefix `{}` is not defined (add `prefix {} {{ on {}: /PATH; \
                                 }}`), so this pattern matches nothing",
                                String::from_utf8_lossy(name),
                                String::from_utf8_lossy(name),
                                self.node
                            )
                        },
                    ));
                }
            }
        }
        let lock = semantic::system_file(&self.system_dir, b"csync2.lock");
        if lock.exists() {
            out.push(Diagnostic::warning(
                Span {
                    file: 0,
                    line: 1,
                    col: 1,
                },
                format!(
                    "{} exists: every csync2 command exits 1 until it is removed",
                    lock.display()
                ),
            ));
        }
        out
    }

    /// This node's name as csync2 computes it (lowercased).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the node's name came from.
    pub fn node_source(&self) -> NodeSource {
        self.node_source
    }

    /// The main configuration file that was read.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// Every configuration file read (the main one first, then `config`
    /// includes in the order csync2 opens them).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// csync2's system directory (`CSYNC2_SYSTEM_DIR`).
    pub fn system_dir(&self) -> &Path {
        &self.system_dir
    }

    /// `-C NAME`, if one was given (and not empty).
    pub fn cfg_name(&self) -> Option<&str> {
        self.cfg_name.as_deref()
    }

    /// Every group in file order, active or not.
    pub fn groups(&self) -> &[GroupInfo] {
        &self.groups
    }

    /// Every prefix in file order with its path on this host.
    pub fn prefixes(&self) -> &[PrefixInfo] {
        &self.prefixes
    }

    /// Every peer of every group active on this node, deduplicated by name,
    /// in a stable order (file order of groups, then of hosts).
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The directories to watch recursively: for each include path pattern
    /// (after `%prefix%` substitution), its longest wildcard-free directory
    /// prefix; deduplicated, none below another, sorted. A root may name a
    /// non-directory (`include /etc/csync2.cfg;`).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `FILE:LINE:COL` of the pattern behind each of [`Plan::roots`].
    pub fn root_origins(&self) -> &[String] {
        &self.root_origins
    }

    /// csync2's `tempdir` setting, if any.
    pub fn tempdir(&self) -> Option<&Path> {
        self.tempdir.as_deref()
    }

    /// `FILE:LINE:COL` of the `tempdir` in force.
    pub fn tempdir_location(&self) -> Option<&str> {
        self.tempdir_location.as_deref()
    }

    /// csync2's `database` setting from the config, if any (`-D` wins).
    pub fn database(&self) -> Option<&OsString> {
        self.database.as_ref()
    }

    /// The database csync2 opens, given its `-D` (if any): `-D`, else
    /// the config's `database`; a directory (or nothing) becomes
    /// `sqlite3://DIR/NODE[_CFG].db3` with DIR defaulting to
    /// /var/lib/csync2.
    pub fn csync2_database(&self, d_flag: Option<&OsStr>) -> OsString {
        let given = d_flag
            .map(OsStr::to_os_string)
            .or_else(|| self.database.clone());
        let bytes = given
            .as_ref()
            .map(|g| g.as_bytes().to_vec())
            .unwrap_or_default();
        if !bytes.is_empty() && bytes[0] != b'/' {
            return given.unwrap_or_default();
        }
        let dir = if bytes.is_empty() {
            CSYNC2_DBDIR.as_bytes().to_vec()
        } else {
            bytes
        };
        let mut v = b"sqlite3://".to_vec();
        v.extend_from_slice(&dir);
        v.push(b'/');
        v.extend_from_slice(self.node.as_bytes());
        if let Some(c) = &self.cfg_name {
            v.push(b'_');
            v.extend_from_slice(c.as_bytes());
        }
        v.extend_from_slice(b".db3");
        OsString::from_vec(v)
    }

    /// csync2's `lock-timeout` (seconds, default 12).
    pub fn lock_timeout(&self) -> u64 {
        self.lock_timeout
    }

    /// Non-fatal problems, each `FILE:LINE:COL: warning: message`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What csync2's check texts leave out (`ignore uid|gid|mod;`).
    pub fn ignores(&self) -> crate::confirm::Ignores {
        self.ignores
    }

    /// The decision engine.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Would `csync2 -cr /` record `path` (absolute, normalised)? With
    /// the deciding pattern. Exact for any path, no precondition.
    pub fn decide(&self, path: &Path) -> Decision {
        self.rules.decide(path.as_os_str().as_bytes())
    }

    /// The peers a synced path is dirty towards after a change, as csync2
    /// marks it (`csync_find_peers`): every host of every active group
    /// the recorded name belongs to, in [`Plan::peers`] order. None for a
    /// path that is not synced.
    pub fn peers_of(&self, decision: &Decision) -> Vec<&Peer> {
        let Some(name) = decision.recorded_as.as_deref().filter(|_| decision.synced) else {
            return Vec::new();
        };
        let groups = self.rules.groups_of(name);
        self.peers
            .iter()
            .filter(|p| p.groups.iter().any(|g| groups.contains(&g.as_str())))
            .collect()
    }

    /// Is `path` (absolute, normalised) at or below one of
    /// [`Plan::roots`]? A path that is not is outside every tree csync2
    /// syncs here.
    pub fn in_a_tree(&self, path: &Path) -> bool {
        let p = path.as_os_str().as_bytes();
        self.roots
            .iter()
            .any(|r| is_at_or_below(p, r.as_os_str().as_bytes()))
    }

    /// The real path behind a name csync2 prints (`%prefix%/rest`, decoded
    /// with this host's prefix paths, or a real path as it is); `None` for
    /// a prefix this host has no path for.
    pub fn real_name(&self, name: &[u8]) -> Option<PathBuf> {
        if name.first() == Some(&b'%') {
            let real = self.rules.prefixes().iter().find_map(|p| p.decode(name))?;
            Some(PathBuf::from(OsString::from_vec(real)))
        } else {
            Some(PathBuf::from(OsStr::from_bytes(name)))
        }
    }
}

impl TreeFilter for Plan {
    /// Would `csync2 -cr /` enter `dir`? Exact when the parent of `dir`
    /// was entered (the watcher only asks then).
    fn descend(&self, dir: &Path) -> bool {
        self.rules.descend(dir.as_os_str().as_bytes())
    }

    /// Would `csync2 -cr /` record `path`? Exact when the parent of
    /// `path` was entered.
    fn syncs(&self, path: &Path) -> bool {
        self.rules.syncs(path.as_os_str().as_bytes())
    }
}

fn has_glob(b: &[u8]) -> bool {
    b.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
}

/// The longest prefix of whole components without glob characters.
fn literal_prefix(p: &[u8]) -> Vec<u8> {
    let mut end = 0;
    let mut i = 0;
    while i < p.len() {
        let next = p[i + 1..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(p.len(), |j| i + 1 + j);
        if has_glob(&p[i..next]) {
            break;
        }
        end = next;
        i = next;
    }
    if end == 0 {
        b"/".to_vec()
    } else {
        p[..end].to_vec()
    }
}

fn is_at_or_below(path: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return true;
    }
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(b"/data/www"), b"/data/www");
        assert_eq!(literal_prefix(b"/data/*/www"), b"/data");
        assert_eq!(literal_prefix(b"/d*"), b"/");
        assert_eq!(literal_prefix(b"/"), b"/");
        assert_eq!(literal_prefix(b"/a/b\\*c/d"), b"/a");
    }

    #[test]
    fn nesting() {
        assert!(is_at_or_below(b"/a/b", b"/a"));
        assert!(!is_at_or_below(b"/ab", b"/a"));
        assert!(is_at_or_below(b"/a", b"/"));
    }

    #[test]
    fn a_load_error_lists_every_problem_then_says_so() {
        let e = LoadError {
            diagnostics: vec!["a.cfg:1:1: one".into(), "a.cfg:2:1: two".into()],
        };
        let exit = e.into_exit();
        assert_eq!(exit.code, crate::exit::CONFIG);
        assert_eq!(
            exit.message,
            "a.cfg:1:1: one\na.cfg:2:1: two\n\
             csync2-watch: csync2 configuration is unusable; fix the errors above"
        );
        let none = LoadError {
            diagnostics: Vec::new(),
        };
        assert_eq!(
            none.into_exit().message,
            "csync2-watch: csync2 configuration is unusable"
        );
    }

    #[test]
    fn peers_of_a_path_are_the_hosts_of_every_group_it_belongs_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), [b'k'; 64]).unwrap();
        std::fs::write(
            dir.path().join("csync2.cfg"),
            "nossl * *;\n\
             prefix p { on me: /srv/p; }\n\
             group all { host me a b; key k; include /data; include %p%; }\n\
             group www { host me c (d); key k; include /data/www; exclude *.tmp; }\n\
             group other { host x y; key k; include /data; }\n",
        )
        .unwrap();
        let plan = Plan::load(&LoadOptions {
            system_dir: dir.path().to_path_buf(),
            cfg_name: None,
            node: Some("me".into()),
        })
        .unwrap();
        let names = |p: &str| -> Vec<String> {
            let d = plan.decide(Path::new(p));
            plan.peers_of(&d).iter().map(|p| p.name.clone()).collect()
        };
        assert_eq!(names("/data/www/x"), ["a", "b", "c", "d"]);
        assert_eq!(names("/data/www/x.tmp"), ["a", "b"]);
        assert_eq!(names("/data/f"), ["a", "b"]);
        assert_eq!(names("/srv/p/f"), ["a", "b"]);
        assert!(names("/etc/f").is_empty());
        assert!(plan.in_a_tree(Path::new("/data/www/x.tmp")));
        assert!(plan.in_a_tree(Path::new("/srv/p")));
        assert!(!plan.in_a_tree(Path::new("/srv")));
        assert!(!plan.in_a_tree(Path::new("/database")));
        assert_eq!(
            plan.real_name(b"%p%/sub/f"),
            Some(PathBuf::from("/srv/p/sub/f"))
        );
        assert_eq!(plan.real_name(b"/data/f"), Some(PathBuf::from("/data/f")));
        assert_eq!(plan.real_name(b"%nope%/f"), None);
    }
}
