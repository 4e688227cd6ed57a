//! What ships: the .deb and .rpm, the example configuration, the man pages
//! and completions, the daemon's binary, and the packages on a live system.

mod contents;
mod daemon_binary;
mod example_config;
mod live;
mod man_pages;
