//! Command-line interface (clap). Thin: it resolves the repository and password, calls into
//! `ops`, prints results (stdout for data and `--json`, stderr for messages), and maps errors to
//! the exit codes documented in the README (see `error::exit`).
//!
//! This file holds only the global options, the list of commands and the dispatch. Each command
//! lives in `cli/<command>.rs` with its clap arguments, its checks and its human and JSON output;
//! what they share (opening the repository, filters, output helpers) is in `common`.

mod backup;
mod common;
mod copy;
mod forget;
mod fsck;
mod init;
mod key;
mod password;
mod pg;
mod producer;
mod progress;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod unlock;
mod verify;
mod wal;
mod walspool;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::{exit, Error, Result};
use common::Ctx;

pub use common::human;

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
    #[arg(long, global = true, value_parser = common::parse_wait, default_value = "0s")]
    lock_wait: std::time::Duration,
    /// After backup, verify, fsck, forget and prune, write Prometheus metrics for
    /// node_exporter's textfile collector to this file (atomically; name it `*.prom`).
    #[arg(long, env = "DUMPVAULT_METRICS_FILE", global = true)]
    metrics_file: Option<PathBuf>,
    /// Never delete or overwrite anything outside locks/ (what append-only S3 credentials
    /// give, for any backend): backup, restore, verify and fsck work; forget, prune, repair,
    /// key remove and key passwd fail with exit 1.
    #[arg(long, env = "DUMPVAULT_APPEND_ONLY", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    append_only: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up stdin, a file, or the output of a command (`-- CMD ARGS…`).
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(common::FilterArgs),
    /// Restore a snapshot's stream to stdout or a file, verifying every byte.
    Restore(restore::RestoreArgs),
    /// Manage the passwords (key files) of the repository.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Show what the repository holds.
    Stats,
    /// Verify the repository: structure by default, every blob with --read-data, and with
    /// --no-key what can be proved without any password. Exit 0 intact, 7 damaged,
    /// 10 could not check.
    Fsck(fsck::FsckArgs),
    /// Recover from damage: `index` rebuilds the index from pack headers; `snapshots` lists
    /// (and with --remove deletes) snapshots that cannot be restored.
    #[command(subcommand)]
    Repair(repair::RepairCmd),
    /// Apply a retention policy (grandfather-father-son) and delete the snapshots it does not
    /// keep; `--prune` then reclaims their space.
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot needs: unreferenced packs are deleted, mostly-unused packs
    /// repacked.
    Prune(prune::PruneArgs),
    /// Copy snapshots (selected by ids, `latest` and filters) to another repository; only the
    /// chunks the target lacks are stored, and snapshots already there are skipped.
    Copy(copy::CopyArgs),
    /// Restore drill: stream a snapshot, verified, into a command (`-- CMD ARGS…`) and record
    /// the verdict in the repository. Exit 0 passed, 7 snapshot damaged, 11 command rejected it.
    Verify(verify::VerifyArgs),
    /// Remove stale locks (from killed processes); `--all` removes every lock.
    Unlock(unlock::UnlockArgs),
    /// PostgreSQL continuous archiving: `wal push` (archive_command), `wal fetch`
    /// (restore_command), `wal status` (ranges, gaps and PITR windows).
    #[command(subcommand)]
    Wal(wal::WalCmd),
    /// PostgreSQL point-in-time recovery: `pg restore`.
    #[command(subcommand)]
    Pg(pg::PgCmd),
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

fn run(cli: &Cli) -> Result<()> {
    let ctx = Ctx { cli };
    match &cli.command {
        Cmd::Init(a) => init::run(&ctx, a),
        Cmd::Backup(a) => backup::run(&ctx, a),
        Cmd::Snapshots(f) => snapshots::run(&ctx, f),
        Cmd::Restore(a) => restore::run(&ctx, a),
        Cmd::Key(k) => key::run(&ctx, k),
        Cmd::Fsck(a) => fsck::run(&ctx, a),
        Cmd::Forget(a) => forget::run(&ctx, a),
        Cmd::Prune(a) => prune::run(&ctx, a),
        Cmd::Repair(r) => repair::run(&ctx, r),
        Cmd::Copy(a) => copy::run(&ctx, a),
        Cmd::Verify(a) => verify::run(&ctx, a),
        Cmd::Stats => stats::run(&ctx),
        Cmd::Unlock(a) => unlock::run(&ctx, a),
        Cmd::Wal(w) => wal::run(&ctx, w),
        Cmd::Pg(p) => pg::run(&ctx, p),
    }
}
