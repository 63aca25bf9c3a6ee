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
