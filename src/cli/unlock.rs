//! `unlock`: remove stale locks (left by killed processes), or every lock with `--all`.

use clap::Args;

use super::common::{print_json, Ctx};
use crate::error::Result;

#[derive(Args, Debug)]
pub(super) struct UnlockArgs {
    #[arg(long)]
    all: bool,
}

pub(super) fn run(ctx: &Ctx<'_>, a: &UnlockArgs) -> Result<()> {
    let repo = ctx.open()?;
    let mut removed = Vec::new();
    for (name, info) in crate::lock::list_locks(repo.backend.as_ref(), &repo.key)? {
        // An unreadable lock may be a newer dumpvault's live lock: only --all removes it.
        let stale = info.as_ref().map(crate::lock::is_stale).unwrap_or(false);
        if a.all || stale {
            repo.backend.delete(crate::error::ObjectKind::Lock, &name)?;
            removed.push(name);
        }
    }
    if ctx.cli.json {
        return print_json(&serde_json::json!({ "removed": removed }));
    }
    ctx.say(format!("removed {} lock(s)", removed.len()));
    Ok(())
}
