//! The two spools of WAL archiving, and the background worker that fills them.
//!
//! - `wal push --async`: a spool of acknowledgements only (`<file>.ok`, `<file>.err`). The
//!   worker reads `pg_wal/archive_status/*.ready` itself and pushes several files at once,
//!   straight from `pg_wal/` (PostgreSQL keeps a `.ready` file until it has been told it is
//!   archived). An acknowledgement is written only after the push returned `Ok`, which means
//!   durably stored; the foreground call, which PostgreSQL waits on, turns it into exit 0.
//!   No WAL is copied, so there is no queue that can fill up and nothing that could be
//!   dropped: if the repository is unreachable, calls fail and PostgreSQL keeps its WAL.
//! - `wal fetch --prefetch N`: a spool of the next N segments after the one PostgreSQL asked
//!   for, fetched and fully verified by the worker, then renamed into place when asked for.
//!
//! One worker per spool at a time (an `flock` on `<spool>/.lock`); it exits when idle.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::common::Ctx;
use crate::error::{Error, Result};
use crate::ops::wal;
use crate::pg::{self, WalKind, WalName};

#[derive(Args, Debug)]
pub(super) struct WorkerArgs {
    /// `push` or `prefetch`.
    mode: String,
    #[arg(long)]
    spool: PathBuf,
    #[arg(long)]
    cluster: String,
    /// push: the pg_wal directory.
    #[arg(long)]
    pg_wal: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// prefetch: how many segments ahead.
    #[arg(long, default_value_t = 8)]
    count: u32,
    #[arg(long, default_value_t = pg::DEFAULT_SEGMENT_SIZE)]
    seg_size: u32,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", p.display()), e)
}

fn ensure_dir(d: &Path) -> Result<()> {
    fs::create_dir_all(d).map_err(|e| io("create", d, e))
}

