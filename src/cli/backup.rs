//! `backup`: one stream from stdin, a file or a producer command (`-- CMD ARGS…`), or several
//! named streams (`--stream`, `--stream-cmd`) committed as one snapshot. Prints the snapshot ID
//! on stdout (or the whole result with `--json`) and a summary on stderr.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use super::common::{after_backup, write_metrics};
use super::common::{human, parse_named, parse_time, print_json, Ctx};
use super::producer::{command_input, file_input, widen_pipe};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::ops::backup::{self, BackupOptions, BackupStats, StreamInput};
use crate::snapshot::{parse_tag, Source};

#[derive(Args, Debug)]
pub(super) struct BackupArgs {
    /// `-` (or nothing) for stdin, or a file path. Use `-- CMD ARGS…` to run a producer.
    pub(super) source: Option<String>,
    /// Series name (default: the file name, the command name, or "stdin").
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Tag key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub(super) tags: Vec<(String, String)>,
    /// Host to record (default: this machine's hostname).
    #[arg(long)]
    pub(super) host: Option<String>,
    /// Snapshot time, for importing older dumps: RFC 3339, "YYYY-MM-DD HH:MM:SS" or
    /// "YYYY-MM-DD" (UTC).
    #[arg(long, value_parser = parse_time)]
    pub(super) time: Option<DateTime<Utc>>,
    /// Store an empty stream instead of refusing it.
    #[arg(long)]
    pub(super) allow_empty: bool,
    /// Store a dump that is evidently cut short (plain pg_dump/pg_dumpall without its
    /// "dump complete" trailer, Redis RDB without EOF or with a bad CRC-64) instead of
    /// refusing it with exit 6.
    #[arg(long)]
    pub(super) allow_truncated: bool,
    /// Do not re-open each pack before uploading it (verification is on by default; this is
    /// for measuring its cost).
    #[arg(long, env = "DUMPVAULT_NO_VERIFY_PACKS")]
    pub(super) no_verify_packs: bool,
    /// S3 only: retain the packs, index files and snapshot this backup writes with Object Lock
    /// for N days (COMPLIANCE mode; DUMPVAULT_S3_OBJECT_LOCK_MODE=governance for GOVERNANCE).
    /// The bucket must have Object Lock enabled.
    #[arg(long, value_name = "N", env = "DUMPVAULT_S3_OBJECT_LOCK_DAYS")]
    pub(super) s3_object_lock_days: Option<u32>,
    /// A named stream from a file, a fifo, or `-` for stdin: `NAME=PATH` (repeatable).
    /// Several streams make one atomic snapshot; needs --name.
    #[arg(long = "stream", value_name = "NAME=PATH", value_parser = parse_named)]
    pub(super) streams: Vec<(String, String)>,
    /// A named stream from a shell command run with `sh -c`: `NAME=COMMAND` (repeatable).
    /// Fails closed like `-- CMD`: non-zero exit, a signal or no output commits nothing.
    #[arg(long = "stream-cmd", value_name = "NAME=COMMAND", value_parser = parse_named)]
    pub(super) stream_cmds: Vec<(String, String)>,
    /// `--stream` and `--stream-cmd` in command-line order (filled after parsing).
    #[arg(skip)]
    pub(super) stream_order: Vec<NamedStream>,
    /// Producer command and arguments, after `--`.
    #[arg(last = true)]
    pub(super) command: Vec<String>,
}

/// One `--stream` or `--stream-cmd`.
#[derive(Debug, Clone)]
pub(super) enum NamedStream {
    Path(String, String),
    Cmd(String, String),
}

impl BackupArgs {
    /// Put `--stream` and `--stream-cmd` in the order they were given: that is the order of
    /// the snapshot's streams (clap keeps each flag's values, but not their interleaving).
    pub(super) fn order_streams(&mut self, m: &clap::ArgMatches) {
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

pub(super) fn run(ctx: &Ctx<'_>, a: &BackupArgs) -> Result<()> {
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
    // Labels are checked before the repository is opened or a producer starts (exit 2); the
    // default series name is checked again by the library once it is known.
    let host = a.host.clone().unwrap_or_else(crate::lock::hostname);
    backup::validate_labels(a.name.as_deref().unwrap_or("stdin"), &host, &a.tags)?;
    #[cfg(feature = "s3")]
    if let Some(days) = a.s3_object_lock_days {
        crate::backend::s3::set_object_lock_days(days);
    }
    let mut repo = ctx.open()?;
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
        flush_entries: 0,
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
    super::producer::reset_last_status();
    let result = backup::backup_streams(&mut repo, inputs, &opts, report);
    bar.finish();
    let code = result.as_ref().map_or_else(|e| e.exit_code(), |_| 0);
    let tags: std::collections::BTreeMap<String, String> = opts.tags.iter().cloned().collect();
    after_backup(
        ctx,
        &repo,
        (&opts.name, &opts.host, &tags),
        code,
        super::producer::last_status(),
    );
    write_metrics(ctx, &mut repo);
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
