//! Reading what csync2 prints. Every message matched here was checked
//! against csync2's source (LINBIT/csync2 83b3644, the commit Debian
//! packages) and a run of the Debian binary:
//!
//! * stderr, debug level 1 (`-v`): `Marking file as dirty: NAME` (check.c
//!   csync_mark), `Connection closed.` and `Finished with N errors.`
//!   (csync2.c main; the latter also at level 0 when N > 0), `Running
//!   'CMD' ...` (action.c), and on updates `Connecting to host P (PLAIN)
//!   ...`, `Bound to ...`, `Connect to ...`, `Can't create socket: ...`,
//!   `Updating F on P ...`, `Deleting F on P ...`, `File is already up to
//!   date on peer.`, `File stays in dirty state. Try again later...`,
//!   `Host stays in dirty state. Try again later...` (update.c, conn.c).
//! * stderr, level 0: ``ERROR: Connection to remote host `P' failed.``
//!   (update.c), `Database backend is exceedingly busy => Terminating
//!   (requesting retry).` (db.c, via csync_fatal: exit 1, and no `Finished`
//!   line), anything else is an error worth showing.
//! * stdout: `-M` prints `chary|force TAB myname TAB peer TAB file` (the
//!   fields URL-decoded); every command prints `Found SYSDIR/csync2.lock`
//!   on stdout and exits 1 when that file exists.
//! * `-t` (timestamps) prefixes each message with `[HH:MM:SS] ` and adds
//!   `TIMESTAMP:`/`TOTALTIME:` lines; both are understood.
//!
//! Names are bytes and may contain anything but NUL, including newlines,
//! which csync2 prints raw. A line that follows `Marking file as dirty:`
//! and does not start like a csync2 message continues the name (joined
//! with `\n`); a name containing a newline followed by text that does
//! start like a csync2 message is cut there (the rest becomes an error
//! line). `-M` records are recognised by their `chary`/`force` + two tab
//! separated fields + an absolute (or `%prefix%`) name; any other line
//! continues the previous record's name. The daemon confirms with `-M`,
//! so a misread name costs a retry, not a lost change.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::DirtyEntry;

pub(crate) const MARK_PREFIX: &[u8] = b"Marking file as dirty: ";
pub(crate) const BUSY_TEXT: &[u8] = b"Database backend is exceedingly busy";
const CONNECT_FAILED_PREFIX: &[u8] = b"ERROR: Connection to remote host `";
const CONNECT_FAILED_SUFFIX: &[u8] = b"' failed.";
const FINISHED_PREFIX: &[u8] = b"Finished with ";

/// Most error lines kept per run (the rest are only counted).
const MAX_ERRORS: usize = 50;
/// Longest error line kept, in bytes.
const MAX_LINE: usize = 400;
/// Lines kept for the tail of a failed run.
const TAIL_LINES: usize = 6;

/// Messages csync2 prints at debug level 1 that are not errors. A line
/// after a `Marking file as dirty:` line that starts with one of these
/// (or with a level-0 message start, see [`starts_like_message`]) is a new
/// message, not the continuation of a name.
const INFO_PREFIXES: &[&[u8]] = &[
    b"Marking file as dirty: ",
    b"Connection closed.",
    b"Running '",
    b"Connecting to host ",
    b"Bound to ",
    b"Bound local socket as ",
    b"Local socket bind() to ",
    b"Connect to ",
    b"Updating ",
    b"Deleting ",
    b"File is already up to date on peer.",
    b"Host stays in dirty state.",
    b"missing parent dir : ",
    b"Removing ",
    b"Adding peer x509 certificate",
    b"Auto-resolving conflict: Won ",
    b"auto resolving... ",
    b"TIMESTAMP: ",
    b"TOTALTIME: ",
];

/// Messages that end in ` ...` after a name that may hold newlines.
const MULTILINE_PREFIXES: &[&[u8]] = &[b"Updating ", b"Deleting ", b"Running '"];

