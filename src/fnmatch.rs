//! A byte-exact `fnmatch(3)` as csync2 sees it: glibc's matcher in the C
//! locale (csync2 never calls `setlocale`). Owns nothing but the matching
//! rules; see [`fnmatch`].
//!
//! The rules, as verified against glibc 2.36 by `tests/config/fnmatch_libc.rs`:
//! * bytes, not characters; no case folding; no `FNM_PERIOD`;
//! * `?` one byte, `*` any run of bytes; with [`Flags::PATHNAME`] neither
//!   (nor a bracket) ever matches `/`;
//! * `\x` is a literal `x`; a trailing `\` never matches;
//! * `[...]` with `!` or `^` negation, a leading `]` as a member, ranges
//!   (byte order; a reversed range matches nothing), classes
//!   `[:alpha:]`… (ASCII only), `[=x=]` and `[.x.]` for single bytes;
//!   an unterminated `[` is a literal `[`;
//! * `{a,b}` has no meaning: braces and commas are literal;
//! * [`Flags::LEADING_DIR`]: the pattern may match a leading part of the
//!   string that is followed by `/`.
//!
//! Layer: core. Imports nothing from the crate.

#![forbid(unsafe_code)]

/// Flags, the subset of glibc's that csync2 uses (values as in glibc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flags: `*`, `?` and brackets match `/` too.
    pub const NONE: Flags = Flags(0);
    /// `FNM_PATHNAME`: wildcards and brackets never match `/`.
    pub const PATHNAME: Flags = Flags(1);
    /// `FNM_NOESCAPE`: backslash is an ordinary byte.
    pub const NOESCAPE: Flags = Flags(2);
    /// `FNM_LEADING_DIR`: a match may stop at a `/` of the string.
    pub const LEADING_DIR: Flags = Flags(8);

    /// Both sets of flags.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The value glibc uses for these flags.
    pub const fn bits(self) -> i32 {
        self.0 as i32
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// Longest class name glibc looks at before giving up on a pattern.
const CLASS_NAME_MAX: usize = 256;

/// Bytes glibc accepts in a `[:name:]`: `a` to `y` (its test is
/// `c < 'a' || c >= 'z'`, so `z` ends a class name).
const CLASS_NAME_BYTES: std::ops::RangeInclusive<u8> = b'a'..=b'y';

/// Does `string` match `pattern`? Like glibc's `fnmatch(pattern, string,
/// flags) == 0` in the C locale. Both are treated as C strings: anything
/// from a NUL byte on is ignored.
pub fn fnmatch(pattern: &[u8], string: &[u8], flags: Flags) -> bool {
    let pattern = until_nul(pattern);
    let string = until_nul(string);
    Matcher {
        pat: pattern,
        s: string,
        pathname: flags.contains(Flags::PATHNAME),
        escape: !flags.contains(Flags::NOESCAPE),
        leading_dir: flags.contains(Flags::LEADING_DIR),
    }
    .run(0, 0, None)
}

fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Where a sub-match stopped at the next `*`: (pattern index of the `*`,
/// string index). Lets a star commit to the first position from which
/// the rest matches up to the next star, as glibc does.
type StarStop = Option<(usize, usize)>;

struct Matcher<'a> {
    pat: &'a [u8],
    s: &'a [u8],
    pathname: bool,
    escape: bool,
    leading_dir: bool,
}

/// Outcome of one bracket expression.
enum Bracket {
    /// The bracket consumed one byte of the string; pattern continues here.
    Consumed(usize),
    /// The whole match fails.
    Fail,
    /// Unterminated bracket: `[` is an ordinary byte.
    Literal,
}

impl Matcher<'_> {
    /// Pattern byte at `i`, 0 past the end (the C string terminator).
    fn at(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// Match `pat[p..]` against `s[n..]`. With `stop`, return success as
    /// soon as the next `*` is reached, recording where.
    fn run(&self, mut p: usize, mut n: usize, stop: Option<&mut StarStop>) -> bool {
        let len = self.s.len();
        let mut stop = stop;
        loop {
            let c = self.at(p);
            if c == 0 {
                break;
            }
            p += 1;
            match c {
                b'?' => {
                    if n == len || (self.s[n] == b'/' && self.pathname) {
                        return false;
                    }
                }
                b'\\' if self.escape => {
                    let lit = self.at(p);
                    p += 1;
                    if lit == 0 || n == len || self.s[n] != lit {
                        return false;
                    }
                }
                b'*' => {
                    if let Some(st) = stop.take() {
                        *st = Some((p - 1, n));
                        return true;
                    }
                    // Swallow runs of `*` and `?`; each `?` eats one byte.
                    let mut c = self.at(p);
                    p += 1;
                    while c == b'?' || c == b'*' {
                        if c == b'?' {
                            if n == len || (self.s[n] == b'/' && self.pathname) {
                                return false;
                            }
                            n += 1;
                        }
                        c = self.at(p);
                        p += 1;
                    }
                    if c == 0 {
                        return !self.pathname || self.leading_dir || !self.s[n..].contains(&b'/');
                    }
                    let endp = if self.pathname {
                        self.s[n..]
                            .iter()
                            .position(|&b| b == b'/')
                            .map_or(len, |i| n + i)
                    } else {
                        len
                    };
                    if c == b'/' && self.pathname {
                        while n < len && self.s[n] != b'/' {
                            n += 1;
                        }
                        return n < len && self.run(p, n + 1, None);
                    }
                    // The star is followed by a bracket or a literal:
                    // try each start position, committing to the first
                    // from which the rest matches up to the next star.
                    let first = if c == b'[' {
                        None
                    } else if c == b'\\' && self.escape {
                        Some(self.at(p))
                    } else {
                        Some(c)
                    };
                    p -= 1;
                    let mut found: StarStop = None;
                    let mut ok = false;
                    while n < endp {
                        if first.is_none_or(|f| self.s[n] == f) && self.run(p, n, Some(&mut found))
                        {
                            ok = true;
                            break;
                        }
                        n += 1;
                    }
                    if !ok {
                        return false;
                    }
                    match found {
                        None => return true,
                        Some((sp, sn)) => {
                            p = sp;
                            n = sn;
                            continue;
                        }
                    }
                }
                b'[' => match self.bracket(p, n) {
                    Bracket::Consumed(np) => p = np,
                    Bracket::Fail => return false,
                    Bracket::Literal => {
                        if n == len || self.s[n] != b'[' {
                            return false;
                        }
                    }
                },
                _ => {
                    if n == len || self.s[n] != c {
                        return false;
                    }
                }
            }
            n += 1;
        }
        n == len || (self.leading_dir && self.s[n] == b'/')
    }

    /// A bracket expression whose `[` is just before `p`, against `s[n]`.
    fn bracket(&self, mut p: usize, n: usize) -> Bracket {
        if n == self.s.len() || (self.s[n] == b'/' && self.pathname) {
            return Bracket::Fail;
        }
        let negated = matches!(self.at(p), b'!' | b'^');
        if negated {
            p += 1;
        }
        let ch = self.s[n];
        let mut c = self.at(p);
        p += 1;
        let matched = loop {
            // `c` is the first byte of a member, `p` just after it.
            let low: u8;
            if c == b'\\' && self.escape {
                let lit = self.at(p);
                if lit == 0 {
                    return Bracket::Fail;
                }
                p += 1;
                if self.single(lit, p, ch) {
                    break true;
                }
                low = lit;
                c = self.at(p);
                p += 1;
            } else if c == b'[' && self.at(p) == b':' {
                match self.class(&mut p) {
                    ClassParse::Name(Some(class)) => {
                        if class(ch) {
                            break true;
                        }
                        c = self.at(p);
                        p += 1;
                        if c == b']' {
                            break false;
                        }
                        continue;
                    }
                    ClassParse::Name(None) => return Bracket::Fail,
                    ClassParse::NotAClass => {
                        if self.single(b'[', p, ch) {
                            break true;
                        }
                        low = b'[';
                        c = self.at(p);
                        p += 1;
                    }
                }
            } else if c == b'[' && self.at(p) == b'=' {
                match self.equivalence(&mut p) {
                    Some(eq) => {
                        if ch == eq {
                            break true;
                        }
                        c = self.at(p);
                        p += 1;
                        if c == b']' {
                            break false;
                        }
                        continue;
                    }
                    None => {
                        if self.single(b'[', p, ch) {
                            break true;
                        }
                        low = b'[';
                        c = self.at(p);
                        p += 1;
                    }
                }
            } else if c == 0 {
                return Bracket::Literal;
            } else if c == b'[' && self.at(p) == b'.' {
                let Some(sym) = self.collating(&mut p) else {
                    return Bracket::Fail;
                };
                let is_range = self.at(p) == b'-' && self.at(p + 1) != 0;
                if !is_range && ch == sym {
                    break true;
                }
                low = sym;
                c = self.at(p);
                p += 1;
            } else {
                if self.single(c, p, ch) {
                    break true;
                }
                low = c;
                c = self.at(p);
                p += 1;
            }
            // `low` was an ordinary member; `c` follows it.
            if c == b'-' && self.at(p) != b']' {
                let mut high = self.at(p);
                p += 1;
                if high == b'[' && self.at(p) == b'.' {
                    match self.collating(&mut p) {
                        Some(sym) => high = sym,
                        None => return Bracket::Fail,
                    }
                } else {
                    if high == b'\\' && self.escape {
                        high = self.at(p);
                        p += 1;
                    }
                    if high == 0 {
                        return Bracket::Fail;
                    }
                }
                if low <= ch && ch <= high {
                    break true;
                }
                c = self.at(p);
                p += 1;
            }
            if c == b']' {
                break false;
            }
        };
        if !matched {
            return if negated {
                Bracket::Consumed(p)
            } else {
                Bracket::Fail
            };
        }
        // Skip the rest of a bracket that already matched; running off the
        // end of the pattern makes the `[` literal after all.
        loop {
            let c = self.at(p);
            p += 1;
            match c {
                b']' => break,
                0 => return Bracket::Literal,
                b'\\' if self.escape => {
                    if self.at(p) == 0 {
                        return Bracket::Fail;
                    }
                    p += 1;
                }
                b'[' if self.at(p) == b':' => {
                    let start = p;
                    let mut count = 0;
                    loop {
                        p += 1;
                        let d = self.at(p);
                        count += 1;
                        if count == CLASS_NAME_MAX {
                            return Bracket::Fail;
                        }
                        if d == b':' && self.at(p + 1) == b']' {
                            p += 2;
                            break;
                        }
                        if !CLASS_NAME_BYTES.contains(&d) {
                            p = start;
                            break;
                        }
                    }
                }
                b'[' if self.at(p) == b'=' => {
                    if self.at(p + 1) == 0 {
                        return Bracket::Fail;
                    }
                    if self.at(p + 2) != b'=' || self.at(p + 3) != b']' {
                        return Bracket::Fail;
                    }
                    p += 4;
                }
                b'[' if self.at(p) == b'.' => loop {
                    p += 1;
                    let d = self.at(p);
                    if d == 0 {
                        return Bracket::Fail;
                    }
                    if d == b'.' && self.at(p + 1) == b']' {
                        p += 2;
                        break;
                    }
                },
                _ => {}
            }
        }
        if negated {
            Bracket::Fail
        } else {
            Bracket::Consumed(p)
        }
    }

    /// An ordinary member byte `m` (with `p` just after it): does it match
    /// `ch` on its own? False when it does not, or when it starts a range
    /// (which the caller decides).
    fn single(&self, m: u8, p: usize, ch: u8) -> bool {
        let is_range = self.at(p) == b'-' && self.at(p + 1) != 0 && self.at(p + 1) != b']';
        !is_range && m == ch
    }

    /// `[:name:]` with `p` at the `:`. On success `p` is after `:]`.
    fn class(&self, p: &mut usize) -> ClassParse {
        let start = *p;
        let mut q = *p;
        let mut name = Vec::new();
        loop {
            if name.len() == CLASS_NAME_MAX {
                return ClassParse::Name(None);
            }
            q += 1;
            let d = self.at(q);
            if d == b':' && self.at(q + 1) == b']' {
                *p = q + 2;
                return ClassParse::Name(class_fn(&name));
            }
            if !CLASS_NAME_BYTES.contains(&d) {
                *p = start;
                return ClassParse::NotAClass;
            }
            name.push(d);
        }
    }

    /// `[=x=]` with `p` at the first `=`; `None` (and `p` untouched) when
    /// it is not one, so that `[` is an ordinary member.
    fn equivalence(&self, p: &mut usize) -> Option<u8> {
        let x = self.at(*p + 1);
        if x == 0 || self.at(*p + 2) != b'=' || self.at(*p + 3) != b']' {
            return None;
        }
        *p += 4;
        Some(x)
    }

    /// `[.x.]` with `p` at the first `.`; `None` means the whole match
    /// fails (unterminated, or not exactly one byte: the C locale knows no
    /// collating names).
    fn collating(&self, p: &mut usize) -> Option<u8> {
        let start = *p;
        let mut q = *p;
        let mut count = 0;
        loop {
            q += 1;
            let d = self.at(q);
            if d == b'.' && self.at(q + 1) == b']' {
                break;
            }
            if d == 0 {
                return None;
            }
            count += 1;
        }
        if count != 1 {
            return None;
        }
        *p = q + 2;
        Some(self.at(start + 1))
    }
}

enum ClassParse {
    /// A `[:name:]`; `None` for a name the C locale does not know.
    Name(Option<fn(u8) -> bool>),
    /// Not a class after all: `[` is an ordinary member.
    NotAClass,
}

/// The C locale's character classes (ASCII only).
fn class_fn(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |c: u8| c.is_ascii_alphanumeric(),
        b"alpha" => |c: u8| c.is_ascii_alphabetic(),
        b"blank" => |c: u8| c == b' ' || c == b'\t',
        b"cntrl" => |c: u8| c < 0x20 || c == 0x7f,
        b"digit" => |c: u8| c.is_ascii_digit(),
        b"graph" => |c: u8| (0x21..0x7f).contains(&c),
        b"lower" => |c: u8| c.is_ascii_lowercase(),
        b"print" => |c: u8| (0x20..0x7f).contains(&c),
        b"punct" => |c: u8| c.is_ascii_punctuation(),
        b"space" => |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b"upper" => |c: u8| c.is_ascii_uppercase(),
        b"xdigit" => |c: u8| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: Flags = Flags::PATHNAME.union(Flags::LEADING_DIR);

    #[test]
    fn basics() {
        assert!(fnmatch(b"*.tmp", b"x.tmp", Flags::NONE));
        assert!(!fnmatch(b"*.tmp", b"x.tmpx", Flags::NONE));
        assert!(fnmatch(b"/data", b"/data/x/y", PL));
        assert!(!fnmatch(b"/data", b"/database", PL));
        assert!(!fnmatch(b"/data/*.c", b"/data/a/b.c", Flags::PATHNAME));
        assert!(fnmatch(b"/data/*.c", b"/data/a/b.c", Flags::LEADING_DIR));
        assert!(fnmatch(b"{a,b}", b"{a,b}", Flags::NONE));
        assert!(!fnmatch(b"{a,b}", b"a", Flags::NONE));
        assert!(fnmatch(b"[[:alpha:]]x", b"ax", Flags::NONE));
        assert!(fnmatch(b"[!a]", b"b", Flags::NONE));
        assert!(fnmatch(b"[^a]", b"b", Flags::NONE));
        assert!(fnmatch(b"[a", b"[a", Flags::NONE));
        assert!(!fnmatch(b"[a", b"a", Flags::NONE));
        assert!(!fnmatch(b"a\\", b"a\\", Flags::NONE));
        assert!(fnmatch(b"\\*", b"*", Flags::NONE));
        assert!(!fnmatch(b"a?b", b"a/b", Flags::PATHNAME));
        assert!(!fnmatch(b"a[/]b", b"a/b", Flags::PATHNAME));
        assert!(fnmatch(b"a[/]b", b"a/b", Flags::NONE));
        assert!(fnmatch(b"[]]", b"]", Flags::NONE));
        assert!(!fnmatch(b"[z-a]", b"m", Flags::NONE));
    }
}
