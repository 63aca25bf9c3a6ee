//! Command-line interface (clap). Thin: it resolves the repository and password, calls into
//! `ops`, prints results (stdout for data and `--json`, stderr for messages), and maps errors to
//! the exit codes documented in the README (see `error::exit`).

mod drill;
mod password;
mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::backend::{self, Backend};
use crate::crypto::KdfParams;
use crate::error::{exit, Error, Result};
use crate::ops::backup::{self, BackupOptions, BackupStats, OpenedStream, StreamInput};
use crate::ops::restore::{self, RestoreStats};
use crate::repo::{InitOptions, OpenOptions, Repo};
use crate::snapshot::{parse_tag, Filter, Snapshot, SnapshotEntry, Source};
use progress::Progress;

#[derive(Parser, Debug)]
#[command(
    name = "dumpvault",
    version,
    about = "Deduplicating, encrypted backups of database dump streams"
)]
pub struct Cli {
    /// Repository location: a directory path (the default backend).
    #[arg(short = 'r', long, env = "DUMPVAULT_REPO", global = true)]
    repo: Option<String>,
    /// Read the password from this file (its first line). DUMPVAULT_PASSWORD takes precedence.
    #[arg(long, env = "DUMPVAULT_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "DUMPVAULT_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress and no summary on stderr (data and --json on stdout are unaffected).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Metadata cache directory (default: $XDG_CACHE_HOME/dumpvault).
    #[arg(long, env = "DUMPVAULT_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Do not use the local metadata cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Wait up to this long for a conflicting lock (e.g. a running prune) instead of failing
    /// with exit 5: `30s`, `10m`, `2h`.
    #[arg(long, global = true, value_parser = parse_wait, default_value = "0s")]
    lock_wait: std::time::Duration,
    /// After backup, verify, fsck, forget and prune, write Prometheus metrics for
    /// node_exporter's textfile collector to this file (atomically; name it `*.prom`).
    #[arg(long, env = "DUMPVAULT_METRICS_FILE", global = true)]
    metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up stdin, a file, or the output of a command (`-- CMD ARGS…`).
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(FilterArgs),
    /// Restore a snapshot's stream to stdout or a file, verifying every byte.
    Restore(RestoreArgs),
    /// Manage the passwords (key files) of the repository.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Show what the repository holds.
    Stats,
    /// Verify the repository: structure by default, every blob with --read-data, and with
    /// --no-key what can be proved without any password. Exit 0 intact, 7 damaged,
    /// 10 could not check.
    Fsck(FsckArgs),
    /// Recover from damage: `index` rebuilds the index from pack headers; `snapshots` lists
    /// (and with --remove deletes) snapshots that cannot be restored.
    #[command(subcommand)]
    Repair(RepairCmd),
    /// Apply a retention policy (grandfather-father-son) and delete the snapshots it does not
    /// keep; `--prune` then reclaims their space.
    Forget(ForgetArgs),
    /// Delete data no snapshot needs: unreferenced packs are deleted, mostly-unused packs
    /// repacked.
    Prune(PruneArgs),
    /// Copy snapshots (selected by ids, `latest` and filters) to another repository; only the
    /// chunks the target lacks are stored, and snapshots already there are skipped.
    Copy(CopyArgs),
    /// Restore drill: stream a snapshot, verified, into a command (`-- CMD ARGS…`) and record
    /// the verdict in the repository. Exit 0 passed, 7 snapshot damaged, 11 command rejected it.
    Verify(drill::VerifyArgs),
    /// Remove stale locks (from killed processes); `--all` removes every lock.
    Unlock {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
struct KdfArgs {
    /// Argon2id memory in KiB for the new key file (floor 19456).
    #[arg(long, default_value_t = KdfParams::DEFAULT.m_cost)]
    kdf_memory: u32,
    /// Argon2id iterations for the new key file (floor 2).
    #[arg(long, default_value_t = KdfParams::DEFAULT.t_cost)]
    kdf_iterations: u32,
}

impl KdfArgs {
    /// Parameters for a new key file; below the floor is a usage error here (exit 2), while
    /// an existing key file below the floor is refused when opening (exit 4).
    fn params(&self) -> Result<KdfParams> {
        let p = KdfParams {
            m_cost: self.kdf_memory,
            t_cost: self.kdf_iterations,
            p_cost: 1,
        };
        p.check().map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(p)
    }
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Minimum chunk size in bytes.
    #[arg(long, default_value_t = crate::chunker::DEFAULT_MIN)]
    chunk_min: u32,
    /// Average chunk size in bytes (a power of two).
    #[arg(long, default_value_t = crate::chunker::DEFAULT_AVG)]
    chunk_avg: u32,
    /// Maximum chunk size in bytes.
    #[arg(long, default_value_t = crate::chunker::DEFAULT_MAX)]
    chunk_max: u32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size: u32,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(Args, Debug, Default)]
struct FilterArgs {
    /// Series name.
    #[arg(long)]
    name: Option<String>,
    /// Tag key=value (repeatable; all must match).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Host the snapshot was taken on.
    #[arg(long)]
    host: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            name: self.name.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// `-` (or nothing) for stdin, or a file path. Use `-- CMD ARGS…` to run a producer.
    source: Option<String>,
    /// Series name (default: the file name, the command name, or "stdin").
    #[arg(long)]
    name: Option<String>,
    /// Tag key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Host to record (default: this machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Snapshot time, for importing older dumps: RFC 3339, "YYYY-MM-DD HH:MM:SS" or
    /// "YYYY-MM-DD" (UTC).
    #[arg(long, value_parser = parse_time)]
    time: Option<DateTime<Utc>>,
    /// Store an empty stream instead of refusing it.
    #[arg(long)]
    allow_empty: bool,
    /// Store a dump that is evidently cut short (plain pg_dump/pg_dumpall without its
    /// "dump complete" trailer, Redis RDB without EOF or with a bad CRC-64) instead of
    /// refusing it with exit 6.
    #[arg(long)]
    allow_truncated: bool,
    /// Do not re-open each pack before uploading it (verification is on by default; this is
    /// for measuring its cost).
    #[arg(long, env = "DUMPVAULT_NO_VERIFY_PACKS")]
    no_verify_packs: bool,
    /// A named stream from a file, a fifo, or `-` for stdin: `NAME=PATH` (repeatable).
    /// Several streams make one atomic snapshot; needs --name.
    #[arg(long = "stream", value_name = "NAME=PATH", value_parser = parse_named)]
    streams: Vec<(String, String)>,
    /// A named stream from a shell command run with `sh -c`: `NAME=COMMAND` (repeatable).
    /// Fails closed like `-- CMD`: non-zero exit, a signal or no output commits nothing.
    #[arg(long = "stream-cmd", value_name = "NAME=COMMAND", value_parser = parse_named)]
    stream_cmds: Vec<(String, String)>,
    /// `--stream` and `--stream-cmd` in command-line order (filled after parsing).
    #[arg(skip)]
    stream_order: Vec<NamedStream>,
    /// Producer command and arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// One `--stream` or `--stream-cmd`.
#[derive(Debug, Clone)]
enum NamedStream {
    Path(String, String),
    Cmd(String, String),
}

impl BackupArgs {
    /// Put `--stream` and `--stream-cmd` in the order they were given: that is the order of
    /// the snapshot's streams (clap keeps each flag's values, but not their interleaving).
    fn order_streams(&mut self, m: &clap::ArgMatches) {
        let idx =
            |id: &str| -> Vec<usize> { m.indices_of(id).map(|i| i.collect()).unwrap_or_default() };
        let mut all: Vec<(usize, NamedStream)> = Vec::new();
        for (i, (n, p)) in idx("streams").into_iter().zip(&self.streams) {
            all.push((i, NamedStream::Path(n.clone(), p.clone())));
        }
        for (i, (n, c)) in idx("stream_cmds").into_iter().zip(&self.stream_cmds) {
            all.push((i, NamedStream::Cmd(n.clone(), c.clone())));
        }
        all.sort_by_key(|(i, _)| *i);
        self.stream_order = all.into_iter().map(|(_, s)| s).collect();
    }
}

#[derive(Args, Debug)]
struct CopyArgs {
    /// Snapshot ids (or unique prefixes) or `latest`; none: every snapshot matching the filters.
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Target repository (a directory or an s3:// location).
    #[arg(long, env = "DUMPVAULT_TO_REPO")]
    to: String,
    /// Read the target's password from this file (its first line). DUMPVAULT_TO_PASSWORD takes
    /// precedence.
    #[arg(long, env = "DUMPVAULT_TO_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the target's password.
    #[arg(long, env = "DUMPVAULT_TO_PASSWORD_COMMAND")]
    to_password_command: Option<String>,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    snapshot: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Write to this file (atomically, only if fully verified) instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Stream to restore when the snapshot holds several.
    #[arg(long)]
    stream: Option<String>,
}

#[derive(Args, Debug)]
struct PruneArgs {
    /// Repack packs with more than this share of unused bytes.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    max_unused: f64,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// ... of each of the N newest days that have one (UTC days).
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// ... of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// ... of each of the N newest months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// ... of each of the N newest years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the group's newest (e.g. 7d, 36h, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within_hourly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within_daily: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within_weekly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within_monthly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    keep_within_yearly: Option<chrono::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    keep_tags: Vec<(String, String)>,
    /// Group snapshots by these fields before applying the policy: name, host, tags.
    #[arg(long, value_delimiter = ',', default_value = "name")]
    group_by: Vec<crate::ops::forget::GroupBy>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    /// For --prune: repack packs with more than this share of unused bytes.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    max_unused: f64,
}

impl ForgetArgs {
    fn policy(&self) -> crate::retention::Policy {
        use crate::retention::{Period, Policy};
        // A count of 0 keeps nothing, so it is treated as absent: `--keep-daily 0` alone is an
        // empty policy and is refused rather than deleting every snapshot but the newest.
        let mut p = Policy {
            last: self.keep_last.filter(|n| *n > 0),
            within: self.keep_within,
            tags: self.keep_tags.clone(),
            ..Default::default()
        };
        for (period, n) in [
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Yearly, self.keep_yearly),
        ] {
            if let Some(n) = n.filter(|n| *n > 0) {
                p.count.insert(period, n);
            }
        }
        for (period, d) in [
            (Period::Hourly, self.keep_within_hourly),
            (Period::Daily, self.keep_within_daily),
            (Period::Weekly, self.keep_within_weekly),
            (Period::Monthly, self.keep_within_monthly),
            (Period::Yearly, self.keep_within_yearly),
        ] {
            if let Some(d) = d {
                p.within_period.insert(period, d);
            }
        }
        p
    }
}

#[derive(Args, Debug)]
struct FsckArgs {
    /// Download every pack and verify every blob, then stream the newest snapshot of each
    /// series to check its whole-stream hash.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Verify only a slice of the packs: `N/M` (the N-th of M slices) or `P%` (a random share).
    #[arg(long, value_name = "N/M|P%")]
    read_data_subset: Option<crate::ops::fsck::Subset>,
    /// Check without a password: object names against their BLAKE3, layouts, missing packs.
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    no_key: bool,
}

#[derive(Subcommand, Debug)]
enum RepairCmd {
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

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// List key files.
    List,
    /// Add a password (new one from DUMPVAULT_NEW_PASSWORD, --new-password-file, or a prompt).
    Add {
        #[arg(long, env = "DUMPVAULT_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key file by id prefix. The last key and the key in use cannot be removed.
    Remove { id: String },
    /// Change the password of the key in use.
    Passwd {
        #[arg(long, env = "DUMPVAULT_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

fn parse_wait(s: &str) -> std::result::Result<std::time::Duration, String> {
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
fn parse_named(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
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

fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
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

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        if let (Cmd::Backup(a), Some(("backup", sub))) = (&mut cli.command, m.subcommand()) {
            a.order_streams(sub);
        }
        Ok(cli)
    });
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    crate::signals::install();
    match run(&cli) {
        Ok(()) => exit::OK,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader of our stdout went away (`| head`): quiet, conventional SIGPIPE code.
            141
        }
        Err(e) => {
            eprintln!("dumpvault: error: {e}");
            e.exit_code()
        }
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
}

impl Ctx<'_> {
    fn backend(&self) -> Result<Arc<dyn Backend>> {
        let loc = self.cli.repo.as_deref().ok_or_else(|| {
            Error::InvalidInput("no repository: pass --repo or set DUMPVAULT_REPO".into())
        })?;
        Ok(Arc::from(backend::open(loc)?))
    }

    fn password(&self, prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
        password::get(&password::Sources {
            env_var: "DUMPVAULT_PASSWORD",
            file: self.cli.password_file.as_deref(),
            command: self.cli.password_command.as_deref(),
            prompt,
            confirm,
        })
    }

    fn new_password(&self, file: Option<&Path>) -> Result<Zeroizing<String>> {
        password::get(&password::Sources {
            env_var: "DUMPVAULT_NEW_PASSWORD",
            file,
            command: None,
            prompt: "New password: ",
            confirm: true,
        })
    }

    fn open(&self) -> Result<Repo> {
        let backend = self.backend()?;
        // Fail on a missing or too-new repository before asking for a password.
        crate::repo::read_config(backend.as_ref())?;
        let pw = self.password("Repository password: ", false)?;
        self.open_with(backend, pw.as_bytes())
    }

    /// Open `backend` with `password` under this invocation's cache and lock-wait settings.
    fn open_with(&self, backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repo> {
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

    /// The `copy` target: its own location and password sources (`DUMPVAULT_TO_PASSWORD`,
    /// `--to-password-file`, `--to-password-command`, then a prompt), the same cache rules.
    fn open_target(&self, a: &CopyArgs) -> Result<Repo> {
        let backend: Arc<dyn Backend> = Arc::from(backend::open(&a.to)?);
        crate::repo::read_config(backend.as_ref())?;
        let pw = password::get(&password::Sources {
            env_var: "DUMPVAULT_TO_PASSWORD",
            file: a.to_password_file.as_deref(),
            command: a.to_password_command.as_deref(),
            prompt: "Target repository password: ",
            confirm: false,
        })?;
        self.open_with(backend, pw.as_bytes())
    }

    fn say(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| Error::io("write output", e.into()))?;
    writeln!(out).map_err(|e| Error::io("write output", e))
}

fn run(cli: &Cli) -> Result<()> {
    let ctx = Ctx { cli };
    match &cli.command {
        Cmd::Init(a) => init(&ctx, a),
        Cmd::Backup(a) => backup_cmd(&ctx, a),
        Cmd::Snapshots(f) => snapshots(&ctx, f),
        Cmd::Restore(a) => restore_cmd(&ctx, a),
        Cmd::Key(k) => key(&ctx, k),
        Cmd::Fsck(a) => fsck_cmd(&ctx, a),
        Cmd::Forget(a) => forget_cmd(&ctx, a),
        Cmd::Prune(a) => {
            let mut repo = ctx.open()?;
            prune_run(&ctx, &mut repo, a.max_unused, a.dry_run)
        }
        Cmd::Repair(r) => repair_cmd(&ctx, r),
        Cmd::Copy(a) => copy_cmd(&ctx, a),
        Cmd::Verify(a) => drill::verify_cmd(&ctx, a),
        Cmd::Stats => {
            let mut repo = ctx.open()?;
            let s = crate::ops::stats::stats(&mut repo)?;
            if cli.json {
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
        Cmd::Unlock { all } => {
            let repo = ctx.open()?;
            let mut removed = Vec::new();
            for (name, info) in crate::lock::list_locks(repo.backend.as_ref(), &repo.key)? {
                // An unreadable lock may be a newer dumpvault's live lock: only --all removes it.
                let stale = info.as_ref().map(crate::lock::is_stale).unwrap_or(false);
                if *all || stale {
                    repo.backend.delete(crate::error::ObjectKind::Lock, &name)?;
                    removed.push(name);
                }
            }
            if cli.json {
                return print_json(&serde_json::json!({ "removed": removed }));
            }
            ctx.say(format!("removed {} lock(s)", removed.len()));
            Ok(())
        }
    }
}

fn init(ctx: &Ctx<'_>, a: &InitArgs) -> Result<()> {
    let backend = ctx.backend()?;
    if backend.exists()? {
        return Err(Error::RepositoryExists(backend.location()));
    }
    let pw = ctx.password("New repository password: ", true)?;
    if pw.is_empty() {
        return Err(Error::InvalidInput("refusing an empty password".into()));
    }
    let opts = InitOptions {
        chunk_min: a.chunk_min,
        chunk_avg: a.chunk_avg,
        chunk_max: a.chunk_max,
        pack_target: a.pack_size.saturating_mul(1024 * 1024),
        zstd_level: a.compression_level,
        kdf: a.kdf.params()?,
    };
    let repo = Repo::init(backend, pw.as_bytes(), &opts)?;
    let id = hex::encode(repo.config.repo_id);
    if ctx.cli.json {
        return print_json(&serde_json::json!({
            "repository_id": id, "location": repo.backend.location(), "key_id": repo.key_id,
        }));
    }
    ctx.say(format!(
        "created repository {} at {}",
        &id[..16],
        repo.backend.location()
    ));
    Ok(())
}

/// A producer child process, killed and reaped if the backup ends early.
/// Grow a pipe's kernel buffer to 1 MiB (the unprivileged limit on Linux; skipped elsewhere,
/// for non-pipes, and when refused). With the default 64 KiB, a fast producer and the backup
/// wake each other for every 64 KiB.
fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = fd.as_raw_fd();
        // SAFETY: fstat writes into a zeroed stat we own; fcntl only resizes the pipe.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
                libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

struct Producer {
    child: Option<Child>,
    argv: Vec<String>,
}

impl Producer {
    fn spawn(argv: &[String]) -> Result<(Producer, std::process::ChildStdout)> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::ProducerFailed(format!("cannot start {:?}: {e}", argv[0])))?;
        crate::signals::set_child(Some(child.id()));
        let out = child.stdout.take().expect("stdout was piped");
        widen_pipe(&out);
        Ok((
            Producer {
                child: Some(child),
                argv: argv.to_vec(),
            },
            out,
        ))
    }

    /// Wait for the producer and judge it: only a clean exit 0 may commit a snapshot.
    fn finish(&mut self) -> Result<Source> {
        let mut child = self.child.take().expect("finish called once");
        let status = child.wait().map_err(|e| Error::io("wait for producer", e));
        crate::signals::set_child(None);
        let status = status?;
        let prog = &self.argv[0];
        if let Some(code) = status.code() {
            if code != 0 {
                return Err(Error::ProducerFailed(format!(
                    "{prog} exited with status {code}"
                )));
            }
        } else {
            use std::os::unix::process::ExitStatusExt;
            return Err(Error::ProducerFailed(format!(
                "{prog} was killed by signal {}",
                status.signal().unwrap_or(0)
            )));
        }
        Ok(Source::Command {
            argv: self.argv.clone(),
            exit_status: 0,
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            crate::signals::set_child(None);
        }
    }
}

/// A stream read from a file or fifo, opened only when its turn comes (a fifo's writer may be
/// waiting for the previous stream to finish).
fn file_input<'a>(name: String, path: String, bar: &'a Progress) -> StreamInput<'a> {
    StreamInput {
        name,
        open: Box::new(move || {
            let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?;
            let f = bar.reader(f);
            let abs = std::fs::canonicalize(&path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.clone());
            Ok(OpenedStream {
                reader: Box::new(f),
                finish: Box::new(move || Ok(Source::File { path: abs })),
            })
        }),
    }
}

/// A stream produced by a command, started only when its turn comes and judged (exit 0, no
/// signal) before the next one starts.
fn command_input<'a>(name: String, argv: Vec<String>, bar: &'a Progress) -> StreamInput<'a> {
    StreamInput {
        name,
        open: Box::new(move || {
            let (mut producer, out) = Producer::spawn(&argv)?;
            Ok(OpenedStream {
                reader: bar.reader(out),
                finish: Box::new(move || producer.finish()),
            })
        }),
    }
}

fn backup_cmd(ctx: &Ctx<'_>, a: &BackupArgs) -> Result<()> {
    let stdin_src = a.source.as_deref().is_none_or(|s| s == "-");
    let named = !a.stream_order.is_empty();
    if named && (a.source.is_some() || !a.command.is_empty()) {
        return Err(Error::InvalidInput(
            "--stream/--stream-cmd replace the source argument and `-- COMMAND`: use one form"
                .into(),
        ));
    }
    if !a.command.is_empty() && !stdin_src {
        return Err(Error::InvalidInput(
            "give either a source file or `-- COMMAND`, not both".into(),
        ));
    }
    let stream_name = |s: &NamedStream| match s {
        NamedStream::Path(n, _) | NamedStream::Cmd(n, _) => n.clone(),
    };
    if named {
        if a.name.is_none() {
            return Err(Error::InvalidInput(
                "--stream and --stream-cmd need --name (the series name)".into(),
            ));
        }
        let names: Vec<String> = a.stream_order.iter().map(stream_name).collect();
        backup::validate_stream_names(names.iter().map(String::as_str))?;
        let stdins = a
            .stream_order
            .iter()
            .filter(|s| matches!(s, NamedStream::Path(_, p) if p == "-"))
            .count();
        if stdins > 1 {
            return Err(Error::InvalidInput(
                "only one --stream can read stdin (`-`)".into(),
            ));
        }
    }
    let mut repo = ctx.open()?;
    let host = a.host.clone().unwrap_or_else(crate::lock::hostname);
    // The streams, the default series name, and the total size when every input is a
    // regular file (for the progress bar's ETA).
    let file_len = |p: &str| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    let total = if named {
        a.stream_order.iter().try_fold(0u64, |t, s| match s {
            NamedStream::Path(_, p) if p != "-" => file_len(p).map(|l| t + l),
            _ => None,
        })
    } else if a.command.is_empty() && !stdin_src {
        a.source.as_deref().and_then(file_len)
    } else {
        None
    };
    // The bar exists before the inputs: they move it as bytes arrive.
    let bar = Progress::new(ctx.cli.quiet, total, "backup");
    let (inputs, default_name): (Vec<StreamInput<'_>>, String) = if named {
        let mut inputs = Vec::new();
        for s in &a.stream_order {
            match s {
                NamedStream::Path(n, p) if p == "-" => {
                    widen_pipe(&std::io::stdin());
                    inputs.push(StreamInput::ready(
                        n.clone(),
                        bar.reader(std::io::stdin().lock()),
                        || Ok(Source::Stdin),
                    ));
                }
                NamedStream::Path(n, p) => inputs.push(file_input(n.clone(), p.clone(), &bar)),
                NamedStream::Cmd(n, c) => {
                    let argv = vec!["sh".to_string(), "-c".to_string(), c.clone()];
                    inputs.push(command_input(n.clone(), argv, &bar));
                }
            }
        }
        (inputs, String::new())
    } else if !a.command.is_empty() {
        let prog = Path::new(&a.command[0])
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| a.command[0].clone());
        let input = command_input(prog.clone(), a.command.clone(), &bar);
        (vec![input], prog)
    } else if stdin_src {
        widen_pipe(&std::io::stdin());
        let stdin = bar.reader(std::io::stdin().lock());
        let input = StreamInput::ready("stdin", stdin, || Ok(Source::Stdin));
        (vec![input], "stdin".to_string())
    } else {
        let path = a.source.as_deref().expect("not stdin");
        let base = Path::new(path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        let input = file_input(base.clone(), path.to_string(), &bar);
        (vec![input], base)
    };
    let opts = BackupOptions {
        name: a.name.clone().unwrap_or(default_name),
        tags: a.tags.clone(),
        host,
        time: a.time,
        stream_name: String::new(),
        allow_empty: a.allow_empty,
        skip_pack_verification: a.no_verify_packs,
        allow_truncated: a.allow_truncated,
    };
    let several = inputs.len() > 1;
    let report = |s: &BackupStats| {
        bar.message(|| {
            let mut m = format!("new {}", human(s.new_bytes));
            if several {
                m += &format!(" [{}]", s.current_stream);
            }
            m
        });
    };
    let result = backup::backup_streams(&mut repo, inputs, &opts, report);
    bar.finish();
    drill::write_metrics(ctx, &mut repo);
    let r = result?;
    for st in &r.snapshot.streams {
        if let Some(d) = st.dump.as_ref().filter(|d| d.compressed()) {
            eprintln!(
                "dumpvault: warning: stream {:?} is a pg_dump custom-format archive compressed with {}: every run's bytes differ, so it barely deduplicates; dump with -Z0 (dumpvault compresses what it stores)",
                st.name,
                d.compression.as_deref().unwrap_or("?")
            );
        }
    }
    if ctx.cli.json {
        return print_json(&r);
    }
    let st = &r.stats;
    let secs = r.snapshot.duration_ms as f64 / 1000.0;
    let streams = if r.snapshot.streams.len() > 1 {
        format!(" ({} streams)", r.snapshot.streams.len())
    } else {
        String::new()
    };
    ctx.say(format!(
        "snapshot {}{streams} saved: {} read, {} new in {} chunks of {} ({} packs), {:.1}s, {}/s",
        r.snapshot_id.short(),
        human(st.bytes_read),
        human(st.new_bytes),
        st.new_chunks,
        st.chunks,
        st.packs_written,
        secs,
        human((st.bytes_read as f64 / secs.max(0.001)) as u64)
    ));
    // The snapshot id is data (stdout), so scripts can capture it even with --quiet.
    println!("{}", r.snapshot_id);
    Ok(())
}

#[derive(serde::Serialize)]
struct SnapshotJson<'a> {
    id: String,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    /// The newest restore drill of this snapshot (`verify`), or null.
    last_verification: serde_json::Value,
}

fn snapshots(ctx: &Ctx<'_>, f: &FilterArgs) -> Result<()> {
    let mut repo = ctx.open()?;
    let filter = f.filter();
    let list: Vec<SnapshotEntry> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| filter.matches(&s.snapshot))
        .collect();
    let drills = drill::last_verifications(&repo)?;
    if ctx.cli.json {
        let v: Vec<_> = list
            .iter()
            .map(|s| SnapshotJson {
                id: s.id.to_hex(),
                snapshot: &s.snapshot,
                last_verification: drill::verified_json(drills.get(&s.id)),
            })
            .collect();
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}").map_err(|e| Error::io("write output", e))
    };
    w(
        &mut out,
        format!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:>10}  {:<23}  tags",
            "id", "time (UTC)", "name", "host", "size", "new", "verified"
        ),
    )?;
    for s in &list {
        let sn = &s.snapshot;
        let tags: Vec<String> = sn.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let new: u64 = sn.streams.iter().map(|x| x.new_bytes).sum();
        w(
            &mut out,
            format!(
                "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:>10}  {:<23}  {}",
                s.id.short(),
                sn.time.format("%Y-%m-%d %H:%M:%S"),
                sn.name,
                sn.host,
                human(sn.total_size()),
                human(new),
                drill::verified_cell(drills.get(&s.id)),
                tags.join(",")
            ),
        )?;
        // Multi-stream snapshots list their streams on the next line (single-stream rows
        // stay as they were, for scripts that read them).
        if sn.streams.len() > 1 {
            let names: Vec<String> = sn
                .streams
                .iter()
                .map(|x| format!("{} ({})", x.name, human(x.size)))
                .collect();
            w(&mut out, format!("          streams: {}", names.join(", ")))?;
        }
    }
    Ok(())
}

