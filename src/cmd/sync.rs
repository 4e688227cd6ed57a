//! `csync2-watch sync` (not built yet).

use crate::cli::SyncArgs;

pub fn run(_args: SyncArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
