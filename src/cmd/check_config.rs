//! `csync2-watch check-config`: this node's plan as read from csync2.cfg,
//! and every problem with it.
//!
//! Human output (stdout): the config files read, the node name and where
//! it came from, each group (active ones with peers, slaves marked, `A@B`
//! as written, key file, patterns with `FILE:LINE:COL`), the prefixes, the
//! roots to watch with their filesystem type, csync2's tempdir and
//! database; then every problem on stderr as `FILE:LINE:COL: message`
//! (warnings as `FILE:LINE:COL: warning: message`). Exit 0 when usable
//! (warnings allowed), 3 when any error.
//!
//! `--json` prints one JSON object on stdout instead (exit codes alike).
//! Stable fields (paths and names are strings, non-UTF-8 bytes replaced):
//! * `usable` (bool), `errors`, `warnings` (arrays of strings as above);
//! * `config_files` (array), `system_dir`, `cfg_name` (string|null);
//! * `node` (string), `node_source` (`"flag"` | `"hostname"`);
//! * `groups`: array of `{name, location, active, myname (string|null),
//!   local_slave, key_file (string|null), auto, hosts: [{name, written,
//!   slave}], patterns: [{kind ("include"|"exclude"|"compare"|
//!   "compare-include"), pattern, location}]}` in file order;
//! * `peers`: array of `{name, slave, groups}`;
//! * `prefixes`: array of `{name, path (string|null), location}`;
//! * `roots`: array of `{path, origin, exists, symlink, fs_type
//!   (string|null), network_fs (string|null)}`;
//! * `tempdir` (string|null), `database` (string|null: the config's
//!   setting), `database_default` (what csync2 opens without `-D`),
//!   `lock_timeout` (seconds).

use std::io::Write;

use anyhow::Context;
use serde_json::{json, Value};

use super::{Csync2Opts, WatchOpts};
use crate::config::PatternKind;
use crate::exit::{self, Exit};
use crate::fscheck::{self, Checks};
use crate::plan::{NodeSource, Plan};

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print the plan and the problems as JSON.
    #[arg(long)]
    pub json: bool,
    /// Validate the settings as `run --set KEY=VALUE` would see them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<u8> {
    let opts = args.csync2.load_options();
    let analysis = Plan::analyze(&opts);
    let plan = &analysis.plan;
    let mut errors = analysis.errors.clone();
    let mut warnings = plan.warnings().to_vec();
    let fs = if errors.is_empty() || !plan.roots().is_empty() {
        fscheck::run(plan)
    } else {
        Checks::default()
    };
    errors.extend(fs.errors.iter().cloned());
    warnings.extend(fs.warnings.iter().cloned());

    // csync2-watch's own settings: `--config FILE`, else the default file
    // when it exists. Their problems count like csync2.cfg's.
    let settings_source = match crate::settings::Settings::check(args.watch.settings.as_deref()) {
        Ok(checked) => {
            let checked = checked.with_overrides(&args.overrides);
            errors.extend(checked.errors.iter().map(|p| p.to_string()));
            warnings.extend(checked.warnings.iter().map(|p| match &p.file {
                Some(f) if p.line > 0 => {
                    format!(
                        "{}:{}:{}: warning: {}",
                        f.display(),
                        p.line,
                        p.col,
                        p.message
                    )
                }
                Some(f) => format!("{}: warning: {}", f.display(), p.message),
                None => format!("warning: {}", p.message),
            }));
            checked.settings.source.clone()
        }
        Err(e) => {
            errors.push(e.to_string());
            args.watch.settings.clone()
        }
    };

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let mut v = to_json(plan, &fs, &errors, &warnings);
        v["settings_file"] = json!(settings_source.as_ref().map(|p| p.to_string_lossy()));
        serde_json::to_writer_pretty(&mut out, &v).context("cannot write to standard output")?;
        writeln!(out).context("cannot write to standard output")?;
    } else {
        human(&mut out, plan, &fs, analysis.errors.is_empty())
            .context("cannot write to standard output")?;
        match &settings_source {
            Some(p) => writeln!(out, "csync2-watch settings: {}", p.display()),
            None => writeln!(
                out,
                "csync2-watch settings: defaults ({} does not exist)",
                crate::settings::DEFAULT_PATH
            ),
        }
        .context("cannot write to standard output")?;
        out.flush().ok();
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        for line in errors.iter().chain(warnings.iter()) {
            writeln!(err, "{line}").ok();
        }
        if !errors.is_empty() {
            writeln!(
                err,
                "csync2-watch: {} error(s): csync2's configuration is not usable on this node",
                errors.len()
            )
            .ok();
        }
    }
    if errors.is_empty() {
        Ok(exit::OK)
    } else {
        Err(Exit::silent(exit::CONFIG).into())
    }
}

fn kind_name(k: PatternKind) -> &'static str {
    match k {
        PatternKind::Include => "include",
        PatternKind::Exclude => "exclude",
        PatternKind::Compare => "compare",
        PatternKind::CompareInclude => "compare-include",
    }
}

