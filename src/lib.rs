//! csync2-watch: keeps a csync2 cluster identical within a second of any
//! change by watching csync2's trees with inotify and driving the real
//! `csync2` binary.
//!
//! # Layers
//!
//! Imports run one way: from the command line to the commands, to the
//! daemon, to the adapters, to the core. A module may import any layer
//! below its own, and other modules of its own layer as long as that
//! makes no cycle; never a layer above. The core is pure: no I/O beyond
//! reading the config files it is asked to parse. `cargo test` checks
//! this table against every `crate::` path in `src/` (`layers` in this
//! file): an arrow that runs up, a cycle, or a module missing from the
//! table fails with the file and line.
//!
//! | layer | modules | may import |
//! |---|---|---|
//! | command line | [`cli`] (and [`cli::docs`]) | every layer below |
//! | commands | [`cmd`] | daemon, adapters, core |
//! | daemon | [`daemon`] | adapters, core |
//! | adapters | [`watch`], [`runner`], [`server`], [`process`], [`probe`], [`journal`], [`fstype`], [`fscheck`], [`walk`], [`status`], [`sysctl`], [`logging`] | other adapters, core |
//! | core | [`vocab`], [`fnmatch`], [`config`], [`paths`], [`plan`], [`queue`], [`sched`], [`statcache`], [`confirm`], [`controller`], [`settings`], [`exit`] | other core modules |
//!
//! What each owns:
//!
//! * core: [`vocab`] (the change types and the tree filter several layers
//!   share), [`fnmatch`], [`config`] (csync2.cfg lexer and parser),
//!   [`paths`] (csync2's path decisions), [`plan`] (what this node syncs,
//!   with whom), [`queue`] (the deduplicating batch queue), [`sched`]
//!   (when to run what), [`statcache`] (the stat cache: what csync2
//!   recorded of each path, and what a path needs: skip, `-c`, or `-c`
//!   and `-m` for what csync2's check text cannot see), [`confirm`]
//!   (what recovery forces dirty; csync2's check text for the first
//!   fill), [`controller`] (what the daemon runs next: a pure state
//!   machine fed inputs, returning actions), [`settings`] (csync2-watch.toml: format, defaults,
//!   validation), [`exit`] (exit codes).
//! * adapters: [`watch`] (inotify tree), [`runner`] (csync2 processes,
//!   and reading what csync2 prints), [`server`] (local `csync2 -ii`
//!   supervision and the busy gate), [`process`] (pidfds, non-reaping
//!   exit checks, process-group signals), [`probe`] (peer TCP probes),
//!   [`journal`] (SQLite state), [`fstype`] (statfs), [`fscheck`]
//!   (check-config's filesystem checks), [`walk`] (the synced trees, as
//!   `csync2 -cr` walks them, in parallel for reconciles), [`status`] (status.json, metrics),
//!   [`sysctl`] (inotify's limits: reading, sizing, applying; counting
//!   the directories to watch), [`logging`].
//! * daemon: [`daemon`] (the control loop behind `run`, and the
//!   reconciles it runs in the background).
//! * commands: [`cmd`] (one module per subcommand, each with its
//!   arguments).
//! * command line: [`cli`] (the clap tree and the dispatcher), with
//!   [`cli::docs`] (man pages, completions).
//!
//! The test cluster (multi-node csync2 clusters in namespaces) is the
//! workspace crate `csync2-watch-testbed`, and the demo built on it is
//! `csync2-watch-demo`: neither is in the daemon's binary.

pub mod cli;
// Its old path, which the integration tests use.
pub use cli::docs;
pub mod cmd;
pub mod config;
pub mod confirm;
pub mod controller;
// src/daemon/ has no unsafe code.
#[forbid(unsafe_code)]
pub mod daemon;
pub mod exit;
pub mod fnmatch;
pub mod fscheck;
pub mod fstype;
pub mod journal;
pub mod logging;
pub mod paths;
pub mod plan;
pub mod probe;
pub mod process;
pub mod queue;
pub mod runner;
pub mod sched;
pub mod server;
pub mod settings;
pub mod statcache;
pub mod status;
pub mod sysctl;
pub mod vocab;
pub mod walk;
pub mod watch;

