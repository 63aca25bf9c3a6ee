//! `pg restore`: point-in-time recovery into a new data directory (see `ops::pitr`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{human, parse_time, print_json, Ctx};
use super::wal::ClusterArg;
use crate::error::{Error, Result};
use crate::ops::pitr::{self, PitrOptions, Target};
use crate::pg::Lsn;

#[derive(Subcommand, Debug)]
pub(super) enum PgCmd {
    /// Unpack the right base backup into an empty directory and configure recovery to a
    /// target; starting PostgreSQL on the directory then replays WAL from the archive.
    /// Refuses, before touching DIR, a target the archive cannot reach.
    Restore(PgRestoreArgs),
}

#[derive(Args, Debug)]
pub(super) struct PgRestoreArgs {
    /// The new data directory (must be empty or absent).
    #[arg(long)]
    pgdata: PathBuf,
    #[command(flatten)]
    cluster: ClusterArg,
    /// Recover to this time: RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC.
    #[arg(long, value_parser = parse_time, group = "target")]
    target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover to this WAL location (`X/Y`).
    #[arg(long, value_parser = parse_lsn, group = "target")]
    target_lsn: Option<Lsn>,
    /// Recover to this transaction id.
    #[arg(long, group = "target")]
    target_xid: Option<String>,
    /// Recover to this named restore point (`pg_create_restore_point`).
    #[arg(long, group = "target")]
    target_name: Option<String>,
    /// Stop as soon as the base backup is consistent.
    #[arg(long, group = "target")]
    target_immediate: bool,
    /// What PostgreSQL does at the target: `promote` (default), `pause` or `shutdown`.
    #[arg(long, value_parser = ["promote", "pause", "shutdown"])]
    target_action: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    target_exclusive: bool,
    /// `recovery_target_timeline`: `latest` (default), `current` or a number.
    #[arg(long)]
    target_timeline: Option<String>,
    /// Use this base backup (snapshot id or prefix) instead of choosing the newest that fits.
    #[arg(long)]
    snapshot: Option<String>,
    /// The restore_command to configure (default: this dumpvault, repository and password
    /// file, `wal fetch %f "%p"`).
    #[arg(long)]
    restore_command: Option<String>,
    /// Print the plan and the settings; touch nothing.
    #[arg(long)]
    dry_run: bool,
}

fn parse_lsn(s: &str) -> std::result::Result<Lsn, String> {
    Lsn::parse(s).ok_or_else(|| format!("{s:?} is not a WAL location like 0/3000028"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(super) fn run(ctx: &Ctx<'_>, cmd: &PgCmd) -> Result<()> {
    let PgCmd::Restore(a) = cmd;
    pitr::check_pgdata(&a.pgdata)?;
    let target = if let Some(t) = a.target_time {
        Target::Time(t)
    } else if let Some(l) = a.target_lsn {
        Target::Lsn(l)
    } else if let Some(x) = &a.target_xid {
        Target::Xid(x.clone())
    } else if let Some(n) = &a.target_name {
        Target::Name(n.clone())
    } else if a.target_immediate {
        Target::Immediate
    } else {
        Target::Latest
    };
    let restore_command = match &a.restore_command {
        Some(c) => c.clone(),
        None => default_restore_command(ctx, &a.cluster.cluster)?,
    };
    let opts = PitrOptions {
        cluster: a.cluster.cluster.clone(),
        target,
        action: a.target_action.clone(),
        exclusive: a.target_exclusive,
        timeline: a.target_timeline.clone(),
        snapshot: a.snapshot.clone(),
        restore_command,
    };
    let mut repo = ctx.open()?;
    let plan = pitr::plan(&mut repo, &opts)?;
    if a.dry_run {
        let settings = pitr::recovery_settings(&plan, &opts);
        if ctx.cli.json {
            return print_json(&serde_json::json!({ "plan": plan, "recovery_settings": settings }));
        }
        println!(
            "base backup {} ({})",
            &plan.base.backup.snapshot[..16],
            plan.base.backup.time
        );
        for s in settings {
            println!("{s}");
        }
        return Ok(());
    }
    let report = pitr::restore(&mut repo, plan, &opts, &a.pgdata)?;
    if ctx.cli.json {
        return print_json(&report);
    }
    ctx.say(format!(
        "restored base backup {} ({}) into {}; recovery configured ({}). Start PostgreSQL on it to replay to the target.",
        &report.plan.base.backup.snapshot[..16],
        human(report.bytes),
        report.pgdata.display(),
        report.recovery_settings[1..].join(", ")
    ));
    Ok(())
}

fn default_restore_command(ctx: &Ctx<'_>, cluster: &str) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the dumpvault executable", e))?;
    let mut c = shell_quote(&exe.display().to_string());
    let repo = ctx.cli.repo.as_deref().ok_or_else(|| {
        Error::InvalidInput("no repository: pass --repo or set DUMPVAULT_REPO".into())
    })?;
    let repo = if repo.contains("://") {
        repo.to_string()
    } else {
        std::path::absolute(repo)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| repo.to_string())
    };
    c.push_str(&format!(" --repo {}", shell_quote(&repo)));
    if let Some(p) = &ctx.cli.password_file {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        c.push_str(&format!(
            " --password-file {}",
            shell_quote(&p.display().to_string())
        ));
    } else if let Some(p) = &ctx.cli.password_command {
        c.push_str(&format!(" --password-command {}", shell_quote(p)));
    } else {
        eprintln!("dumpvault: warning: no --password-file: the server needs DUMPVAULT_PASSWORD or DUMPVAULT_PASSWORD_FILE in its environment for the restore_command");
    }
    c.push_str(" --quiet wal fetch");
    if cluster != crate::ops::wal::DEFAULT_CLUSTER {
        c.push_str(&format!(" --cluster {}", shell_quote(cluster)));
    }
    c.push_str(" %f \"%p\"");
    Ok(c)
}
