//! csync2's path decisions, reproduced exactly (groups.c, check.c,
//! prefixsubst.c of csync2 2.0): which group a name belongs to
//! (`match_pattern_list`, `csync_find_next`), which directories the
//! recursive check steps into (`csync_step_into` and the prefix
//! ancestors of `csync_check_mod`), how real paths map to `%prefix%`
//! names, and from those: would `csync2 -cr /` record a path, and would
//! it enter a directory.
//!
//! The rules, for the groups active on this node:
//! * a pattern not starting with `/` or `%` is matched against the
//!   basename with `fnmatch(p, base, 0)`; any other against the whole
//!   name with `FNM_LEADING_DIR`, plus `FNM_PATHNAME` unless the pattern
//!   contains `**`; trailing slashes of patterns are stripped;
//! * per kind the last matching pattern wins; with no match, path
//!   patterns exclude and basename patterns include; a name belongs to a
//!   group only when both kinds include; compare patterns are skipped;
//! * groups are tried in reverse file order (csync2 pushes each new group
//!   at the front of its list); the first group that matches is the one;
//! * the recursive walk starts at `/` and enters a directory when it
//!   belongs to a group, when a cut-down include path pattern (trailing
//!   components removed one at a time) matches it with `FNM_PATHNAME`
//!   (no `FNM_LEADING_DIR`), or when it is a strict ancestor of a prefix
//!   path; only entries of entered directories are looked at;
//! * on reaching a prefix's path the walk also continues in the encoded
//!   namespace `%name%/rest`, where the prefix-ancestor rule does not
//!   apply; csync2 records the encoded name.
//!
//! Pure: no I/O. Paths given here are absolute and normalised (no `//`,
//! no trailing `/`, no `.` or `..` components).
//!
//! Layer: core. Imports [`crate::config`] and [`crate::fnmatch`].

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::PatternKind;
use crate::fnmatch::{fnmatch, Flags};

/// Where a pattern was written, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: u32,
    pub col: u32,
    pub kind: PatternKind,
    /// The pattern as written (before trailing slashes were stripped).
    pub written: Vec<u8>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(&self.written);
        let kw = match self.kind {
            PatternKind::Include => "include",
            PatternKind::Exclude => "exclude",
            PatternKind::Compare | PatternKind::CompareInclude => "compare",
        };
        write!(f, "{}:{}:{kw} {text}", self.file.display(), self.line)?;
        if self.kind == PatternKind::CompareInclude {
            write!(f, " (csync2 treats it as include)")?;
        }
        Ok(())
    }
}

/// One pattern as csync2 uses it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Trailing slashes stripped.
    pub pattern: Vec<u8>,
    pub include: bool,
    /// Compare-mode only: never used by `-c`/`-u`.
    pub compare_only: bool,
    /// Matched against the whole name (starts with `/` or `%`), else
    /// against the basename.
    pub is_path: bool,
    /// Contains `**`: every `*` matches `/` too.
    pub star_matches_slashes: bool,
    pub origin: Origin,
    /// For include path patterns: the pattern with trailing components cut
    /// off one at a time (csync2's step-into candidates), longest first.
    cuts: Vec<Vec<u8>>,
}

impl Rule {
    pub fn new(kind: PatternKind, written: &[u8], origin: Origin) -> Rule {
        let pattern = crate::config::semantic::strip_trailing_slashes(written);
        let include = kind != PatternKind::Exclude;
        let is_path = matches!(pattern.first(), Some(b'/') | Some(b'%'));
        let star_matches_slashes = pattern.windows(2).any(|w| w == b"**");
        let mut cuts = Vec::new();
        if include && is_path {
            let mut t = pattern.as_slice();
            while let Some(i) = t.iter().rposition(|&c| c == b'/') {
                t = &t[..i];
                cuts.push(t.to_vec());
            }
        }
        Rule {
            pattern,
            include,
            compare_only: kind == PatternKind::Compare,
            is_path,
            star_matches_slashes,
            origin,
            cuts,
        }
    }

    fn path_flags(&self) -> Flags {
        if self.star_matches_slashes {
            Flags::LEADING_DIR
        } else {
            Flags::LEADING_DIR | Flags::PATHNAME
        }
    }

