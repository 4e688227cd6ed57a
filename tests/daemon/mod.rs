//! `csync2-watch run` on a real 3-node csync2 cluster: changes, operating
//! it, faults, crashes and recovery, `reload`, `status PATH`, reconciles.

mod changes;
mod control;
mod crash_recovery;
mod faults;
mod reconcile;
mod reload_cli;
mod status_path;
