//! `csync2-watch events` (not built yet).

use crate::cli::EventsArgs;

pub fn run(_args: EventsArgs) -> anyhow::Result<u8> {
    anyhow::bail!("this command is not built yet")
}
