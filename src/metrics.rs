//! Prometheus metrics for node_exporter's textfile collector (`--metrics-file PATH`).
//!
//! The file is regenerated whole, from the repository's state (snapshots and verification
//! records) plus one piece of local knowledge (the last `fsck` verdict, kept in the cache), after
//! every command that changes what it says: backup, verify, fsck, forget, prune. So it is always
//! complete, whichever command ran last and on whichever machine the previous one ran.
//!
//! Series: snapshots are grouped by (name, host, tags). Labels: `repo` (first 16 hex digits of
//! the repository id, so files from several repositories can sit side by side), `name`,
//! `host`, and one `tag_<key>` label per tag, the key sanitised to `[a-zA-Z0-9_]`.
//!
//! Written atomically (`write_atomic`): a temp file in the same directory (not ending in
//! `.prom`, which the collector ignores), fsync, rename over the target, fsync the directory,
//! so the collector never reads half a file. The text format is Prometheus exposition 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

pub use crate::cache::LocalEvent;
use crate::format::verification::Verification;
use crate::id::ObjectId;
use crate::ops::wal::WalStatus;
use crate::snapshot::{SnapshotEntry, Source};

pub struct Input<'a> {
    pub repo_id: &'a [u8; 32],
    /// Readable snapshots (any order).
    pub snapshots: &'a [SnapshotEntry],
    /// Readable verification records (any order).
    pub verifications: &'a [(ObjectId, Verification)],
    /// The last fsck on this machine, from the cache (`None` without a cache, or never run).
    pub fsck: Option<LocalEvent>,
    /// Backup attempts from this machine, from the cache: failed backups commit no snapshot, so
    /// only these make a failure visible before the staleness alert.
    pub backups: &'a [BackupAttempts],
    /// The chain report of every cluster with archived WAL (empty for none).
    pub wal: &'a [WalStatus],
    pub now: DateTime<Utc>,
}

/// One series' backup attempts as this machine remembers them (cache `events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupAttempts {
    pub name: String,
    pub host: String,
    pub tags: BTreeMap<String, String>,
    /// The newest attempt; `code` is dumpvault's exit code (0: a snapshot was committed).
    pub last: LocalEvent,
    /// The newest failed attempt.
    pub last_failure: Option<LocalEvent>,
    /// The producer's exit status in the newest attempt that ran one (128 + N for signal N).
    pub producer_status: Option<i32>,
}

/// Cache event kinds for backup attempts: `<prefix><series as JSON [name, host, tags]>`.
pub const EVENT_BACKUP_LAST: &str = "backup-last ";
pub const EVENT_BACKUP_FAILURE: &str = "backup-failure ";
pub const EVENT_BACKUP_PRODUCER: &str = "backup-producer ";

/// The series part of a backup event's kind.
pub fn series_event_key(name: &str, host: &str, tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(&(name, host, tags)).expect("strings serialize")
}

/// Group the backup events of a cache (kind, event) into one [`BackupAttempts`] per series;
/// events whose series part does not parse are ignored (the cache is only a cache).
pub fn backup_attempts(events: &[(String, LocalEvent)]) -> Vec<BackupAttempts> {
    let mut by: BTreeMap<String, BackupAttempts> = BTreeMap::new();
    let parse =
        |k: &str| serde_json::from_str::<(String, String, BTreeMap<String, String>)>(k).ok();
    for (kind, e) in events {
        if let Some(k) = kind.strip_prefix(EVENT_BACKUP_LAST) {
            if let Some((name, host, tags)) = parse(k) {
                by.insert(
                    k.to_string(),
                    BackupAttempts {
                        name,
                        host,
                        tags,
                        last: *e,
                        last_failure: None,
                        producer_status: None,
                    },
                );
            }
        }
    }
    for (kind, e) in events {
        if let Some(a) = kind
            .strip_prefix(EVENT_BACKUP_FAILURE)
            .and_then(|k| by.get_mut(k))
        {
            a.last_failure = Some(*e);
        }
        if let Some(a) = kind
            .strip_prefix(EVENT_BACKUP_PRODUCER)
            .and_then(|k| by.get_mut(k))
        {
            a.producer_status = Some(e.code);
        }
    }
    by.into_values().collect()
}