/// Start the worker in the background, detached from PostgreSQL's process group, with this
/// invocation's repository and password sources in its environment.
fn spawn_worker(ctx: &Ctx<'_>, args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the dumpvault executable", e))?;
    let mut c = Command::new(exe);
    if let Some(r) = &ctx.cli.repo {
        c.env("DUMPVAULT_REPO", r);
    }
    if let Some(p) = &ctx.cli.password_file {
        c.env("DUMPVAULT_PASSWORD_FILE", p);
    }
    if let Some(p) = &ctx.cli.password_command {
        c.env("DUMPVAULT_PASSWORD_COMMAND", p);
    }
    c.arg("--quiet").arg("wal").arg("worker").args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.process_group(0);
    let mut child = c
        .spawn()
        .map_err(|e| Error::io("start the WAL worker", e))?;
    // Reap it from a thread, so it does not linger as a zombie while we wait.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// Hold `<spool>/.lock` exclusively, or `None` if another worker does.
fn try_lock(spool: &Path) -> Result<Option<fs::File>> {
    use std::os::unix::io::AsRawFd;
    let p = spool.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| io("open", &p, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((r == 0).then_some(f))
}

fn worker_running(spool: &Path) -> bool {
    matches!(try_lock(spool), Ok(None))
}

pub(super) fn push_async(
    ctx: &Ctx<'_>,
    path: &Path,
    cluster: &str,
    timeout: Duration,
    parallel: usize,
    spool: Option<&Path>,
) -> Result<()> {
    wal::check_cluster(cluster)?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .filter(|f| WalName::parse(f).is_some())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a WAL file name", path.display())))?
        .to_string();
    let pg_wal = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let spool = spool
        .map(Path::to_path_buf)
        .unwrap_or_else(|| pg_wal.join("dumpvault-push"));
    ensure_dir(&spool)?;
    let ok = spool.join(format!("{file}.ok"));
    let err = spool.join(format!("{file}.err"));
    let args = vec![
        "push".to_string(),
        "--spool".into(),
        spool.display().to_string(),
        "--cluster".into(),
        cluster.into(),
        "--pg-wal".into(),
        pg_wal.display().to_string(),
        "--parallel".into(),
        parallel.max(1).to_string(),
    ];
    let start = Instant::now();
    let mut spawned_at: Option<Instant> = None;
    loop {
        if ok.exists() {
            let _ = fs::remove_file(&ok);
            ctx.say(format!("archived {file} (asynchronously)"));
            return Ok(());
        }
        if let Ok(msg) = fs::read_to_string(&err) {
            let _ = fs::remove_file(&err);
            return Err(Error::Backend(format!(
                "asynchronous push of {file} failed: {msg}"
            )));
        }
        if start.elapsed() >= timeout {
            return Err(Error::Backend(format!(
                "{file} was not archived within {}s (PostgreSQL will retry)",
                timeout.as_secs()
            )));
        }
        // (Re)start the worker when none runs; give a fresh one a moment to take its lock.
        if spawned_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
            && !worker_running(&spool)
        {
            let _ = fs::remove_file(spool.join("worker.err"));
            spawn_worker(ctx, &args)?;
            spawned_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `.ready` files of `pg_wal/archive_status` that have no acknowledgement yet, history
/// files first (PostgreSQL archives them first too), then by name.
fn ready(pg_wal: &Path, spool: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(str::to_string)
        })
        .filter(|f| WalName::parse(f).is_some())
        .filter(|f| {
            !spool.join(format!("{f}.ok")).exists() && !spool.join(format!("{f}.err")).exists()
        })
        .collect();
    v.sort_by_key(|f| (!f.ends_with(".history"), f.clone()));
    v
}

fn write_marker(p: &Path, text: &str) {
    let tmp = p.with_extension("tmp");
    if fs::write(&tmp, text)
        .and_then(|_| fs::rename(&tmp, p))
        .is_err()
    {
        let _ = fs::remove_file(&tmp);
    }
}

pub(super) fn worker(ctx: &Ctx<'_>, a: &WorkerArgs) -> Result<()> {
    ensure_dir(&a.spool)?;
    let Some(_lock) = try_lock(&a.spool)? else {
        return Ok(()); // another worker serves this spool
    };
    match a.mode.as_str() {
        "push" => push_worker(ctx, a),
        "prefetch" => prefetch_worker(ctx, a),
        m => Err(Error::InvalidInput(format!("unknown worker mode {m:?}"))),
    }
}

fn push_worker(ctx: &Ctx<'_>, a: &WorkerArgs) -> Result<()> {
    let pg_wal = a
        .pg_wal
        .clone()
        .ok_or_else(|| Error::InvalidInput("--pg-wal is required".into()))?;
    let n = a.parallel.clamp(1, 32);
    let mut repos = Vec::with_capacity(n);
    for _ in 0..n {
        match ctx.open_uncached() {
            Ok(r) => repos.push(std::sync::Mutex::new(r)),
            Err(e) => {
                // Tell the waiting pushes at once rather than let them time out.
                write_marker(&a.spool.join("worker.err"), &e.to_string());
                return Err(e);
            }
        }
    }
    let _ = fs::remove_file(a.spool.join("worker.err"));
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        let todo = ready(&pg_wal, &a.spool);
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        idle_since = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for r in &repos {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(f) = todo.get(i) else { break };
                    let repo = r.lock().unwrap_or_else(|p| p.into_inner());
                    match wal::push(&repo, &a.cluster, &pg_wal.join(f)) {
                        Ok(_) => write_marker(&a.spool.join(format!("{f}.ok")), ""),
                        Err(e) => write_marker(&a.spool.join(format!("{f}.err")), &e.to_string()),
                    }
                });
            }
        });
    }
    Ok(())
}

fn prefetch_worker(ctx: &Ctx<'_>, a: &WorkerArgs) -> Result<()> {
    let repo = ctx.open_uncached()?;
    let ss = a.seg_size;
    let mut done_for: Option<String> = None;
    loop {
        let want = fs::read_to_string(a.spool.join(".want")).unwrap_or_default();
        let want = want.trim().to_string();
        if done_for.as_deref() == Some(want.as_str()) {
            return Ok(());
        }
        let Some(w) = WalName::parse(&want).filter(|w| w.kind == WalKind::Segment) else {
            return Ok(());
        };
        let Some(from) = w.segno(ss) else {
            return Ok(());
        };
        // Spooled segments before the one asked for will not be asked for again.
        if let Ok(rd) = fs::read_dir(&a.spool) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if WalName::parse(&name)
                    .and_then(|n| n.segno(ss))
                    .is_some_and(|n| n < from)
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for i in 1..=u64::from(a.count) {
            let name = pg::segment_name(w.timeline, from + i, ss);
            let dest = a.spool.join(&name);
            if dest.exists() {
                continue;
            }
            match wal::read_file(&repo, &a.cluster, &name) {
                Ok(data) => wal::write_file_atomic(&dest, &data)?,
                Err(_) => break, // absent (the end of the archive) or unreadable: stop here
            }
        }
        done_for = Some(want);
    }
}

