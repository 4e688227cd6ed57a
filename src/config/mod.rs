//! csync2.cfg, read exactly as csync2 2.0 reads it: the lexer
//! ([`lexer`]), the parser into a syntax tree that keeps every position
//! ([`parser`]), and csync2's own semantic checks that need no filesystem
//! beyond key files ([`semantic`]). The filesystem checks behind
//! `check-config` are an adapter of their own, [`crate::fscheck`].
//!
//! Reading a configuration does no I/O except reading the config files
//! (and `config` includes) and, in [`semantic`], the key files.
//!
//! Layer: core. Imports [`crate::fnmatch`] only.

#![forbid(unsafe_code)]

pub mod lexer;
pub mod parser;
pub mod semantic;

use std::path::{Path, PathBuf};

/// A position in a config file: index into [`Config::files`], 1-based line
/// and byte column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    pub file: usize,
    pub line: u32,
    pub col: u32,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// csync2 would refuse the configuration (or csync2-watch cannot work
    /// with it).
    Error,
    /// Works, but probably not as intended.
    Warning,
}

/// One problem, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    pub message: String,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            span,
            message: message.into(),
        }
    }

    /// `FILE:LINE:COL: message` (warnings say `warning: ` first).
    pub fn render(&self, files: &[PathBuf]) -> String {
        let file = files
            .get(self.span.file)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into());
        let sev = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        format!(
            "{file}:{}:{}: {sev}{}",
            self.span.line, self.span.col, self.message
        )
    }
}

/// A bare word or quoted string from the config, byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: Vec<u8>,
    pub span: Span,
    pub quoted: bool,
}

impl Word {
    /// The text for messages (lossy only for display).
    pub fn show(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// Which list a pattern was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatternKind {
    Include,
    Exclude,
    /// The last word of a `compare` statement: used in compare mode only.
    Compare,
    /// Any but the last word of a `compare` statement: csync2's grammar
    /// makes these plain includes (`comp_list: incl_list TK_STRING`).
    CompareInclude,
}

/// An include, exclude or compare pattern as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternDecl {
    pub kind: PatternKind,
    pub word: Word,
}

/// One name in a `host` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// `A` of `A@B`, or the whole name: compared with this node's name.
    pub host: Word,
    /// `B` of `A@B`: the identity used for the peer.
    pub peer: Option<Word>,
    /// Written inside `( )`: receives only.
    pub slave: bool,
}

/// An `action { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Action {
    pub span: Span,
    pub patterns: Vec<Word>,
    pub exec: Vec<Word>,
    pub logfile: Vec<Word>,
    pub do_local: bool,
    pub do_local_only: bool,
}

/// A `group [NAME] { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The name as csync2 knows it: as written, or `group_N` for the N-th
    /// unnamed group.
    pub name: String,
    /// The name word, if the group has one.
    pub name_word: Option<Word>,
    /// The `group` keyword.
    pub span: Span,
    pub hosts: Vec<HostEntry>,
    /// Every `key` statement (csync2 allows exactly one).
    pub keys: Vec<Word>,
    /// Patterns in file order.
    pub patterns: Vec<PatternDecl>,
    pub autos: Vec<Word>,
    pub backup_directory: Option<Word>,
    pub backup_generations: Option<Word>,
    pub actions: Vec<Action>,
    /// The closing `}` was seen.
    pub closed: bool,
}

/// A `prefix NAME { on HOSTGLOB: PATH; ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub name: Word,
    pub span: Span,
    /// `(host glob, path)` in file order.
    pub entries: Vec<(Word, Word)>,
}

/// A whole csync2 configuration as written, with the problems met while
/// reading it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Every file read: the main file first, then `config` includes in the
    /// order they were opened (paths as csync2 opens them).
    pub files: Vec<PathBuf>,
    pub groups: Vec<Group>,
    pub prefixes: Vec<Prefix>,
    pub nossl: Vec<(Word, Word)>,
    /// Every `database` statement (csync2 uses the first, and only
    /// without `-D`).
    pub database: Vec<Word>,
    /// Every `tempdir` statement (csync2 uses the last).
    pub tempdir: Vec<Word>,
    /// Every word of every `ignore` statement.
    pub ignore: Vec<Word>,
    /// Every `lock-timeout` statement (csync2 uses the last).
    pub lock_timeout: Vec<Word>,
    /// Every `no-cygwin-lowercase` statement.
    pub no_cygwin_lowercase: Vec<Span>,
    /// Syntax problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// Parse `data`, the contents of `path`. `config` includes are opened
    /// relative to `cwd` (`None`: this process's working directory).
    pub fn parse(path: &Path, data: Vec<u8>, cwd: Option<PathBuf>) -> Config {
        parser::parse(path.to_path_buf(), data, cwd)
    }

    /// Read and parse the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<Config> {
        let data = std::fs::read(path)?;
        Ok(Config::parse(path, data, None))
    }

    /// Whether reading found an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The file a span points into.
    pub fn file(&self, span: Span) -> &Path {
        self.files
            .get(span.file)
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("?"))
    }
}
