//! The pattern matcher against glibc's own `fnmatch(3)` as the oracle, on
//! generated patterns and strings, for every flag combination csync2 uses.
//! This test process never calls `setlocale`, so like csync2 it runs in
//! the C locale.

use std::ffi::CString;

use csync2_watch::fnmatch::{fnmatch, Flags};
use proptest::prelude::*;

use crate::support::beside_source;

const FNM_PATHNAME: i32 = 1;
const FNM_LEADING_DIR: i32 = 8;

fn libc_fnmatch(pattern: &[u8], string: &[u8], flags: i32) -> bool {
    let p = CString::new(pattern).unwrap();
    let s = CString::new(string).unwrap();
    // SAFETY: both are valid NUL-terminated strings.
    unsafe { libc::fnmatch(p.as_ptr(), s.as_ptr(), flags) == 0 }
}

fn ours(pattern: &[u8], string: &[u8], flags: i32) -> bool {
    let mut f = Flags::NONE;
    if flags & FNM_PATHNAME != 0 {
        f = f | Flags::PATHNAME;
    }
    if flags & FNM_LEADING_DIR != 0 {
        f = f | Flags::LEADING_DIR;
    }
    fnmatch(pattern, string, f)
}

/// The flag sets csync2 passes: basename patterns (0), path patterns
/// (`FNM_PATHNAME|FNM_LEADING_DIR`), path patterns with `**`
/// (`FNM_LEADING_DIR`), step-into (`FNM_PATHNAME`), and none.
const FLAG_SETS: [i32; 4] = [
    0,
    FNM_PATHNAME | FNM_LEADING_DIR,
    FNM_LEADING_DIR,
    FNM_PATHNAME,
];

fn check(pattern: &[u8], string: &[u8]) -> Result<(), TestCaseError> {
    for flags in FLAG_SETS {
        let want = libc_fnmatch(pattern, string, flags);
        let got = ours(pattern, string, flags);
        prop_assert_eq!(
            got,
            want,
            "pattern {:?} string {:?} flags {}",
            String::from_utf8_lossy(pattern),
            String::from_utf8_lossy(string),
            flags
        );
    }
    Ok(())
}

/// Pattern pieces: wildcards, brackets of every kind, escapes, slashes,
/// braces, commas and plain bytes (including non-ASCII).
fn pattern_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            b"a".to_vec(), b"b".to_vec(), b"/".to_vec(), b".".to_vec(), b"-".to_vec(),
        ]),
        3 => prop::sample::select(vec![b"*".to_vec(), b"**".to_vec(), b"?".to_vec()]),
        1 => prop::sample::select(vec![
            b"{".to_vec(), b"}".to_vec(), b",".to_vec(), b"{a,b}".to_vec(), b"%".to_vec(),
        ]),
        2 => prop::sample::select(vec![
            b"\\".to_vec(), b"\\*".to_vec(), b"\\a".to_vec(), b"\\/".to_vec(), b"\\[".to_vec(),
        ]),
        3 => prop::sample::select(vec![
            b"[".to_vec(), b"]".to_vec(), b"[ab]".to_vec(), b"[!a]".to_vec(), b"[^/]".to_vec(),
            b"[a-c]".to_vec(), b"[c-a]".to_vec(), b"[]a]".to_vec(), b"[!]]".to_vec(),
            b"[a-]".to_vec(), b"[-a]".to_vec(), b"[/]".to_vec(), b"[\\]]".to_vec(),
            b"[[:alpha:]]".to_vec(), b"[[:digit:][:punct:]]".to_vec(), b"[[:foo:]]".to_vec(),
            b"[[:space:]]".to_vec(), b"[![:upper:]]".to_vec(), b"[[:Alpha:]]".to_vec(),
            b"[[=a=]]".to_vec(), b"[[.a.]]".to_vec(), b"[[.-.]a]".to_vec(), b"[[.ab.]]".to_vec(),
            b"[a-[.c.]]".to_vec(), b"[[:".to_vec(), b"[[=".to_vec(), b"[[.".to_vec(),
            b"[a\\".to_vec(), b"[\x80-\xff]".to_vec(), b"[[:print:]]".to_vec(),
        ]),
        1 => prop::sample::select(vec![b"\xc3\xa9".to_vec(), b"\xff".to_vec(), b" ".to_vec(), b"\n".to_vec()]),
    ]
}

