//! What every command shares: the invocation context (repository location, password sources,
//! cache and lock-wait rules), the snapshot filter flags, the value parsers of clap flags, the
//! output helpers (stdout for data and `--json`, stderr for messages), and `--metrics-file`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use zeroize::Zeroizing;

use super::{password, Cli};
use crate::backend::{self, Backend};
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::metrics::{self, LocalEvent};
use crate::ops::verify;
use crate::repo::{DamagedSnapshot, OpenOptions, Repo};
use crate::snapshot::{parse_tag, Filter};

#[derive(Args, Debug)]
pub(super) struct KdfArgs {
    /// Argon2id memory in KiB for the new key file (floor 19456).
    #[arg(long, default_value_t = KdfParams::DEFAULT.m_cost)]
    pub(super) kdf_memory: u32,
    /// Argon2id iterations for the new key file (floor 2).
    #[arg(long, default_value_t = KdfParams::DEFAULT.t_cost)]
    pub(super) kdf_iterations: u32,
}

impl KdfArgs {
    /// Parameters for a new key file; below the floor is a usage error here (exit 2), while
    /// an existing key file below the floor is refused when opening (exit 4).
    pub(super) fn params(&self) -> Result<KdfParams> {
        let p = KdfParams {
            m_cost: self.kdf_memory,
            t_cost: self.kdf_iterations,
            p_cost: 1,
        };
        p.check().map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(p)
    }
}

#[derive(Args, Debug, Default)]
pub(super) struct FilterArgs {
    /// Series name.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Tag key=value (repeatable; all must match).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub(super) tags: Vec<(String, String)>,
    /// Host the snapshot was taken on.
    #[arg(long)]
    pub(super) host: Option<String>,
}

impl FilterArgs {
    pub(super) fn filter(&self) -> Filter {
        Filter {
            name: self.name.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
    }
}

pub(super) fn parse_wait(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: use e.g. 30s, 10m, 2h"))?;
    Ok(std::time::Duration::from_secs(n * mult))
}

/// Parse `NAME=VALUE` for `--stream` and `--stream-cmd`.
pub(super) fn parse_named(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub(super) fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?}: use a percentage such as 5%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?}: must be between 0% and 100%"));
    }
    Ok(v / 100.0)
}

pub(super) fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "cannot parse time {s:?}: use RFC 3339 or YYYY-MM-DD[ HH:MM:SS]"
    ))
}

/// One invocation: the parsed global options every command reads.
pub(super) struct Ctx<'a> {
    pub(super) cli: &'a Cli,
}

impl Ctx<'_> {
    pub(super) fn backend(&self) -> Result<Arc<dyn Backend>> {
        let loc = self.cli.repo.as_deref().ok_or_else(|| {
            Error::InvalidInput("no repository: pass --repo or set DUMPVAULT_REPO".into())
        })?;
        let b: Arc<dyn Backend> = Arc::from(backend::open(loc)?);
        // Wrapped here, at the one place every command opens its repository, so no command
        // can bypass the flag (`copy`'s target is opened separately and is not wrapped: the
        // flag is about the repository named by --repo).
        if self.cli.append_only {
            return Ok(Arc::new(backend::append_only::AppendOnly::new(b)));
        }
        Ok(b)
    }

    pub(super) fn password(&self, prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
        password::get(&password::Sources {
            env_var: "DUMPVAULT_PASSWORD",
            file: self.cli.password_file.as_deref(),
            command: self.cli.password_command.as_deref(),
            prompt,
            confirm,
        })
    }

    pub(super) fn new_password(&self, file: Option<&Path>) -> Result<Zeroizing<String>> {
        password::get(&password::Sources {
            env_var: "DUMPVAULT_NEW_PASSWORD",
            file,
            command: None,
            prompt: "New password: ",
            confirm: true,
        })
    }

    pub(super) fn open(&self) -> Result<Repo> {
        let backend = self.backend()?;
        // Fail on a missing or too-new repository before asking for a password.
        crate::repo::read_config(backend.as_ref())?;
        let pw = self.password("Repository password: ", false)?;
        self.open_with(backend, pw.as_bytes())
    }

    /// Open without the metadata cache: for `wal push` and `wal fetch`, which read no index
    /// and must not pay for (or wait on) the SQLite cache on every call.
    pub(super) fn open_uncached(&self) -> Result<Repo> {
        let backend = self.backend()?;
        crate::repo::read_config(backend.as_ref())?;
        let pw = self.password("Repository password: ", false)?;
        Repo::open(
            backend,
            pw.as_bytes(),
            &OpenOptions {
                cache_dir: None,
                lock_wait: self.cli.lock_wait,
            },
        )
    }

    /// Open `backend` with `password` under this invocation's cache and lock-wait settings.
    pub(super) fn open_with(&self, backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repo> {
        let cache_dir = if self.cli.no_cache {
            None
        } else {
            self.cli
                .cache_dir
                .clone()
                .or_else(crate::cache::default_dir)
        };
        Repo::open(
            backend,
            password,
            &OpenOptions {
                cache_dir,
                lock_wait: self.cli.lock_wait,
            },
        )
    }

    pub(super) fn say(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| Error::io("write output", e.into()))?;
    writeln!(out).map_err(|e| Error::io("write output", e))
}

