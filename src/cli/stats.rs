//! `stats`: what the repository holds (snapshots, logical and stored size, dedup ratio).

use super::common::{human, print_json, Ctx};
use crate::error::Result;

pub(super) fn run(ctx: &Ctx<'_>) -> Result<()> {
    let mut repo = ctx.open()?;
    let s = crate::ops::stats::stats(&mut repo)?;
    if ctx.cli.json {
        return print_json(&s);
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
    Ok(())
}