/// Starts of level-0 messages (errors) seen in csync2's source, used only
/// to end a multi-line name.
const ERROR_PREFIXES: &[&[u8]] = &[
    b"ERROR",
    b"WARNING: ",
    b"Database ",
    b"This should not happen",
    b"Can't ",
    b"Cannot ",
    b"Can not ",
    b"Config error",
    b"Near line ",
    b"Finished with ",
    b"File stays in dirty state.",
    b"Do not auto-resolve",
    b"I/O Error",
    b"Internal error",
    b"Read-error",
    b"Write-error",
    b"Format-error",
    b"Format error",
    b"Got an error from librsync",
    b"This host (",
    b"Prefix '",
    b"Unallowed character",
    b"Unknown database scheme",
    b"Received line too long",
    b"Peer did ",
    b"Host pair ",
    b"Server error: ",
];

/// What kind of run the output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `-c`, `-cr`, `-m`: collect marked names.
    Check,
    /// `-u`: collect unreachable peers.
    Update,
    /// `-M` and others: stderr is only errors.
    Other,
}

/// Strip what `-t` adds in front of a message: `[HH:MM:SS] `.
pub(crate) fn strip_timestamp(line: &[u8]) -> &[u8] {
    if line.len() >= 11
        && line[0] == b'['
        && line[9] == b']'
        && line[10] == b' '
        && line[1..9].iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_digit()
            }
        })
    {
        &line[11..]
    } else {
        line
    }
}

fn starts_like_message(line: &[u8]) -> bool {
    INFO_PREFIXES
        .iter()
        .chain(ERROR_PREFIXES)
        .any(|p| line.starts_with(p))
        || contains(line, b" in scandir: ")
        || contains(line, BUSY_TEXT)
}