/// Bytes in binary units, for people.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub(super) fn cache(ctx: &Ctx<'_>, repo: &Repo) -> Option<crate::cache::Cache> {
    if ctx.cli.no_cache {
        return None;
    }
    let dir: PathBuf = ctx
        .cli
        .cache_dir
        .clone()
        .or_else(crate::cache::default_dir)?;
    crate::cache::Cache::open(&dir, &repo.config.repo_id).ok()
}

/// Remember this fsck's verdict (local knowledge, in the cache) and rewrite the metrics.
pub(super) fn after_fsck(ctx: &Ctx<'_>, repo: &mut Repo, code: i32) {
    if let Some(c) = cache(ctx, repo) {
        let e = LocalEvent {
            time: chrono::Utc::now().timestamp(),
            ok: code == 0,
            code,
        };
        if let Err(err) = c.record_event("fsck", e) {
            eprintln!("dumpvault: warning: cache: cannot record the fsck result: {err}");
        }
    }
    write_metrics(ctx, repo);
}

/// Remember this backup attempt of a series (local knowledge, in the cache), so that a failure
/// shows in the metrics: `code` is dumpvault's exit code, `producer` the producer's status.
pub(super) fn after_backup(
    ctx: &Ctx<'_>,
    repo: &Repo,
    series: (&str, &str, &std::collections::BTreeMap<String, String>),
    code: i32,
    producer: Option<i32>,
) {
    let Some(c) = cache(ctx, repo) else {
        return;
    };
    let key = metrics::series_event_key(series.0, series.1, series.2);
    let time = chrono::Utc::now().timestamp();
    let e = LocalEvent {
        time,
        ok: code == 0,
        code,
    };
    let mut writes = vec![(metrics::EVENT_BACKUP_LAST, e)];
    if code != 0 {
        writes.push((metrics::EVENT_BACKUP_FAILURE, e));
    }
    if let Some(status) = producer {
        let p = LocalEvent {
            time,
            ok: status == 0,
            code: status,
        };
        writes.push((metrics::EVENT_BACKUP_PRODUCER, p));
    }
    for (prefix, e) in writes {
        if let Err(err) = c.record_event(&format!("{prefix}{key}"), e) {
            eprintln!("dumpvault: warning: cache: cannot record the backup attempt: {err}");
            return;
        }
    }
}

/// Regenerate `--metrics-file` from the repository. Never fails the command: a problem is a
/// warning on stderr.
pub(super) fn write_metrics(ctx: &Ctx<'_>, repo: &mut Repo) {
    let Some(path) = ctx.cli.metrics_file.as_deref() else {
        return;
    };
    let result = (|| -> Result<()> {
        let (snapshots, _damaged) = repo.snapshots_lenient()?;
        let (records, _bad) = verify::list_records(repo)?;
        let c = cache(ctx, repo);
        let fsck = c.as_ref().and_then(|c| c.event("fsck").ok().flatten());
        let backups = c
            .as_ref()
            .and_then(|c| c.events_with_prefix("backup-").ok())
            .map(|e| metrics::backup_attempts(&e))
            .unwrap_or_default();
        // WAL figures are a part of the file, not a reason to write none of it.
        let wal = wal_statuses(repo).unwrap_or_else(|e| {
            eprintln!("dumpvault: warning: metrics file: WAL chain left out: {e}");
            Vec::new()
        });
        let text = metrics::render(&metrics::Input {
            repo_id: &repo.config.repo_id,
            snapshots: &snapshots,
            verifications: &records,
            fsck,
            backups: &backups,
            wal: &wal,
            now: chrono::Utc::now(),
        });
        metrics::write_atomic(path, &text)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    })();
    if let Err(e) = result {
        eprintln!("dumpvault: warning: metrics file not written: {e}");
    }
}

/// The chain report of every cluster with archived WAL.
fn wal_statuses(repo: &mut Repo) -> Result<Vec<crate::ops::wal::WalStatus>> {
    crate::ops::wal::clusters(repo.backend.as_ref())?
        .iter()
        .map(|c| crate::ops::wal::status(repo, c))
        .collect()
}

/// `--json` entries for snapshots that cannot be read: `{"id", "damaged": true, "error"}`.
pub(super) fn damaged_json(damaged: &[DamagedSnapshot]) -> Vec<serde_json::Value> {
    damaged
        .iter()
        .map(|d| serde_json::json!({ "id": d.id, "damaged": true, "error": d.error.to_string() }))
        .collect()
}

/// After listing what is readable: name each damaged snapshot on stderr and fail with exit 7,
/// so a listing that left something out never looks complete.
pub(super) fn damaged_result(damaged: &[DamagedSnapshot]) -> Result<()> {
    for d in damaged {
        eprintln!("dumpvault: damaged snapshot {}: {}", d.id, d.error);
    }
    match damaged {
        [] => Ok(()),
        [d] => Err(Error::Damaged(format!("snapshot {} cannot be read", d.id))),
        [d, ..] => Err(Error::Damaged(format!(
            "{} snapshots cannot be read (first: {})",
            damaged.len(),
            d.id
        ))),
    }
}
