//! `csync2-watch` binary: parse the command line, run it, turn the outcome
//! into an exit code. Everything else lives in the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    csync2_watch::cli::main()
}