/// A level-0 csync2 message (an error or warning), as far as its start
/// tells.
pub(crate) fn looks_like_error(line: &[u8]) -> bool {
    ERROR_PREFIXES.iter().any(|p| line.starts_with(p))
        || contains(line, b" in scandir: ")
        || contains(line, BUSY_TEXT)
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn is_info(line: &[u8]) -> bool {
    INFO_PREFIXES.iter().any(|p| line.starts_with(p))
}

/// Display form of a line: lossy UTF-8 (for messages only, never for
/// names), shortened.
pub(crate) fn display_line(line: &[u8]) -> String {
    let cut = &line[..line.len().min(MAX_LINE)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > MAX_LINE {
        s.push('…');
    }
    s
}

/// Parses csync2's stderr one line at a time.
#[derive(Debug)]
pub(crate) struct StderrParser {
    kind: Kind,
    /// More `-v` than ours: unknown lines are debug output, not errors.
    chatty: bool,
    pending_mark: Option<Vec<u8>>,
    /// The last `Updating F on P ...`/`Deleting ...` line, to name the
    /// file when csync2 says it stays dirty.
    last_action: Option<Vec<u8>>,
    /// A message ending in ` ...` whose name had a newline: the lines
    /// until one ends in ` ...` belong to it.
    open_message: Option<Vec<u8>>,
    pub marked: Vec<PathBuf>,
    pub errors: Vec<String>,
    pub errors_dropped: usize,
    pub connect_failed: Vec<String>,
    pub busy: bool,
    /// `Finished with N errors.`: csync2 reached its normal end.
    pub finished_errors: Option<u64>,
    tail: VecDeque<String>,
}

impl StderrParser {
    pub(crate) fn new(kind: Kind, chatty: bool) -> Self {
        StderrParser {
            kind,
            chatty,
            pending_mark: None,
            last_action: None,
            open_message: None,
            marked: Vec::new(),
            errors: Vec::new(),
            errors_dropped: 0,
            connect_failed: Vec::new(),
            busy: false,
            finished_errors: None,
            tail: VecDeque::new(),
        }
    }

    fn flush_mark(&mut self) {
        if let Some(name) = self.pending_mark.take() {
            if !name.is_empty() {
                self.marked.push(PathBuf::from(OsString::from_vec(name)));
            }
        }
    }

    fn error(&mut self, line: &[u8]) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(display_line(line));
        } else {
            self.errors_dropped += 1;
        }
    }

    fn remember(&mut self, line: &[u8]) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(display_line(line));
    }

    /// Feed one line, without its `\n`.
    pub(crate) fn line(&mut self, raw: &[u8]) {
        let line = strip_timestamp(raw);
        if self.kind == Kind::Check {
            if let Some(rest) = line.strip_prefix(MARK_PREFIX) {
                self.flush_mark();
                self.pending_mark = Some(rest.to_vec());
                return;
            }
            if let Some(name) = self.pending_mark.as_mut() {
                if !starts_like_message(line) {
                    name.push(b'\n');
                    name.extend_from_slice(raw);
                    return;
                }
            }
            self.flush_mark();
        }
        if let Some(mut msg) = self.open_message.take() {
            msg.push(b'\n');
            msg.extend_from_slice(raw);
            if msg.ends_with(b" ...") || msg.len() > 64 * 1024 {
                self.message_done(msg);
            } else {
                self.open_message = Some(msg);
            }
            return;
        }
        if MULTILINE_PREFIXES.iter().any(|p| line.starts_with(p)) && !line.ends_with(b" ...") {
            self.open_message = Some(line.to_vec());
            return;
        }
        if line.is_empty() {
            return;
        }
        if contains(line, BUSY_TEXT) {
            self.busy = true;
        }
        if let Some(rest) = line.strip_prefix(FINISHED_PREFIX) {
            let n: String = rest
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .map(|&c| c as char)
                .collect();
            if let Ok(n) = n.parse() {
                self.finished_errors = Some(n);
                return;
            }
        }
        if let Some(rest) = line.strip_prefix(CONNECT_FAILED_PREFIX) {
            if let Some(peer) = rest.strip_suffix(CONNECT_FAILED_SUFFIX) {
                let peer = String::from_utf8_lossy(peer).into_owned();
                if !self.connect_failed.contains(&peer) {
                    self.connect_failed.push(peer);
                }
                self.remember(line);
                return;
            }
        }
        if line.starts_with(b"Updating ") || line.starts_with(b"Deleting ") {
            self.message_done(line.to_vec());
            return;
        }
        if line.starts_with(b"File stays in dirty state.") {
            let what = match self.last_action.take() {
                Some(a) => {
                    let a = a.strip_suffix(b" ...").unwrap_or(&a).to_vec();
                    let mut m = b"still dirty after: ".to_vec();
                    m.extend_from_slice(&a);
                    m
                }
                None => line.to_vec(),
            };
            self.error(&what);
            self.remember(&what);
            return;
        }
        if is_info(line) {
            return;
        }
        if self.kind == Kind::Update && line.starts_with(b"Can't create socket: ") {
            // The cause behind the `Connection ... failed` line that follows.
            self.remember(line);
            return;
        }
        self.remember(line);
        if !self.chatty || starts_like_message(line) {
            self.error(line);
        }
    }

    /// A complete `Updating`/`Deleting`/`Running` message.
    fn message_done(&mut self, msg: Vec<u8>) {
        if msg.starts_with(b"Updating ") || msg.starts_with(b"Deleting ") {
            self.last_action = Some(msg);
        }
    }

    /// End of output.
    pub(crate) fn finish(&mut self) {
        self.flush_mark();
        if let Some(msg) = self.open_message.take() {
            self.message_done(msg);
        }
    }

    /// The last lines worth showing, joined.
    pub(crate) fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Parses `csync2 -M` output; also notices the lock-file message.
#[derive(Debug, Default)]
pub(crate) struct StdoutParser {
    pub entries: Vec<DirtyEntry>,
    /// `-L` records: csync2's check text and the file name.
    pub known: Vec<KnownFile>,
    /// `Found SYSDIR/csync2.lock`.
    pub lockfile: Option<PathBuf>,
    /// Lines that are neither (shown when the run fails).
    pub other: Vec<String>,
    list_dirty: bool,
    list_known: bool,
}

impl StdoutParser {
    pub(crate) fn new(mode: &[&str]) -> Self {
        StdoutParser {
            list_dirty: mode == ["-M"],
            list_known: mode == ["-L"],
            ..Default::default()
        }
    }