    fn cut_flags(&self) -> Flags {
        if self.star_matches_slashes {
            Flags::NONE
        } else {
            Flags::PATHNAME
        }
    }
}

/// An active group's patterns.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    /// In file order.
    pub rules: Vec<Rule>,
}

/// A prefix that has a path on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPath {
    pub name: Vec<u8>,
    /// Trailing slashes stripped.
    pub path: Vec<u8>,
}

impl PrefixPath {
    /// `%name%` + the part of `real` below the prefix path, when `real` is
    /// at or below it (csync2's `prefixencode` test).
    pub fn encode(&self, real: &[u8]) -> Option<Vec<u8>> {
        let p = &self.path;
        if real.len() < p.len() || &real[..p.len()] != p.as_slice() {
            return None;
        }
        let rest = &real[p.len()..];
        if !(rest.is_empty() || rest[0] == b'/') {
            // csync2's walk from a prefix at `/` reaches `/x` as `%p%/x`.
            if p.as_slice() != b"/" {
                return None;
            }
            return Some(self.join(real));
        }
        Some(self.join(rest))
    }

    fn join(&self, rest: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.name.len() + 2 + rest.len());
        v.push(b'%');
        v.extend_from_slice(&self.name);
        v.push(b'%');
        v.extend_from_slice(rest);
        v
    }

    /// Length of the `%name%` root of encoded names.
    fn root_len(&self) -> usize {
        self.name.len() + 2
    }

    /// The real path of an encoded name of this prefix.
    pub fn decode(&self, encoded: &[u8]) -> Option<Vec<u8>> {
        let root = self.join(b"");
        let rest = encoded.strip_prefix(root.as_slice())?;
        let mut v = self.path.clone();
        if self.path.as_slice() == b"/" && rest.starts_with(b"/") {
            v.clear();
        }
        v.extend_from_slice(rest);
        Some(v)
    }
}

/// Why a name is or is not synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Both kinds of pattern include it; `rule` is the deciding path
    /// include.
    Included,
    /// An exclude pattern was the last to match (`rule`).
    Excluded,
    /// No include path pattern matches.
    NoInclude,
}

/// csync2's verdict on one path, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `csync2 -cr /` records the path.
    pub synced: bool,
    /// The group that syncs it (the first matching active group in
    /// csync2's order).
    pub group: Option<String>,
    /// The name csync2 records: the path itself or its `%prefix%` form.
    pub recorded_as: Option<Vec<u8>>,
    pub why: Why,
    /// The deciding pattern, if one.
    pub rule: Option<Origin>,
    /// The directory above the path that the walk never enters, when that
    /// is what keeps it out.
    pub parent: Option<Vec<u8>>,
}

impl fmt::Display for Decision {
    /// The explanation `match -v` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = self
            .parent
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        match (&self.why, &self.rule) {
            (Why::Included, Some(r)) => {
                write!(f, "{r}")?;
                if let Some(name) = &self.recorded_as {
                    if name.first() == Some(&b'%') {
                        write!(f, " (as {})", String::from_utf8_lossy(name))?;
                    }
                }
                Ok(())
            }
            (Why::Excluded, Some(r)) => match parent {
                Some(p) => write!(f, "{r} (excludes parent {p})"),
                None => write!(f, "{r}"),
            },
            _ => match parent {
                Some(p) => write!(
                    f,
                    "no include pattern matches parent {p} (csync2 does not descend into it)"
                ),
                None => write!(f, "no include pattern matches"),
            },
        }
    }
}

/// A group's verdict on one name.
#[derive(Debug, Clone, Copy, Default)]
struct Verdict {
    path_rule: Option<usize>,
    base_rule: Option<usize>,
}

/// The decision engine for one node.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Active groups in csync2's order (reverse file order).
    groups: Vec<RuleGroup>,
    /// Prefixes with a path, in csync2's order (reverse file order).
    prefixes: Vec<PrefixPath>,
}