pub(super) fn fetch(
    ctx: &Ctx<'_>,
    name: &str,
    dest: &Path,
    cluster: &str,
    retries: u32,
    prefetch: u32,
    spool: Option<&Path>,
) -> Result<()> {
    wal::check_cluster(cluster).map_err(|e| Error::RecoveryFatal(e.to_string()))?;
    let Some(w) = WalName::parse(name.split(wal::CONFLICT_MARK).next().unwrap_or(name)) else {
        return Err(Error::WalAbsent(format!("{name} (not a WAL file name)")));
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let spool = spool
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("dumpvault-prefetch"));
    let prefetching =
        prefetch > 0 && w.kind == WalKind::Segment && !name.contains(wal::CONFLICT_MARK);
    let spooled = spool.join(name);
    if prefetching && spooled.is_file() && fs::rename(&spooled, dest).is_ok() {
        kick_prefetch(ctx, &spool, name, cluster, prefetch, None);
        ctx.say(format!("fetched {name} (prefetched)"));
        return Ok(());
    }
    let mut attempt = 0;
    let size = loop {
        attempt += 1;
        let r = ctx
            .open_uncached()
            .and_then(|repo| wal::fetch(&repo, cluster, name, dest));
        match r {
            Ok(n) => break n,
            Err(Error::ObjectNotFound { .. }) => return Err(Error::WalAbsent(name.to_string())),
            Err(
                e @ (Error::WrongPassword
                | Error::NoRepository(_)
                | Error::UnsupportedVersion { .. }
                | Error::InvalidInput(_)
                | Error::WeakKeyParameters(_)),
            ) => {
                return Err(Error::RecoveryFatal(format!("cannot fetch {name}: {e}")));
            }
            Err(e) if attempt >= retries.max(1) => {
                return Err(Error::RecoveryFatal(format!(
                    "cannot fetch {name} after {attempt} attempts: {e}"
                )));
            }
            Err(e) => {
                eprintln!("dumpvault: warning: fetching {name} (attempt {attempt}): {e}; retrying");
                std::thread::sleep(Duration::from_millis(250 << attempt.min(5)));
            }
        }
    };
    if prefetching {
        kick_prefetch(ctx, &spool, name, cluster, prefetch, Some(size));
    }
    ctx.say(format!("fetched {name}"));
    Ok(())
}

/// Tell the prefetch worker which segment was asked for last, and start it if none runs.
/// Best effort: a prefetch that cannot start only makes the next fetch slower.
fn kick_prefetch(
    ctx: &Ctx<'_>,
    spool: &Path,
    name: &str,
    cluster: &str,
    count: u32,
    size: Option<u64>,
) {
    if ensure_dir(spool).is_err() {
        return;
    }
    write_marker(&spool.join(".want"), name);
    let seg_size = size
        .filter(|s| s.is_power_of_two() && (1 << 20..=1 << 30).contains(s))
        .map_or_else(
            || {
                fs::read_to_string(spool.join(".segsize"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(pg::DEFAULT_SEGMENT_SIZE)
            },
            |s| s as u32,
        );
    write_marker(&spool.join(".segsize"), &seg_size.to_string());
    if worker_running(spool) {
        return;
    }
    let args = vec![
        "prefetch".to_string(),
        "--spool".into(),
        spool.display().to_string(),
        "--cluster".into(),
        cluster.into(),
        "--count".into(),
        count.to_string(),
        "--seg-size".into(),
        seg_size.to_string(),
    ];
    let _ = spawn_worker(ctx, &args);
}
