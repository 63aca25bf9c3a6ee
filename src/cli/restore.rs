//! `restore`: stream a snapshot back to stdout, or into a file that appears only once the
//! whole stream is verified (temp file, fsync, rename).

use std::path::{Path, PathBuf};

use clap::Args;

use super::common::{human, print_json, Ctx, FilterArgs};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::ops::restore::{self, RestoreStats};
use crate::repo::Repo;
use crate::snapshot::SnapshotEntry;

#[derive(Args, Debug)]
pub(super) struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    pub(super) snapshot: String,
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// With `latest`: choose among the readable snapshots even if some cannot be read. By
    /// default a damaged snapshot, which may be the newest match, fails with exit 7.
    #[arg(long)]
    pub(super) skip_damaged: bool,
    /// Write to this file (atomically, only if fully verified) instead of stdout.
    #[arg(short, long)]
    pub(super) output: Option<PathBuf>,
    /// Stream to restore when the snapshot holds several.
    #[arg(long)]
    pub(super) stream: Option<String>,
}

pub(super) fn run(ctx: &Ctx<'_>, a: &RestoreArgs) -> Result<()> {
    if a.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Error::InvalidInput(
            "refusing to write a dump to a terminal: pipe it, redirect it, or use -o FILE".into(),
        ));
    }
    if let Some(path) = &a.output {
        check_output_path(path)?;
    }
    let mut repo = ctx.open()?;
    let snap = repo.find_snapshot_with(&a.snapshot, &a.filter.filter(), a.skip_damaged)?;
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

pub(super) fn restore_to_file(
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

/// `-o PATH` must name a file in an existing directory: refuse anything else before a byte is
/// read, instead of restoring the whole stream and failing at the final rename.
fn check_output_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::InvalidInput(format!(
            "-o {}: is a directory; give the path of the file to write",
            path.display()
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "-o {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.file_name().is_none() {
        return Err(Error::InvalidInput(format!(
            "-o {}: not a file path",
            path.display()
        )));
    }
    Ok(())
}