fn restore_cmd(ctx: &Ctx<'_>, a: &RestoreArgs) -> Result<()> {
    if a.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Error::InvalidInput(
            "refusing to write a dump to a terminal: pipe it, redirect it, or use -o FILE".into(),
        ));
    }
    let mut repo = ctx.open()?;
    let snap = repo.find_snapshot(&a.snapshot, &a.filter.filter())?;
    // Which stream: --stream, or the first. The bar's total is that stream's size.
    let chosen = match &a.stream {
        Some(n) => snap.snapshot.streams.iter().find(|s| &s.name == n),
        None => snap.snapshot.streams.first(),
    };
    let total = chosen.map(|s| s.size).unwrap_or(0);
    let stream_name = chosen.map(|s| s.name.clone());
    let bar = Progress::new(ctx.cli.quiet, Some(total), "restore");
    let report = |s: &RestoreStats| bar.update(s.bytes_written, String::new);
    let stats = match &a.output {
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut lock);
            restore::restore(&mut repo, &snap, a.stream.as_deref(), &mut out, report)
        }
        Some(path) => restore_to_file(&mut repo, &snap, a.stream.as_deref(), path, report),
    };
    bar.finish();
    let stats = stats?;
    if ctx.cli.json && a.output.is_some() {
        return print_json(&serde_json::json!({
            "snapshot": snap.id, "stream": stream_name, "bytes": stats.bytes_written,
            "chunks": stats.chunks,
            "reads": stats.reads, "index_reloads": stats.index_reloads, "verified": true, "requests": repo.requests(),
        }));
    }
    ctx.say(format!(
        "restored snapshot {} ({}, {} chunks), verified",
        snap.id.short(),
        human(stats.bytes_written),
        stats.chunks
    ));
    Ok(())
}

