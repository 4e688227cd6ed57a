//! `csync2-watch sysctl` (not built yet).

use crate::cli::SysctlArgs;

pub fn run(_args: SysctlArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
