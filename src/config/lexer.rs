//! csync2.cfg's lexer, reproducing csync2's flex scanner (cfgfile_scanner.l)
//! token for token: longest match with ties to keywords, bare words that
//! may contain `{`, `}` and `:` (never as last byte), `"..."` strings
//! without escapes that may span lines (an empty `""` yields no token),
//! `#` comments, and `config FILE;` inclusion done at the lexical level
//! (any number of files up to `;`, opened relative to the current
//! directory, nesting at most 10 deep).

use std::path::{Path, PathBuf};

use super::{Diagnostic, Span};

/// csync2.cfg's keywords, in the scanner's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    Nossl,
    Ignore,
    Database,
    Group,
    Host,
    Exclude,
    Include,
    Compare,
    Key,
    Auto,
    Action,
    Pattern,
    Exec,
    Logfile,
    DoLocal,
    DoLocalOnly,
    Prefix,
    On,
    LockTimeout,
    Tempdir,
    BackupDirectory,
    BackupGenerations,
    NoCygwinLowercase,
}

/// Every keyword with its spelling.
pub const KEYWORDS: &[(&str, Keyword)] = &[
    ("nossl", Keyword::Nossl),
    ("ignore", Keyword::Ignore),
    ("database", Keyword::Database),
    ("group", Keyword::Group),
    ("host", Keyword::Host),
    ("exclude", Keyword::Exclude),
    ("include", Keyword::Include),
    ("compare", Keyword::Compare),
    ("key", Keyword::Key),
    ("auto", Keyword::Auto),
    ("action", Keyword::Action),
    ("pattern", Keyword::Pattern),
    ("exec", Keyword::Exec),
    ("logfile", Keyword::Logfile),
    ("do-local", Keyword::DoLocal),
    ("do-local-only", Keyword::DoLocalOnly),
    ("prefix", Keyword::Prefix),
    ("on", Keyword::On),
    ("lock-timeout", Keyword::LockTimeout),
    ("tempdir", Keyword::Tempdir),
    ("backup-directory", Keyword::BackupDirectory),
    ("backup-generations", Keyword::BackupGenerations),
    ("no-cygwin-lowercase", Keyword::NoCygwinLowercase),
];

impl Keyword {
    /// The keyword as written in csync2.cfg.
    pub fn as_str(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }

    fn from_word(word: &[u8]) -> Option<Keyword> {
        KEYWORDS
            .iter()
            .find(|(s, _)| s.as_bytes() == word)
            .map(|(_, k)| *k)
    }
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    BlockBegin,
    BlockEnd,
    POpen,
    PClose,
    Semi,
    Colon,
    At,
    Kw(Keyword),
    /// A bare word or a quoted string (csync2's `TK_STRING`); the text is
    /// cut at a NUL byte, as csync2's `strdup` cuts it.
    Str {
        text: Vec<u8>,
        quoted: bool,
    },
    Eof,
}

impl Tok {
    /// How the token reads in a message.
    pub fn describe(&self) -> String {
        match self {
            Tok::BlockBegin => "`{`".into(),
            Tok::BlockEnd => "`}`".into(),
            Tok::POpen => "`(`".into(),
            Tok::PClose => "`)`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Colon => "`:`".into(),
            Tok::At => "`@`".into(),
            Tok::Kw(k) => format!("keyword `{}`", k.as_str()),
            Tok::Str { text, quoted } => {
                let t = String::from_utf8_lossy(text);
                if *quoted {
                    format!("string \"{t}\"")
                } else {
                    format!("`{t}`")
                }
            }
            Tok::Eof => "end of file".into(),
        }
    }
}

/// A token with where it starts and where it ends (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
    pub end: Span,
}

/// csync2's limit on nested `config` includes.
pub const MAX_INCLUDE_DEPTH: usize = 10;

struct Input {
    file: usize,
    data: Vec<u8>,
    pos: usize,
    line: u32,
    col: u32,
}

impl Input {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn at(&self, off: usize) -> Option<u8> {
        self.data.get(self.pos + off).copied()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += 1;
            if c == b'\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn span(&self) -> Span {
        Span {
            file: self.file,
            line: self.line,
            col: self.col,
        }
    }
}