fn pattern() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(pattern_piece(), 0..8).prop_map(|v| v.concat())
}

fn string() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            b'a', b'b', b'c', b'/', b'.', b'-', b'*', b'?', b'[', b']', b'{', b'}', b',', b'\\',
            b'%', b' ', b'\n', b'\t', b'!', b'^', b':', b'=', b'A', b'1', 0x80, 0xc3, 0xa9, 0xff,
        ]),
        0..12,
    )
}

proptest! {
    #![proptest_config(beside_source(ProptestConfig::with_cases(3000)))]

    #[test]
    fn matches_glibc_on_generated_patterns(p in pattern(), s in string()) {
        check(&p, &s)?;
    }

    /// Strings derived from the pattern itself, so that matches are common.
    #[test]
    fn matches_glibc_on_near_matches(p in pattern(), cut in 0usize..16, extra in string()) {
        let mut s: Vec<u8> = p.iter().copied().filter(|&c| c != b'*' && c != b'[' && c != b'\\').collect();
        s.truncate(cut.min(s.len()));
        s.extend_from_slice(&extra);
        check(&p, &s)?;
        check(&p, &p)?;
    }

    #[test]
    fn matches_glibc_on_arbitrary_bytes(p in prop::collection::vec(1u8..=255, 0..10), s in prop::collection::vec(1u8..=255, 0..10)) {
        check(&p, &s)?;
    }
}

/// Cases where glibc's behaviour is surprising; each was a bug candidate.
#[test]
fn glibc_quirks_agree() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"[a", b"a"),
        (b"[a", b"[a"),
        (b"[!a", b"[!a"),
        (b"[a-", b"a"),
        (b"[a-", b"[a-"),
        (b"*[a", b"x[a"),
        (b"[[:alpha:]", b"a"),
        (b"[[:alpha:", b"[[:alpha:"),
        (b"[[:z:]]", b"z"),
        (b"[[:zz:]]", b":]"),
        (b"[[.a.]-]", b"a"),
        (b"[[.a.]-]", b"-"),
        (b"a\\", b"a\\"),
        (b"*\\", b"x\\"),
        (b"/data/**", b"/data/a/b"),
        (b"/data/*", b"/data/a/b"),
        (b"/d*/x", b"/data/x/y"),
        (b"*/", b"a/"),
        (b"[\x80-\xff]", b"\xc3"),
        (b"[[:alpha:]]", b"\xc3"),
        (b"[[:print:]]", b"\x7f"),
        (b"[^a]", b"b"),
        (b"[]-a]", b"^"),
        (b"{a,b}", b"a"),
        (b"{a,b}", b"{a,b}"),
    ];
    for (p, s) in cases {
        check(p, s).unwrap();
    }
}

/// The saved failing cases (`fnmatch_libc.proptest-regressions`, beside
/// this file) are read and run first. When the tests became modules of one
/// binary, proptest's default would have looked for them in
/// `proptest-regressions/config/fnmatch_libc.txt` instead (the nearest
/// `main.rs` is now `tests/main.rs`), and no saved case would have run.
#[test]
fn saved_regression_seeds_are_read_from_beside_the_test() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config/fnmatch_libc.proptest-regressions");
    let saved = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cc "))
        .count();
    assert!(saved >= 1, "{} holds no saved case", file.display());
    let seeds = beside_source(ProptestConfig::default())
        .failure_persistence
        .unwrap()
        .load_persisted_failures2(Some(file!()));
    assert_eq!(seeds.len(), saved);
}
