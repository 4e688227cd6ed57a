//! csync2-watch: keeps a csync2 cluster identical within a second of any
//! change by watching csync2's trees with inotify and driving the real
//! `csync2` binary.
//!
//! The crate is split into a pure core (no I/O beyond reading the config
//! files it is asked to parse) and adapters around it:
//!
//! * core: [`fnmatch`], [`config`] (csync2.cfg lexer and parser), [`paths`]
//!   (csync2's path decisions), [`plan`] (what this node syncs, with whom),
//!   [`queue`] (the deduplicating batch queue), [`sched`] (when to run
//!   what), [`statcache`] (what csync2 can and cannot see), [`confirm`]
//!   (what the peers were confirmed to hold; what recovery forces dirty).
//! * adapters: [`watch`] (inotify tree), [`runner`] (csync2 processes),
//!   [`server`] (local `csync2 -ii` supervision), [`process`] (pidfds,
//!   non-reaping exit checks, process-group signals), [`probe`] (peer TCP
//!   probes), [`journal`] (SQLite state), [`fstype`] (statfs), [`status`],
//!   [`walk`] (the synced trees, as `csync2 -cr` walks them).
//! * edges: [`cli`], [`cmd`] (one module per subcommand), [`daemon`]
//!   (wiring for `run`), [`docs`] (man pages, completions).
//!
//! The test cluster (multi-node csync2 clusters in namespaces) is the
//! workspace crate `csync2-watch-testbed`, and the demo built on it is
//! `csync2-watch-demo`: neither is in the daemon's binary.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod confirm;
pub mod daemon;
pub mod docs;
pub mod exit;
pub mod fnmatch;
pub mod fstype;
pub mod journal;
pub mod logging;
pub mod paths;
pub mod plan;
pub mod probe;
pub mod process;
pub mod queue;
pub mod runner;
pub mod sched;
pub mod server;
pub mod settings;
pub mod statcache;
pub mod status;
pub mod sysctl;
pub mod walk;
pub mod watch;
