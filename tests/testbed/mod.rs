//! The test cluster itself (`csync2-watch-testbed`): it builds a real
//! csync2 cluster, injects faults, leaves nothing behind; and facts about
//! the real csync2 checked on it.

mod cleanup;
mod cluster;
mod csync2_facts;
mod names;
mod partition;
mod start_failure;