/// The checks behind the table above and `#![forbid(unsafe_code)]`: they
/// read the sources as text, so `cargo test` enforces both with no extra
/// tooling.
#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Arrows that run up, each with the reason it is still there. An
    /// entry that no longer matches anything is harmless; remove it.
    const EXCEPTIONS: &[(&str, &str, &str)] = &[];

    /// Files that keep no `#![forbid(unsafe_code)]` and no `// SAFETY:`
    /// rule (none: the testbed and the demo have a crate of their own).
    const UNSAFE_EXEMPT: &[&str] = &[];

    /// One `crate::` reference from one top-level module to another.
    #[derive(Debug, Clone)]
    struct Arrow {
        file: String,
        line: usize,
        from: String,
        to: String,
    }

    /// The layer table of this file's doc comment, top row first: (layer
    /// name, its modules).
    fn parse_table(lib_rs: &str) -> Vec<(String, Vec<String>)> {
        let mut rows = Vec::new();
        for line in lib_rs.lines() {
            let Some(row) = line.strip_prefix("//! |") else {
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if cells.len() < 2 || cells[0] == "layer" || cells[0].starts_with("---") {
                continue;
            }
            let mut modules = Vec::new();
            let mut rest = cells[1];
            while let Some(i) = rest.find("[`") {
                rest = &rest[i + 2..];
                let end = rest.find("`]").expect("a [`module`] link");
                let name = &rest[..end];
                // `cli::docs` and the like are parts of a module, not modules.
                if !name.contains("::") {
                    modules.push(name.to_string());
                }
                rest = &rest[end..];
            }
            rows.push((cells[0].to_string(), modules));
        }
        rows
    }

    /// The module path of a file under `src/`: `src/a/b.rs` is `a::b`,
    /// `src/a/mod.rs` is `a`.
    fn module_path(rel: &str) -> Vec<String> {
        let rel = rel.strip_prefix("src/").unwrap_or(rel);
        let rel = rel.strip_suffix(".rs").unwrap_or(rel);
        let mut parts: Vec<String> = rel.split('/').map(String::from).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        parts
    }

    /// The source with comments and the contents of string and char
    /// literals blanked out, line for line.
    fn code_only(src: &str) -> Vec<String> {
        let c: Vec<char> = src.chars().collect();
        let mut out = String::with_capacity(src.len());
        let mut i = 0;
        let mut depth = 0usize; // block comment nesting
        while i < c.len() {
            let next = c.get(i + 1).copied();
            if depth > 0 {
                if c[i] == '*' && next == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '/' && next == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else {
                    out.push(if c[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
                continue;
            }
            match c[i] {
                '/' if next == Some('/') => {
                    while i < c.len() && c[i] != '\n' {
                        out.push(' ');
                        i += 1;
                    }
                }
                '/' if next == Some('*') => {
                    depth = 1;
                    out.push_str("  ");
                    i += 2;
                }
                'r' if (next == Some('"') || next == Some('#'))
                    && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_')) =>
                {
                    // A raw string: r"..." or r#"..."#.
                    let mut j = i + 1;
                    let mut hashes = 0;
                    while c.get(j) == Some(&'#') {
                        hashes += 1;
                        j += 1;
                    }
                    if c.get(j) != Some(&'"') {
                        out.push(c[i]);
                        i += 1;
                        continue;
                    }
                    out.push_str(&" ".repeat(j + 1 - i));
                    i = j + 1;
                    while i < c.len() {
                        if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                            out.push_str(&" ".repeat(hashes + 1));
                            i += hashes + 1;
                            break;
                        }
                        out.push(if c[i] == '\n' { '\n' } else { ' ' });
                        i += 1;
                    }
                }
                '"' => {
                    out.push(' ');
                    i += 1;
                    while i < c.len() && c[i] != '"' {
                        let skip = if c[i] == '\\' { 2 } else { 1 };
                        for k in 0..skip {
                            if let Some(&ch) = c.get(i + k) {
                                out.push(if ch == '\n' { '\n' } else { ' ' });
                            }
                        }
                        i += skip;
                    }
                    out.push(' ');
                    i += 1;
                }
                '\'' => {
                    // A char literal ('x', '\n', '\''), else a lifetime.
                    let end = if next == Some('\\') {
                        // '\n', '\'', '\\', '\x7f', '\u{..}': the first quote
                        // after the escaped character ends it.
                        (i + 3..c.len().min(i + 14)).find(|&j| c[j] == '\'')
                    } else if c.get(i + 2) == Some(&'\'') {
                        Some(i + 2)
                    } else {
                        None
                    };
                    match end {
                        Some(e) => {
                            out.push_str(&" ".repeat(e + 1 - i));
                            i = e + 1;
                        }
                        None => {
                            out.push('\'');
                            i += 1;
                        }
                    }
                }
                ch => {
                    out.push(ch);
                    i += 1;
                }
            }
        }
        out.split('\n').map(String::from).collect()
    }

    fn ident_at(s: &str) -> Option<&str> {
        let end = s
            .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .unwrap_or(s.len());
        (end > 0).then(|| &s[..end])
    }

    /// The first segment of each path in a `{...}` group (nested groups
    /// and `self` left out), e.g. `{a, b::{c, d}}` gives `a`, `b`.
    fn group_heads(s: &str) -> Vec<String> {
        let mut heads = Vec::new();
        let mut depth = 0;
        let mut expect_head = true;
        let mut i = 0;
        let b = s.as_bytes();
        while i < b.len() {
            match b[i] {
                b'{' => {
                    depth += 1;
                    expect_head = depth == 1;
                }
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' => expect_head = depth == 1,
                ch if ch.is_ascii_whitespace() => {}
                _ => {
                    if expect_head {
                        if let Some(id) = ident_at(&s[i..]) {
                            if id != "self" {
                                heads.push(id.to_string());
                            }
                            i += id.len();
                            expect_head = false;
                            continue;
                        }
                    }
                    expect_head = false;
                }
            }
            i += 1;
        }
        heads
    }

    /// Every reference from `file` to another top-level module:
    /// `crate::x…`, `crate::{x, y…}`, and `super::` chains that leave the
    /// file's top-level module.
    fn arrows(file: &str, src: &str, known: &BTreeSet<String>) -> Vec<Arrow> {
        let module = module_path(file);
        let Some(top) = module.first().cloned() else {
            return Vec::new();
        };
        let lines = code_only(src);
        // Byte offset of each line start in the joined code.
        let code = lines.join("\n");
        let mut starts = vec![0];
        for (i, ch) in code.char_indices() {
            if ch == '\n' {
                starts.push(i + 1);
            }
        }
        let line_of = |at: usize| starts.partition_point(|&s| s <= at);
        let mut out = Vec::new();
        let mut push = |at: usize, to: &str| {
            if to != top {
                out.push(Arrow {
                    file: file.to_string(),
                    line: line_of(at),
                    from: top.clone(),
                    to: to.to_string(),
                });
            }
        };
        let word_start = |at: usize| {
            at == 0 || {
                let prev = code[..at].chars().next_back().unwrap();
                !(prev.is_alphanumeric() || prev == '_' || prev == '$' || prev == ':')
            }
        };
        let mut from = 0;
        while let Some(i) = code[from..].find("crate::") {
            let at = from + i;
            from = at + 7;
            if !word_start(at) {
                continue;
            }
            let rest = &code[at + 7..];
            if rest.starts_with('{') {
                for head in group_heads(rest) {
                    push(at, &head);
                }
            } else if let Some(id) = ident_at(rest) {
                push(at, id);
            }
        }
        let mut from = 0;
        while let Some(i) = code[from..].find("super::") {
            let at = from + i;
            from = at + 7;
            if !word_start(at) {
                continue;
            }
            let mut rest = &code[at..];
            let mut ups = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r.trim_start();
            }
            from = code.len() - rest.len();
            // Inline modules (tests) only make a chain stay lower, so a
            // chain that seems to leave the module counts only when it
            // names a top-level module.
            if ups < module.len() {
                continue;
            }
            if rest.starts_with('{') {
                for head in group_heads(rest) {
                    if known.contains(&head) {
                        push(at, &head);
                    }
                }
            } else if let Some(id) = ident_at(rest) {
                if known.contains(id) {
                    push(at, id);
                }
            }
        }
        out
    }

    /// A cycle among the arrows' modules, as the arrows that make it.
    fn find_cycle(arrows: &[Arrow]) -> Option<Vec<Arrow>> {
        let mut edges: BTreeMap<&str, BTreeMap<&str, &Arrow>> = BTreeMap::new();
        for a in arrows {
            edges.entry(&a.from).or_default().entry(&a.to).or_insert(a);
        }
        fn visit<'a>(
            node: &'a str,
            edges: &BTreeMap<&'a str, BTreeMap<&'a str, &'a Arrow>>,
            state: &mut BTreeMap<&'a str, u8>,
            path: &mut Vec<&'a Arrow>,
        ) -> Option<Vec<Arrow>> {
            state.insert(node, 1);
            for (&to, &arrow) in edges.get(node).into_iter().flatten() {
                match state.get(to).copied().unwrap_or(0) {
                    0 => {
                        path.push(arrow);
                        if let Some(c) = visit(to, edges, state, path) {
                            return Some(c);
                        }
                        path.pop();
                    }
                    1 => {
                        let start = path.iter().position(|a| a.from == to).unwrap_or(path.len());
                        let mut cycle: Vec<Arrow> =
                            path[start..].iter().map(|a| (*a).clone()).collect();
                        cycle.push(arrow.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            }
            state.insert(node, 2);
            None
        }
        let mut state = BTreeMap::new();
        for &node in edges.keys() {
            if state.get(node).copied().unwrap_or(0) == 0 {
                if let Some(c) = visit(node, &edges, &mut state, &mut Vec::new()) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// Every problem with the imports of `files` (path under the crate,
    /// text) against the table in `lib_rs`.
    fn check(files: &[(String, String)], lib_rs: &str) -> Vec<String> {
        let table = parse_table(lib_rs);
        let mut problems = Vec::new();
        if table.is_empty() {
            return vec!["src/lib.rs: no layer table in its doc comment".to_string()];
        }
        // Rank: the bottom row is 0.
        let mut layer: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (i, (name, modules)) in table.iter().enumerate() {
            for m in modules {
                if let Some((_, other)) =
                    layer.insert(m.clone(), (table.len() - 1 - i, name.clone()))
                {
                    problems.push(format!(
                        "src/lib.rs: `{m}` is in two layers, {other} and {name}"
                    ));
                }
            }
        }
        let known: BTreeSet<String> = layer.keys().cloned().collect();
        let mut seen = BTreeSet::new();
        let mut all = Vec::new();
        for (file, src) in files {
            if file == "src/lib.rs" || file == "src/main.rs" {
                continue;
            }
            let top = module_path(file)[0].clone();
            if !known.contains(&top) {
                problems.push(format!(
                    "{file}: module `{top}` is in no layer of the table in src/lib.rs; add it"
                ));
                continue;
            }
            seen.insert(top);
            all.extend(arrows(file, src, &known));
        }
        for m in known.difference(&seen) {
            problems.push(format!(
                "src/lib.rs: the layer table names `{m}`, which has no file"
            ));
        }
        let mut kept = Vec::new();
        for a in all {
            let Some((to_rank, to_layer)) = layer.get(&a.to) else {
                problems.push(format!(
                    "{}:{}: `crate::{}` is not a module of the layer table",
                    a.file, a.line, a.to
                ));
                continue;
            };
            let (from_rank, from_layer) = &layer[&a.from];
            if EXCEPTIONS
                .iter()
                .any(|(f, to, _)| *f == a.file && *to == a.to)
            {
                continue;
            }
            if to_rank > from_rank {
                problems.push(format!(
                    "{}:{}: {} ({from_layer}) imports {} ({to_layer}): this arrow runs up; \
                     imports run from the command line down to the core",
                    a.file, a.line, a.from, a.to
                ));
            } else {
                // Arrows that run up are reported already (and any cycle
                // across layers has one).
                kept.push(a);
            }
        }
        if let Some(cycle) = find_cycle(&kept) {
            let steps: Vec<String> = cycle
                .iter()
                .map(|a| format!("{} -> {} ({}:{})", a.from, a.to, a.file, a.line))
                .collect();
            problems.push(format!("a cycle of imports: {}", steps.join(", ")));
        }
        problems
    }

    /// Every `.rs` file under `src/`, as (`src/...`, text), sorted.
    fn sources() -> Vec<(String, String)> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        walk(&root.join("src"), root, &mut out);
        out.sort();
        out
    }

    fn lib_rs() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap()
    }

    #[test]
    fn imports_run_one_way_and_make_no_cycle() {
        let problems = check(&sources(), &lib_rs());
        assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, s)| (f.to_string(), s.to_string()))
            .collect()
    }

    /// The real table, with a core, adapters and so on, and made-up files.
    fn check_made_up(list: &[(&str, &str)]) -> Vec<String> {
        let mut all = sources();
        for (f, s) in list {
            match all.iter_mut().find(|(g, _)| g == f) {
                Some(entry) => entry.1 = s.to_string(),
                None => all.push((f.to_string(), s.to_string())),
            }
        }
        check(&all, &lib_rs())
    }

    #[test]
    fn an_arrow_that_runs_up_fails_with_its_file_and_line() {
        let problems = check_made_up(&[(
            "src/queue.rs",
            "//! Queue.\n\nuse crate::vocab::ChangeKind;\nuse crate::watch::Watcher;\n",
        )]);
        assert_eq!(
            problems,
            vec![
                "src/queue.rs:4: queue (core) imports watch (adapters): this arrow runs up; \
                 imports run from the command line down to the core"
            ]
        );
        // In a group, in a path in code, and from a submodule.
        let problems = check_made_up(&[
            ("src/plan.rs", "use crate::{config, cmd::Csync2Opts};\n"),
            ("src/paths.rs", "fn f() { crate::daemon::run(); }\n"),
            (
                "src/config/lexer.rs",
                "use super::super::journal::Journal;\n",
            ),
        ]);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("src/config/lexer.rs:1: config (core) imports journal"));
        assert!(problems[1].starts_with("src/paths.rs:1: paths (core) imports daemon"));
        assert!(problems[2].starts_with("src/plan.rs:1: plan (core) imports cmd"));
    }

    #[test]
    fn comments_strings_and_intra_doc_links_are_not_arrows() {
        let problems = check_made_up(&[(
            "src/queue.rs",
            "//! See [`crate::watch::Watcher`].\n\
             /* crate::daemon */\n\
             const S: &str = \"crate::cli\";\n\
             const R: &str = r#\"crate::cmd \"quoted\"\"#;\n\
             const C: char = '\"'; fn f<'a>(x: &'a str) -> &'a str { x } // crate::journal\n",
        )]);
        assert!(problems.is_empty(), "{problems:#?}");
        // Code after tricky literals is still read.
        let problems = check_made_up(&[(
            "src/queue.rs",
            "const E: char = '\\\\'; const Q: u8 = b'\\''; const U: char = '\\u{2F}';\n\
             const S: &str = \"\\\"\"; fn g() { crate::watch::x(); }\n",
        )]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("src/queue.rs:2: queue (core) imports watch"));
    }

    #[test]
    fn a_cycle_within_a_layer_fails() {
        let problems = check_made_up(&[("src/exit.rs", "use crate::settings::Settings;\n")]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("a cycle of imports: ")
                && problems[0].contains("exit -> settings (src/exit.rs:1)")
                && problems[0].contains("settings -> exit (src/settings.rs:"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_module_missing_from_the_table_fails() {
        let problems = check_made_up(&[("src/newthing.rs", "")]);
        assert_eq!(
            problems,
            vec!["src/newthing.rs: module `newthing` is in no layer of the table in src/lib.rs; add it"]
        );
        let table = files(&[("src/x.rs", "")]);
        assert!(check(&table, "no table").len() == 1);
    }

    /// Is `#[forbid(unsafe_code)]` written on the declaration `mod name;`
    /// in `parent` (the file that declares it)?
    fn forbidden_at_declaration(parent: &str, name: &str) -> bool {
        let lines: Vec<&str> = parent.lines().collect();
        let Some(at) = lines.iter().position(|l| {
            let l = l.trim();
            l == format!("mod {name};")
                || l == format!("pub mod {name};")
                || l == format!("pub(crate) mod {name};")
        }) else {
            return false;
        };
        lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim().starts_with("#[") || l.trim().starts_with("//"))
            .any(|l| l.contains("#[forbid(unsafe_code)]"))
    }

    /// Every module with no unsafe code in it or below it forbids unsafe
    /// code (`#![forbid(unsafe_code)]` in its file, `#[forbid(unsafe_code)]`
    /// on its `mod` line, or either on a module above it), and every
    /// `unsafe` that remains has a `SAFETY:` comment just above it (or
    /// `# Safety` docs).
    #[test]
    fn unsafe_code_is_forbidden_or_explained() {
        let files = sources();
        let text: BTreeMap<&str, &str> = files
            .iter()
            .map(|(f, s)| (f.as_str(), s.as_str()))
            .collect();
        let unsafe_lines = |src: &str| -> Vec<usize> {
            code_only(src)
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .any(|w| w == "unsafe")
                })
                .map(|(i, _)| i)
                .collect()
        };
        // The file that declares a module: `src/a/b.rs` is declared in
        // `src/a.rs` or `src/a/mod.rs`; a top-level module in lib.rs.
        let declaring = |module: &[String]| -> Option<&str> {
            let parent = &module[..module.len() - 1];
            let candidates = if parent.is_empty() {
                vec!["src/lib.rs".to_string()]
            } else {
                let p = parent.join("/");
                vec![format!("src/{p}.rs"), format!("src/{p}/mod.rs")]
            };
            candidates
                .into_iter()
                .find_map(|c| text.get_key_value(c.as_str()).map(|(k, _)| *k))
        };
        let forbidden = |file: &str| -> bool {
            let module = module_path(file);
            (1..=module.len()).any(|n| {
                let m = &module[..n];
                let own = files
                    .iter()
                    .find(|(g, _)| g != "src/main.rs" && module_path(g) == m)
                    .is_some_and(|(_, s)| s.contains("#![forbid(unsafe_code)]"));
                own || declaring(m).is_some_and(|d| forbidden_at_declaration(text[d], &m[n - 1]))
            })
        };
        let mut problems = Vec::new();
        for (file, src) in &files {
            if UNSAFE_EXEMPT.iter().any(|e| file.starts_with(e)) {
                continue;
            }
            let raw: Vec<&str> = src.lines().collect();
            for i in unsafe_lines(src) {
                let above = &raw[i.saturating_sub(8)..=i];
                if !above
                    .iter()
                    .any(|l| l.contains("SAFETY:") || l.contains("# Safety"))
                {
                    problems.push(format!(
                        "{file}:{}: unsafe without a SAFETY: comment",
                        i + 1
                    ));
                }
            }
            if file == "src/lib.rs" {
                continue;
            }
            if file == "src/main.rs" {
                if unsafe_lines(src).is_empty() && !src.contains("#![forbid(unsafe_code)]") {
                    problems.push(format!(
                        "{file}: no unsafe code here: add #![forbid(unsafe_code)]"
                    ));
                }
                continue;
            }
            // This module and the modules below it.
            let module = module_path(file);
            let subtree_unsafe = files.iter().any(|(g, s)| {
                g != "src/main.rs"
                    && module_path(g).starts_with(&module)
                    && !unsafe_lines(s).is_empty()
            });
            if !subtree_unsafe && !forbidden(file) {
                problems.push(format!(
                    "{file}: no unsafe code here: add #![forbid(unsafe_code)]"
                ));
            }
        }
        assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    }
}
