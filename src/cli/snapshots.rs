//! `snapshots`: list the snapshots matching the filters, with each one's last restore drill.

use std::io::Write;

use super::common::{damaged_json, damaged_result, human, print_json, Ctx, FilterArgs};
use super::verify;
use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotEntry};

#[derive(serde::Serialize)]
pub(super) struct SnapshotJson<'a> {
    pub(super) id: String,
    #[serde(flatten)]
    pub(super) snapshot: &'a Snapshot,
    /// The newest restore drill of this snapshot (`verify`), or null.
    pub(super) last_verification: serde_json::Value,
}

/// One element of `snapshots --json`: a readable snapshot, or a damaged one's report.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonEntry<'a> {
    Readable(SnapshotJson<'a>),
    Damaged(serde_json::Value),
}

pub(super) fn run(ctx: &Ctx<'_>, f: &FilterArgs) -> Result<()> {
    let mut repo = ctx.open()?;
    let filter = f.filter();
    // A damaged snapshot does not hide the healthy ones: they are listed, the damaged ones are
    // reported (stderr, and as `{"id", "damaged": true, "error"}` entries in --json), exit 7.
    let (all, damaged) = repo.snapshots_lenient()?;
    let list: Vec<SnapshotEntry> = all
        .into_iter()
        .filter(|s| filter.matches(&s.snapshot))
        .collect();
    let drills = verify::last_verifications(&repo)?;
    if ctx.cli.json {
        let mut v: Vec<JsonEntry<'_>> = list
            .iter()
            .map(|s| {
                JsonEntry::Readable(SnapshotJson {
                    id: s.id.to_hex(),
                    snapshot: &s.snapshot,
                    last_verification: verify::verified_json(drills.get(&s.id)),
                })
            })
            .collect();
        v.extend(damaged_json(&damaged).into_iter().map(JsonEntry::Damaged));
        print_json(&v)?;
        return damaged_result(&damaged);
    }
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}").map_err(|e| Error::io("write output", e))
    };
    w(
        &mut out,
        format!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:>10}  {:<23}  tags",
            "id", "time (UTC)", "name", "host", "size", "new", "verified"
        ),
    )?;
    for s in &list {
        let sn = &s.snapshot;
        let tags: Vec<String> = sn.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let new: u64 = sn.streams.iter().map(|x| x.new_bytes).sum();
        w(
            &mut out,
            format!(
                "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:>10}  {:<23}  {}",
                s.id.short(),
                sn.time.format("%Y-%m-%d %H:%M:%S"),
                sn.name,
                sn.host,
                human(sn.total_size()),
                human(new),
                verify::verified_cell(drills.get(&s.id)),
                tags.join(",")
            ),
        )?;
        // Multi-stream snapshots list their streams on the next line (single-stream rows
        // stay as they were, for scripts that read them).
        if sn.streams.len() > 1 {
            let names: Vec<String> = sn
                .streams
                .iter()
                .map(|x| format!("{} ({})", x.name, human(x.size)))
                .collect();
            w(&mut out, format!("          streams: {}", names.join(", ")))?;
        }
        // Base backups say which WAL they need: from their start to their end (consistency).
        for b in sn
            .streams
            .iter()
            .filter_map(|x| x.dump.as_ref()?.base_backup.as_ref())
        {
            w(
                &mut out,
                format!(
                    "          base backup: timeline {}, WAL {} .. {}{}",
                    b.timeline,
                    b.start_lsn,
                    b.end_lsn.map_or("?".to_string(), |l| l.to_string()),
                    if b.wal_included { ", WAL included" } else { "" }
                ),
            )?;
        }
    }
    drop(out);
    damaged_result(&damaged)
}
