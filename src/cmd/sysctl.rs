//! `csync2-watch sysctl [-C NAME] [-N NAME] [--write]`: loads this node's
//! plan, counts the directories the daemon would watch, prints the inotify
//! limits it needs as a ready-to-use sysctl.d file, and with `--write`
//! writes that file and raises the running kernel's limits. The logic is
//! in [`crate::sysctl`].

use std::path::Path;

use anyhow::Context;

use super::Csync2Opts;
use crate::exit;
use crate::plan::{LoadError, Plan};
use crate::sysctl::{self, Report, SysctlPaths, Usage};

#[derive(Debug, clap::Args)]
pub struct SysctlArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// Write /etc/sysctl.d/60-csync2-watch.conf sized for this node (it replaces
    /// the packaged default /usr/lib/sysctl.d/60-csync2-watch.conf) and apply it,
    /// never lowering a limit.
    #[arg(long)]
    pub write: bool,
}

pub fn run(args: SysctlArgs) -> anyhow::Result<u8> {
    crate::logging::init("warn");
    let opts = args.csync2.load_options();
    let plan = Plan::load(&opts).map_err(LoadError::into_exit)?;

    let dirs = sysctl::count_watched_dirs(&plan, Path::new("/"), plan.roots());
    let euid = nix::unistd::geteuid().as_raw();
    let cfg_name = args.csync2.cfg_name.as_deref();
    let held = sysctl::inotify_usage(Path::new("/proc"), euid);
    let own_pid = std::process::id();
    let others = Usage::sum(
        held.iter()
            .filter(|p| p.pid != own_pid && !sysctl::is_daemon_for(&p.cmdline, cfg_name)),
    );

    let paths = SysctlPaths::default();
    let current = sysctl::read_limits(&paths.proc_inotify)?;
    let subject = format!("node {}, {}", plan.node(), plan.config_file().display());
    let report = Report::new(subject, dirs, others, current);
    print!("{}", report.render());

    if !args.write {
        return Ok(exit::OK);
    }
    println!();
    sysctl::write_conf(&paths.conf_file, &report.conf_text())
        .context("writing the sysctl.d file")?;
    println!("wrote {}", paths.conf_file.display());
    for a in sysctl::apply(&paths.proc_inotify, &report.target())? {
        if a.changed() {
            println!("{}: {} -> {}", a.limit.key(), a.before, a.after);
        } else {
            println!("{}: {} (unchanged)", a.limit.key(), a.before);
        }
    }
    Ok(exit::OK)
}
