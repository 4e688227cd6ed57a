//! `csync2-watch run` on a real 3-node csync2 cluster: changes, operating
//! it, faults, crashes and recovery, `reload`, `status PATH`.

mod changes;
mod control;
mod crash_recovery;
mod faults;
mod reload_cli;
mod status_path;