fn basename(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&c| c == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

impl Rules {
    /// From the active groups and the prefixes with a path, both in file
    /// order.
    pub fn new(groups: Vec<RuleGroup>, prefixes: Vec<PrefixPath>) -> Rules {
        let mut groups = groups;
        groups.reverse();
        let mut prefixes = prefixes;
        prefixes.reverse();
        Rules { groups, prefixes }
    }

    /// Active groups in csync2's order.
    pub fn groups(&self) -> &[RuleGroup] {
        &self.groups
    }

    /// Prefixes with a path in csync2's order.
    pub fn prefixes(&self) -> &[PrefixPath] {
        &self.prefixes
    }

    fn verdict(&self, g: &RuleGroup, name: &[u8], base: &[u8]) -> Verdict {
        let mut v = Verdict::default();
        for (i, r) in g.rules.iter().enumerate() {
            if r.compare_only {
                continue;
            }
            if r.is_path {
                if fnmatch(&r.pattern, name, r.path_flags()) {
                    v.path_rule = Some(i);
                }
            } else if fnmatch(&r.pattern, base, Flags::NONE) {
                v.base_rule = Some(i);
            }
        }
        v
    }

    fn included(g: &RuleGroup, v: Verdict) -> bool {
        let path = v.path_rule.is_some_and(|i| g.rules[i].include);
        let base = v.base_rule.is_none_or(|i| g.rules[i].include);
        path && base
    }

    /// csync2's `csync_find_next(0, name)`: the first active group (in
    /// csync2's order) the name belongs to, with the deciding path rule.
    pub fn find_next(&self, name: &[u8]) -> Option<(usize, usize)> {
        let base = basename(name);
        self.groups.iter().enumerate().find_map(|(gi, g)| {
            let v = self.verdict(g, name, base);
            Self::included(g, v).then(|| (gi, v.path_rule.expect("included")))
        })
    }

    /// Every active group (in csync2's order) the name belongs to: the
    /// groups csync2's `csync_find_peers` walks with `csync_find_next`
    /// when it marks the name dirty, so their hosts are the peers the
    /// name is dirty towards. `name` is the name csync2 records (real, or
    /// `%prefix%/...`).
    pub fn groups_of(&self, name: &[u8]) -> Vec<&str> {
        let base = basename(name);
        self.groups
            .iter()
            .filter(|g| Self::included(g, self.verdict(g, name, base)))
            .map(|g| g.name.as_str())
            .collect()
    }

    /// csync2's `csync_step_into(name)`.
    pub fn step_into(&self, name: &[u8]) -> bool {
        if name == b"/" {
            return true;
        }
        self.groups.iter().any(|g| {
            g.rules
                .iter()
                .any(|r| !r.compare_only && r.cuts.iter().any(|t| fnmatch(t, name, r.cut_flags())))
        })
    }

    /// A strict ancestor of a prefix path (csync2's check_mod makes these
    /// walkable).
    fn prefix_ancestor(&self, name: &[u8]) -> bool {
        self.prefixes.iter().any(|p| {
            name.len() < p.path.len() && p.path[name.len()] == b'/' && p.path.starts_with(name)
        })
    }

    /// Does the walk enter real directory `name` once it reaches it?
    fn enters_real(&self, name: &[u8]) -> bool {
        self.find_next(name).is_some() || self.step_into(name) || self.prefix_ancestor(name)
    }

    /// Does the walk enter encoded directory `name` once it reaches it?
    fn enters_encoded(&self, name: &[u8]) -> bool {
        self.find_next(name).is_some() || self.step_into(name)
    }

    /// The real strict ancestors of `path` below `/`, top-down.
    fn real_ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
        path.iter()
            .enumerate()
            .filter(|&(i, &c)| c == b'/' && i > 0)
            .map(move |(i, _)| &path[..i])
    }

    /// The encoded strict ancestors of `enc` (root `%name%` included),
    /// top-down.
    fn encoded_ancestors(enc: &[u8], root_len: usize) -> impl Iterator<Item = &[u8]> {
        let root = (enc.len() > root_len).then_some(&enc[..root_len]);
        root.into_iter().chain(
            enc.iter()
                .enumerate()
                .skip(root_len + 1)
                .filter(|&(_, &c)| c == b'/')
                .map(move |(i, _)| &enc[..i]),
        )
    }

    /// The first real ancestor the walk does not enter.
    fn real_blocker<'a>(&self, path: &'a [u8]) -> Option<&'a [u8]> {
        Self::real_ancestors(path).find(|a| !self.enters_real(a))
    }

    fn encoded_blocker<'a>(&self, enc: &'a [u8], p: &PrefixPath) -> Option<&'a [u8]> {
        Self::encoded_ancestors(enc, p.root_len()).find(|a| !self.enters_encoded(a))
    }

    /// Whether any prefix path is at or above `path`.
    pub fn under_prefix(&self, path: &[u8]) -> bool {
        self.prefixes.iter().any(|p| p.encode(path).is_some())
    }

    /// Would `csync2 -cr /` record `path`? Exact for any absolute
    /// normalised path, with the reason.
    pub fn decide(&self, path: &[u8]) -> Decision {
        let real_match = self.find_next(path);
        let real_block = self.real_blocker(path);
        if let (Some((gi, ri)), None) = (real_match, real_block) {
            return self.synced(gi, ri, path.to_vec());
        }
        let mut enc_explain = None;
        for p in &self.prefixes {
            let Some(enc) = p.encode(path) else { continue };
            let m = self.find_next(&enc);
            let block = self.encoded_blocker(&enc, p);
            if let (Some((gi, ri)), None) = (m, block) {
                return self.synced(gi, ri, enc);
            }
            if enc_explain.is_none() {
                enc_explain = Some(match (m, block) {
                    (Some(_), Some(b)) => self.explain(b, Some(p.decode(b).unwrap_or_default())),
                    _ => self.explain(&enc, None),
                });
            }
        }
        let real = match (real_match, real_block) {
            (Some(_), Some(b)) => self.explain(b, Some(b.to_vec())),
            _ => self.explain(path, None),
        };
        match enc_explain {
            Some(e) if real.why == Why::NoInclude && real.parent.is_none() => {
                if e.why == Why::NoInclude && e.parent.is_none() {
                    real
                } else {
                    e
                }
            }
            _ => real,
        }
    }

    fn synced(&self, gi: usize, ri: usize, name: Vec<u8>) -> Decision {
        let g = &self.groups[gi];
        Decision {
            synced: true,
            group: Some(g.name.clone()),
            recorded_as: Some(name),
            why: Why::Included,
            rule: Some(g.rules[ri].origin.clone()),
            parent: None,
        }
    }

    /// Why `name` (which belongs to no group) is out; `parent` is the
    /// real directory to name when `name` is an ancestor.
    fn explain(&self, name: &[u8], parent: Option<Vec<u8>>) -> Decision {
        let base = basename(name);
        let verdicts: Vec<(usize, Verdict)> = self
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| (gi, self.verdict(g, name, base)))
            .collect();
        let pick = |gi: usize, ri: usize| Some(self.groups[gi].rules[ri].origin.clone());
        // A path include undone by a basename exclude.
        for &(gi, v) in &verdicts {
            let g = &self.groups[gi];
            if let (Some(p), Some(b)) = (v.path_rule, v.base_rule) {
                if g.rules[p].include && !g.rules[b].include {
                    return self.out(Why::Excluded, pick(gi, b), parent);
                }
            }
        }
        // A path exclude.
        for &(gi, v) in &verdicts {
            if let Some(p) = v.path_rule {
                if !self.groups[gi].rules[p].include {
                    return self.out(Why::Excluded, pick(gi, p), parent);
                }
            }
        }
        self.out(Why::NoInclude, None, parent)
    }

    fn out(&self, why: Why, rule: Option<Origin>, parent: Option<Vec<u8>>) -> Decision {
        Decision {
            synced: false,
            group: None,
            recorded_as: None,
            why,
            rule,
            parent,
        }
    }

    /// Would the walk enter directory `dir`, given that it entered the
    /// parent of `dir` (in whichever namespace)? `/` is always entered.
    pub fn descend(&self, dir: &[u8]) -> bool {
        if dir == b"/" {
            return true;
        }
        if !self.under_prefix(dir) {
            return self.enters_real(dir);
        }
        self.descend_exact(dir)
    }

    /// Would the walk enter directory `dir`? Exact for any path.
    pub fn descend_exact(&self, dir: &[u8]) -> bool {
        if dir == b"/" {
            return true;
        }
        if self.real_blocker(dir).is_none() && self.enters_real(dir) {
            return true;
        }
        self.prefixes.iter().any(|p| {
            p.encode(dir).is_some_and(|enc| {
                self.encoded_blocker(&enc, p).is_none() && self.enters_encoded(&enc)
            })
        })
    }

    /// Would the walk record `path`, given that it entered the parent of
    /// `path` (in whichever namespace)?
    pub fn syncs(&self, path: &[u8]) -> bool {
        if !self.under_prefix(path) {
            return self.find_next(path).is_some();
        }
        self.decide(path).synced
    }
}

