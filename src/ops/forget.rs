//! `forget`: apply a retention policy per group of snapshots and delete the snapshots it does
//! not keep. Only snapshot objects are deleted; the data they alone referenced stays until
//! `prune`. The plan (every snapshot, kept or not, with the rules that kept it) is computed
//! first and is all that `--dry-run` does. [`forget`] takes its shared lock *before* it lists
//! the snapshots it plans from and deletes under that same lock (format-spec 08, L4a), so no
//! `repair snapshots --remove` or other exclusive operation can change the set between the
//! judgement and the deletion. A signal (SIGINT/SIGTERM) stops it between two
//! deletions with `Error::Interrupted`: the snapshots deleted so far are gone, the rest stay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ObjectKind, Result};
use crate::repo::Repo;
use crate::retention::{self, Item, Policy};
use crate::snapshot::Filter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Name,
    Host,
    Tags,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "name" => Ok(GroupBy::Name),
            "host" => Ok(GroupBy::Host),
            "tags" => Ok(GroupBy::Tags),
            _ => Err(format!(
                "group-by {s:?}: use name, host, tags or a comma-separated mix"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub id: String,
    pub time: DateTime<Utc>,
    pub name: String,
    pub host: String,
    pub tags: BTreeMap<String, String>,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupPlan {
    pub group: BTreeMap<String, String>,
    /// Newest first.
    pub snapshots: Vec<PlanEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetPlan {
    pub groups: Vec<GroupPlan>,
    pub keep: usize,
    pub remove: usize,
    /// Whether the removals were carried out (false for --dry-run).
    pub removed: bool,
}

pub fn plan(
    repo: &mut Repo,
    filter: &Filter,
    group_by: &[GroupBy],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<ForgetPlan> {
    if policy.is_empty() {
        return Err(Error::InvalidInput(
            "refusing an empty policy: it would remove every snapshot; give at least one --keep-* option".into(),
        ));
    }
    let snaps = repo.snapshots()?;
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<usize>> = BTreeMap::new();
    for (i, s) in snaps.iter().enumerate() {
        if !filter.matches(&s.snapshot) {
            continue;
        }
        let mut key = Vec::new();
        for g in group_by {
            match g {
                GroupBy::Name => key.push(("name".to_string(), s.snapshot.name.clone())),
                GroupBy::Host => key.push(("host".to_string(), s.snapshot.host.clone())),
                GroupBy::Tags => {
                    let t: Vec<String> = s
                        .snapshot
                        .tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    key.push(("tags".to_string(), t.join(",")));
                }
            }
        }
        groups.entry(key).or_default().push(i);
    }
    let mut out = Vec::new();
    let (mut keep, mut remove) = (0, 0);
    for (key, members) in groups {
        let ids: Vec<String> = members.iter().map(|&i| snaps[i].id.to_hex()).collect();
        let items: Vec<Item> = members
            .iter()
            .zip(&ids)
            .map(|(&i, id)| Item {
                time: snaps[i].snapshot.time,
                id,
                tags: &snaps[i].snapshot.tags,
            })
            .collect();
        let reasons = retention::apply(policy, &items, now);
        let mut entries: Vec<PlanEntry> = members
            .iter()
            .zip(reasons)
            .zip(&ids)
            .map(|((&i, reasons), id)| {
                let s = &snaps[i].snapshot;
                PlanEntry {
                    id: id.clone(),
                    time: s.time,
                    name: s.name.clone(),
                    host: s.host.clone(),
                    tags: s.tags.clone(),
                    keep: !reasons.is_empty(),
                    reasons,
                }
            })
            .collect();
        entries.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        keep += entries.iter().filter(|e| e.keep).count();
        remove += entries.iter().filter(|e| !e.keep).count();
        out.push(GroupPlan {
            group: key.into_iter().collect(),
            snapshots: entries,
        });
    }
    Ok(ForgetPlan {
        groups: out,
        keep,
        remove,
        removed: false,
    })
}

/// Plan and, unless `dry_run`, delete, with the listing taken under the lock the deletions
/// happen under (L4a). A dry run deletes nothing, so it takes no lock (read-only access works).
/// Deleting snapshot objects cannot disturb a running backup (backups never read snapshots),
/// so a shared lock suffices; it keeps out prune and repair, which take the exclusive one.
pub fn forget(
    repo: &mut Repo,
    filter: &Filter,
    group_by: &[GroupBy],
    policy: &Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ForgetPlan> {
    // A dry run deletes nothing; an empty policy is refused before anything is written, the
    // lock included.
    if dry_run || policy.is_empty() {
        return plan(repo, filter, group_by, policy, now);
    }
    let lock = repo.lock(false, "forget")?;
    let mut p = plan(repo, filter, group_by, policy, now)?;
    pause_point("forget:planned");
    // Planning can be slow on a big repository: the lock must still be ours to delete.
    if !lock.still_held()? {
        return Err(Error::LockHeld(
            "forget's lock was removed or went stale while planning; nothing was deleted".into(),
        ));
    }
    delete_planned(repo, &mut p)?;
    Ok(p)
}

/// Test hook: with `DUMPVAULT_FORGET_PAUSE=<point>`, forget waits at the named point until a
/// signal arrives, or until the file `DUMPVAULT_FORGET_RESUME` names exists (at most a
/// minute), so a test can act between its plan and its deletions without racing it. It
/// writes `<that file>.paused` on arrival. As prune's hook; one environment lookup.
fn pause_point(name: &str) {
    if std::env::var_os("DUMPVAULT_FORGET_PAUSE").is_some_and(|v| v == name) {
        let resume = std::env::var_os("DUMPVAULT_FORGET_RESUME").map(std::path::PathBuf::from);
        if let Some(f) = &resume {
            let mut paused = f.clone().into_os_string();
            paused.push(".paused");
            let _ = std::fs::write(paused, name);
        }
        let t0 = std::time::Instant::now();
        while !crate::signals::interrupted() && t0.elapsed().as_secs() < 60 {
            if resume.as_ref().is_some_and(|f| f.exists()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Delete the snapshots the plan removes, under a shared lock taken here. Prefer [`forget`],
/// which also plans under that lock; this form (a plan made earlier) remains for callers that
/// hold a plan already, such as the fuzz model.
pub fn execute(repo: &Repo, plan: &mut ForgetPlan) -> Result<()> {
    let _lock = repo.lock(false, "forget")?;
    delete_planned(repo, plan)
}

/// The deletions themselves; the caller holds the lock.
fn delete_planned(repo: &Repo, plan: &mut ForgetPlan) -> Result<()> {
    for g in &plan.groups {
        for e in g.snapshots.iter().filter(|e| !e.keep) {
            // Each deletion stands on its own, so stopping between two is consistent.
            if crate::signals::interrupted() {
                return Err(Error::Interrupted);
            }
            match repo.backend.delete(ObjectKind::Snapshot, &e.id) {
                Ok(()) | Err(Error::ObjectNotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    plan.removed = true;
    Ok(())
}
