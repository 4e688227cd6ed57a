//! csync2.cfg's grammar (cfgfile_parser.y) as a recursive-descent parser
//! that accepts exactly csync2's language and keeps every position. Where
//! csync2 stops at the first syntax error, this parser reports it and
//! recovers (a missing `;` is assumed, an unknown statement is skipped up
//! to its `;` or block), so that one run lists every problem.

use std::path::PathBuf;

use super::lexer::{Keyword, Lexer, Tok, Token, KEYWORDS};
use super::{
    Action, Config, Diagnostic, Group, HostEntry, PatternDecl, PatternKind, Prefix, Span, Word,
};

/// More syntax errors than this and the rest is noise.
const MAX_SYNTAX_ERRORS: usize = 30;

/// Keywords that start a statement inside a group.
const GROUP_STMTS: &[Keyword] = &[
    Keyword::Host,
    Keyword::Exclude,
    Keyword::Include,
    Keyword::Compare,
    Keyword::Key,
    Keyword::Auto,
    Keyword::BackupDirectory,
    Keyword::BackupGenerations,
    Keyword::Action,
];

/// Keywords that start a top-level block.
const TOP_STMTS: &[Keyword] = &[
    Keyword::Group,
    Keyword::Prefix,
    Keyword::Nossl,
    Keyword::Database,
    Keyword::Tempdir,
    Keyword::Ignore,
    Keyword::NoCygwinLowercase,
    Keyword::LockTimeout,
];

/// Keywords that start a statement inside an `action` block.
const ACTION_STMTS: &[Keyword] = &[
    Keyword::Pattern,
    Keyword::Exec,
    Keyword::Logfile,
    Keyword::DoLocal,
    Keyword::DoLocalOnly,
];

pub(super) fn parse(path: PathBuf, data: Vec<u8>, cwd: Option<PathBuf>) -> Config {
    let mut p = Parser {
        lx: Lexer::new(path, data, cwd),
        tok: None,
        prev_end: Span {
            file: 0,
            line: 1,
            col: 1,
        },
        prev_text: String::new(),
        cfg: Config::default(),
        syntax_errors: 0,
        unnamed: 0,
        diags: Vec::new(),
    };
    p.config();
    let mut cfg = p.cfg;
    let mut diags = p.lx.diagnostics;
    diags.extend(p.diags);
    diags.sort_by_key(|d| d.span);
    cfg.diagnostics = diags;
    cfg.files = p.lx.files;
    cfg
}

struct Parser {
    lx: Lexer,
    tok: Option<Token>,
    /// End of the last token consumed, and how it read.
    prev_end: Span,
    prev_text: String,
    cfg: Config,
    syntax_errors: usize,
    unnamed: usize,
    diags: Vec<Diagnostic>,
}

/// Outcome of expecting something.
type Res<T> = Result<T, ()>;

impl Parser {
    fn peek(&mut self) -> &Token {
        if self.tok.is_none() {
            self.tok = Some(self.lx.next_token());
        }
        self.tok.as_ref().expect("just filled")
    }

    fn bump(&mut self) -> Token {
        self.peek();
        let t = self.tok.take().expect("peeked");
        self.prev_end = t.end;
        self.prev_text = t.tok.describe();
        t
    }

    fn stopped(&self) -> bool {
        self.lx.fatal || self.syntax_errors >= MAX_SYNTAX_ERRORS
    }

    fn syntax(&mut self, span: Span, message: String) {
        self.syntax_errors += 1;
        if self.syntax_errors == MAX_SYNTAX_ERRORS {
            self.diags.push(Diagnostic::error(
                span,
                format!("{message} (too many syntax errors; stopped here)"),
            ));
        } else {
            self.diags.push(Diagnostic::error(span, message));
        }
    }

