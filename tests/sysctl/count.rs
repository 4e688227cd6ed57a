//! `csync2-watch sysctl`'s directory count on real, generated trees: every
//! real directory the filter lets the walk into is counted once, excluded
//! subtrees, symlinks and files are not, awkward names pass through, and
//! walking from `/` adds exactly the ancestors of the roots.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use csync2_watch::sysctl::count_watched_dirs;
use csync2_watch::watch::TreeFilter;
use proptest::prelude::*;

use crate::support::beside_source;

/// Configuration input for the walk: include roots, excluded path
/// prefixes, and an excluded basename suffix (like csync2's `exclude
/// *.skip`). Records every directory it is asked about.
struct Filter {
    includes: Vec<PathBuf>,
    excludes: Vec<PathBuf>,
    suffix: &'static [u8],
    asked: std::sync::Mutex<Vec<PathBuf>>,
}

impl Filter {
    fn new(includes: Vec<PathBuf>, excludes: Vec<PathBuf>) -> Filter {
        Filter {
            includes,
            excludes,
            suffix: b".skip",
            asked: Default::default(),
        }
    }
}

impl TreeFilter for Filter {
    fn descend(&self, dir: &Path) -> bool {
        self.asked.lock().unwrap().push(dir.to_path_buf());
        if self.includes.iter().any(|i| i.starts_with(dir)) {
            return true;
        }
        self.includes.iter().any(|i| dir.starts_with(i))
            && !self.excludes.iter().any(|e| dir.starts_with(e))
            && !dir
                .file_name()
                .is_some_and(|n| n.as_bytes().ends_with(self.suffix))
    }

    fn syncs(&self, path: &Path) -> bool {
        self.descend(path)
    }
}

