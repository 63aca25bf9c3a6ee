//! Point-in-time recovery (`pg restore`): choose the base backup for a recovery target, prove
//! the archive reaches the target, unpack the base backup into an empty data directory and
//! write the recovery settings, so that starting PostgreSQL replays to the target.
//!
//! Everything that can refuse runs before the data directory is touched: the target is
//! parsed, the base backup chosen, and its chain checked (consistency, and for a time or LSN
//! target, that the archived WAL reaches it). Unpacking streams the verified snapshot into
//! the `tar` crate through a pipe; a failure removes what was unpacked, so the directory is
//! left as empty as it was found.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::wal::{self, BaseReach};
use crate::pg::Lsn;
use crate::repo::Repo;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Target {
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(String),
    Name(String),
    /// Replay everything archived (`recovery_target` unset).
    Latest,
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
}

#[derive(Debug, Clone)]
pub struct PitrOptions {
    pub cluster: String,
    pub target: Target,
    /// `recovery_target_action`: pause, promote or shutdown.
    pub action: Option<String>,
    /// `recovery_target_inclusive = false` when set.
    pub exclusive: bool,
    /// `recovery_target_timeline` (default `latest`).
    pub timeline: Option<String>,
    /// Use this base backup snapshot (id or prefix) instead of choosing one.
    pub snapshot: Option<String>,
    /// The `restore_command` to write.
    pub restore_command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub base: BaseReach,
    pub target: Target,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub plan: PitrPlan,
    pub pgdata: PathBuf,
    pub bytes: u64,
    pub recovery_settings: Vec<String>,
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Choose the base backup for `opts.target` and check the archive reaches it.
pub fn plan(repo: &mut Repo, opts: &PitrOptions) -> Result<PitrPlan> {
    let st = wal::status(repo, &opts.cluster)?;
    let mut bases: Vec<BaseReach> = st.base_backups;
    if let Some(spec) = &opts.snapshot {
        // A base backup whose system identifier (or the cluster's) is unknown is never
        // chosen, only taken when named: it may be another cluster's (X25).
        bases.extend(st.unmatched.iter().cloned());
        let spec = spec.to_ascii_lowercase();
        bases.retain(|b| b.backup.snapshot.starts_with(&spec));
        if bases.len() != 1 {
            return Err(Error::SnapshotNotFound(format!(
                "{spec} (as a base backup: {} match)",
                bases.len()
            )));
        }
    }
    // A base backup stored cut short (`--allow-truncated`) is used only when named.
    if opts.snapshot.is_none() {
        bases.retain(|b| b.backup.complete);
    }
    if bases.is_empty() {
        let unmatched = match st.unmatched.len() {
            0 => String::new(),
            n => format!(
                " ({n} of unknown system identifier may be this cluster's: name one with --snapshot)"
            ),
        };
        return Err(Error::SnapshotNotFound(format!(
            "a base backup of cluster {}{unmatched} (back one up with `dumpvault backup -- pg_basebackup -D - -Ft -X fetch`)",
            opts.cluster
        )));
    }
    // Newest first, by the time it finished: after a point-in-time recovery that branched
    // below older base backups, the newest ones start at lower LSNs (X26's mistake, here).
    bases.sort_by_key(|b| std::cmp::Reverse((b.backup.done, b.backup.start_lsn)));
    let fits = |b: &BaseReach| -> std::result::Result<(), String> {
        if let Some(m) = &b.reach.missing_for_consistency {
            return Err(format!(
                "base backup {} cannot reach consistency: {m} is not archived",
                short(&b.backup.snapshot)
            ));
        }
        match &opts.target {
            Target::Time(t) => {
                if b.backup.done > *t {
                    return Err(format!(
                        "base backup {} finished at {}, after the target",
                        short(&b.backup.snapshot),
                        b.backup.done
                    ));
                }
                match b.pitr_until {
                    Some(u) if u >= *t => Ok(()),
                    Some(u) => Err(format!(
                        "the archive reaches only to {u} from base backup {} (last segment {}{})",
                        short(&b.backup.snapshot),
                        b.reach.last_segment.as_deref().unwrap_or("-"),
                        b.reach
                            .cut_by_gap
                            .as_ref()
                            .map(|g| format!(", then a gap at {}", g.first_missing))
                            .unwrap_or_default()
                    )),
                    None => Err(format!(
                        "no WAL archived after base backup {}",
                        short(&b.backup.snapshot)
                    )),
                }
            }
            Target::Lsn(l) => {
                let from = b.backup.end_lsn.unwrap_or(b.backup.start_lsn);
                if from > *l {
                    return Err(format!(
                        "base backup {} is consistent only at {from}, after the target",
                        short(&b.backup.snapshot)
                    ));
                }
                match b.reach.until_lsn {
                    Some(u) if u > *l => Ok(()),
                    u => Err(format!(
                        "the archive reaches only to {} from base backup {}",
                        u.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                        short(&b.backup.snapshot)
                    )),
                }
            }
            _ => Ok(()),
        }
    };
    let mut why = Vec::new();
    for b in &bases {
        match fits(b) {
            Ok(()) => {
                return Ok(PitrPlan {
                    base: b.clone(),
                    target: opts.target.clone(),
                })
            }
            Err(e) => why.push(e),
        }
    }
    Err(Error::InvalidInput(format!(
        "the archive cannot reach the target {:?}: {}",
        opts.target,
        why.join("; ")
    )))
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The recovery settings for `plan`.
pub fn recovery_settings(plan: &PitrPlan, opts: &PitrOptions) -> Vec<String> {
    let mut s = vec![format!(
        "restore_command = {}",
        quote(&opts.restore_command)
    )];
    match &plan.target {
        Target::Time(t) => s.push(format!(
            "recovery_target_time = {}",
            quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        Target::Lsn(l) => s.push(format!("recovery_target_lsn = {}", quote(&l.to_string()))),
        Target::Xid(x) => s.push(format!("recovery_target_xid = {}", quote(x))),
        Target::Name(n) => s.push(format!("recovery_target_name = {}", quote(n))),
        Target::Immediate => s.push("recovery_target = 'immediate'".into()),
        Target::Latest => {}
    }
    if opts.exclusive && !matches!(plan.target, Target::Latest | Target::Immediate) {
        s.push("recovery_target_inclusive = false".into());
    }
    if !matches!(plan.target, Target::Latest) {
        s.push(format!(
            "recovery_target_action = {}",
            quote(opts.action.as_deref().unwrap_or("promote"))
        ));
    }
    s.push(format!(
        "recovery_target_timeline = {}",
        quote(opts.timeline.as_deref().unwrap_or("latest"))
    ));
    s
}

/// Refuse a data directory that exists and is not empty.
pub fn check_pgdata(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::InvalidInput(format!(
                    "{} is not empty: pg restore unpacks only into an empty or new directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("read {}", dir.display()), e)),
    }
}

/// Unpack the planned base backup into `pgdata` and write the recovery settings.
pub fn restore(
    repo: &mut Repo,
    plan: PitrPlan,
    opts: &PitrOptions,
    pgdata: &Path,
) -> Result<PitrReport> {
    check_pgdata(pgdata)?;
    let created = !pgdata.exists();
    std::fs::create_dir_all(pgdata)
        .map_err(|e| Error::io(format!("create {}", pgdata.display()), e))?;
    let result = unpack_and_configure(repo, &plan, opts, pgdata);
    match result {
        Ok((bytes, settings)) => Ok(PitrReport {
            plan,
            pgdata: pgdata.to_path_buf(),
            bytes,
            recovery_settings: settings,
        }),
        Err(e) => {
            // Leave the directory as it was found: empty, or absent.
            if let Ok(rd) = std::fs::read_dir(pgdata) {
                for ent in rd.flatten() {
                    let p = ent.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            if created {
                let _ = std::fs::remove_dir(pgdata);
            }
            Err(e)
        }
    }
}

fn unpack_and_configure(
    repo: &mut Repo,
    plan: &PitrPlan,
    opts: &PitrOptions,
    pgdata: &Path,
) -> Result<(u64, Vec<String>)> {
    let snap = repo.find_snapshot(&plan.base.backup.snapshot, &Default::default())?;
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| Error::io("create a pipe for unpacking", e))?;
    let dir = pgdata.to_path_buf();
    let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
        let mut a = tar::Archive::new(reader);
        a.set_preserve_permissions(true);
        a.set_overwrite(false);
        a.unpack(&dir)?;
        // Drain what follows the end-of-archive blocks, so the writer never sees EPIPE.
        std::io::copy(&mut a.into_inner(), &mut std::io::sink())?;
        Ok(())
    });
    let restored = crate::ops::restore::restore(repo, &snap, None, &mut writer, |_| {});
    drop(writer);
    let unpacked = unpacker
        .join()
        .map_err(|_| Error::InvalidInput("the tar unpacker panicked".into()))?;
    let stats = restored?;
    unpacked.map_err(|e| {
        Error::io(
            format!("unpack the base backup into {}", pgdata.display()),
            e,
        )
    })?;
    let settings = recovery_settings(plan, opts);
    let mut conf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pgdata.join("postgresql.auto.conf"))
        .map_err(|e| Error::io("open postgresql.auto.conf", e))?;
    let mut text = format!(
        "\n# dumpvault pg restore: base backup {} ({}), target {:?}\n",
        short(&plan.base.backup.snapshot),
        plan.base.backup.time.to_rfc3339(),
        plan.target
    );
    for s in &settings {
        text.push_str(s);
        text.push('\n');
    }
    conf.write_all(text.as_bytes())
        .and_then(|_| conf.sync_all())
        .map_err(|e| Error::io("write postgresql.auto.conf", e))?;
    std::fs::write(pgdata.join("recovery.signal"), b"")
        .map_err(|e| Error::io("write recovery.signal", e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod {}", pgdata.display()), e))?;
    }
    // pg_basebackup's tar has no pg_wal/ at all with -X none, and recovery needs the
    // directory (and its archive_status/) to exist.
    for d in ["pg_wal", "pg_wal/archive_status"] {
        std::fs::create_dir_all(pgdata.join(d)).map_err(|e| Error::io(format!("create {d}"), e))?;
    }
    Ok((stats.bytes_written, settings))
}
