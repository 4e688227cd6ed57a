//! `csync2-watch run`: resolve the command line and the settings file into
//! daemon options and run the daemon until SIGTERM.

use super::{Csync2Opts, Csync2RunOpts, WatchOpts};
use crate::daemon::{self, Options};
use crate::exit;
use crate::runner::Csync2;
use crate::settings::{Settings, SettingsError};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub csync2_run: Csync2RunOpts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Override one setting of the settings file, e.g. `--set quiet_period=500ms`
    /// (repeatable; kept across SIGHUP reloads).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    crate::logging::init("info");
    let settings = Settings::load_with_overrides(args.watch.settings.as_deref(), &args.overrides)
        .map_err(SettingsError::into_exit)?;
    let csync2 = Csync2 {
        program: settings.csync2.clone(),
        node: args.csync2.node.clone(),
        cfg_name: args.csync2.cfg_name.clone(),
        database: args.csync2_run.database.clone(),
        port: args.csync2_run.port,
        client_args: settings.csync2_args.clone(),
        system_dir: None,
    };
    daemon::run(Options {
        load: args.csync2.load_options(),
        csync2,
        settings,
        settings_path: args.watch.settings.clone(),
        overrides: args.overrides.clone(),
        state_dir: args.watch.state_dir.clone(),
    })?;
    Ok(exit::OK)
}
