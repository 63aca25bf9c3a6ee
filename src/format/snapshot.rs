//! Snapshot manifests (`snapshots/<id>`, enveloped with kind 2). The plaintext is one UTF-8
//! JSON object (RFC 8259); the field list and meanings are in `format-spec/` and mirror the
//! serde structures in `crate::snapshot`. JSON is used here, and only here, because snapshots
//! are small, rare and the field set will grow; readers must ignore unknown fields.
//!
//! Decoding is strict where dumpvault has only ever written one form (07, rule S3): `time` is
//! an RFC 3339 `date-time` with at most nine fractional digits, a tag key may appear only once,
//! `tags` is an object (not `null`), integers are JSON integers (`1.0` is not one), and
//! `format` is at least 1.

use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;
use crate::snapshot::Snapshot;

/// Snapshots larger than this are refused (they hold metadata only).
pub const MAX_LEN: usize = 4 * 1024 * 1024;

pub fn encode(s: &Snapshot) -> Vec<u8> {
    serde_json::to_vec(s).expect("snapshot serialization cannot fail")
}

pub fn decode(id: &ObjectId, plain: &[u8]) -> Result<Snapshot> {
    if plain.len() > MAX_LEN {
        return Err(Error::corrupt(
            ObjectKind::Snapshot,
            id,
            "manifest too large",
        ));
    }
    let s: Snapshot = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(ObjectKind::Snapshot, id, format!("bad manifest: {e}")))?;
    if s.format == 0 {
        return Err(Error::corrupt(
            ObjectKind::Snapshot,
            id,
            "snapshot format 0 is never valid",
        ));
    }
    if s.format > 1 {
        return Err(Error::UnsupportedVersion {
            found: s.format,
            supported: 1,
        });
    }
    Ok(s)
}