/// Names the generator picks from: ordinary, awkward, and excluded ones.
fn names() -> Vec<OsString> {
    let mut v: Vec<OsString> = [
        "a",
        "src",
        "with space",
        "new\nline",
        "tab\there",
        "-rf",
        "--",
        "x.skip",
        "cache",
        "ünïcode",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    v.push(OsStr::from_bytes(b"bad\xff\xfebytes").to_os_string());
    v.push(OsString::from("d".repeat(255)));
    v
}

/// A small deterministic generator, so a tree is reproducible from a seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Build a random tree below `dir` (which exists); return how many
/// directories at or below `dir` a walk should count, given whether `dir`
/// is itself excluded. Also plants files, symlinks to directories, and a
/// symlink loop, none of which may be counted.
fn grow(
    dir: &Path,
    depth: u32,
    rng: &mut Lcg,
    names: &[OsString],
    excl_prefix: &Path,
    excluded: bool,
) -> u64 {
    let mut expected = if excluded { 0 } else { 1 };
    fs::write(dir.join("file.txt"), b"x").unwrap();
    if rng.next(3) == 0 {
        symlink(dir, dir.join("loop")).unwrap();
    }
    if depth == 0 {
        return expected;
    }
    let children = rng.next(4);
    let mut used = std::collections::HashSet::new();
    for _ in 0..children {
        let name = &names[rng.next(names.len() as u64) as usize];
        if !used.insert(name.clone()) {
            continue;
        }
        let child = dir.join(name);
        fs::create_dir(&child).unwrap();
        let child_excluded =
            excluded || name.as_bytes().ends_with(b".skip") || child == excl_prefix;
        expected += grow(&child, depth - 1, rng, names, excl_prefix, child_excluded);
    }
    if rng.next(2) == 0 {
        // A symlink to a real directory is never descended.
        symlink(dir.parent().unwrap(), dir.join("up-link")).unwrap();
    }
    expected
}

/// A generated tree: `<tmp>/data` (included, with `<tmp>/data/cache`
/// excluded by path) and `<tmp>/other` (not included).
struct Tree {
    tmp: tempfile::TempDir,
    expected_data: u64,
}

impl Tree {
    fn generate(seed: u64, depth: u32) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let names = names();
        let mut rng = Lcg(seed);
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        // `cache` directly below data is the path-excluded one.
        let excl = data.join("cache");
        let expected_data = grow(&data, depth, &mut rng, &names, &excl, false);
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        grow(&other, 2, &mut rng, &names, &excl, true);
        Tree { tmp, expected_data }
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn filter(&self) -> Filter {
        Filter::new(vec![self.data()], vec![self.data().join("cache")])
    }
}

proptest! {
    #![proptest_config(beside_source(ProptestConfig { cases: 12, ..ProptestConfig::default() }))]

    #[test]
    fn count_matches_generated_tree(seed in any::<u64>(), depth in 1u32..5) {
        let tree = Tree::generate(seed, depth);
        let filter = tree.filter();
        let count = count_watched_dirs(&filter, tree.tmp.path(), &[tree.data()]);
        // The start directory is an ancestor of the root: counted outside.
        prop_assert_eq!(count.total, tree.expected_data + 1);
        prop_assert_eq!(count.per_root.clone(), vec![(tree.data(), tree.expected_data)]);
        prop_assert_eq!(count.outside_roots, 1);
        prop_assert!(count.errors.is_empty(), "{:?}", count.errors);
    }
}

#[test]
fn count_from_slash_adds_exactly_the_ancestors() {
    let tree = Tree::generate(7, 4);
    let filter = tree.filter();
    let count = count_watched_dirs(&filter, Path::new("/"), &[tree.data()]);
    // `/`, ..., <tmp>: every proper ancestor of data.
    let ancestors = tree.data().ancestors().count() as u64 - 1;
    assert_eq!(count.outside_roots, ancestors);
    assert_eq!(count.total, tree.expected_data + ancestors);
    // The walk never asked about anything inside a directory it did not
    // descend: every question's parent was itself descended.
    let asked = filter.asked.lock().unwrap();
    for p in asked.iter() {
        if let Some(parent) = p.parent() {
            assert!(
                filter.includes.iter().any(|i| i.starts_with(parent))
                    || parent.starts_with(tree.data()),
                "asked about {p:?} below an undescended directory"
            );
        }
    }
}

#[test]
fn awkward_names_are_counted_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let names = names();
    let mut expected = 1;
    for n in &names {
        fs::create_dir(data.join(n)).unwrap();
        fs::create_dir(data.join(n).join("inner")).unwrap();
        if !n.as_bytes().ends_with(b".skip") {
            expected += 2;
        }
    }
    let filter = Filter::new(vec![data.clone()], vec![]);
    let count = count_watched_dirs(&filter, &data, std::slice::from_ref(&data));
    assert_eq!(count.total, expected);
    let asked = filter.asked.lock().unwrap();
    for n in &names {
        assert!(
            asked.contains(&data.join(n)),
            "never asked about {:?}",
            n.as_bytes()
        );
    }
}

#[test]
fn two_roots_are_counted_apart_and_a_symlinked_start_is_not_walked() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for d in [&a, &b] {
        fs::create_dir(d).unwrap();
    }
    for i in 0..5 {
        fs::create_dir(a.join(format!("d{i}"))).unwrap();
    }
    for i in 0..3 {
        fs::create_dir_all(b.join(format!("d{i}")).join("sub")).unwrap();
    }
    let filter = Filter::new(vec![a.clone(), b.clone()], vec![]);
    let count = count_watched_dirs(&filter, tmp.path(), &[a.clone(), b.clone()]);
    assert_eq!(count.per_root, vec![(a.clone(), 6), (b.clone(), 7)]);
    assert_eq!(count.outside_roots, 1);
    assert_eq!(count.total, 14);

    // csync2 lstat()s: a root that is a symlink to a directory is not
    // descended, and neither is the watcher's.
    let link = tmp.path().join("link");
    symlink(&a, &link).unwrap();
    let filter = Filter::new(vec![link.clone()], vec![]);
    let count = count_watched_dirs(&filter, &link, std::slice::from_ref(&link));
    assert_eq!(count.total, 0);
}

#[test]
fn a_missing_start_counts_nothing_and_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("gone");
    let filter = Filter::new(vec![gone.clone()], vec![]);
    let count = count_watched_dirs(&filter, &gone, std::slice::from_ref(&gone));
    assert_eq!(count.total, 0);
    assert!(count.errors.is_empty());
}
