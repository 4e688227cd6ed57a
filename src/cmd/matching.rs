//! `csync2-watch match`: for each path, does csync2 sync it (would
//! `csync2 -cr /` record it), and with `-v` which pattern decided. The
//! sysadmin's "why is this file not syncing?", like `git check-ignore -v`.
//!
//! Output, one record per path, newline-terminated (NUL with `-z`):
//! * `+ GROUP<TAB>PATH` when csync2 syncs PATH (GROUP: the first matching
//!   active group in csync2's own order);
//! * `- <TAB>PATH` when it does not.
//!
//! With `-v` an explanation comes between the two fields:
//! `+ GROUP<TAB>FILE:LINE:include PATTERN<TAB>PATH`,
//! `- <TAB>FILE:LINE:exclude PATTERN (excludes parent DIR)<TAB>PATH`,
//! `- <TAB>no include pattern matches<TAB>PATH`. PATH is always last and
//! printed byte-exact as given. Paths are decided as csync2 resolves its
//! arguments (`getrealfn`): made absolute from the working directory,
//! `.`, `..` and `//` cleaned textually, and the directory part resolved
//! through symlinks (never the last component).

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Csync2Opts;
use crate::exit;
use crate::plan::{LoadError, Plan};

#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// Also print the deciding pattern with its FILE:LINE.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Read the paths from standard input, one a record.
    #[arg(long)]
    pub stdin: bool,
    /// Input and output records are NUL-terminated instead of newline-terminated.
    #[arg(short = 'z')]
    pub nul: bool,
    /// Paths to decide.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: MatchArgs) -> anyhow::Result<u8> {
    let opts = args.csync2.load_options();
    let plan = Plan::load(&opts).map_err(LoadError::into_exit)?;
    if args.paths.is_empty() && !args.stdin {
        anyhow::bail!("no PATH given (pass paths, or --stdin to read them)");
    }
    let cwd = std::env::current_dir().context("cannot find the current directory")?;
    let term = if args.nul { b'\0' } else { b'\n' };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for p in &args.paths {
        record(
            &plan,
            &cwd,
            p.as_os_str().as_bytes(),
            args.verbose,
            term,
            &mut out,
        )?;
    }
    if args.stdin {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        if args.nul {
            let mut data = Vec::new();
            input
                .read_to_end(&mut data)
                .context("cannot read standard input")?;
            for rec in data.split(|&c| c == 0).filter(|r| !r.is_empty()) {
                record(&plan, &cwd, rec, args.verbose, term, &mut out)?;
            }
        } else {
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = input
                    .read_until(b'\n', &mut line)
                    .context("cannot read standard input")?;
                if n == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if !line.is_empty() {
                    record(&plan, &cwd, &line, args.verbose, term, &mut out)?;
                    // Answer each line at once, for interactive use.
                    out.flush().context("cannot write to standard output")?;
                }
            }
        }
    }
    out.flush().context("cannot write to standard output")?;
    Ok(exit::OK)
}

fn record(
    plan: &Plan,
    cwd: &Path,
    given: &[u8],
    verbose: bool,
    term: u8,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let real = realname(given, cwd);
    let d = plan.decide(&real);
    let mut line = Vec::with_capacity(given.len() + 64);
    if d.synced {
        line.extend_from_slice(b"+ ");
        line.extend_from_slice(d.group.as_deref().unwrap_or("").as_bytes());
    } else {
        line.extend_from_slice(b"- ");
    }
    line.push(b'\t');
    if verbose {
        line.extend_from_slice(d.to_string().as_bytes());
        line.push(b'\t');
    }
    line.extend_from_slice(given);
    line.push(term);
    out.write_all(&line)
        .context("cannot write to standard output")?;
    Ok(())
}

/// `path` as csync2's `getrealfn` makes it: absolute from `cwd`, `//`,
/// `.` and `..` cleaned textually, then the longest leading part that is
/// a directory (following symlinks), short of the last component,
/// replaced by its real path.
pub fn realname(path: &[u8], cwd: &Path) -> PathBuf {
    let mut abs = Vec::with_capacity(path.len() + 64);
    if path.first() != Some(&b'/') {
        abs.extend_from_slice(cwd.as_os_str().as_bytes());
        abs.push(b'/');
    }
    abs.extend_from_slice(path);
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in abs.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            _ => comps.push(c),
        }
    }
    let join = |cs: &[&[u8]]| -> Vec<u8> {
        let mut v = Vec::new();
        for c in cs {
            v.push(b'/');
            v.extend_from_slice(c);
        }
        if v.is_empty() {
            v.push(b'/');
        }
        v
    };
    for k in (1..comps.len()).rev() {
        let dir = PathBuf::from(OsString::from_vec(join(&comps[..k])));
        if std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
            if let Ok(real) = std::fs::canonicalize(&dir) {
                let mut v = real.into_os_string().into_vec();
                for c in &comps[k..] {
                    if v.last() != Some(&b'/') {
                        v.push(b'/');
                    }
                    v.extend_from_slice(c);
                }
                return PathBuf::from(OsString::from_vec(v));
            }
            break;
        }
    }
    PathBuf::from(OsString::from_vec(join(&comps)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realname_cleans_and_resolves_the_directory_part_only() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("real/self")).unwrap();
        let b = base.as_os_str().as_bytes();
        let got = realname(b"link/./x//y/../f", &base);
        assert_eq!(got, base.join("real/x/f"));
        // The last component is never resolved.
        assert_eq!(realname(b"real/self", &base), base.join("real/self"));
        assert_eq!(realname(b"link/self", &base), base.join("real/self"));
        let mut abs = b.to_vec();
        abs.extend_from_slice(b"/link/");
        assert_eq!(realname(&abs, Path::new("/")), base.join("link"));
        assert_eq!(realname(b"/", Path::new("/tmp")), Path::new("/"));
        assert_eq!(realname(b"..", Path::new("/")), Path::new("/"));
    }
}
