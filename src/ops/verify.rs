//! `verify`: the restore drill. One stream of a snapshot is restored through the normal
//! verifying path (`ops::restore::restore`: every blob authenticated and hashed, the whole
//! stream's size and BLAKE3 checked) into the stdin of a verifier command (`pg_restore --list`,
//! `psql` into a scratch database, `redis-check-rdb /dev/stdin`), and the verdict is stored in
//! the repository as a sealed verification record (`verifications/<id>`, envelope kind 4,
//! `format-spec/11-verifications.md`).
//!
//! Verdict: ok iff the restore verified AND the command exited 0. A verifier that exits before
//! reading the whole stream (we get EPIPE) failed, whatever its status. A restore that fails
//! with damage is recorded as a failed drill; a restore that fails because storage could not be
//! read (I/O, network) is "could not check": nothing is recorded and the error is returned.
//!
//! Records are content-named (BLAKE3 of their bytes) and never modified. `prune` deletes the
//! records whose snapshot no longer exists and records that are damaged (`orphaned_records`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::Utc;

use crate::error::{Error, ObjectKind, Result};
use crate::format::envelope;
use crate::id::ObjectId;
use crate::ops::restore::{self, RestoreStats};
use crate::repo::{get_verified, list_ids, Repo};
use crate::snapshot::SnapshotEntry;

pub use crate::format::verification::Verification;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The verifier command and arguments (non-empty).
    pub argv: Vec<String>,
    /// Stream to restore; `None` for the snapshot's first.
    pub stream: Option<String>,
    pub host: String,
}

/// What `verify` did: the record it stored, and (when the restore failed with damage) why.
#[derive(Debug)]
pub struct VerifyOutcome {
    pub id: ObjectId,
    pub record: Verification,
    /// The restore's error when the snapshot turned out damaged (exit 7 territory).
    pub damage: Option<Error>,
}

/// Store a record; returns its id.
pub fn write_record(repo: &Repo, v: &Verification) -> Result<ObjectId> {
    let plain = crate::format::verification::encode(v);
    let bytes = envelope::seal(&repo.key, ObjectKind::Verification, &plain);
    let id = ObjectId::of(&bytes);
    repo.backend
        .put(ObjectKind::Verification, &id.to_hex(), &bytes)?;
    Ok(id)
}

/// Fetch, name-check, open and decode one record.
pub fn read_record(repo: &Repo, id: &ObjectId) -> Result<Verification> {
    let kind = ObjectKind::Verification;
    let bytes = get_verified(repo.backend.as_ref(), kind, id)?;
    let plain = envelope::open(&repo.key, kind, id, &bytes)?;
    crate::format::verification::decode(id, &plain)
}