/// csync2's name for a path as bytes.
pub fn bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: PatternKind, p: &str, line: u32) -> Rule {
        Rule::new(
            kind,
            p.as_bytes(),
            Origin {
                file: "t.cfg".into(),
                line,
                col: 1,
                kind,
                written: p.as_bytes().to_vec(),
            },
        )
    }

    fn rules(pats: &[(PatternKind, &str)], prefixes: &[(&str, &str)]) -> Rules {
        let g = RuleGroup {
            name: "g".into(),
            rules: pats
                .iter()
                .enumerate()
                .map(|(i, (k, p))| rule(*k, p, i as u32 + 1))
                .collect(),
        };
        Rules::new(
            vec![g],
            prefixes
                .iter()
                .map(|(n, p)| PrefixPath {
                    name: n.as_bytes().to_vec(),
                    path: p.as_bytes().to_vec(),
                })
                .collect(),
        )
    }

    use PatternKind::{Exclude as E, Include as I};

    #[test]
    fn excluded_parent_hides_child() {
        let r = rules(&[(I, "/data"), (E, "*.tmp")], &[]);
        assert!(r.decide(b"/data/x").synced);
        let d = r.decide(b"/data/x.tmp/foo");
        assert!(!d.synced);
        assert_eq!(d.parent.as_deref(), Some(&b"/data/x.tmp"[..]));
        assert_eq!(d.why, Why::Excluded);
        assert!(!r.descend(b"/data/x.tmp"));
        assert!(r.descend(b"/data"));
        assert!(!r.descend(b"/srv"));
    }

    #[test]
    fn include_below_exclude_is_stepped_into() {
        let r = rules(
            &[(I, "/data"), (E, "/data/tmp"), (I, "/data/tmp/keep")],
            &[],
        );
        assert!(r.descend(b"/data/tmp"));
        assert!(!r.decide(b"/data/tmp").synced);
        assert!(r.decide(b"/data/tmp/keep/x").synced);
        assert!(!r.decide(b"/data/tmp/other").synced);
    }

    #[test]
    fn prefix_names_are_encoded() {
        let r = rules(&[(I, "%p%/sub")], &[("p", "/srv/p")]);
        let d = r.decide(b"/srv/p/sub/f");
        assert!(d.synced, "{d:?}");
        assert_eq!(d.recorded_as.as_deref(), Some(&b"%p%/sub/f"[..]));
        assert!(r.descend(b"/srv"));
        assert!(r.descend(b"/srv/p"));
        assert!(!r.descend(b"/srv/p/other"));
        assert!(!r.decide(b"/srv/p/other").synced);
    }

    #[test]
    fn a_name_belongs_to_every_group_that_includes_it() {
        let g = |name: &str, pats: &[(PatternKind, &str)]| RuleGroup {
            name: name.into(),
            rules: pats
                .iter()
                .enumerate()
                .map(|(i, (k, p))| rule(*k, p, i as u32 + 1))
                .collect(),
        };
        // File order a, b, c: csync2 tries them as c, b, a.
        let r = Rules::new(
            vec![
                g("a", &[(I, "/data")]),
                g("b", &[(I, "/data/www"), (E, "*.tmp")]),
                g("c", &[(I, "/srv")]),
            ],
            Vec::new(),
        );
        assert_eq!(r.groups_of(b"/data/www/x"), ["b", "a"]);
        assert_eq!(r.groups_of(b"/data/www/x.tmp"), ["a"]);
        assert_eq!(r.groups_of(b"/data/other"), ["a"]);
        assert!(r.groups_of(b"/etc/x").is_empty());
        let first = r.find_next(b"/data/www/x").map(|(gi, _)| gi);
        assert_eq!(first.map(|gi| r.groups()[gi].name.as_str()), Some("b"));
    }
}
