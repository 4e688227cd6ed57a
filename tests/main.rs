//! csync2-watch's integration tests: one test binary, one module per topic
//! (`cargo test --test main config::` runs a topic), and one [`support`]
//! module for what several topics share.
//!
//! They need root: the cluster tests build real multi-node csync2 clusters
//! in network and mount namespaces (`csync2-watch-testbed`), and they use
//! real inotify and the real csync2. A test that must have its process to
//! itself runs itself again in a new process ([`support::alone`]); one that
//! drives a child process made of another test names it by its full path
//! ([`support::test_path`]).

mod support;

mod config;
mod daemon;
mod journal;
mod package;
mod runner;
mod sysctl;
mod testbed;
mod watch;