/// Every readable record (oldest first), and the ids and errors of the damaged ones. Storage
/// errors fail the whole listing ("could not check" is not "damaged").
#[allow(clippy::type_complexity)]
pub fn list_records(
    repo: &Repo,
) -> Result<(Vec<(ObjectId, Verification)>, Vec<(ObjectId, Error)>)> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for id in list_ids(repo.backend.as_ref(), ObjectKind::Verification)? {
        match read_record(repo, &id) {
            Ok(v) => ok.push((id, v)),
            Err(e) if e.is_corruption() => bad.push((id, e)),
            // A record from a newer dumpvault is not damage: skip it, keep it.
            Err(Error::UnsupportedVersion { .. }) => {}
            // Listed but gone (a concurrent prune): nothing to show.
            Err(Error::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    ok.sort_by_key(|(id, v)| (v.time, *id));
    Ok((ok, bad))
}

/// The newest record of each snapshot (by time, then id).
pub fn latest_by_snapshot(
    records: &[(ObjectId, Verification)],
) -> HashMap<ObjectId, &Verification> {
    let mut out = HashMap::new();
    // `records` is sorted oldest first, so later inserts win.
    for (_, v) in records {
        out.insert(v.snapshot, v);
    }
    out
}

/// Records prune may delete: those whose snapshot no longer exists, and damaged ones (they
/// protect nothing and would keep fsck reporting damage). Records a newer dumpvault wrote
/// that this one cannot read are kept.
pub fn orphaned_records(repo: &Repo) -> Result<Vec<ObjectId>> {
    let snapshots: HashSet<ObjectId> = list_ids(repo.backend.as_ref(), ObjectKind::Snapshot)?
        .into_iter()
        .collect();
    let (ok, bad) = list_records(repo)?;
    let mut out: Vec<ObjectId> = ok
        .into_iter()
        .filter(|(_, v)| !snapshots.contains(&v.snapshot))
        .map(|(id, _)| id)
        .chain(bad.into_iter().map(|(id, _)| id))
        .collect();
    out.sort();
    Ok(out)
}

/// Delete records (already gone is fine).
pub fn delete_records(repo: &Repo, ids: &[ObjectId]) -> Result<()> {
    for id in ids {
        match repo.backend.delete(ObjectKind::Verification, &id.to_hex()) {
            Ok(()) | Err(Error::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Run the drill on `snap` and store its verdict. Returns the stored record; the caller turns
/// a failed verdict into an exit code. Errors are for "could not check" (storage, a lock) and
/// for usage (no such stream).
pub fn verify(
    repo: &mut Repo,
    snap: &SnapshotEntry,
    opts: &VerifyOptions,
    progress: impl FnMut(&RestoreStats),
) -> Result<VerifyOutcome> {
    let started = Instant::now();
    if opts.argv.is_empty() {
        return Err(Error::InvalidInput(
            "give the verifier command after `--`".into(),
        ));
    }
    let stream = match &opts.stream {
        Some(n) => snap
            .snapshot
            .streams
            .iter()
            .find(|s| &s.name == n)
            .ok_or_else(|| Error::InvalidInput(format!("snapshot has no stream named {n:?}")))?,
        None => snap.snapshot.streams.first().ok_or_else(|| {
            Error::corrupt(ObjectKind::Snapshot, snap.id, "snapshot has no streams")
        })?,
    }
    .name
    .clone();
    // Shared, like a backup: prune waits until the record is written.
    let _lock = repo.lock(false, "verify")?;

    // The verifier's stdout is not our data: it goes to our stderr, so stdout stays free for
    // `--json`.
    let to_stderr = {
        use std::os::fd::AsFd;
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicate stderr for the verifier", e))?
    };
    let spawned = Command::new(&opts.argv[0])
        .args(&opts.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(to_stderr))
        .stderr(Stdio::inherit())
        .spawn();
    let mut record = Verification {
        format: 1,
        snapshot: snap.id,
        stream: stream.clone(),
        time: Utc::now(),
        host: opts.host.clone(),
        argv: opts.argv.clone(),
        exit_status: None,
        signal: None,
        restore_verified: false,
        bytes: 0,
        ok: false,
        detail: String::new(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        duration_ms: 0,
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            // Could not even start: the drill failed (a misconfigured drill must be visible).
            record.detail = format!("cannot start {:?}: {e}", opts.argv[0]);
            record.duration_ms = started.elapsed().as_millis() as u64;
            let id = write_record(repo, &record)?;
            return Ok(VerifyOutcome {
                id,
                record,
                damage: None,
            });
        }
    };
    crate::signals::set_child(Some(crate::signals::Child {
        pid: child.id(),
        group: false,
    }));
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let restored = {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        let mut bytes = 0u64;
        let mut progress = progress;
        let r = restore::restore(repo, snap, Some(&stream), &mut out, |s: &RestoreStats| {
            bytes = s.bytes_written;
            progress(s)
        });
        // Flush what is buffered even on failure, so the verifier sees all we restored.
        let flushed = out.flush();
        let r = match (r, flushed) {
            (Ok(s), Ok(())) => Ok(s),
            (Ok(_), Err(e)) => Err(Error::io("write output", e)),
            (Err(e), _) => Err(e),
        };
        (r, bytes)
    };
    // EOF for the verifier.
    drop(stdin);
    let status = child.wait();
    crate::signals::set_child(None);
    let status = status.map_err(|e| Error::io("wait for the verifier", e))?;
    {
        use std::os::unix::process::ExitStatusExt;
        record.exit_status = status.code();
        record.signal = status.signal();
    }
    let prog = &opts.argv[0];
    let (result, bytes) = restored;
    record.bytes = bytes;
    let mut damage = None;
    match result {
        Ok(stats) => {
            record.bytes = stats.bytes_written;
            record.restore_verified = true;
            record.ok = status.success();
            record.detail = if status.success() {
                format!("restore verified; {prog} accepted the stream")
            } else {
                format!(
                    "restore verified; {prog} rejected it ({})",
                    describe(&status)
                )
            };
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            record.detail = format!(
                "{prog} stopped reading after {} bytes ({})",
                bytes,
                describe(&status)
            );
        }
        Err(e) if e.is_corruption() => {
            record.detail = format!("snapshot damaged: {e}");
            damage = Some(e);
        }
        // Could not check (storage, interrupted): no verdict to record.
        Err(e) => return Err(e),
    }
    record.time = Utc::now();
    record.duration_ms = started.elapsed().as_millis() as u64;
    let id = write_record(repo, &record)?;
    Ok(VerifyOutcome { id, record, damage })
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(snapshot: ObjectId, secs: i64, ok: bool) -> Verification {
        Verification {
            format: 1,
            snapshot,
            stream: "dump".into(),
            time: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
            host: "h".into(),
            argv: vec!["true".into()],
            exit_status: Some(if ok { 0 } else { 1 }),
            signal: None,
            restore_verified: true,
            bytes: 10,
            ok,
            detail: String::new(),
            tool_version: "0".into(),
            duration_ms: 1,
        }
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let v = rec(ObjectId::of(b"s"), 1_700_000_000, true);
        let id = ObjectId::of(b"r");
        let bytes = crate::format::verification::encode(&v);
        assert_eq!(crate::format::verification::decode(&id, &bytes).unwrap(), v);
        // A later writer's extra field is ignored (S5 applies to records too).
        let mut j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        j["future"] = serde_json::json!({"x": 1});
        let again = serde_json::to_vec(&j).unwrap();
        assert_eq!(crate::format::verification::decode(&id, &again).unwrap(), v);
        // A newer format is "too new", not damage.
        j["format"] = 2.into();
        let newer = serde_json::to_vec(&j).unwrap();
        assert!(matches!(
            crate::format::verification::decode(&id, &newer),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        // Missing required field: damage naming the record.
        let e = crate::format::verification::decode(&id, br#"{"format":1}"#).unwrap_err();
        assert!(e.is_corruption(), "{e}");
    }

    #[test]
    fn latest_wins_per_snapshot() {
        let (a, b) = (ObjectId::of(b"a"), ObjectId::of(b"b"));
        let mut list = vec![
            (ObjectId::of(b"1"), rec(a, 100, true)),
            (ObjectId::of(b"2"), rec(a, 50, false)),
            (ObjectId::of(b"3"), rec(b, 70, false)),
        ];
        list.sort_by_key(|(id, v)| (v.time, *id));
        let m = latest_by_snapshot(&list);
        assert!(m[&a].ok);
        assert!(!m[&b].ok);
    }
}
