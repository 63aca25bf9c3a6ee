//! `verify`: the restore drill. Streams a snapshot, verified, into a command and records the
//! verdict in the repository; also the verification column of `snapshots`.

use clap::Args;

use super::common::{human, print_json, write_metrics, Ctx, FilterArgs};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::ops::verify::{self, Verification, VerifyOptions};
use crate::repo::Repo;

#[derive(Args, Debug)]
pub(super) struct VerifyArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    snapshot: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// With `latest`: choose among the readable snapshots even if some cannot be read. By
    /// default a damaged snapshot, which may be the newest match, fails with exit 7.
    #[arg(long)]
    skip_damaged: bool,
    /// Stream to drill when the snapshot holds several (default: the first).
    #[arg(long)]
    stream: Option<String>,
    /// The verifier, after `--`: it reads the stream on stdin, e.g.
    /// `pg_restore --list`, `redis-check-rdb /dev/stdin`, `psql -d scratch`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `verify`: exit 0 when the drill passed, 7 when the snapshot is damaged, 11 when the
/// verifier rejected the stream (or could not run, or stopped reading early).
pub(super) fn run(ctx: &Ctx<'_>, a: &VerifyArgs) -> Result<()> {
    let mut repo = ctx.open()?;
    let snap = repo.find_snapshot_with(&a.snapshot, &a.filter.filter(), a.skip_damaged)?;
    let total = match &a.stream {
        Some(n) => snap.snapshot.streams.iter().find(|s| &s.name == n),
        None => snap.snapshot.streams.first(),
    }
    .map(|s| s.size);
    let bar = Progress::new(ctx.cli.quiet, total, "verify");
    let opts = VerifyOptions {
        argv: a.command.clone(),
        stream: a.stream.clone(),
        host: crate::lock::hostname(),
    };
    let outcome = verify::verify(&mut repo, &snap, &opts, |s| {
        bar.update(s.bytes_written, String::new)
    });
    bar.finish();
    let outcome = outcome?;
    write_metrics(ctx, &mut repo);
    let v = &outcome.record;
    if ctx.cli.json {
        print_json(&serde_json::json!({
            "verification": outcome.id, "record": v,
        }))?;
    } else {
        ctx.say(format!(
            "snapshot {} stream {:?}: {} ({}, {:.1}s); recorded as {}",
            snap.id.short(),
            v.stream,
            if v.ok { "VERIFIED" } else { "FAILED" },
            human(v.bytes),
            v.duration_ms as f64 / 1000.0,
            outcome.id.short()
        ));
        if !v.ok {
            ctx.say(format!("  {}", v.detail));
        }
    }
    match outcome.damage {
        Some(e) => Err(e),
        None if !v.ok => Err(Error::VerifyFailed(v.detail.clone())),
        None => Ok(()),
    }
}

/// The newest drill of each snapshot, for `snapshots`. Damaged records are skipped with a
/// warning (fsck names them); a storage error fails the listing like any other.
pub(super) fn last_verifications(
    repo: &Repo,
) -> Result<std::collections::HashMap<crate::id::ObjectId, Verification>> {
    let (ok, bad) = verify::list_records(repo)?;
    for (id, e) in &bad {
        eprintln!(
            "dumpvault: warning: skipping damaged verification record {}: {e}",
            id.short()
        );
    }
    Ok(verify::latest_by_snapshot(&ok)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect())
}

/// `snapshots` column text: `ok 2026-12-01 03:00`, `FAILED 2026-12-01 03:00`, or `-`.
pub(super) fn verified_cell(v: Option<&Verification>) -> String {
    match v {
        None => "-".into(),
        Some(v) => format!(
            "{} {}",
            if v.ok { "ok" } else { "FAILED" },
            v.time.format("%Y-%m-%d %H:%M")
        ),
    }
}

/// `snapshots --json`: the `last_verification` object of a snapshot (or null).
pub(super) fn verified_json(v: Option<&Verification>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(v) => serde_json::json!({
            "time": v.time, "ok": v.ok, "stream": v.stream, "exit_status": v.exit_status,
            "restore_verified": v.restore_verified, "detail": v.detail, "host": v.host,
        }),
    }
}