    /// Feed one line, without its `\n`.
    pub(crate) fn line(&mut self, line: &[u8]) {
        if self.list_known {
            // `CHECKTXT TAB FILE`; a check text always starts with `v1:`
            // and holds no tab (csync2 url-encodes what could).
            if let Some(tab) = line.iter().position(|&b| b == b'\t') {
                if line.starts_with(b"v1:") {
                    self.known.push(KnownFile {
                        checktxt: line[..tab].to_vec(),
                        name: line[tab + 1..].to_vec(),
                    });
                    return;
                }
            }
            if let Some(last) = self.known.last_mut() {
                // A newline inside the previous record's file name.
                last.name.push(b'\n');
                last.name.extend_from_slice(line);
                return;
            }
        }
        if self.list_dirty {
            if let Some(e) = parse_dirty_line(line) {
                self.entries.push(e);
                return;
            }
            if let Some(last) = self.entries.last_mut() {
                // A newline inside the previous record's file name.
                let mut name = std::mem::take(&mut last.path).into_os_string().into_vec();
                name.push(b'\n');
                name.extend_from_slice(line);
                last.path = PathBuf::from(OsString::from_vec(name));
                return;
            }
        }
        if self.entries.is_empty() && self.lockfile.is_none() {
            if let Some(rest) = line.strip_prefix(b"Found ") {
                if rest.ends_with(b"/csync2.lock") {
                    self.lockfile = Some(PathBuf::from(OsString::from_vec(rest.to_vec())));
                    return;
                }
            }
        }
        if self.other.len() < MAX_ERRORS {
            self.other.push(display_line(line));
        }
    }
}

/// One `-L` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFile {
    /// csync2's check text (`v1:mtime=...`).
    pub checktxt: Vec<u8>,
    /// The name as csync2 records it (`%prefix%/...` where a prefix
    /// applies).
    pub name: Vec<u8>,
}

/// One `-M` record: `chary|force TAB myname TAB peer TAB file`. The file
/// is the rest of the line (it may contain tabs); it starts with `/` or
/// `%` (a prefix).
pub(crate) fn parse_dirty_line(line: &[u8]) -> Option<DirtyEntry> {
    let (forced, rest) = if let Some(r) = line.strip_prefix(b"chary\t") {
        (false, r)
    } else if let Some(r) = line.strip_prefix(b"force\t") {
        (true, r)
    } else {
        return None;
    };
    let mut it = rest.splitn(3, |&c| c == b'\t');
    let myname = it.next()?;
    let peer = it.next()?;
    let file = it.next()?;
    if myname.is_empty() || peer.is_empty() || !(file.starts_with(b"/") || file.starts_with(b"%")) {
        return None;
    }
    Some(DirtyEntry {
        forced,
        myname: String::from_utf8_lossy(myname).into_owned(),
        peer: String::from_utf8_lossy(peer).into_owned(),
        path: PathBuf::from(OsString::from_vec(file.to_vec())),
    })
}

