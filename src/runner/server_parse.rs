//! Reading what the local csync2 server (`csync2 -ii -vv`) prints, beside
//! `parse.rs`, which reads the clients: the `<PID>` prefix of a
//! per-connection child's lines ([`split_pid`]), and the name in the SQL
//! statement a child logs when it records a file ([`SQL_RECORD`]) or
//! removes one ([`SQL_FORGET`]), URL-decoded as csync2 encoded it. Every
//! message was checked against csync2's source and a run of the Debian
//! binary (see [`crate::server`] for how the server uses them).
//!
//! Pure: bytes in, bytes out.
//!
//! Layer: adapter (part of [`crate::runner`]).

#![forbid(unsafe_code)]

/// What a child prints when it records a file, and when it removes one.
pub(crate) const SQL_RECORD: &[u8] = b"SQL: INSERT INTO file (filename, checktxt) values ('";
pub(crate) const SQL_FORGET: &[u8] = b"SQL: delete from file where filename = '";
pub(crate) const MARKING: &[u8] = b"Marking file as dirty: ";

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The URL-decoded name between `marker` and the next `'` (csync2 encodes
/// `'` in names, so the next one ends the value).
pub(crate) fn find_quoted(text: &[u8], marker: &[u8]) -> Option<Vec<u8>> {
    let start = find(text, marker)? + marker.len();
    let len = text[start..].iter().position(|&b| b == b'\'')?;
    let name = url_decode(&text[start..start + len]);
    (!name.is_empty()).then_some(name)
}

/// csync2's url_decode: `%XX` is a byte, everything else stands for itself.
pub(crate) fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `<PID> rest` as printed by csync2's per-connection children.
pub(crate) fn split_pid(line: &[u8]) -> (Option<u32>, &[u8]) {
    if let Some(rest) = line.strip_prefix(b"<") {
        if let Some(end) = rest.iter().position(|&c| c == b'>') {
            if let Ok(pid) = std::str::from_utf8(&rest[..end])
                .unwrap_or("x")
                .parse::<u32>()
            {
                let text = &rest[end + 1..];
                return (Some(pid), text.strip_prefix(b" ").unwrap_or(text));
            }
        }
    }
    (None, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_lines_name_the_recorded_file_byte_exact() {
        let line: &[u8] = b"SQL: INSERT INTO file (filename, checktxt) values \
            ('/d/a%20b%0Ac%27%25\xff', 'v1%3Amtime=1%3Amode=33188')";
        assert_eq!(
            find_quoted(line, SQL_RECORD),
            Some(b"/d/a b\nc'%\xff".to_vec())
        );
        // Another child's prefix in front (interleaved writes).
        let mixed: &[u8] = b"<13> SQL: delete from file where filename = '/d/x'";
        assert_eq!(find_quoted(mixed, SQL_FORGET), Some(b"/d/x".to_vec()));
        assert_eq!(
            find_quoted(b"SQL: DELETE FROM file WHERE filename = '/d/x'", SQL_FORGET),
            None
        );
        assert_eq!(url_decode(b"100%"), b"100%".to_vec());
        assert_eq!(url_decode(b"%zz%4"), b"%zz%4".to_vec());
    }

    #[test]
    fn pid_prefix() {
        assert_eq!(
            split_pid(b"<12> New connection"),
            (Some(12), &b"New connection"[..])
        );
        assert_eq!(split_pid(b"Listening on x"), (None, &b"Listening on x"[..]));
        assert_eq!(split_pid(b"<x> y"), (None, &b"<x> y"[..]));
    }
}
