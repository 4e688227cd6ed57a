//! `csync2-watch watch` (not built yet).

use crate::cli::WatchArgs;

pub fn run(_args: WatchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