// The JSON rules of the model's own fields (time shape, duplicate tags) live with the model in
// `snapshot::json`, so that the model does not depend on this layer; re-exported for readers.
pub use crate::snapshot::json::{de_tags, de_time, is_rfc3339_shape, parse_time};

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    /// The §10 known-answer snapshot JSON of format-spec/10.
    const KAT: &str = r#"{"format":1,"time":"2026-11-21T03:00:00Z","host":"db1","name":"shop","tags":{"env":"prod"},"tool_version":"0.1.0","duration_ms":1234,"streams":[{"name":"dump","source":{"kind":"command","argv":["pg_dump","shop"],"exit_status":0},"size":16,"blake3":"7e9d8bcc8feb56b53547d55cc95812a475314ed2ea3d04c71effd3edae65fed0","root":"fe254d1db48950e0d0dbd43764d67982a7403cb6ee9ca0f609176af5245ca4dc","chunks":1,"new_chunks":1,"new_bytes":144}]}"#;

    fn dec(json: &str) -> Result<Snapshot> {
        decode(&ObjectId([0; 32]), json.as_bytes())
    }

    fn with(from: &str, to: &str) -> String {
        assert!(KAT.contains(from), "{from}");
        KAT.replacen(from, to, 1)
    }

    fn damaged(json: &str) {
        match dec(json) {
            Err(e) if e.is_corruption() => {}
            other => panic!("{json}: expected damage, got {other:?}"),
        }
    }

    #[test]
    fn kat_decodes() {
        let s = dec(KAT).unwrap();
        assert_eq!(s.tags.get("env").map(String::as_str), Some("prod"));
        assert_eq!(s.time.timestamp(), 1_795_230_000);
    }

    /// S3: `tags` may be absent (empty) but not `null`; `requests` and `dump` may be `null`.
    #[test]
    fn tags_null_is_damage_requests_and_dump_null_are_absent() {
        damaged(&with(r#""tags":{"env":"prod"}"#, r#""tags":null"#));
        let s = dec(&with(r#""tags":{"env":"prod"},"#, "")).unwrap();
        assert!(s.tags.is_empty());
        let s = dec(&with(r#""streams":"#, r#""requests":null,"streams":"#)).unwrap();
        assert!(s.requests.is_none());
        let s = dec(&with(
            r#""new_bytes":144"#,
            r#""new_bytes":144,"dump":null"#,
        ))
        .unwrap();
        assert!(s.streams[0].dump.is_none());
    }

    /// X31: the optional fields inside `dump` and `base_backup` may be absent, never `null`
    /// (only `requests` and `dump` themselves may be).
    #[test]
    fn x31_null_inside_dump_is_damage() {
        let base = r#"{"start_lsn":"0/2000028","timeline":1,"wal_included":false}"#;
        let dump = |fields: &str| {
            with(
                r#""new_bytes":144"#,
                &format!(r#""new_bytes":144,"dump":{{"kind":"pg_basebackup"{fields}}}"#),
            )
        };
        let s = dec(&dump(&format!(r#","base_backup":{base}"#))).unwrap();
        let b = s.streams[0].dump.as_ref().unwrap().base_backup.as_ref();
        assert_eq!(b.unwrap().end_lsn, None);
        for field in [
            "version",
            "compression",
            "complete",
            "problem",
            "eof_mark",
            "base_backup",
        ] {
            damaged(&dump(&format!(r#","{field}":null"#)));
        }
        for field in ["end_lsn", "end_timeline", "sysid", "label", "start_time"] {
            let b = base.replace('}', &format!(r#","{field}":null}}"#));
            damaged(&dump(&format!(r#","base_backup":{b}"#)));
        }
    }

    /// S3: a key twice in any object whose fields the spec defines is damage.
    #[test]
    fn duplicate_keys_are_damage() {
        damaged(&with(r#""host":"db1","#, r#""host":"db1","host":"db2","#));
        damaged(&with(
            r#""tags":{"env":"prod"}"#,
            r#""tags":{"env":"prod","env":"test"}"#,
        ));
        damaged(&with(r#""size":16,"#, r#""size":16,"size":16,"#));
        damaged(&with(
            r#""exit_status":0"#,
            r#""exit_status":0,"exit_status":0"#,
        ));
        damaged(&with(
            r#""kind":"command","#,
            r#""kind":"command","kind":"command","#,
        ));
        let requests =
            r#""put":1,"get":2,"head":3,"list":4,"delete":5,"bytes_sent":6,"bytes_received":7"#;
        let ok = with(
            r#""streams":"#,
            &format!(r#""requests":{{{requests}}},"streams":"#),
        );
        assert_eq!(dec(&ok).unwrap().requests.unwrap().head, 3);
        damaged(&with(
            r#""streams":"#,
            &format!(r#""requests":{{{requests},"put":1}},"streams":"#),
        ));
        let dump = r#""dump":{"kind":"redis_rdb","version":"10""#;
        let ok = with(
            r#""new_bytes":144"#,
            &format!(r#""new_bytes":144,{dump}}}"#),
        );
        assert_eq!(
            dec(&ok).unwrap().streams[0].dump.as_ref().unwrap().kind,
            "redis_rdb"
        );
        damaged(&with(
            r#""new_bytes":144"#,
            &format!(r#""new_bytes":144,{dump},"version":"11"}}"#),
        ));
        // Unknown fields are ignored with whatever they hold (S5), repeats included.
        dec(&with(
            r#""host":"db1","#,
            r#""host":"db1","x":1,"x":{"a":1,"a":2},"#,
        ))
        .unwrap();
    }

    /// S3: integers are JSON integers; `1.0`, `1e0` and out-of-range values are damage.
    #[test]
    fn non_integer_numbers_are_damage() {
        damaged(&with(r#""format":1"#, r#""format":1.0"#));
        damaged(&with(r#""size":16"#, r#""size":16.0"#));
        damaged(&with(r#""size":16"#, r#""size":1.6e1"#));
        damaged(&with(r#""size":16"#, r#""size":18446744073709551616"#));
        damaged(&with(r#""size":16"#, r#""size":-1"#));
        damaged(&with(r#""duration_ms":1234"#, r#""duration_ms":"1234""#));
        let s = dec(&with(r#""size":16"#, r#""size":18446744073709551615"#)).unwrap();
        assert_eq!(s.streams[0].size, u64::MAX);
    }

    /// S4: format 0 was never written; it is damage, like version 0 of every other object.
    #[test]
    fn format_zero_is_damage_and_two_is_too_new() {
        let e = dec(&with(r#""format":1"#, r#""format":0"#)).unwrap_err();
        assert!(
            e.is_corruption() && e.to_string().contains("format 0"),
            "{e}"
        );
        let e = dec(&with(r#""format":1"#, r#""format":2"#)).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }

    fn time_of(t: &str) -> Result<DateTime<Utc>> {
        dec(&with("2026-11-21T03:00:00Z", t)).map(|s| s.time)
    }

    /// S3: `time` must be an RFC 3339 date-time (at most 9 fractional digits); chrono's relaxed
    /// forms and impossible dates are damage.
    #[test]
    fn time_must_be_rfc3339() {
        for bad in [
            "2026-11-21 03:00:00Z",
            "2026-11-21T03:00:00",
            "2026-11-21T03:00:00 Z",
            "2026-11-21T03:00:00UTC",
            "2026-11-21T03:00:00+0100",
            "2026-11-21T03:00:00+01",
            "2026-11-21T03:00Z",
            "2026-11-21T03:00:00.Z",
            "2026-11-21T03:00:00.1234567890Z",
            "2026-11-21T3:00:00Z",
            "+2026-11-21T03:00:00Z",
            "2026-02-30T03:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T03:00:61Z",
            "1763694000",
        ] {
            match time_of(bad) {
                Err(e) if e.is_corruption() => {}
                other => panic!("{bad}: expected damage, got {other:?}"),
            }
        }
        damaged(&with(r#""2026-11-21T03:00:00Z""#, "1763694000"));
        let z = time_of("2026-11-21T03:00:00Z").unwrap();
        for same in [
            "2026-11-21t03:00:00z",
            "2026-11-21T04:00:00+01:00",
            "2026-11-20T22:30:00-04:30",
            "2026-11-21T03:00:00-00:00",
            "2026-11-21T03:00:00.000000000Z",
        ] {
            assert_eq!(time_of(same).unwrap(), z, "{same}");
        }
        let t = time_of("2026-12-02T11:21:25.989095347Z").unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 989_095_347);
    }

    /// S3: a leap second (`:60`) decodes, and orders after every time of second 59 of that
    /// minute and before the next minute.
    #[test]
    fn leap_second_decodes_and_orders_inside_its_minute() {
        let leap = time_of("2016-12-31T23:59:60.5Z").unwrap();
        let before = time_of("2016-12-31T23:59:59.999999999Z").unwrap();
        let after = time_of("2017-01-01T00:00:00Z").unwrap();
        assert!(before < leap && leap < after);
        assert_eq!(leap.timestamp(), before.timestamp());
        assert_eq!(leap.timestamp_subsec_nanos(), 1_500_000_000);
    }

    /// 07 "Snapshot identity and order": the writer's fractional digits vary (0, 3, 6 or 9),
    /// so string order is not time order; the decoded instants order correctly.
    #[test]
    fn writer_shapes_and_order_by_instant() {
        let base = time_of("2026-12-02T11:21:25Z").unwrap();
        let shapes = [
            (0, "2026-12-02T11:21:25Z"),
            (500_000_000, "2026-12-02T11:21:25.500Z"),
            (989_095_000, "2026-12-02T11:21:25.989095Z"),
            (989_095_347, "2026-12-02T11:21:25.989095347Z"),
        ];
        let mut s = dec(KAT).unwrap();
        for (ns, want) in shapes {
            s.time = base + chrono::Duration::nanoseconds(ns);
            let json = String::from_utf8(encode(&s)).unwrap();
            assert!(json.contains(&format!(r#""time":"{want}""#)), "{json}");
            assert_eq!(dec(&json).unwrap().time, s.time);
        }
        // "…25Z" sorts after "…25.5Z" as a string, but is earlier.
        assert!("2026-12-02T11:21:25Z" > "2026-12-02T11:21:25.500Z");
        assert!(time_of(shapes[0].1).unwrap() < time_of(shapes[1].1).unwrap());
    }
}