    /// A word or string (`TK_STRING`), or a syntax error naming `what`.
    fn string(&mut self, what: &str) -> Res<Word> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Str { text, quoted } => {
                self.bump();
                Ok(Word {
                    text,
                    span: t.span,
                    quoted,
                })
            }
            Tok::Kw(k) => {
                self.syntax(
                    t.span,
                    format!(
                        "expected {what}, found keyword `{}`; a name spelled like a keyword \
                         must be quoted: \"{}\"",
                        k.as_str(),
                        k.as_str()
                    ),
                );
                Err(())
            }
            other => {
                self.syntax(
                    t.span,
                    format!("expected {what}, found {}", other.describe()),
                );
                Err(())
            }
        }
    }

    /// Words up to the next token that is not one.
    fn strings(&mut self) -> Vec<Word> {
        let mut out = Vec::new();
        while let Tok::Str { .. } = self.peek().tok {
            if let Ok(w) = self.string("a word") {
                out.push(w);
            }
        }
        out
    }

    fn expect(&mut self, want: Tok, what: &str) -> Res<()> {
        let t = self.peek().clone();
        if t.tok == want {
            self.bump();
            return Ok(());
        }
        self.syntax(
            t.span,
            format!("expected {what}, found {}", t.tok.describe()),
        );
        Err(())
    }

    /// The `;` that ends a statement. When it is missing, report it after
    /// the statement's last token and go on as if it were there when the
    /// next token starts a statement or closes the block (`resume`).
    fn semi(&mut self, stmt: &str, resume: &[Keyword]) -> Res<()> {
        let t = self.peek().clone();
        if t.tok == Tok::Semi {
            self.bump();
            return Ok(());
        }
        let found = t.tok.describe();
        if let Tok::Kw(k) = t.tok {
            if t.span.line == self.prev_end.line && t.span.file == self.prev_end.file {
                // `include include;`: most likely a name spelled like a
                // keyword, not a missing `;`.
                self.syntax(
                    t.span,
                    format!(
                        "expected `;` or a word, found keyword `{}`; a name spelled like a \
                         keyword must be quoted: \"{}\"",
                        k.as_str(),
                        k.as_str()
                    ),
                );
                return Err(());
            }
        }
        let span = self.prev_end;
        let after = self.prev_text.clone();
        self.syntax(
            span,
            format!("missing `;` after {after} (the end of `{stmt}`); found {found}"),
        );
        match t.tok {
            Tok::Kw(k) if resume.contains(&k) => Ok(()),
            Tok::BlockEnd | Tok::Eof => Ok(()),
            _ => Err(()),
        }
    }

    /// Skip to just after the next `;` or balanced block, or up to (not
    /// past) a `}` closing the enclosing block.
    fn skip_statement(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek().tok {
                Tok::Eof => return,
                Tok::Semi if depth == 0 => {
                    self.bump();
                    return;
                }
                Tok::BlockBegin => {
                    depth += 1;
                    self.bump();
                }
                Tok::BlockEnd => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    self.bump();
                    if depth == 0 {
                        return;
                    }
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn unknown(&mut self, t: &Token, context: &str, valid: &[Keyword]) {
        let msg = match &t.tok {
            Tok::Str {
                text,
                quoted: false,
            } => {
                let word = String::from_utf8_lossy(text).into_owned();
                let mut m = format!("unknown keyword `{word}` {context}");
                if let Some(s) = suggest(&word, valid) {
                    m.push_str(&format!("; did you mean `{s}`?"));
                } else if let Some(k) = misplaced(&word) {
                    m.push_str(&format!("; `{}` is not allowed here", k.as_str()));
                } else {
                    m.push_str(&format!("; expected one of {}", list(valid)));
                }
                m
            }
            Tok::Kw(k) => format!(
                "`{}` is not allowed {context}; expected one of {}",
                k.as_str(),
                list(valid)
            ),
            other => format!(
                "unexpected {} {context}; expected one of {}",
                other.describe(),
                list(valid)
            ),
        };
        self.syntax(t.span, msg);
    }

    // config: block*
    fn config(&mut self) {
        loop {
            if self.stopped() {
                return;
            }
            let t = self.peek().clone();
            let r = match t.tok {
                Tok::Eof => return,
                Tok::Kw(Keyword::Group) => self.group(),
                Tok::Kw(Keyword::Prefix) => self.prefix(),
                Tok::Kw(Keyword::Nossl) => {
                    self.bump();
                    (|| {
                        let a = self.string("the `from` host glob of `nossl`")?;
                        let b = self.string("the `to` host glob of `nossl`")?;
                        self.cfg.nossl.push((a, b));
                        self.semi("nossl", TOP_STMTS)
                    })()
                }
                Tok::Kw(k @ (Keyword::Database | Keyword::Tempdir | Keyword::LockTimeout)) => {
                    self.bump();
                    (|| {
                        let w = self.string(match k {
                            Keyword::Database => "a database file or URL",
                            Keyword::Tempdir => "a directory",
                            _ => "a number of seconds",
                        })?;
                        match k {
                            Keyword::Database => self.cfg.database.push(w),
                            Keyword::Tempdir => self.cfg.tempdir.push(w),
                            _ => self.cfg.lock_timeout.push(w),
                        }
                        self.semi(k.as_str(), TOP_STMTS)
                    })()
                }
                Tok::Kw(Keyword::Ignore) => {
                    self.bump();
                    let words = self.strings();
                    self.cfg.ignore.extend(words);
                    self.semi("ignore", TOP_STMTS)
                }
                Tok::Kw(Keyword::NoCygwinLowercase) => {
                    self.bump();
                    self.cfg.no_cygwin_lowercase.push(t.span);
                    self.semi("no-cygwin-lowercase", TOP_STMTS)
                }
                _ => {
                    let ctx = match t.tok {
                        Tok::Kw(k) if GROUP_STMTS.contains(&k) => {
                            "at the top level (it belongs inside `group NAME { ... }`)"
                        }
                        _ => "at the top level",
                    };
                    self.unknown(&t, ctx, TOP_STMTS);
                    if t.tok == Tok::BlockEnd {
                        self.bump();
                    }
                    Err(())
                }
            };
            if r.is_err() {
                self.skip_statement();
            }
        }
    }

    // group [NAME] { stmts }
    fn group(&mut self) -> Res<()> {
        let kw = self.bump();
        let name_word = match self.peek().tok {
            Tok::Str { .. } => Some(self.string("a group name")?),
            _ => None,
        };
        let name = match &name_word {
            Some(w) => w.show(),
            None => {
                self.unnamed += 1;
                format!("group_{}", self.unnamed)
            }
        };
        let t = self.peek().clone();
        if t.tok != Tok::BlockBegin {
            let hint = match (&t.tok, &name_word) {
                (Tok::Str { text, .. }, Some(w))
                    if text.starts_with(b"{") || w.text.ends_with(b"{") =>
                {
                    " (put a space before `{`: `group NAME {`)"
                }
                (Tok::Eof, Some(w)) if w.text.ends_with(b"{") => {
                    " (put a space before `{`: `group NAME {`)"
                }
                _ => "",
            };
            let hint =
                if hint.is_empty() && name_word.as_ref().is_some_and(|w| w.text.ends_with(b"{")) {
                    " (`NAME{` is one word: put a space before `{`)"
                } else {
                    hint
                };
            self.syntax(
                t.span,
                format!(
                    "expected `{{` to open group `{name}`, found {}{hint}",
                    t.tok.describe()
                ),
            );
            return Err(());
        }
        self.bump();
        let mut g = Group {
            name,
            name_word,
            span: kw.span,
            hosts: Vec::new(),
            keys: Vec::new(),
            patterns: Vec::new(),
            autos: Vec::new(),
            backup_directory: None,
            backup_generations: None,
            actions: Vec::new(),
            closed: false,
        };
        loop {
            if self.stopped() {
                break;
            }
            let t = self.peek().clone();
            let r = match t.tok {
                Tok::BlockEnd => {
                    self.bump();
                    g.closed = true;
                    break;
                }
                Tok::Eof => {
                    self.syntax(
                        t.span,
                        format!(
                            "group `{}` (line {}) is never closed: missing `}}`",
                            g.name, kw.span.line
                        ),
                    );
                    break;
                }
                Tok::Kw(Keyword::Action) => self.action(&mut g),
                Tok::Kw(k) if GROUP_STMTS.contains(&k) => {
                    self.bump();
                    self.group_stmt(k, &mut g)
                        .and_then(|()| self.semi(k.as_str(), GROUP_STMTS))
                }
                _ => {
                    let ctx = match t.tok {
                        Tok::Kw(k) if TOP_STMTS.contains(&k) => {
                            "inside a group (missing `}` before it?)"
                        }
                        _ => "inside a group",
                    };
                    self.unknown(&t, ctx, GROUP_STMTS);
                    Err(())
                }
            };
            if r.is_err() {
                self.skip_statement();
            }
        }
        self.cfg.groups.push(g);
        Ok(())
    }

    fn group_stmt(&mut self, k: Keyword, g: &mut Group) -> Res<()> {
        match k {
            Keyword::Host => self.host_list(g),
            Keyword::Include | Keyword::Exclude => {
                let kind = if k == Keyword::Include {
                    PatternKind::Include
                } else {
                    PatternKind::Exclude
                };
                for word in self.strings() {
                    g.patterns.push(PatternDecl { kind, word });
                }
                Ok(())
            }
            Keyword::Compare => {
                let words = self.strings();
                let n = words.len();
                for (i, word) in words.into_iter().enumerate() {
                    let kind = if i + 1 == n {
                        PatternKind::Compare
                    } else {
                        PatternKind::CompareInclude
                    };
                    g.patterns.push(PatternDecl { kind, word });
                }
                Ok(())
            }
            Keyword::Key => {
                let w = self.string("a key file name")?;
                g.keys.push(w);
                Ok(())
            }
            Keyword::Auto => {
                let w = self.string("an auto method")?;
                g.autos.push(w);
                Ok(())
            }
            Keyword::BackupDirectory => {
                g.backup_directory = Some(self.string("a directory")?);
                Ok(())
            }
            Keyword::BackupGenerations => {
                g.backup_generations = Some(self.string("a number")?);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // host_list: (NAME [@ NAME] | '(' (NAME [@ NAME])* ')')*
    fn host_list(&mut self, g: &mut Group) -> Res<()> {
        loop {
            match self.peek().tok {
                Tok::Str { .. } => {
                    let e = self.host_entry(false)?;
                    g.hosts.push(e);
                }
                Tok::POpen => {
                    self.bump();
                    while let Tok::Str { .. } = self.peek().tok {
                        let e = self.host_entry(true)?;
                        g.hosts.push(e);
                    }
                    self.expect(Tok::PClose, "`)` to end the slave hosts")?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn host_entry(&mut self, slave: bool) -> Res<HostEntry> {
        let host = self.string("a host name")?;
        let peer = if self.peek().tok == Tok::At {
            self.bump();
            Some(self.string("the peer name after `@`")?)
        } else {
            None
        };
        Ok(HostEntry { host, peer, slave })
    }

    // action { (action_stmt ;)* }
    fn action(&mut self, g: &mut Group) -> Res<()> {
        let kw = self.bump();
        self.expect(Tok::BlockBegin, "`{` after `action`")?;
        let mut a = Action {
            span: kw.span,
            ..Action::default()
        };
        let result = loop {
            if self.stopped() {
                break Err(());
            }
            let t = self.peek().clone();
            let r = match t.tok {
                Tok::BlockEnd => {
                    self.bump();
                    break Ok(());
                }
                Tok::Eof => {
                    self.syntax(t.span, "`action` block is never closed: missing `}`".into());
                    break Err(());
                }
                Tok::Kw(k) if ACTION_STMTS.contains(&k) => {
                    self.bump();
                    let r = match k {
                        Keyword::Pattern => {
                            a.patterns.extend(self.strings());
                            Ok(())
                        }
                        Keyword::Exec => {
                            a.exec.extend(self.strings());
                            Ok(())
                        }
                        Keyword::Logfile => self.string("a log file").map(|w| a.logfile.push(w)),
                        Keyword::DoLocal => {
                            a.do_local = true;
                            Ok(())
                        }
                        _ => {
                            a.do_local = true;
                            a.do_local_only = true;
                            Ok(())
                        }
                    };
                    r.and_then(|()| self.semi(k.as_str(), ACTION_STMTS))
                }
                _ => {
                    self.unknown(&t, "inside an `action` block", ACTION_STMTS);
                    Err(())
                }
            };
            if r.is_err() {
                self.skip_statement();
            }
        };
        g.actions.push(a);
        if self.peek().tok == Tok::Semi {
            let t = self.peek().clone();
            self.syntax(
                t.span,
                "csync2 allows no `;` after an `action { ... }` block; remove it".into(),
            );
            self.bump();
        }
        result
    }

    // prefix NAME { (on GLOB : PATH ;)* }
    fn prefix(&mut self) -> Res<()> {
        let kw = self.bump();
        let name = self.string("a prefix name")?;
        self.expect(Tok::BlockBegin, "`{` after the prefix name")?;
        let mut pfx = Prefix {
            name,
            span: kw.span,
            entries: Vec::new(),
        };
        let result = loop {
            if self.stopped() {
                break Err(());
            }
            let t = self.peek().clone();
            match t.tok {
                Tok::BlockEnd => {
                    self.bump();
                    break Ok(());
                }
                Tok::Kw(Keyword::On) => {
                    self.bump();
                    let r = (|| {
                        let glob = self.string("a host glob after `on`")?;
                        let t = self.peek().clone();
                        if t.tok != Tok::Colon {
                            let hint = if glob.text.contains(&b':') {
                                format!(
                                    " (`{}` is one word: put a space after the `:`)",
                                    glob.show()
                                )
                            } else {
                                String::new()
                            };
                            let at = if hint.is_empty() { t.span } else { glob.span };
                            self.syntax(
                                at,
                                format!(
                                    "expected `:` after `on {}`, found {}{hint}",
                                    glob.show(),
                                    t.tok.describe()
                                ),
                            );
                            return Err(());
                        }
                        self.bump();
                        let path = self.string("the prefix path")?;
                        pfx.entries.push((glob, path));
                        self.semi("on", &[Keyword::On])
                    })();
                    if r.is_err() {
                        self.skip_statement();
                    }
                }
                Tok::Eof => {
                    self.syntax(t.span, "`prefix` block is never closed: missing `}`".into());
                    break Err(());
                }
                _ => {
                    self.unknown(&t, "inside a `prefix` block", &[Keyword::On]);
                    self.skip_statement();
                }
            }
        };
        self.cfg.prefixes.push(pfx);
        result
    }
}

fn list(valid: &[Keyword]) -> String {
    valid
        .iter()
        .map(|k| format!("`{}`", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A keyword that `word` is probably a misspelling of.
fn suggest(word: &str, valid: &[Keyword]) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for k in valid {
        let s = k.as_str();
        let d = if lower == s {
            0
        } else {
            edit_distance(&lower, s)
        };
        let limit = if s.len() <= 4 { 1 } else { 2 };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, s));
        }
    }
    best.map(|(_, s)| s)
}

/// A keyword of another context spelled like `word` (case aside).
fn misplaced(word: &str) -> Option<Keyword> {
    let lower = word.to_ascii_lowercase();
    KEYWORDS.iter().find(|(s, _)| *s == lower).map(|(_, k)| *k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("includ", GROUP_STMTS), Some("include"));
        assert_eq!(suggest("Include", GROUP_STMTS), Some("include"));
        assert_eq!(suggest("hots", GROUP_STMTS), None);
        assert_eq!(suggest("hsot", GROUP_STMTS), None);
        assert_eq!(suggest("hos", GROUP_STMTS), Some("host"));
        assert_eq!(suggest("zzzzzz", GROUP_STMTS), None);
    }
}
