//! What csync2 makes of a parsed configuration for one node: the checks
//! csync2's parser actions make (and die on), reported here as
//! diagnostics with positions, and the resolved model: which groups are
//! active on this node and under which name, each group's peers, the
//! `%prefix%` paths for this host, and the global settings in force.
//!
//! Reads key files (as csync2 does while parsing); nothing else.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{Config, Diagnostic, PatternDecl, Span, Word};
use crate::fnmatch::{fnmatch, Flags};

/// csync2's `auto` methods.
pub const AUTO_METHODS: &[&str] = &[
    "none", "first", "younger", "older", "bigger", "smaller", "left", "right",
];

/// A key shorter than this is refused by csync2.
pub const MIN_KEY_LEN: usize = 32;

/// A peer of a group, as csync2 records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHost {
    /// The identity csync2 uses: `B` of `A@B`, else the name; lowercased.
    pub name: Vec<u8>,
    /// As written (`A@B` or `A`), for display.
    pub written: String,
    pub slave: bool,
    pub span: Span,
}

/// A group as csync2 sees it on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGroup {
    pub name: String,
    pub span: Span,
    /// This node's name in the group (`B` of `A@B` for the entry whose `A`
    /// is this node); `None` when the group is not active on this node.
    pub myname: Option<Vec<u8>>,
    /// This node is listed in `( )` in this group.
    pub local_slave: bool,
    /// The other hosts, in file order.
    pub hosts: Vec<GroupHost>,
    /// The key file as csync2 opens it.
    pub key_file: Option<PathBuf>,
    /// Patterns in file order.
    pub patterns: Vec<PatternDecl>,
    pub auto: String,
    pub backup_directory: Option<Vec<u8>>,
    pub backup_generations: i64,
}

impl ResolvedGroup {
    pub fn active(&self) -> bool {
        self.myname.is_some()
    }
}

/// A prefix with the path it has on this host, if any `on` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPrefix {
    pub name: Vec<u8>,
    pub span: Span,
    /// Trailing slashes stripped (a lone `/` stays).
    pub path: Option<Vec<u8>>,
    /// Where the winning `on` is.
    pub on_span: Option<Span>,
}

/// The configuration as csync2 uses it on one node.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// This node's name (lowercased).
    pub node: Vec<u8>,
    /// Every group, in file order.
    pub groups: Vec<ResolvedGroup>,
    /// Every prefix, in file order.
    pub prefixes: Vec<ResolvedPrefix>,
    /// The `database` in force without `-D` (the first one).
    pub database: Option<Word>,
    /// The `tempdir` in force (the last one).
    pub tempdir: Option<Word>,
    /// `lock-timeout` (default 12).
    pub lock_timeout: u64,
    pub ignore_uid: bool,
    pub ignore_gid: bool,
    pub ignore_mod: bool,
    pub nossl: Vec<(Vec<u8>, Vec<u8>)>,
    pub diagnostics: Vec<Diagnostic>,
}

