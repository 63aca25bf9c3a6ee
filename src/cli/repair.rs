//! `repair index` (rebuild the index from pack headers) and `repair snapshots` (list, and with
//! `--remove` delete, snapshots that cannot be restored).

use clap::Subcommand;

use super::common::{print_json, Ctx};
use super::progress::Progress;
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub(super) enum RepairCmd {
    /// Rebuild the index from the packs: every blob is verified and damaged ones are left out
    /// (so the next backup stores them again); packs that are gone or unreadable drop out.
    Index {
        /// Read only each pack's header (fast; trusts the blobs).
        #[arg(long)]
        headers_only: bool,
    },
    /// List snapshots that cannot be restored; delete them only with --remove.
    Snapshots {
        #[arg(long)]
        remove: bool,
    },
}

pub(super) fn run(ctx: &Ctx<'_>, r: &RepairCmd) -> Result<()> {
    use crate::ops::repair;
    let mut repo = ctx.open()?;
    let bar = Progress::counting(ctx.cli.quiet, "repair");
    let report_progress = |what: &str, done: u64, total: u64| {
        bar.update_count(what, done, total);
    };
    match r {
        RepairCmd::Index { headers_only } => {
            let rep = repair::repair_index(&mut repo, !headers_only, &report_progress)?;
            bar.finish();
            if ctx.cli.json {
                return print_json(&rep);
            }
            println!(
                "indexed {} blobs in {} packs; replaced {} index file(s)",
                rep.blobs_indexed,
                rep.packs_indexed,
                rep.removed_index_files.len()
            );
            for s in &rep.skipped {
                println!("skipped pack {}: {}", s.id, s.reason);
            }
            for (pack, chunk) in &rep.bad_blobs {
                println!("left out damaged chunk {chunk} in pack {pack}: the next backup of that data stores it again");
            }
            Ok(())
        }
        RepairCmd::Snapshots { remove } => {
            let rep = repair::repair_snapshots(&mut repo, *remove, &report_progress)?;
            bar.finish();
            if ctx.cli.json {
                print_json(&rep)?;
                return rep.verdict();
            }
            for s in &rep.unrestorable {
                println!(
                    "{} snapshot {} ({} at {})",
                    if rep.removed {
                        "removed"
                    } else {
                        "unrestorable"
                    },
                    s.id,
                    s.name,
                    s.time.format("%Y-%m-%d %H:%M:%S")
                );
            }
            if rep.unrestorable.is_empty() {
                println!("every snapshot is restorable");
            } else if !rep.removed {
                println!("run `dumpvault repair snapshots --remove` to delete them");
            }
            rep.verdict()
        }
    }
}