fn copy_cmd(ctx: &Ctx<'_>, a: &CopyArgs) -> Result<()> {
    use crate::ops::copy::{self, CopyProgress};
    let mut src = ctx.open()?;
    let mut dst = ctx.open_target(a)?;
    if src.config.repo_id == dst.config.repo_id {
        return Err(Error::InvalidInput(
            "source and target are the same repository".into(),
        ));
    }
    let filter = a.filter.filter();
    let selected: Vec<SnapshotEntry> = if a.snapshots.is_empty() {
        src.snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect()
    } else {
        a.snapshots
            .iter()
            .map(|spec| src.find_snapshot(spec, &filter))
            .collect::<Result<_>>()?
    };
    let bar = Progress::new(ctx.cli.quiet, Some(0), "copy");
    let report = |p: &CopyProgress| {
        bar.set_total(p.total);
        bar.update(p.bytes_read, || {
            format!("new {} [{}]", human(p.new_bytes), p.snapshot)
        });
    };
    let r = copy::copy(&mut src, &mut dst, &selected, report);
    bar.finish();
    let r = r?;
    if ctx.cli.json {
        return print_json(&r);
    }
    let mut out = String::new();
    for s in &r.snapshots {
        out += &format!(
            "{:<7}  {} -> {}  {}  {:<12}  {:>10}  {:>10} new\n",
            s.status,
            &s.source_id[..8],
            &s.target_id[..8.min(s.target_id.len())],
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.name,
            human(s.size),
            human(s.new_bytes)
        );
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Error::io("write output", e))?;
    ctx.say(format!(
        "copied {} snapshot(s) ({} read, {} new to the target), {} already present, {:.1}s",
        r.copied,
        human(r.bytes_read),
        human(r.new_bytes),
        r.present,
        r.duration_ms as f64 / 1000.0
    ));
    Ok(())
}

