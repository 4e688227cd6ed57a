//! Shared helpers for integration tests: the library's testbed, plus a
//! few conveniences built on it.

#![allow(dead_code)]

pub use csync2_watch::testbed::*;

use std::time::Duration;

/// Generous deadline for anything that should happen "soon" on a loaded
/// 2-core machine.
pub const SOON: Duration = Duration::from_secs(30);
