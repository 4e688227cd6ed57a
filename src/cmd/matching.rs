//! `csync2-watch match` (not built yet).

use crate::cli::MatchArgs;

pub fn run(_args: MatchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
