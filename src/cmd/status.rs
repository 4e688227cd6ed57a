//! `csync2-watch status` (not built yet).

use crate::cli::StatusArgs;

pub fn run(_args: StatusArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
