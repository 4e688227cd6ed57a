//! The inotify watcher: the tree, storms, overflows, mounts, the watch
//! limit, and the `watch` command.

mod cli;
mod limit;
mod mounts;
mod overflow;
mod storm;
mod tree;
