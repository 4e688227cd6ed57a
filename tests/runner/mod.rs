//! The daemon's adapters around the real csync2: the runner, the local
//! server supervisor, peer probes.

mod csync2;
mod probe_tcp;
mod server_csync2;
