//! The config reader never panics: on arbitrary bytes, and on random
//! mutations of a valid configuration (reading, csync2's semantic checks
//! and building the plan's decisions). Inputs containing `config` are
//! skipped: that directive opens files named by the input.

use std::path::Path;

use csync2_watch::config::{semantic, Config};
use proptest::prelude::*;

use crate::support::beside_source;

const VALID: &[u8] = b"nossl * *;\n# comment\nprefix p { on n*: /srv/p/; }\n\
group g {\n host n1@Me (n2 n3@x) n4;\n key /nonexistent.key;\n include /data \"/a b\" %p%/x;\n\
 exclude *.tmp;\n compare /a /b;\n auto younger;\n backup-directory /b;\n backup-generations 3;\n\
 action { pattern /data/*; exec \"echo %%\"; logfile /l; do-local; do-local-only; }\n}\n\
group { host n1; key k; }\ndatabase /d;\ntempdir /t;\nignore uid gid mod;\nlock-timeout 5;\n";

fn exercise(data: &[u8]) {
    if data.windows(6).any(|w| w == b"config") {
        return;
    }
    let cfg = Config::parse(Path::new("fuzz.cfg"), data.to_vec(), None);
    for d in &cfg.diagnostics {
        let _ = d.render(&cfg.files);
    }
    let r = semantic::resolve(&cfg, b"n1", Path::new("/nonexistent-sysdir"));
    let _ = r.groups.len();
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let tokens = prop::sample::select(vec![
        b"{".to_vec(),
        b"}".to_vec(),
        b";".to_vec(),
        b"\"".to_vec(),
        b"(".to_vec(),
        b")".to_vec(),
        b"@".to_vec(),
        b":".to_vec(),
        b"#".to_vec(),
        b"\n".to_vec(),
        b"group".to_vec(),
        b"include".to_vec(),
        b"prefix".to_vec(),
        b"on".to_vec(),
        b"action".to_vec(),
        b"\0".to_vec(),
        b"\xff".to_vec(),
        b"host".to_vec(),
        b"key".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), tokens).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
    ]
}

proptest! {
    #![proptest_config(beside_source(ProptestConfig::with_cases(2000)))]

    #[test]
    fn never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&data);
    }

    #[test]
    fn never_panics_on_token_soup(parts in prop::collection::vec(prop::sample::select(vec![
        &b"group"[..], b"g", b"{", b"}", b";", b"host", b"n1", b"@", b"(", b")", b"key", b"k",
        b"include", b"/d", b"\"x", b"\"", b"#c\n", b"prefix", b"on", b":", b"action", b"pattern",
        b"exec", b"do-local", b"compare", b"ignore", b"nossl", b" ", b"\n", b"{a", b"a}",
    ]), 0..60)) {
        let data: Vec<u8> = parts.join(&b' ');
        exercise(&data);
    }

    #[test]
    fn never_panics_on_mutated_valid_config(edits in prop::collection::vec(edit(), 1..6)) {
        let mut data = VALID.to_vec();
        for e in edits {
            match e {
                Edit::Insert(i, t) => {
                    let i = i % (data.len() + 1);
                    data.splice(i..i, t);
                }
                Edit::Delete(i, n) => {
                    if !data.is_empty() {
                        let i = i % data.len();
                        let end = (i + n).min(data.len());
                        data.drain(i..end);
                    }
                }
                Edit::Replace(i, b) => {
                    if !data.is_empty() {
                        let i = i % data.len();
                        data[i] = b;
                    }
                }
            }
        }
        exercise(&data);
    }
}

#[test]
fn the_valid_seed_parses_cleanly() {
    let cfg = Config::parse(Path::new("fuzz.cfg"), VALID.to_vec(), None);
    assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
    assert_eq!(cfg.groups.len(), 2);
}
