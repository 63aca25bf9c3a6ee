//! `stats`: what the repository holds (snapshots, logical and stored size, dedup ratio).

use super::common::{human, print_json, Ctx};
use crate::error::{Error, Result};
use crate::ops::stats::RepoStats;

pub(super) fn run(ctx: &Ctx<'_>) -> Result<()> {
    let mut repo = ctx.open()?;
    let s = crate::ops::stats::stats(&mut repo)?;
    if ctx.cli.json {
        print_json(&s)?;
        return damaged(&s);
    }
    println!("snapshots      {}", s.snapshots);
    println!("logical size   {}", human(s.logical_bytes));
    println!(
        "stored size    {} in {} packs",
        human(s.pack_bytes),
        s.packs
    );
    println!("dedup ratio    {:.2}x", s.dedup_ratio);
    println!("blobs          {} ({} index files)", s.blobs, s.index_files);
    println!(
        "chunker        min {} avg {} max {}; pack target {}",
        human(s.chunker[0] as u64),
        human(s.chunker[1] as u64),
        human(s.chunker[2] as u64),
        human(s.pack_target as u64)
    );
    for w in &s.wal {
        println!(
            "WAL {:<10} {} files, {} stored{}",
            w.cluster,
            w.files,
            human(w.stored_bytes),
            match (&w.last_segment, w.last_segment_time) {
                (Some(l), Some(t)) => format!(
                    "; newest {l}, written {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                _ => String::new(),
            }
        );
        for t in &w.timelines {
            let ranges: Vec<String> = t
                .ranges
                .iter()
                .map(|r| format!("{} .. {} ({})", r.first, r.last, r.segments))
                .collect();
            println!(
                "  timeline {}: {}{}",
                t.timeline,
                if ranges.is_empty() {
                    "no segments".to_string()
                } else {
                    ranges.join(", ")
                },
                if t.gaps.is_empty() {
                    String::new()
                } else {
                    format!("; {} gap(s), see `dumpvault wal status`", t.gaps.len())
                }
            );
        }
    }
    damaged(&s)
}

/// Name each snapshot the figures leave out, and exit 7.
fn damaged(s: &RepoStats) -> Result<()> {
    for d in &s.damaged_snapshots {
        eprintln!("dumpvault: damaged snapshot {}: {}", d.id, d.error);
    }
    match s.damaged_snapshots.first() {
        None => Ok(()),
        Some(d) => Err(Error::Damaged(format!(
            "{} snapshot(s) cannot be read and are not counted (first: {})",
            s.damaged_snapshots.len(),
            d.id
        ))),
    }
}