/// Restore into a temp file beside `path`, fsync, and rename into place only when verified.
fn restore_to_file(
    repo: &mut Repo,
    snap: &SnapshotEntry,
    stream: Option<&str>,
    path: &Path,
    report: impl FnMut(&RestoreStats),
) -> Result<RestoreStats> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut rnd = [0u8; 6];
    crate::crypto::random_bytes(&mut rnd);
    let fname = path
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.dumpvault-{}",
        fname.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let stats = restore::restore(repo, snap, stream, &mut w, report)?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn key(ctx: &Ctx<'_>, k: &KeyCmd) -> Result<()> {
    let mut repo = ctx.open()?;
    match k {
        KeyCmd::List => {
            let keys = repo.list_keys()?;
            if ctx.cli.json {
                return print_json(&keys);
            }
            for k in keys {
                let created = DateTime::from_timestamp(k.created, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                println!(
                    "{} {}  {}  {}  argon2id m={}KiB t={} p={}",
                    if k.current { "*" } else { " " },
                    &k.id.to_hex()[..16],
                    created,
                    k.label,
                    k.m_cost,
                    k.t_cost,
                    k.p_cost
                );
            }
            Ok(())
        }
        KeyCmd::Add {
            new_password_file,
            label,
            kdf,
        } => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            if pw.is_empty() {
                return Err(Error::InvalidInput("refusing an empty password".into()));
            }
            let id = repo.add_key(pw.as_bytes(), kdf.params()?, label.as_deref())?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "added": id }));
            }
            ctx.say(format!("added key {}", &id.to_hex()[..16]));
            Ok(())
        }
        KeyCmd::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "removed": removed }));
            }
            ctx.say(format!("removed key {}", &removed.to_hex()[..16]));
            Ok(())
        }
        KeyCmd::Passwd {
            new_password_file,
            kdf,
        } => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            if pw.is_empty() {
                return Err(Error::InvalidInput("refusing an empty password".into()));
            }
            let id = repo.change_password(pw.as_bytes(), kdf.params()?)?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "key": id }));
            }
            ctx.say(format!("password changed; new key {}", &id.to_hex()[..16]));
            Ok(())
        }
    }
}