/// csync2's `tolower` in the C locale: ASCII only.
pub fn lowercase(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// `SYSTEM_DIR/NAME` as csync2 builds it (string concatenation, so an
/// empty system dir gives `/NAME`).
pub fn system_file(system_dir: &Path, name: &[u8]) -> PathBuf {
    let mut v = system_dir.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    PathBuf::from(OsString::from_vec(v))
}

/// Apply csync2's rules to `cfg` for the node named `node` (already
/// lowercased) with csync2's system directory `system_dir`.
pub fn resolve(cfg: &Config, node: &[u8], system_dir: &Path) -> Resolved {
    let mut diags = Vec::new();
    let mut groups = Vec::new();
    for g in &cfg.groups {
        let mut rg = ResolvedGroup {
            name: g.name.clone(),
            span: g.span,
            myname: None,
            local_slave: false,
            hosts: Vec::new(),
            key_file: None,
            patterns: g.patterns.clone(),
            auto: "none".into(),
            backup_directory: g.backup_directory.as_ref().map(|w| w.text.clone()),
            backup_generations: g
                .backup_generations
                .as_ref()
                .map(|w| atoi(&w.text))
                .unwrap_or(3),
        };
        for h in &g.hosts {
            let host = lowercase(&h.host.text);
            let peer = lowercase(&h.peer.as_ref().unwrap_or(&h.host).text);
            if host == node {
                rg.myname = Some(peer);
                rg.local_slave = h.slave;
            } else {
                let written = match &h.peer {
                    Some(p) => format!("{}@{}", h.host.show(), p.show()),
                    None => h.host.show(),
                };
                rg.hosts.push(GroupHost {
                    name: peer,
                    written,
                    slave: h.slave,
                    span: h.host.span,
                });
            }
        }
        match g.keys.as_slice() {
            [] => {
                if g.closed {
                    diags.push(Diagnostic::error(
                        g.span,
                        format!(
                            "group `{}` has no `key`: csync2 requires one in every group \
                             (\"every group must have a key\"); add `key /etc/csync2.key_{};` \
                             and create it with `csync2 -k FILE`",
                            g.name, g.name
                        ),
                    ));
                }
            }
            [first, rest @ ..] => {
                let path = key_path(system_dir, &first.text);
                if let Err(msg) = check_key(&path) {
                    diags.push(Diagnostic::error(first.span, msg));
                }
                rg.key_file = Some(path);
                for k in rest {
                    diags.push(Diagnostic::error(
                        k.span,
                        format!(
                            "group `{}` has a second `key` (the first is at line {}); csync2 \
                             allows one key a group: remove one",
                            g.name, first.span.line
                        ),
                    ));
                }
            }
        }
        match g.autos.as_slice() {
            [] => {}
            [first, rest @ ..] => {
                let m = first.show();
                if AUTO_METHODS.contains(&m.as_str()) {
                    rg.auto = m;
                } else {
                    diags.push(Diagnostic::error(
                        first.span,
                        format!(
                            "unknown auto method `{m}`; use one of none, first, younger, \
                             older, bigger, smaller, left, right"
                        ),
                    ));
                }
                for a in rest {
                    diags.push(Diagnostic::error(
                        a.span,
                        format!(
                            "group `{}` has a second `auto` (csync2 allows one); remove one",
                            g.name
                        ),
                    ));
                }
            }
        }
        if let Some(w) = &g.backup_generations {
            if !is_number(&w.text) {
                diags.push(Diagnostic::warning(
                    w.span,
                    format!(
                        "backup-generations `{}` is not a number; csync2 reads it as {}",
                        w.show(),
                        atoi(&w.text)
                    ),
                ));
            }
        }
        groups.push(rg);
    }

    let mut prefixes = Vec::new();
    for p in &cfg.prefixes {
        let mut rp = ResolvedPrefix {
            name: p.name.text.clone(),
            span: p.span,
            path: None,
            on_span: None,
        };
        for (glob, path) in &p.entries {
            if path.text.first() != Some(&b'/') {
                diags.push(Diagnostic::error(
                    path.span,
                    format!(
                        "prefix path `{}` is not absolute (csync2: \"Prefix '{}' is not an \
                         absolute path\"); write it starting with `/`",
                        path.show(),
                        path.show()
                    ),
                ));
                continue;
            }
            if rp.path.is_none() && fnmatch(&glob.text, node, Flags::NONE) {
                rp.path = Some(strip_trailing_slashes(&path.text));
                rp.on_span = Some(glob.span);
            }
        }
        prefixes.push(rp);
    }

    let mut ignore = (false, false, false);
    for w in &cfg.ignore {
        match w.text.as_slice() {
            b"uid" => ignore.0 = true,
            b"gid" => ignore.1 = true,
            b"mod" => ignore.2 = true,
            _ => diags.push(Diagnostic::error(
                w.span,
                format!(
                    "unknown `ignore` property `{}`; use uid, gid or mod",
                    w.show()
                ),
            )),
        }
    }

    for span in &cfg.no_cygwin_lowercase {
        diags.push(Diagnostic::error(
            *span,
            "`no-cygwin-lowercase` is refused by csync2 on Linux (\"this is not a cygwin \
             csync2\"); remove it"
                .to_string(),
        ));
    }

    let mut lock_timeout = 12;
    for w in &cfg.lock_timeout {
        if !is_number(&w.text) {
            diags.push(Diagnostic::warning(
                w.span,
                format!(
                    "lock-timeout `{}` is not a number; csync2 reads it as {}",
                    w.show(),
                    atoi(&w.text)
                ),
            ));
        }
        lock_timeout = atoi(&w.text).clamp(0, u32::MAX as i64) as u64;
    }
    for w in cfg.database.iter().skip(1) {
        diags.push(Diagnostic::warning(
            w.span,
            format!(
                "this `database` is ignored: csync2 uses the first one (line {})",
                cfg.database[0].span.line
            ),
        ));
    }

    Resolved {
        node: node.to_vec(),
        groups,
        prefixes,
        database: cfg.database.first().cloned(),
        tempdir: cfg.tempdir.last().cloned(),
        lock_timeout,
        ignore_uid: ignore.0,
        ignore_gid: ignore.1,
        ignore_mod: ignore.2,
        nossl: cfg
            .nossl
            .iter()
            .map(|(a, b)| (a.text.clone(), b.text.clone()))
            .collect(),
        diagnostics: diags,
    }
}

/// The key file as csync2 opens it: relative names live in the system dir.
pub fn key_path(system_dir: &Path, name: &[u8]) -> PathBuf {
    if name.first().is_some_and(|&c| c != b'/') {
        system_file(system_dir, name)
    } else {
        PathBuf::from(OsString::from_vec(name.to_vec()))
    }
}

/// csync2's key check: the first line (at most 1023 bytes) must be at
/// least 32 bytes of `[A-Za-z0-9._]`.
pub fn check_key(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let data = std::fs::read(path).map_err(|e| {
        format!("cannot read key file {shown}: {e}; create it with `csync2 -k {shown}`")
    })?;
    if data.is_empty() {
        return Err(format!(
            "key file {shown} is empty; create a key with `csync2 -k {shown}` (remove the \
             empty file first)"
        ));
    }
    let mut line = &data[..data.len().min(1023)];
    if let Some(i) = line.iter().position(|&c| c == b'\n') {
        line = &line[..i];
    }
    if let Some(i) = line.iter().position(|&c| c == 0) {
        line = &line[..i];
    }
    if let Some(&bad) = line
        .iter()
        .find(|&&c| !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_'))
    {
        return Err(format!(
            "key file {shown} has a character csync2 does not allow ({:?}); keys are \
             [A-Za-z0-9._], make a new one with `csync2 -k FILE`",
            bad as char
        ));
    }
    if line.len() < MIN_KEY_LEN {
        return Err(format!(
            "key in {shown} is too short ({} characters, csync2 needs at least {MIN_KEY_LEN}); \
             make a new one with `csync2 -k FILE`",
            line.len()
        ));
    }
    Ok(())
}

/// csync2 strips trailing slashes from patterns and prefix paths, but
/// never the first byte.
pub fn strip_trailing_slashes(b: &[u8]) -> Vec<u8> {
    let mut end = b.len();
    while end > 1 && b[end - 1] == b'/' {
        end -= 1;
    }
    b[..end].to_vec()
}

fn is_number(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").unwrap_or(b);
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

/// C's `atoi`: leading blanks, a sign, digits; 0 when none.
pub fn atoi(b: &[u8]) -> i64 {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if neg {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_slashes_but_keeps_root() {
        assert_eq!(strip_trailing_slashes(b"/data//"), b"/data");
        assert_eq!(strip_trailing_slashes(b"/"), b"/");
        assert_eq!(strip_trailing_slashes(b"///"), b"/");
        assert_eq!(strip_trailing_slashes(b"x/"), b"x");
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b"-3"), -3);
    }

    #[test]
    fn system_file_is_concatenation() {
        assert_eq!(
            system_file(Path::new(""), b"csync2.cfg"),
            Path::new("/csync2.cfg")
        );
        assert_eq!(system_file(Path::new("/etc/"), b"k"), Path::new("/etc//k"));
    }
}
