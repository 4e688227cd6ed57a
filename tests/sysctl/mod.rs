//! `csync2-watch sysctl`: counting the directories to watch, the inotify
//! limits it recommends and writes, and the inotify use it reads.

mod cli;
mod count;
mod limits;
mod usage;