/// Splits a byte stream into lines for a callback; keeps the unfinished
/// last line until more arrives or [`LineSplitter::finish`].
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn feed(&mut self, data: &[u8], mut f: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&c| c == b'\n') {
            f(&self.buf[start..start + pos]);
            start += pos + 1;
        }
        self.buf.drain(..start);
    }

    pub(crate) fn finish(&mut self, mut f: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            f(&self.buf);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn check(text: &[u8]) -> StderrParser {
        let mut p = StderrParser::new(Kind::Check, false);
        let mut s = LineSplitter::default();
        s.feed(text, |l| p.line(l));
        s.finish(|l| p.line(l));
        p.finish();
        p
    }

    #[test]
    fn marked_names_with_newlines_and_raw_bytes() {
        let p = check(
            b"Marking file as dirty: /d/\xff\xfe\nMarking file as dirty: /d/b\nc\n\
              Marking file as dirty: /d/a\nConnection closed.\nFinished with 0 errors.\n",
        );
        let names: Vec<&[u8]> = p.marked.iter().map(|m| m.as_os_str().as_bytes()).collect();
        assert_eq!(names, vec![&b"/d/\xff\xfe"[..], b"/d/b\nc", b"/d/a"]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.finished_errors, Some(0));
    }

    #[test]
    fn name_ending_the_output_without_newline() {
        let p = check(b"Marking file as dirty: /d/x\n\nMarking file as dirty: /d/y");
        let names: Vec<&[u8]> = p.marked.iter().map(|m| m.as_os_str().as_bytes()).collect();
        // An empty line after a name is a name ending in a newline.
        assert_eq!(names, vec![&b"/d/x\n"[..], b"/d/y"]);
    }

    #[test]
    fn timestamps_are_stripped() {
        let p =
            check(b"TIMESTAMP: 2024\n[10:31:02] Marking file as dirty: /d/a\nTOTALTIME: 0:00:00\n");
        assert_eq!(p.marked, vec![PathBuf::from("/d/a")]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn errors_warnings_and_busy() {
        let p = check(
            b"WARNING: Parameter will be ignored: /x\n\
              Database backend is exceedingly busy => Terminating (requesting retry).\n",
        );
        assert!(p.busy);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(p.finished_errors, None);
    }

    #[test]
    fn update_connect_failures() {
        let mut p = StderrParser::new(Kind::Update, false);
        for l in [
            &b"Connecting to host b (PLAIN) ..."[..],
            b"Can't create socket: Connection refused",
            b"ERROR: Connection to remote host `b' failed.",
            b"Host stays in dirty state. Try again later...",
            b"ERROR: Connection to remote host `c' failed.",
            b"Finished with 2 errors.",
        ] {
            p.line(l);
        }
        p.finish();
        assert_eq!(p.connect_failed, vec!["b".to_string(), "c".to_string()]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.finished_errors, Some(2));
        assert!(p.tail().contains("Connection refused"));
    }

    #[test]
    fn update_file_that_stays_dirty_is_named() {
        let mut p = StderrParser::new(Kind::Update, false);
        p.line(b"Updating /d/a on b ...");
        p.line(b"File stays in dirty state. Try again later...");
        assert_eq!(
            p.errors,
            vec!["still dirty after: Updating /d/a on b".to_string()]
        );
    }

    #[test]
    fn update_message_with_a_newline_in_the_name() {
        let mut p = StderrParser::new(Kind::Update, false);
        for l in [
            &b"Updating /d/a"[..],
            b"b on peer ...",
            b"File stays in dirty state. Try again later...",
            b"Running 'cmd /d/x",
            b"y' ...",
        ] {
            p.line(l);
        }
        p.finish();
        assert_eq!(
            p.errors,
            vec!["still dirty after: Updating /d/a\nb on peer".to_string()]
        );
    }

    #[test]
    fn dirty_lines() {
        let e = parse_dirty_line(b"force\tme\tpeer\t/a\tb").unwrap();
        assert!(e.forced);
        assert_eq!(e.path.as_os_str().as_bytes(), b"/a\tb");
        assert!(parse_dirty_line(b"chary\tme\tpeer\trelative").is_none());
        assert!(parse_dirty_line(b"x\tme\tpeer\t/a").is_none());
        let mut p = StdoutParser::new(&["-M"]);
        for l in [&b"chary\tme\tp\t/a"[..], b"b", b"chary\tme\tq\t%pre%/c"] {
            p.line(l);
        }
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].path.as_os_str().as_bytes(), b"/a\nb");
        assert_eq!(p.entries[1].peer, "q");
    }

    #[test]
    fn lockfile_message() {
        let mut p = StdoutParser::new(&["-M"]);
        p.line(b"Found /etc/csync2.lock");
        assert_eq!(p.lockfile, Some(PathBuf::from("/etc/csync2.lock")));
    }

    #[test]
    fn splitter_keeps_partial_lines() {
        let mut s = LineSplitter::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        s.feed(b"ab", |l| got.push(l.to_vec()));
        s.feed(b"c\nd", |l| got.push(l.to_vec()));
        s.finish(|l| got.push(l.to_vec()));
        assert_eq!(got, vec![b"abc".to_vec(), b"d".to_vec()]);
    }
}
