//! `prune`: delete what no snapshot needs (a printable plan, then its execution).

use clap::Args;

use super::common::write_metrics;
use super::common::{human, parse_percent, print_json, Ctx};
use super::progress::Progress;
use crate::error::Result;
use crate::repo::Repo;

#[derive(Args, Debug)]
pub(super) struct PruneArgs {
    /// Repack packs with more than this share of unused bytes.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub(super) max_unused: f64,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Keep archived WAL for only the newest N complete base backups of each cluster, by time
    /// (default: for every base backup kept, so each can still be recovered to any point after
    /// it).
    #[arg(long)]
    pub(super) wal_keep_base_backups: Option<usize>,
}

/// "60 min", "2 h": the margin is a whole number of minutes.
fn human_secs(s: u64) -> String {
    match s {
        s if s >= 7200 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(super) fn run(ctx: &Ctx<'_>, a: &PruneArgs) -> Result<()> {
    let mut repo = ctx.open()?;
    prune_run(
        ctx,
        &mut repo,
        a.max_unused,
        a.dry_run,
        a.wal_keep_base_backups,
    )
}

pub(super) fn prune_run(
    ctx: &Ctx<'_>,
    repo: &mut Repo,
    max_unused: f64,
    dry_run: bool,
    wal_keep_base_backups: Option<usize>,
) -> Result<()> {
    use crate::ops::prune;
    // prune reports no progress of its own yet: the spinner shows that it is alive.
    let bar = Progress::counting(ctx.cli.quiet, "prune");
    let r = prune::prune(
        repo,
        &prune::PruneOptions {
            max_unused,
            wal_keep_base_backups,
            ..Default::default()
        },
        dry_run,
    );
    bar.finish();
    let r = r?;
    if !dry_run {
        write_metrics(ctx, repo);
    }
    ctx.say(format!(
        "prune: {} -> {} ({}), {:.1}s",
        human(r.bytes_before),
        human(r.bytes_after),
        if r.executed {
            "done"
        } else {
            "nothing changed"
        },
        r.duration_ms as f64 / 1000.0
    ));
    if ctx.cli.json {
        return print_json(&r);
    }
    let p = &r.plan;
    println!(
        "prune plan: {} snapshots, {} packs ({}); delete {} unused + {} unindexed packs, repack {} ({} to copy), keep {}",
        p.snapshots,
        p.packs,
        human(p.pack_bytes),
        p.delete_packs.len(),
        p.unindexed_packs.len(),
        p.repack_packs.len(),
        human(p.bytes_repacked),
        p.keep_packs
    );
    if r.wal_removed > 0 {
        println!(
            "WAL: {} {} archived file(s) older than every base backup kept",
            if dry_run { "would delete" } else { "deleted" },
            r.wal_removed
        );
    }
    if !p.kept_unindexed.is_empty() {
        // Say why they stay, or the user would expect the next prune to behave the same.
        println!(
            "kept {} unindexed packs younger than the {} margin (a backup may still be writing them; a prune after that deletes them)",
            p.kept_unindexed.len(),
            human_secs(p.unindexed_margin_secs)
        );
    }
    if r.executed {
        println!(
            "pruned: {} -> {} (reclaimed {}), {} new packs, {:.1}s",
            human(r.bytes_before),
            human(r.bytes_after),
            human(r.bytes_before.saturating_sub(r.bytes_after)),
            r.new_packs,
            r.duration_ms as f64 / 1000.0
        );
    } else if dry_run {
        println!(
            "dry run: would reclaim about {}",
            human(p.bytes_freed_gross.saturating_sub(p.bytes_repacked))
        );
    } else {
        println!("nothing to prune");
    }
    Ok(())
}
