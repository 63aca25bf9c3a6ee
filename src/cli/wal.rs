//! `wal push|fetch|status`: PostgreSQL's `archive_command` and `restore_command`, and the
//! chain report. Exit codes follow what PostgreSQL reads: `push` is 0 only once the file is
//! durably archived; `fetch` is 0 fetched, 1 not in the archive, 126 anything else (after
//! retries), which makes recovery stop instead of ending early at the wrong point.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::common::{human, print_json, Ctx};
use crate::error::{Error, Result};
use crate::ops::wal::{self, DEFAULT_CLUSTER};

#[derive(Args, Debug, Clone)]
pub(super) struct ClusterArg {
    /// Name of the PostgreSQL cluster in the repository (its WAL lives in `wal/<cluster>/`).
    #[arg(long, env = "DUMPVAULT_CLUSTER", default_value = DEFAULT_CLUSTER)]
    pub(super) cluster: String,
}

#[derive(Subcommand, Debug)]
pub(super) enum WalCmd {
    /// Archive one WAL file: `archive_command = 'dumpvault wal push %p'`.
    Push {
        /// The file (PostgreSQL's %p).
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Give up (non-zero exit, PostgreSQL retries) after this long: `30s`, `2m`.
        #[arg(long, value_parser = super::common::parse_wait, default_value = "120s")]
        timeout: Duration,
        /// Asynchronous mode: push this file and the other `.ready` files of
        /// pg_wal/archive_status in parallel in a background process, and acknowledge each
        /// one as soon as it is durably stored (see docs/operations.md).
        #[arg(long = "async")]
        async_mode: bool,
        /// Parallel pushes in asynchronous mode.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Spool directory of asynchronous mode (acknowledgements only, never WAL):
        /// default pg_wal/dumpvault-push next to %p.
        #[arg(long)]
        spool: Option<PathBuf>,
        /// Write WAL archiving metrics (last archived file and time, lag, failed pushes) to
        /// this file for node_exporter's textfile collector, after every push.
        #[arg(long, env = "DUMPVAULT_WAL_METRICS_FILE")]
        wal_metrics_file: Option<PathBuf>,
    },
    /// Restore one WAL file: `restore_command = 'dumpvault wal fetch %f %p'`. Exit 0 fetched,
    /// 1 not in the archive, 126 could not fetch (recovery stops).
    Fetch {
        /// The archived file name (PostgreSQL's %f).
        name: String,
        /// Where to write it (PostgreSQL's %p).
        dest: PathBuf,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Attempts for a storage error before exit 126.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Fetch this many following segments in the background into the spool, so the next
        /// calls are served locally (0: off).
        #[arg(long, default_value_t = 8)]
        prefetch: u32,
        /// Prefetch spool: default pg_wal/dumpvault-prefetch next to %p.
        #[arg(long)]
        spool: Option<PathBuf>,
    },
    /// Ranges, gaps and conflicts per timeline, and how far each base backup can be
    /// recovered. Exit 7 if there is a gap, a conflict or a base backup that cannot reach
    /// consistency.
    Status {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Internal: the background worker of `push --async` and of `fetch --prefetch`.
    #[command(hide = true)]
    Worker(crate::cli::walspool::WorkerArgs),
}

pub(super) fn run(ctx: &Ctx<'_>, cmd: &WalCmd) -> Result<()> {
    match cmd {
        WalCmd::Push {
            path,
            cluster,
            timeout,
            async_mode,
            parallel,
            spool,
            wal_metrics_file,
        } => {
            bound_s3_calls(*timeout);
            let result = if *async_mode {
                super::walspool::push_async(
                    ctx,
                    path,
                    &cluster.cluster,
                    *timeout,
                    *parallel,
                    spool.as_deref(),
                )
                .map(|()| None)
            } else {
                ctx.open_uncached()
                    .and_then(|repo| wal::push(&repo, &cluster.cluster, path))
                    .map(Some)
            };
            if let Some(f) = wal_metrics_file {
                if let Err(e) = write_push_metrics(f, &cluster.cluster, path, result.is_ok()) {
                    eprintln!("dumpvault: warning: cannot write {}: {e}", f.display());
                }
            }
            let Some(r) = result? else { return Ok(()) };
            if ctx.cli.json {
                return print_json(&r);
            }
            if r.stored {
                ctx.say(format!(
                    "archived {} ({} -> {})",
                    r.file,
                    human(r.raw_bytes),
                    human(r.stored_bytes)
                ));
            } else {
                ctx.say(format!("{} was already archived with this content", r.file));
            }
            Ok(())
        }
        WalCmd::Fetch {
            name,
            dest,
            cluster,
            retries,
            prefetch,
            spool,
        } => {
            bound_s3_calls(Duration::from_secs(60));
            super::walspool::fetch(
                ctx,
                name,
                dest,
                &cluster.cluster,
                *retries,
                *prefetch,
                spool.as_deref(),
            )
        }
        WalCmd::Status { cluster } => status(ctx, &cluster.cluster),
        WalCmd::Worker(a) => super::walspool::worker(ctx, a),
    }
}

/// Bound every storage call so that a hung request cannot stall archiving or recovery.
pub(super) fn bound_s3_calls(d: Duration) {
    #[cfg(feature = "s3")]
    crate::backend::s3::set_operation_timeout_secs(d.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
    #[cfg(not(feature = "s3"))]
    let _ = d;
}

fn status(ctx: &Ctx<'_>, cluster: &str) -> Result<()> {
    let mut repo = ctx.open()?;
    let st = wal::status(&mut repo, cluster)?;
    let problems = st.problems();
    super::common::write_metrics(ctx, &mut repo);
    if ctx.cli.json {
        print_json(&serde_json::json!({ "status": st, "problems": problems }))?;
    } else {
        println!(
            "cluster {}: {} files, {} stored, segment size {}",
            st.cluster,
            st.files,
            human(st.stored_bytes),
            human(u64::from(st.seg_size))
        );
        if let (Some(l), Some(t)) = (&st.last_segment, st.last_segment_time) {
            println!(
                "newest segment {l}, written {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        for t in &st.timelines {
            println!("timeline {}:", t.timeline);
            for r in &t.ranges {
                println!("  {} .. {}  ({} segments)", r.first, r.last, r.segments);
            }
            for g in &t.gaps {
                println!(
                    "  GAP {} .. {}  ({} missing)",
                    g.first_missing, g.last_missing, g.segments
                );
            }
            for p in &t.partial {
                println!("  partial {p}");
            }
        }
        for b in &st.base_backups {
            let window = match (&b.reach.missing_for_consistency, b.pitr_until) {
                (Some(m), _) => format!("NOT RESTORABLE: {m} missing"),
                (None, Some(u)) => format!(
                    "PITR {} .. {} (timeline {}, to {})",
                    b.backup.done.format("%Y-%m-%d %H:%M:%S"),
                    u.format("%Y-%m-%d %H:%M:%S UTC"),
                    b.reach.timeline,
                    b.reach.until_lsn.map(|l| l.to_string()).unwrap_or_default()
                ),
                (None, None) => "consistent; no WAL archived after it".into(),
            };
            println!(
                "base backup {} {} start {} tl {}: {window}",
                &b.backup.snapshot[..8],
                b.backup.time.format("%Y-%m-%d %H:%M:%S"),
                b.backup.start_lsn,
                b.backup.timeline
            );
        }
        for b in &st.unmatched {
            println!(
                "base backup {} {} start {} tl {}: system identifier unknown, not judged",
                &b.backup.snapshot[..8],
                b.backup.time.format("%Y-%m-%d %H:%M:%S"),
                b.backup.start_lsn,
                b.backup.timeline
            );
        }
        for f in &st.strays {
            println!("not WAL (ignored): {f}");
        }
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Damaged(format!("{} WAL problem(s)", problems.len())))
    }
}

/// Rewrite the WAL metrics file after a push. Values of the last success and the failure
/// counter are carried over from the file's previous content, so it needs no other state.
fn write_push_metrics(
    file: &std::path::Path,
    cluster: &str,
    path: &std::path::Path,
    ok: bool,
) -> std::io::Result<()> {
    let old = std::fs::read_to_string(file).unwrap_or_default();
    let prev = |name: &str| -> Option<f64> {
        old.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let failures =
        prev("dumpvault_wal_push_failures_total").unwrap_or(0.0) + if ok { 0.0 } else { 1.0 };
    let (last_ok, last_mtime, lag) = if ok {
        (now, mtime, (now - mtime).max(0.0))
    } else {
        (
            prev("dumpvault_wal_last_archived_timestamp_seconds").unwrap_or(0.0),
            prev("dumpvault_wal_last_archived_file_mtime_seconds").unwrap_or(0.0),
            prev("dumpvault_wal_archive_lag_seconds").unwrap_or(0.0),
        )
    };
    let l = format!("{{cluster=\"{cluster}\"}}");
    let mut t = String::new();
    for (name, kind, help, v) in [
        ("dumpvault_wal_last_push_success", "gauge", "1 if the last wal push stored its file, 0 if it failed", if ok { 1.0 } else { 0.0 }),
        ("dumpvault_wal_last_push_timestamp_seconds", "gauge", "When the last wal push ran", now),
        ("dumpvault_wal_last_archived_timestamp_seconds", "gauge", "When a WAL file was last archived successfully", last_ok),
        ("dumpvault_wal_last_archived_file_mtime_seconds", "gauge", "Modification time of the last archived file: everything written before it is archived (the RPO point)", last_mtime),
        ("dumpvault_wal_archive_lag_seconds", "gauge", "How long the last archived file waited between its last write and being stored", lag),
        ("dumpvault_wal_push_failures_total", "counter", "wal push calls that failed (PostgreSQL retries them)", failures),
    ] {
        t.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{l} {v}\n"));
    }
    crate::metrics::write_atomic(file, &t)
}