/// One metric family: help text, type, samples (label set, value) in order.
struct Family {
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    map: BTreeMap<&'static str, Family>,
}

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, labels: &str, v: f64) {
        let f = self.map.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family {
                help,
                kind: "gauge",
                samples: Vec::new(),
            }
        });
        f.samples.push((labels.to_string(), v));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let f = &self.map[name];
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (labels, v) in &f.samples {
                let _ = writeln!(out, "{name}{{{labels}}} {}", fmt_value(*v));
            }
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Escape a label value: backslash, double quote and newline (exposition format).
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A tag key as a label name: `tag_` and the key with every character outside
/// `[a-zA-Z0-9_]` replaced by `_` (so it never starts with a digit or `__`).
pub fn tag_label(key: &str) -> String {
    let k: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("tag_{k}")
}

fn labels(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

type SeriesKey = (String, String, BTreeMap<String, String>);

const PRODUCER_HELP: &str = "Exit status of the producer command in the newest backup attempt from this machine (128 + N when killed by signal N), else of the newest snapshot.";

/// The metrics text for `input`.
pub fn render(input: &Input<'_>) -> String {
    let repo = hex::encode(&input.repo_id[..8]);
    let mut fam = Families::default();
    let mut series: BTreeMap<SeriesKey, Vec<&SnapshotEntry>> = BTreeMap::new();
    for s in input.snapshots {
        let sn = &s.snapshot;
        series
            .entry((sn.name.clone(), sn.host.clone(), sn.tags.clone()))
            .or_default()
            .push(s);
    }
    let mut by_snapshot: BTreeMap<ObjectId, Vec<&Verification>> = BTreeMap::new();
    for (_, v) in input.verifications {
        by_snapshot.entry(v.snapshot).or_default().push(v);
    }
    let mut attempts: BTreeMap<SeriesKey, &BackupAttempts> = BTreeMap::new();
    for a in input.backups {
        let key = (a.name.clone(), a.host.clone(), a.tags.clone());
        series.entry(key.clone()).or_default();
        attempts.insert(key, a);
    }
    for ((name, host, tags), mut snaps) in series {
        snaps.sort_by_key(|s| (s.snapshot.time, s.id));
        let attempt = attempts
            .get(&(name.clone(), host.clone(), tags.clone()))
            .copied();
        let mut pairs = vec![
            ("repo".to_string(), repo.clone()),
            ("name".to_string(), name),
            ("host".to_string(), host),
        ];
        for (k, v) in &tags {
            let l = tag_label(k);
            // Two tag keys that sanitise alike: the first (in key order) keeps the label.
            if !pairs.iter().any(|(x, _)| *x == l) {
                pairs.push((l, v.clone()));
            }
        }
        let l = labels(&pairs);
        if let Some(a) = attempt {
            fam.add(
                "dumpvault_backup_last_attempt_timestamp_seconds",
                "When the newest backup attempt of the series from this machine ended.",
                &l,
                a.last.time as f64,
            );
            fam.add(
                "dumpvault_backup_last_exit_code",
                "dumpvault's exit code for the newest backup attempt of the series (0: committed; see the README's exit codes).",
                &l,
                a.last.code as f64,
            );
            if let Some(f) = a.last_failure {
                fam.add(
                    "dumpvault_backup_last_failure_timestamp_seconds",
                    "When the newest failed backup attempt of the series from this machine ended.",
                    &l,
                    f.time as f64,
                );
            }
        }
        // A series known only from failed attempts has no snapshot metrics yet.
        let Some(last) = snaps.last() else {
            if let Some(code) = attempt.and_then(|a| a.producer_status) {
                fam.add(
                    "dumpvault_backup_last_producer_exit_status",
                    PRODUCER_HELP,
                    &l,
                    code as f64,
                );
            }
            continue;
        };
        let sn = &last.snapshot;
        let size = sn.total_size() as f64;
        let new: u64 = sn.streams.iter().map(|x| x.new_bytes).sum();
        fam.add(
            "dumpvault_backup_last_success_timestamp_seconds",
            "Time of the newest snapshot of the series (Unix seconds).",
            &l,
            sn.time.timestamp() as f64,
        );
        fam.add(
            "dumpvault_backup_last_duration_seconds",
            "Wall-clock time the newest backup of the series took.",
            &l,
            sn.duration_ms as f64 / 1000.0,
        );
        fam.add(
            "dumpvault_backup_last_read_bytes",
            "Bytes the newest backup of the series read (all its streams).",
            &l,
            size,
        );
        fam.add(
            "dumpvault_backup_last_new_bytes",
            "Stored bytes the newest backup added to the repository.",
            &l,
            new as f64,
        );
        fam.add(
            "dumpvault_backup_last_dedup_ratio",
            "Bytes read / new bytes stored by the newest backup (+Inf when nothing was new).",
            &l,
            match (size, new) {
                (s, 0) if s > 0.0 => f64::INFINITY,
                (_, 0) => 1.0,
                (s, n) => s / n as f64,
            },
        );
        fam.add(
            "dumpvault_backup_snapshots",
            "Snapshots the repository holds for the series.",
            &l,
            snaps.len() as f64,
        );
        // The newest attempt's producer if this machine remembers one (a failed producer
        // commits nothing, so only the cache knows its status); else the newest snapshot's.
        let committed = sn.streams.iter().find_map(|s| match &s.source {
            Source::Command { exit_status, .. } => Some(*exit_status),
            _ => None,
        });
        if let Some(code) = attempt.and_then(|a| a.producer_status).or(committed) {
            fam.add(
                "dumpvault_backup_last_producer_exit_status",
                PRODUCER_HELP,
                &l,
                code as f64,
            );
        }
        // The newest drill of any snapshot of the series, and the newest successful one.
        let drills: Vec<&Verification> = snaps
            .iter()
            .flat_map(|s| by_snapshot.get(&s.id).into_iter().flatten().copied())
            .collect();
        if let Some(v) = drills.iter().max_by_key(|v| v.time) {
            fam.add(
                "dumpvault_verify_last_timestamp_seconds",
                "Time of the newest restore drill (verify) of the series.",
                &l,
                v.time.timestamp() as f64,
            );
            fam.add(
                "dumpvault_verify_last_success",
                "1 if the newest restore drill of the series passed, else 0.",
                &l,
                if v.ok { 1.0 } else { 0.0 },
            );
        }
        if let Some(v) = drills.iter().filter(|v| v.ok).max_by_key(|v| v.time) {
            fam.add(
                "dumpvault_verify_last_success_timestamp_seconds",
                "Time of the newest passing restore drill of the series.",
                &l,
                v.time.timestamp() as f64,
            );
        }
    }
    let rl = labels(&[("repo".to_string(), repo.clone())]);
    fam.add(
        "dumpvault_repository_snapshots",
        "Readable snapshots in the repository.",
        &rl,
        input.snapshots.len() as f64,
    );
    if let Some(f) = input.fsck {
        fam.add(
            "dumpvault_fsck_last_timestamp_seconds",
            "When fsck last ran against the repository from this machine.",
            &rl,
            f.time as f64,
        );
        fam.add(
            "dumpvault_fsck_last_success",
            "1 if the last fsck found the repository intact, else 0.",
            &rl,
            if f.ok { 1.0 } else { 0.0 },
        );
        fam.add(
            "dumpvault_fsck_last_exit_code",
            "Exit code of the last fsck: 0 intact, 7 damaged, 10 could not check.",
            &rl,
            f.code as f64,
        );
    }
    for w in input.wal {
        render_wal(&mut fam, &repo, w);
    }
    fam.add(
        "dumpvault_metrics_generated_timestamp_seconds",
        "When this file was written.",
        &rl,
        input.now.timestamp() as f64,
    );
    fam.render()
}

/// One cluster's chain: what is archived, its damage, and the PITR window of each base backup.
fn render_wal(fam: &mut Families, repo: &str, w: &WalStatus) {
    let cl = labels(&[
        ("repo".to_string(), repo.to_string()),
        ("cluster".to_string(), w.cluster.clone()),
    ]);
    fam.add(
        "dumpvault_wal_archived_files",
        "Files archived for the cluster (segments, .partial, .backup, .history).",
        &cl,
        w.files as f64,
    );
    fam.add(
        "dumpvault_wal_stored_bytes",
        "Stored bytes of the cluster's archived WAL.",
        &cl,
        w.stored_bytes as f64,
    );
    if let Some(t) = w.last_segment_time {
        fam.add(
            "dumpvault_wal_newest_segment_timestamp_seconds",
            "When the newest archived segment's content was last written (its source mtime).",
            &cl,
            t.timestamp() as f64,
        );
    }
    fam.add(
        "dumpvault_wal_gaps",
        "Gaps in the archived chain, over all timelines (any gap is damage).",
        &cl,
        w.timelines.iter().map(|t| t.gaps.len()).sum::<usize>() as f64,
    );
    fam.add(
        "dumpvault_wal_problems",
        "Problems wal status reports for the cluster: gaps, conflicting copies, unreadable history files, base backups that cannot reach consistency.",
        &cl,
        w.problems().len() as f64,
    );
    for b in &w.base_backups {
        let bl = labels(&[
            ("repo".to_string(), repo.to_string()),
            ("cluster".to_string(), w.cluster.clone()),
            ("name".to_string(), b.backup.name.clone()),
            (
                "snapshot".to_string(),
                b.backup.snapshot.get(..8).unwrap_or("").to_string(),
            ),
        ]);
        let ok = b.reach.missing_for_consistency.is_none();
        fam.add(
            "dumpvault_pitr_restorable",
            "1 if the base backup can be restored to consistency from the archive, else 0.",
            &bl,
            if ok { 1.0 } else { 0.0 },
        );
        fam.add(
            "dumpvault_pitr_window_start_timestamp_seconds",
            "The earliest time PITR from this base backup reaches (when the backup was complete).",
            &bl,
            b.backup.done.timestamp() as f64,
        );
        if let Some(u) = b.pitr_until.filter(|_| ok) {
            fam.add(
                "dumpvault_pitr_window_end_timestamp_seconds",
                "The latest time PITR from this base backup reaches with the WAL archived now.",
                &bl,
                u.timestamp() as f64,
            );
        }
    }
}

/// Replace `path` atomically with `text`: temp file beside it, fsync, rename, fsync the dir.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut rnd = [0u8; 6];
    crate::crypto::random_bytes(&mut rnd);
    // Not ending in `.prom`: the textfile collector must not read it half-written.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        fname.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, Stream};

    fn snap(name: &str, secs: i64, tags: &[(&str, &str)], size: u64, new: u64) -> SnapshotEntry {
        SnapshotEntry {
            id: ObjectId::of(format!("{name}{secs}").as_bytes()),
            snapshot: Snapshot {
                format: 1,
                time: DateTime::from_timestamp(secs, 0).unwrap(),
                host: "db1".into(),
                name: name.into(),
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                tool_version: "0".into(),
                duration_ms: 1500,
                requests: None,
                streams: vec![Stream {
                    name: "dump".into(),
                    source: Source::Command {
                        argv: vec!["pg_dump".into()],
                        exit_status: 0,
                    },
                    size,
                    blake3: String::new(),
                    root: crate::id::ChunkId([0; 32]),
                    chunks: 1,
                    new_chunks: 1,
                    new_bytes: new,
                    dump: None,
                }],
            },
        }
    }

    #[test]
    fn renders_series_labels_and_values() {
        let s = vec![
            snap("shop", 100, &[("env", "prod"), ("a-b", "x\"y")], 1000, 100),
            snap("shop", 200, &[("env", "prod"), ("a-b", "x\"y")], 2000, 0),
            snap("crm", 150, &[], 10, 5),
        ];
        let text = render(&Input {
            repo_id: &[0xab; 32],
            snapshots: &s,
            verifications: &[],
            fsck: Some(LocalEvent {
                time: 300,
                ok: false,
                code: 7,
            }),
            backups: &[],
            wal: &[],
            now: DateTime::from_timestamp(400, 0).unwrap(),
        });
        let shop =
            r#"repo="abababababababab",name="shop",host="db1",tag_a_b="x\"y",tag_env="prod""#;
        assert!(
            text.contains(&format!(
                "dumpvault_backup_last_success_timestamp_seconds{{{shop}}} 200\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("dumpvault_backup_snapshots{{{shop}}} 2\n")));
        assert!(text.contains(&format!(
            "dumpvault_backup_last_dedup_ratio{{{shop}}} +Inf\n"
        )));
        assert!(text.contains(&format!(
            "dumpvault_backup_last_duration_seconds{{{shop}}} 1.5\n"
        )));
        assert!(text.contains(
            r#"dumpvault_backup_last_dedup_ratio{repo="abababababababab",name="crm",host="db1"} 2"#
        ));
        assert!(text.contains(r#"dumpvault_fsck_last_exit_code{repo="abababababababab"} 7"#));
        // One HELP/TYPE per family, and its samples directly after it.
        assert_eq!(
            text.matches("# TYPE dumpvault_backup_snapshots gauge")
                .count(),
            1
        );
        assert!(!text.contains("dumpvault_verify_last"));
    }

    #[test]
    fn label_names_and_escaping() {
        assert_eq!(tag_label("env"), "tag_env");
        assert_eq!(tag_label("9 lives.x"), "tag_9_lives_x");
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dv.prom");
        write_atomic(&p, "a 1\n").unwrap();
        write_atomic(&p, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        assert!(write_atomic(&d.path().join("no/such/dir/x.prom"), "").is_err());
    }

    /// Regression (issue 15, item 5): a failed backup commits no snapshot, so the metrics had
    /// no trace of it and `dumpvault_backup_last_producer_exit_status` was always 0.
    #[test]
    fn failed_backup_attempts_show_their_exit_code_failure_time_and_producer_status() {
        let s = vec![snap("shop", 100, &[], 1000, 100)];
        let ev = |time, ok, code| LocalEvent { time, ok, code };
        let key = |n: &str| series_event_key(n, "db1", &BTreeMap::new());
        let events = vec![
            (
                format!("{EVENT_BACKUP_LAST}{}", key("shop")),
                ev(300, false, 6),
            ),
            (
                format!("{EVENT_BACKUP_FAILURE}{}", key("shop")),
                ev(300, false, 6),
            ),
            (
                format!("{EVENT_BACKUP_PRODUCER}{}", key("shop")),
                ev(300, false, 2),
            ),
            (
                format!("{EVENT_BACKUP_LAST}{}", key("new")),
                ev(310, false, 6),
            ),
            (
                format!("{EVENT_BACKUP_FAILURE}{}", key("new")),
                ev(310, false, 6),
            ),
            ("backup-last not json".to_string(), ev(1, true, 0)),
        ];
        let backups = backup_attempts(&events);
        assert_eq!(backups.len(), 2);
        let text = render(&Input {
            repo_id: &[0xab; 32],
            snapshots: &s,
            verifications: &[],
            fsck: None,
            backups: &backups,
            wal: &[],
            now: DateTime::from_timestamp(400, 0).unwrap(),
        });
        let shop = r#"repo="abababababababab",name="shop",host="db1""#;
        let new = r#"repo="abababababababab",name="new",host="db1""#;
        for line in [
            format!("dumpvault_backup_last_exit_code{{{shop}}} 6\n"),
            format!("dumpvault_backup_last_failure_timestamp_seconds{{{shop}}} 300\n"),
            format!("dumpvault_backup_last_producer_exit_status{{{shop}}} 2\n"),
            format!("dumpvault_backup_last_success_timestamp_seconds{{{shop}}} 100\n"),
            format!("dumpvault_backup_last_exit_code{{{new}}} 6\n"),
            format!("dumpvault_backup_last_failure_timestamp_seconds{{{new}}} 310\n"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains(&format!("dumpvault_backup_snapshots{{{new}}}")),
            "a series with no snapshot has no snapshot metrics"
        );
    }
}