/// The scanner over a stack of files.
pub struct Lexer {
    stack: Vec<Input>,
    /// After `config`: reading file names up to `;`.
    incl: bool,
    /// Every file read, by index (the main file first).
    pub files: Vec<PathBuf>,
    /// Problems found while scanning (unterminated strings, includes).
    pub diagnostics: Vec<Diagnostic>,
    /// Set when an include could not be followed: csync2 would stop here.
    pub fatal: bool,
    /// Where the current directory is, for relative `config` paths.
    cwd: Option<PathBuf>,
}

fn is_word_byte(c: u8) -> bool {
    !matches!(
        c,
        b' ' | b'\r' | b'\n' | b'\t' | b'@' | b';' | b'(' | b')' | b'#' | b'"'
    )
}

impl Lexer {
    /// Scan `data`, read from `path`. `config` includes are opened
    /// relative to `cwd` (csync2 uses its working directory); `None`
    /// means the process's own.
    pub fn new(path: PathBuf, data: Vec<u8>, cwd: Option<PathBuf>) -> Lexer {
        Lexer {
            stack: vec![Input {
                file: 0,
                data,
                pos: 0,
                line: 1,
                col: 1,
            }],
            incl: false,
            files: vec![path],
            diagnostics: Vec::new(),
            fatal: false,
            cwd,
        }
    }

    fn error(&mut self, span: Span, message: String) {
        self.diagnostics.push(Diagnostic::error(span, message));
    }

    fn warn(&mut self, span: Span, message: String) {
        self.diagnostics.push(Diagnostic::warning(span, message));
    }

    /// The next token; `Tok::Eof` forever at the end.
    pub fn next_token(&mut self) -> Token {
        loop {
            if self.fatal {
                return self.eof();
            }
            let top = self.stack.last_mut().expect("input stack never empty");
            let Some(c) = top.peek() else {
                if self.stack.len() == 1 {
                    return self.eof();
                }
                self.stack.pop();
                // Back in the including file, still reading file names.
                self.incl = true;
                continue;
            };
            if self.incl {
                match c {
                    b' ' | b'\t' => top.bump(),
                    b';' => {
                        top.bump();
                        self.incl = false;
                    }
                    b'\r' | b'\n' => {
                        let span = top.span();
                        top.bump();
                        self.warn(
                            span,
                            "a line break inside `config FILE;` is copied to csync2's standard \
                             output every time it reads this file; keep `config FILE;` on one line"
                                .into(),
                        );
                    }
                    _ => {
                        let span = top.span();
                        let start = top.pos;
                        while let Some(c) = top.peek() {
                            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b';') {
                                break;
                            }
                            top.bump();
                        }
                        let name = top.data[start..top.pos].to_vec();
                        self.include(span, name);
                    }
                }
                continue;
            }
            let span = top.span();
            match c {
                b' ' | b'\r' | b'\n' | b'\t' => {
                    top.bump();
                    continue;
                }
                b'#' => {
                    while let Some(c) = top.peek() {
                        if c == b'\r' || c == b'\n' {
                            break;
                        }
                        top.bump();
                    }
                    continue;
                }
                b'"' => {
                    top.bump();
                    let start = top.pos;
                    while let Some(c) = top.peek() {
                        if c == b'"' {
                            break;
                        }
                        top.bump();
                    }
                    let text = cut_nul(&top.data[start..top.pos]);
                    let empty = top.pos == start;
                    let terminated = top.peek() == Some(b'"');
                    if terminated {
                        top.bump();
                    }
                    let end = top.span();
                    if !terminated {
                        self.error(
                            span,
                            "unterminated string: this `\"` has no closing `\"` before the end \
                             of the file; add the closing quote"
                                .into(),
                        );
                    }
                    if empty {
                        // `""` produces no token at all in csync2.
                        continue;
                    }
                    return Token {
                        tok: Tok::Str { text, quoted: true },
                        span,
                        end,
                    };
                }
                b'@' | b';' | b'(' | b')' => {
                    top.bump();
                    let tok = match c {
                        b'@' => Tok::At,
                        b';' => Tok::Semi,
                        b'(' => Tok::POpen,
                        _ => Tok::PClose,
                    };
                    let end = top.span();
                    return Token { tok, span, end };
                }
                _ => {}
            }
            // A bare word: the longest run of word bytes that does not end
            // in `:`. A lone `{`, `}` or `:` is its own token.
            let mut run = 0;
            while top.at(run).is_some_and(is_word_byte) {
                run += 1;
            }
            let mut len = run;
            while len > 0 && top.at(len - 1) == Some(b':') {
                len -= 1;
            }
            if len <= 1 && matches!(c, b'{' | b'}' | b':') {
                top.bump();
                let tok = match c {
                    b'{' => Tok::BlockBegin,
                    b'}' => Tok::BlockEnd,
                    _ => Tok::Colon,
                };
                let end = top.span();
                return Token { tok, span, end };
            }
            let start = top.pos;
            for _ in 0..len {
                top.bump();
            }
            let word = &top.data[start..start + len];
            let end = top.span();
            if word == b"config" {
                self.incl = true;
                continue;
            }
            let tok = match Keyword::from_word(word) {
                Some(k) => Tok::Kw(k),
                None => Tok::Str {
                    text: cut_nul(word),
                    quoted: false,
                },
            };
            return Token { tok, span, end };
        }
    }

    fn eof(&self) -> Token {
        let top = self.stack.last().expect("input stack never empty");
        let span = top.span();
        Token {
            tok: Tok::Eof,
            span,
            end: span,
        }
    }

    fn include(&mut self, span: Span, name: Vec<u8>) {
        use std::os::unix::ffi::OsStrExt;
        let shown = String::from_utf8_lossy(&name).into_owned();
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.error(
                span,
                format!(
                    "`config {shown}` nests includes more than {MAX_INCLUDE_DEPTH} deep \
                     (csync2: \"Config includes nested too deeply\"); flatten the includes"
                ),
            );
            self.fatal = true;
            return;
        }
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(cut_nul(&name).as_slice()));
        let open_path = match (&self.cwd, path.is_relative()) {
            (Some(cwd), true) => cwd.join(&path),
            _ => path.clone(),
        };
        if path.is_relative() {
            self.warn(
                span,
                format!(
                    "`config {shown}` is opened relative to the directory csync2 runs in, \
                     not to this file; use an absolute path"
                ),
            );
        }
        match std::fs::read(&open_path) {
            Ok(data) => {
                let file = self.files.len();
                self.files.push(path);
                self.stack.push(Input {
                    file,
                    data,
                    pos: 0,
                    line: 1,
                    col: 1,
                });
                self.incl = false;
            }
            Err(err) => {
                self.error(
                    span,
                    format!(
                        "cannot open included config file `{}`: {err} (csync2 stops here: \
                         \"Can't open included config file\"); fix the path",
                        Path::new(&open_path).display()
                    ),
                );
                self.fatal = true;
            }
        }
    }
}

