//! Reading csync2.cfg and the settings file, csync2's pattern matching, and
//! the commands that report on them (`check-config`, `match`).

mod check_cli;
mod differential_csync2;
mod fnmatch_libc;
mod fuzz;
mod match_cli;
mod parse;
mod settings_file;