fn forget_cmd(ctx: &Ctx<'_>, a: &ForgetArgs) -> Result<()> {
    use crate::ops::forget;
    let mut repo = ctx.open()?;
    let mut plan = forget::plan(
        &mut repo,
        &a.filter.filter(),
        &a.group_by,
        &a.policy(),
        Utc::now(),
    )?;
    if !a.dry_run {
        forget::execute(&repo, &mut plan)?;
        drill::write_metrics(ctx, &mut repo);
    }
    if ctx.cli.json && !a.prune {
        return print_json(&plan);
    }
    let mut out = String::new();
    for g in &plan.groups {
        let key: Vec<String> = g.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!("group {}\n", key.join(" "));
        for e in &g.snapshots {
            out += &format!(
                "  {:<6} {}  {}  {}\n",
                if e.keep {
                    "keep"
                } else if plan.removed {
                    "REMOVED"
                } else {
                    "remove"
                },
                &e.id[..16],
                e.time.format("%Y-%m-%d %H:%M:%S"),
                if e.keep {
                    e.reasons.join(", ")
                } else {
                    String::new()
                }
            );
        }
    }
    out += &format!(
        "{} kept, {} {}\n",
        plan.keep,
        plan.remove,
        if plan.removed {
            "removed"
        } else {
            "would be removed (dry run)"
        }
    );
    if ctx.cli.json {
        // With --prune and --json, print both as one document at the end.
        let prune = if a.dry_run {
            None
        } else {
            Some(crate::ops::prune::prune(
                &mut repo,
                &crate::ops::prune::PruneOptions {
                    max_unused: a.max_unused,
                },
                false,
            )?)
        };
        return print_json(&serde_json::json!({ "forget": plan, "prune": prune }));
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Error::io("write output", e))?;
    if a.prune {
        prune_run(ctx, &mut repo, a.max_unused, a.dry_run)?;
    }
    Ok(())
}

fn prune_run(ctx: &Ctx<'_>, repo: &mut Repo, max_unused: f64, dry_run: bool) -> Result<()> {
    use crate::ops::prune;
    // prune reports no progress of its own yet: the spinner shows that it is alive.
    let bar = Progress::counting(ctx.cli.quiet, "prune");
    let r = prune::prune(repo, &prune::PruneOptions { max_unused }, dry_run);
    bar.finish();
    let r = r?;
    if !dry_run {
        drill::write_metrics(ctx, repo);
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

fn fsck_cmd(ctx: &Ctx<'_>, a: &FsckArgs) -> Result<()> {
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
        drill::after_fsck(ctx, &mut repo, code);
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

fn repair_cmd(ctx: &Ctx<'_>, r: &RepairCmd) -> Result<()> {
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
                return print_json(&rep);
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
            Ok(())
        }
    }
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
