//! `copy`: copy snapshots to another repository (its own location and password sources);
//! only the chunks the target lacks are stored.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::common::{human, print_json, Ctx, FilterArgs};
use super::password;
use super::progress::Progress;
use crate::backend::{self, Backend};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::snapshot::SnapshotEntry;

#[derive(Args, Debug)]
pub(super) struct CopyArgs {
    /// Snapshot ids (or unique prefixes) or `latest`; none: every snapshot matching the filters.
    pub(super) snapshots: Vec<String>,
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// With `latest`: choose among the readable snapshots even if some cannot be read. By
    /// default a damaged snapshot, which may be the newest match, fails with exit 7.
    #[arg(long)]
    pub(super) skip_damaged: bool,
    /// Target repository (a directory or an s3:// location).
    #[arg(long, env = "DUMPVAULT_TO_REPO")]
    pub(super) to: String,
    /// Read the target's password from this file (its first line). DUMPVAULT_TO_PASSWORD takes
    /// precedence.
    #[arg(long, env = "DUMPVAULT_TO_PASSWORD_FILE")]
    pub(super) to_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the target's password.
    #[arg(long, env = "DUMPVAULT_TO_PASSWORD_COMMAND")]
    pub(super) to_password_command: Option<String>,
    /// Do not carry archived WAL (`wal/`, every cluster) over. By default every archived file
    /// the target lacks is copied after the snapshots, so base backups stay restorable to a
    /// point in time there.
    #[arg(long)]
    pub(super) no_wal: bool,
}

pub(super) fn run(ctx: &Ctx<'_>, a: &CopyArgs) -> Result<()> {
    use crate::ops::copy::{self, CopyProgress};
    let mut src = ctx.open()?;
    let mut dst = open_target(ctx, a)?;
    if src.config.repo_id == dst.config.repo_id {
        return Err(Error::InvalidInput(
            "source and target are the same repository".into(),
        ));
    }
    let filter = a.filter.filter();
    let selected: Vec<SnapshotEntry> = if a.snapshots.is_empty() {
        src.snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect()
    } else {
        a.snapshots
            .iter()
            .map(|spec| src.find_snapshot_with(spec, &filter, a.skip_damaged))
            .collect::<Result<_>>()?
    };
    let bar = Progress::new(ctx.cli.quiet, Some(0), "copy");
    let report = |p: &CopyProgress| {
        bar.set_total(p.total);
        bar.update(p.bytes_read, || {
            format!("new {} [{}]", human(p.new_bytes), p.snapshot)
        });
    };
    let r = copy::copy(&mut src, &mut dst, &selected, !a.no_wal, report);
    bar.finish();
    let r = r?;
    if ctx.cli.json {
        return print_json(&r);
    }
    let mut out = String::new();
    for s in &r.snapshots {
        out += &format!(
            "{:<7}  {} -> {}  {}  {:<12}  {:>10}  {:>10} new\n",
            s.status,
            &s.source_id[..8],
            &s.target_id[..8.min(s.target_id.len())],
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.name,
            human(s.size),
            human(s.new_bytes)
        );
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Error::io("write output", e))?;
    ctx.say(format!(
        "copied {} snapshot(s) ({} read, {} new to the target), {} already present, {:.1}s",
        r.copied,
        human(r.bytes_read),
        human(r.new_bytes),
        r.present,
        r.duration_ms as f64 / 1000.0
    ));
    for w in &r.wal {
        ctx.say(format!(
            "WAL of cluster {}: copied {} file(s) ({}, {} stored), {} already present{}",
            w.cluster,
            w.copied,
            human(w.bytes),
            human(w.stored_bytes),
            w.present,
            if w.conflicts_skipped > 0 {
                format!(
                    ", {} conflicting copy(ies) left in the source",
                    w.conflicts_skipped
                )
            } else {
                String::new()
            }
        ));
    }
    Ok(())
}

/// The `copy` target: its own location and password sources (`DUMPVAULT_TO_PASSWORD`,
/// `--to-password-file`, `--to-password-command`, then a prompt), the same cache rules.
fn open_target(ctx: &Ctx<'_>, a: &CopyArgs) -> Result<Repo> {
    let backend: Arc<dyn Backend> = Arc::from(backend::open(&a.to)?);
    crate::repo::read_config(backend.as_ref())?;
    let pw = password::get(&password::Sources {
        env_var: "DUMPVAULT_TO_PASSWORD",
        file: a.to_password_file.as_deref(),
        command: a.to_password_command.as_deref(),
        prompt: "Target repository password: ",
        confirm: false,
    })?;
    ctx.open_with(backend, pw.as_bytes())
}
