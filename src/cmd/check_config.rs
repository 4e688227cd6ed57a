//! `csync2-watch check-config` (not built yet).

use crate::cli::CheckConfigArgs;

pub fn run(_args: CheckConfigArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
