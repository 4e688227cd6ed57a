//! The SQLite journal: its API, its crash durability, and the `events`
//! command that reads it.

mod api;
mod crash;
mod events_cli;