fn human(out: &mut impl Write, plan: &Plan, fs: &Checks, parsed: bool) -> std::io::Result<()> {
    writeln!(out, "Config files:")?;
    for f in plan.files() {
        writeln!(out, "  {}", f.display())?;
    }
    let src = match plan.node_source() {
        NodeSource::Flag => "from -N",
        NodeSource::Hostname => "from the hostname",
    };
    writeln!(out, "Node: {} ({src})", plan.node())?;
    if !parsed && plan.groups().is_empty() {
        return Ok(());
    }
    writeln!(out, "Groups:")?;
    for g in plan.groups() {
        if !g.active {
            writeln!(
                out,
                "  {} (not active on this node) [{}]",
                g.name, g.location
            )?;
            continue;
        }
        let me = g.myname.as_deref().unwrap_or("");
        let slave = if g.local_slave {
            ", this node is a slave"
        } else {
            ""
        };
        writeln!(out, "  {} [{}] as {me}{slave}", g.name, g.location)?;
        for (name, written, s) in &g.hosts {
            let mut line = format!("    peer {name}");
            if written != name {
                line.push_str(&format!(" (host {written})"));
            }
            if *s {
                line.push_str(" [slave: receives only]");
            }
            writeln!(out, "{line}")?;
        }
        match &g.key_file {
            Some(k) => writeln!(out, "    key {}", k.display())?,
            None => writeln!(out, "    key (none)")?,
        }
        if g.auto != "none" {
            writeln!(out, "    auto {}", g.auto)?;
        }
        for p in &g.patterns {
            writeln!(
                out,
                "    {:<15} {}  [{}]",
                kind_name(p.kind),
                String::from_utf8_lossy(&p.pattern),
                p.location
            )?;
        }
    }
    if !plan.prefixes().is_empty() {
        writeln!(out, "Prefixes:")?;
        for p in plan.prefixes() {
            match &p.path {
                Some(path) => {
                    writeln!(out, "  %{}% = {} [{}]", p.name, path.display(), p.location)?
                }
                None => writeln!(
                    out,
                    "  %{}% (no path on this host) [{}]",
                    p.name, p.location
                )?,
            }
        }
    }
    writeln!(out, "Peers:")?;
    for p in plan.peers() {
        let slave = if p.slave { " [slave]" } else { "" };
        writeln!(out, "  {}{slave} (groups: {})", p.name, p.groups.join(", "))?;
    }
    writeln!(out, "Roots to watch:")?;
    for r in &fs.roots {
        let state = if !r.exists {
            "missing".to_string()
        } else {
            let mut s = r.fs_type.clone().unwrap_or_else(|| "?".into());
            if r.symlink {
                s.push_str(", symlink");
            }
            if r.network.is_some() {
                s.push_str(", network filesystem");
            }
            s
        };
        writeln!(out, "  {} ({state}) [{}]", r.path.display(), r.origin)?;
    }
    let excludes: Vec<String> = plan
        .groups()
        .iter()
        .filter(|g| g.active)
        .flat_map(|g| {
            g.patterns
                .iter()
                .filter(|p| p.kind == PatternKind::Exclude)
                .map(|p| format!("  {} [{}]", String::from_utf8_lossy(&p.pattern), p.location))
        })
        .collect();
    if !excludes.is_empty() {
        writeln!(out, "Exclusions:")?;
        for e in excludes {
            writeln!(out, "{e}")?;
        }
    }
    if let Some(t) = plan.tempdir() {
        writeln!(out, "csync2 tempdir: {}", t.display())?;
    }
    match plan.database() {
        Some(d) => writeln!(out, "csync2 database (config): {}", d.to_string_lossy())?,
        None => writeln!(
            out,
            "csync2 database (default): {}",
            plan.csync2_database(None).to_string_lossy()
        )?,
    }
    Ok(())
}

fn to_json(plan: &Plan, fs: &Checks, errors: &[String], warnings: &[String]) -> Value {
    let groups: Vec<Value> = plan
        .groups()
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "location": g.location,
                "active": g.active,
                "myname": g.myname,
                "local_slave": g.local_slave,
                "key_file": g.key_file.as_ref().map(|k| k.display().to_string()),
                "auto": g.auto,
                "hosts": g.hosts.iter().map(|(name, written, slave)| json!({
                    "name": name, "written": written, "slave": slave,
                })).collect::<Vec<_>>(),
                "patterns": g.patterns.iter().map(|p| json!({
                    "kind": kind_name(p.kind),
                    "pattern": String::from_utf8_lossy(&p.pattern),
                    "location": p.location,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "usable": errors.is_empty(),
        "errors": errors,
        "warnings": warnings,
        "config_files": plan.files().iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "system_dir": plan.system_dir().display().to_string(),
        "cfg_name": plan.cfg_name(),
        "node": plan.node(),
        "node_source": plan.node_source(),
        "groups": groups,
        "peers": plan.peers().iter().map(|p| json!({
            "name": p.name, "slave": p.slave, "groups": p.groups,
        })).collect::<Vec<_>>(),
        "prefixes": plan.prefixes().iter().map(|p| json!({
            "name": p.name,
            "path": p.path.as_ref().map(|x| x.display().to_string()),
            "location": p.location,
        })).collect::<Vec<_>>(),
        "roots": fs.roots.iter().map(|r| json!({
            "path": r.path.display().to_string(),
            "origin": r.origin,
            "exists": r.exists,
            "symlink": r.symlink,
            "fs_type": r.fs_type,
            "network_fs": r.network,
        })).collect::<Vec<_>>(),
        "tempdir": plan.tempdir().map(|t| t.display().to_string()),
        "database": plan.database().map(|d| d.to_string_lossy().into_owned()),
        "database_default": plan.csync2_database(None).to_string_lossy(),
        "lock_timeout": plan.lock_timeout(),
    })
}
