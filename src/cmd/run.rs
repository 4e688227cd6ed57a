//! `csync2-watch run` (not built yet).

use crate::cli::RunArgs;

pub fn run(_args: RunArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