fn cut_nul(b: &[u8]) -> Vec<u8> {
    match b.iter().position(|&c| c == 0) {
        Some(i) => b[..i].to_vec(),
        None => b.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        let mut lx = Lexer::new("t.cfg".into(), src.as_bytes().to_vec(), None);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token();
            if t.tok == Tok::Eof {
                break;
            }
            out.push(t.tok);
        }
        out
    }

    fn w(s: &str) -> Tok {
        Tok::Str {
            text: s.as_bytes().to_vec(),
            quoted: false,
        }
    }

    #[test]
    fn words_and_keywords() {
        assert_eq!(
            toks("group groups"),
            vec![Tok::Kw(Keyword::Group), w("groups")]
        );
        assert_eq!(toks("group g{"), vec![Tok::Kw(Keyword::Group), w("g{")]);
        assert_eq!(
            toks("{ {a a} }}"),
            vec![Tok::BlockBegin, w("{a"), w("a}"), w("}}")]
        );
        assert_eq!(
            toks("do-local do-local-only do-locals"),
            vec![
                Tok::Kw(Keyword::DoLocal),
                Tok::Kw(Keyword::DoLocalOnly),
                w("do-locals")
            ]
        );
        assert_eq!(toks("on host1: /p;")[1..3], [w("host1"), Tok::Colon]);
        assert_eq!(toks("host1:/p")[..], [w("host1:/p")]);
        assert_eq!(
            toks("a:: :"),
            vec![w("a"), Tok::Colon, Tok::Colon, Tok::Colon]
        );
        assert_eq!(toks("foo#bar\nbaz"), vec![w("foo"), w("baz")]);
        assert_eq!(toks("a@b"), vec![w("a"), Tok::At, w("b")]);
        assert_eq!(toks("key \"\";"), vec![Tok::Kw(Keyword::Key), Tok::Semi]);
    }

    #[test]
    fn config_with_semicolon_only_is_a_no_op() {
        assert_eq!(
            toks("include config; /x;"),
            vec![Tok::Kw(Keyword::Include), w("/x"), Tok::Semi]
        );
    }
}
