//! `csync2-watch demo` (not built yet).

use crate::cli::DemoArgs;

pub fn run(_args: DemoArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
