//! `fsck`: verify the repository (structure, `--read-data`, or `--no-key`) and print the report.
//! Exit 0 intact, 7 damaged, 10 the check could not finish.

use std::io::Write;

use clap::Args;

use super::common::after_fsck;
use super::common::{human, print_json, Ctx};
use super::progress::Progress;
use crate::error::{exit, Error, Result};

#[derive(Args, Debug)]
pub(super) struct FsckArgs {
    /// Download every pack and verify every blob, then stream the newest snapshot of each
    /// series to check its whole-stream hash.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub(super) read_data: bool,
    /// Verify only a slice of the packs: `N/M` (the N-th of M slices) or `P%` (a random share).
    #[arg(long, value_name = "N/M|P%")]
    pub(super) read_data_subset: Option<crate::ops::fsck::Subset>,
    /// Check without a password: object names against their BLAKE3, layouts, missing packs.
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    pub(super) no_key: bool,
    /// List the details of aggregated problems (each duplicated chunk and its packs).
    #[arg(short, long)]
    pub(super) verbose: bool,
}

pub(super) fn run(ctx: &Ctx<'_>, a: &FsckArgs) -> Result<()> {
    use crate::ops::fsck::{self, FsckOptions, Severity, Subset};
    let started = std::time::Instant::now();
    let bar = Progress::counting(ctx.cli.quiet, "fsck");
    let report_progress = |what: &str, done: u64, total: u64| {
        bar.update_count(what, done, total);
    };
    // Storage failures mean "could not check", never "intact" or "damaged".
    let incomplete = |e: Error| match e {
        Error::Io { .. } | Error::Backend(_) | Error::Cache(_) => {
            Error::CheckIncomplete(e.to_string())
        }
        e => e,
    };
    let report = if a.no_key {
        let backend = ctx.backend()?;
        fsck::fsck_no_key(backend.as_ref(), &report_progress).map_err(incomplete)?
    } else {
        let mut repo = ctx.open()?;
        let read_data = match (a.read_data, a.read_data_subset) {
            (true, _) => Some(Subset::All),
            (false, s) => s,
        };
        let r =
            fsck::fsck(&mut repo, &FsckOptions { read_data }, &report_progress).map_err(incomplete);
        let code = match &r {
            Ok(rep) if rep.damaged() => exit::CORRUPT,
            Ok(_) => exit::OK,
            Err(e) => e.exit_code(),
        };
        after_fsck(ctx, &mut repo, code);
        r?
    };
    bar.finish();
    let damage = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Damage)
        .count();
    let warnings = report.problems.len() - damage;
    if ctx.cli.json {
        print_json(&serde_json::json!({
            "ok": damage == 0, "damaged": damage > 0, "mode": report.mode,
            "counts": report.counts, "problems": report.problems,
        }))?;
    } else {
        let c = &report.counts;
        let mut out = String::new();
        out += &format!(
            "fsck ({}): {} key files, {} index files, {} packs, {} snapshots",
            report.mode, c.key_files, c.index_files, c.packs, c.snapshots
        );
        if c.packs_read > 0 {
            out += &format!(
                "; read {} packs ({}), {} blobs verified",
                c.packs_read,
                human(c.bytes_read),
                c.blobs_verified
            );
        }
        if c.streams_verified > 0 {
            out += &format!(", {} streams verified", c.streams_verified);
        }
        out.push('\n');
        for p in &report.problems {
            let sev = match p.severity {
                Severity::Damage => "DAMAGE ",
                Severity::Warning => "warning",
            };
            out += &format!("{sev} {} {} {}: {}\n", p.object, p.id, p.problem, p.detail);
            for s in &p.affected_snapshots {
                out += &format!(
                    "        affects snapshot {} ({} at {})\n",
                    &s.id[..16],
                    s.name,
                    s.time.format("%Y-%m-%d %H:%M:%S")
                );
            }
            if a.verbose {
                for d in &p.duplicates {
                    out += &format!(
                        "        chunk {} in packs {} ({} extra)\n",
                        d.chunk,
                        d.packs.join(", "),
                        human(d.extra_bytes)
                    );
                }
            } else if !p.duplicates.is_empty() {
                out += "        (fsck -v lists the chunks and their packs; --json too)\n";
            }
        }
        if report.counts.rechecks > 0 {
            // So a user who sees a clean result beside a prune knows why it took longer.
            out += &format!(
                "checked again {} time(s): the index changed during the check (a prune running?); this is the last pass\n",
                report.counts.rechecks
            );
        }
        out += &if damage > 0 {
            format!("result: DAMAGED ({damage} problems, {warnings} warnings)\n")
        } else {
            format!("result: ok ({warnings} warnings)\n")
        };
        std::io::stdout()
            .write_all(out.as_bytes())
            .map_err(|e| Error::io("write output", e))?;
    }
    ctx.say(format!(
        "fsck: {} ({} problems, {} warnings) in {:.1}s",
        if damage > 0 { "DAMAGED" } else { "ok" },
        damage,
        warnings,
        started.elapsed().as_secs_f64()
    ));
    if damage > 0 {
        return Err(Error::Damaged(format!(
            "{damage} problem(s) found; see the report above"
        )));
    }
    Ok(())
}
