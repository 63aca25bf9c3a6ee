//! PostgreSQL's physical-backup vocabulary, as pure functions over names and small texts:
//! WAL file names (segments, `.partial`, `.backup`, `.history`), LSNs, timeline history files,
//! `backup_label`, the `WAL-Ranges` of a `backup_manifest`, the long page header that opens
//! every WAL segment, and the chain arithmetic that turns a listing of archived files into
//! ranges, gaps and the point in WAL a base backup can be recovered to.
//!
//! Nothing here touches storage or panics on input: every text comes from a database server
//! or an archive, and a malformed one is an `Err(String)` or `None`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The WAL segment size of a default `initdb`.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;

/// A WAL location (log sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parse PostgreSQL's `X/Y` spelling (hex, either half up to 8 digits).
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }

    /// The segment number holding this location.
    pub fn segno(self, seg_size: u32) -> u64 {
        self.0 / u64::from(seg_size.max(1))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad LSN {s:?}")))
    }
}

/// What an archived WAL file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalKind {
    /// A whole segment: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// The last, incomplete segment of a timeline that a promotion ended: `<segment>.partial`.
    Partial,
    /// A backup history file: `<segment>.<8 hex offset>.backup`.
    Backup,
    /// A timeline history file: `TTTTTTTT.history`.
    History,
}

/// A parsed WAL file name. `log` and `seg` are the two halves of the segment part; the
/// segment number needs the segment size (`segno`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName {
    pub kind: WalKind,
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalName {
    /// Parse a file name as PostgreSQL writes it (upper-case hex); anything else is `None`,
    /// so that a path (`../x`) or a stray file can never be taken for WAL.
    pub fn parse(name: &str) -> Option<WalName> {
        let (seg_part, kind) = if let Some(t) = name.strip_suffix(".history") {
            let timeline = hex8(t)?;
            return Some(WalName {
                kind: WalKind::History,
                timeline,
                log: 0,
                seg: 0,
            });
        } else if let Some(s) = name.strip_suffix(".partial") {
            (s, WalKind::Partial)
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (seg, off) = s.split_once('.')?;
            hex8(off)?;
            (seg, WalKind::Backup)
        } else {
            (name, WalKind::Segment)
        };
        if seg_part.len() != 24 {
            return None;
        }
        Some(WalName {
            kind,
            timeline: hex8(&seg_part[..8])?,
            log: hex8(&seg_part[8..16])?,
            seg: hex8(&seg_part[16..])?,
        })
    }

    /// Segment number, for a segment size; `None` for history files and for a `seg` half
    /// that cannot occur with this segment size.
    pub fn segno(&self, seg_size: u32) -> Option<u64> {
        if self.kind == WalKind::History {
            return None;
        }
        let per_log = segments_per_log(seg_size);
        (u64::from(self.seg) < per_log).then(|| u64::from(self.log) * per_log + u64::from(self.seg))
    }
}

fn segments_per_log(seg_size: u32) -> u64 {
    0x1_0000_0000 / u64::from(seg_size.max(1))
}

/// The file name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, seg_size: u32) -> String {
    let per_log = segments_per_log(seg_size);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_log,
        segno % per_log
    )
}

/// What the long page header at the start of a WAL segment says (`XLogLongPageHeaderData`):
/// the cluster's system identifier and the segment size. `None` if the bytes are not one.
pub fn segment_header(data: &[u8]) -> Option<(u64, u32)> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    if data.len() < 40 {
        return None;
    }
    let info = u16::from_le_bytes([data[2], data[3]]);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let sysid = u64::from_le_bytes(data[24..32].try_into().ok()?);
    let seg_size = u32::from_le_bytes(data[32..36].try_into().ok()?);
    // A power of two between 1 MiB and 1 GiB, as initdb allows.
    (seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&seg_size))
        .then_some((sysid, seg_size))
}

/// One line of a timeline history file: `parent` ended at `switch`, where the next timeline
/// of the file's chain begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub parent: u32,
    pub switch: Lsn,
}

/// Parse `TTTTTTTT.history`: lines `parentTLI <tab> switchpoint <tab> reason`, `#` comments.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let parent = f
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| format!("line {}: no timeline number", n + 1))?;
        let switch = f
            .next()
            .and_then(Lsn::parse)
            .ok_or_else(|| format!("line {}: no switch point", n + 1))?;
        if out
            .last()
            .is_some_and(|p| p.parent >= parent || p.switch > switch)
        {
            return Err(format!("line {}: timelines out of order", n + 1));
        }
        out.push(HistoryEntry { parent, switch });
    }
    Ok(out)
}

/// What `backup_label` says of a base backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub start_timeline: u32,
    pub checkpoint_lsn: Option<Lsn>,
    pub start_time: Option<String>,
    pub label: Option<String>,
    pub backup_from: Option<String>,
}

pub fn parse_backup_label(text: &str) -> Result<BackupLabel, String> {
    let mut b = BackupLabel::default();
    let mut start = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else {
            continue;
        };
        match k {
            "START WAL LOCATION" => {
                let lsn = v.split_whitespace().next().and_then(Lsn::parse);
                start = Some(lsn.ok_or_else(|| format!("bad START WAL LOCATION {v:?}"))?);
            }
            "CHECKPOINT LOCATION" => b.checkpoint_lsn = Lsn::parse(v),
            "START TIME" => b.start_time = Some(v.to_string()),
            "LABEL" => b.label = Some(v.to_string()),
            "BACKUP FROM" => b.backup_from = Some(v.to_string()),
            "START TIMELINE" => {
                b.start_timeline = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad START TIMELINE {v:?}"))?
            }
            _ => {}
        }
    }
    b.start_lsn = start.ok_or("no START WAL LOCATION line")?;
    if b.start_timeline == 0 {
        // Before PostgreSQL 11 the label had no START TIMELINE: the file name in the START
        // WAL LOCATION line carries it.
        b.start_timeline = text
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
            .and_then(|v| v.split("(file ").nth(1))
            .and_then(|f| WalName::parse(f.trim_end_matches(')')))
            .map(|w| w.timeline)
            .ok_or("no START TIMELINE")?;
    }
    Ok(b)
}

/// The end of the WAL a base backup needs, from the tail of its `backup_manifest` (the
/// `WAL-Ranges` array, which the manifest writes after the file list): `(timeline, end LSN)`
/// of the first range (PostgreSQL writes the ending timeline first).
pub fn manifest_wal_end(tail: &[u8]) -> Option<(u32, Lsn)> {
    let text = String::from_utf8_lossy(tail);
    let ranges = text.rfind("\"WAL-Ranges\"")?;
    let rest = &text[ranges..];
    // PostgreSQL (`AddWALInfoToBackupManifest`) lists the ranges newest timeline first: the
    // first one holds the backup's end; the last ends at a switch point when the timeline
    // changed during the backup (X27).
    let rest = rest.find('}').map_or(rest, |e| &rest[..=e]);
    let end_at = rest.rfind("\"End-LSN\"")?;
    let end = rest[end_at + 9..].split('"').nth(1).and_then(Lsn::parse)?;
    let tl_at = rest[..end_at].rfind("\"Timeline\"")?;
    let tl: String = rest[tl_at + 10..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    Some((tl.parse().ok()?, end))
}

/// A base backup as the chain arithmetic sees it.
#[derive(Debug, Clone)]
pub struct BaseBackupPoint {
    pub timeline: u32,
    pub start: Lsn,
    /// Where recovery becomes consistent; `None` if unknown (then the start is used and the
    /// consistency check is only as good as that).
    pub end: Option<Lsn>,
    /// The needed WAL travels inside the backup (`pg_basebackup -X fetch|stream`).
    pub wal_included: bool,
}

/// An archived file's place in the chain: its name and when its content was last written.
#[derive(Debug, Clone)]
pub struct Archived {
    pub name: WalName,
    /// Unix milliseconds: the source file's modification time, when known.
    pub mtime_ms: Option<i64>,
}

/// A run of consecutive segments on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegRange {
    pub first: String,
    pub last: String,
    pub segments: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub timeline: u32,
    /// First and last missing segment names.
    pub first_missing: String,
    pub last_missing: String,
    pub segments: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    pub timeline: u32,
    pub ranges: Vec<SegRange>,
    pub gaps: Vec<Gap>,
    pub partial: Vec<String>,
    pub history: bool,
}

/// The archive as a whole: segment size, timelines and their histories.
pub struct Chain {
    pub seg_size: u32,
    /// timeline -> set of segment numbers archived as whole segments.
    segs: BTreeMap<u32, BTreeSet<u64>>,
    mtimes: BTreeMap<(u32, u64), i64>,
    partial: BTreeMap<u32, Vec<String>>,
    /// timeline -> its history (for timelines whose `.history` file was read).
    pub histories: BTreeMap<u32, Vec<HistoryEntry>>,
}

/// How far recovery from a base backup can go with the archive as it is.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    /// Every segment from the start to the consistency point is available.
    pub consistent: bool,
    /// The first segment needed for consistency that is missing, if any.
    pub missing_for_consistency: Option<String>,
    /// The timeline recovery ends on (the newest descendant of the backup's timeline).
    pub timeline: u32,
    /// Recovery can replay up to the end of this segment (its name), then the archive stops.
    pub last_segment: Option<String>,
    /// The LSN at the end of `last_segment`.
    pub until_lsn: Option<Lsn>,
    /// When `last_segment`'s content was last written (Unix ms): every commit up to this time
    /// is reachable.
    pub until_mtime_ms: Option<i64>,
    /// The gap that ends the range, when there are later segments past it.
    pub cut_by_gap: Option<Gap>,
}

impl Chain {
    pub fn new(seg_size: u32, files: &[Archived]) -> Chain {
        let mut c = Chain {
            seg_size,
            segs: BTreeMap::new(),
            mtimes: BTreeMap::new(),
            partial: BTreeMap::new(),
            histories: BTreeMap::new(),
        };
        for f in files {
            match f.name.kind {
                WalKind::Segment => {
                    if let Some(n) = f.name.segno(seg_size) {
                        c.segs.entry(f.name.timeline).or_default().insert(n);
                        if let Some(t) = f.mtime_ms {
                            c.mtimes.insert((f.name.timeline, n), t);
                        }
                    }
                }
                WalKind::Partial => c.partial.entry(f.name.timeline).or_default().push(format!(
                    "{:08X}{:08X}{:08X}.partial",
                    f.name.timeline, f.name.log, f.name.seg
                )),
                _ => {}
            }
        }
        c
    }

    pub fn timelines(&self) -> Vec<u32> {
        let mut t: BTreeSet<u32> = self.segs.keys().copied().collect();
        t.extend(self.histories.keys().copied());
        t.into_iter().collect()
    }

    pub fn has(&self, timeline: u32, segno: u64) -> bool {
        self.segs.get(&timeline).is_some_and(|s| s.contains(&segno))
    }

    /// Ranges and gaps per timeline. A gap is a hole between two archived segments of the
    /// same timeline (what comes after the last one is not archived *yet*, not a gap).
    pub fn report(&self) -> Vec<TimelineReport> {
        let ss = self.seg_size;
        self.timelines()
            .into_iter()
            .map(|tl| {
                let mut ranges = Vec::new();
                let mut gaps = Vec::new();
                let mut run: Option<(u64, u64)> = None;
                for &n in self.segs.get(&tl).into_iter().flatten() {
                    match run {
                        Some((a, b)) if n == b + 1 => run = Some((a, n)),
                        Some((a, b)) => {
                            ranges.push(range(tl, a, b, ss));
                            gaps.push(Gap {
                                timeline: tl,
                                first_missing: segment_name(tl, b + 1, ss),
                                last_missing: segment_name(tl, n - 1, ss),
                                segments: n - b - 1,
                            });
                            run = Some((n, n));
                        }
                        None => run = Some((n, n)),
                    }
                }
                if let Some((a, b)) = run {
                    ranges.push(range(tl, a, b, ss));
                }
                TimelineReport {
                    timeline: tl,
                    ranges,
                    gaps,
                    partial: self.partial.get(&tl).cloned().unwrap_or_default(),
                    history: self.histories.contains_key(&tl) || tl == 1,
                }
            })
            .collect()
    }

    /// The newest timeline that descends from `timeline` at or after `from` (its history
    /// names `timeline` with a switch point at or after `from`), or `timeline` itself.
    pub fn newest_descendant(&self, timeline: u32, from: Lsn) -> u32 {
        self.histories
            .iter()
            .filter(|(_, h)| h.iter().any(|e| e.parent == timeline && e.switch >= from))
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(timeline)
    }

    /// The timeline that holds segment `segno` on the way to `target`: PostgreSQL reads a
    /// segment from the newest timeline of the target's history that began at or before it.
    pub fn timeline_of(&self, target: u32, segno: u64) -> u32 {
        let Some(h) = self.histories.get(&target) else {
            return target;
        };
        // Timeline h[i].parent covers segments up to the one holding h[i].switch - 1; the
        // switch segment itself is read from the next timeline, which copied it.
        for e in h {
            if segno < e.switch.segno(self.seg_size) {
                return e.parent;
            }
        }
        target
    }

    /// How far recovery from `b` can go towards timeline `target` (default: the newest
    /// descendant of the backup's timeline).
    pub fn reach(&self, b: &BaseBackupPoint, target: Option<u32>) -> Reach {
        let ss = self.seg_size;
        let target = target.unwrap_or_else(|| self.newest_descendant(b.timeline, b.start));
        let first = b.start.segno(ss);
        let end = b.end.unwrap_or(b.start).segno(ss);
        let mut missing = None;
        let mut n = first;
        let mut last: Option<(u32, u64)> = None;
        loop {
            let tl = self.timeline_of(target, n);
            if !self.has(tl, n) {
                if n <= end && !b.wal_included {
                    missing = Some(segment_name(tl, n, ss));
                }
                break;
            }
            last = Some((tl, n));
            n += 1;
        }
        if b.wal_included && n <= end {
            // The segments up to the consistency point come with the backup itself.
            last = Some((b.timeline, end));
            n = end + 1;
            while self.has(self.timeline_of(target, n), n) {
                last = Some((self.timeline_of(target, n), n));
                n += 1;
            }
        }
        let cut_by_gap = {
            let tl = self.timeline_of(target, n);
            self.segs
                .get(&tl)
                .and_then(|s| s.range(n..).next().copied())
                .map(|next| Gap {
                    timeline: tl,
                    first_missing: segment_name(tl, n, ss),
                    last_missing: segment_name(tl, next - 1, ss),
                    segments: next - n,
                })
        };
        Reach {
            consistent: missing.is_none(),
            missing_for_consistency: missing,
            timeline: target,
            last_segment: last.map(|(tl, n)| segment_name(tl, n, ss)),
            until_lsn: last.map(|(_, n)| Lsn((n + 1) * u64::from(ss))),
            until_mtime_ms: last.and_then(|k| self.mtimes.get(&k).copied()),
            cut_by_gap,
        }
    }
}

fn range(tl: u32, a: u64, b: u64, ss: u32) -> SegRange {
    SegRange {
        first: segment_name(tl, a, ss),
        last: segment_name(tl, b, ss),
        segments: b - a + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: u32 = DEFAULT_SEGMENT_SIZE;

    fn seg(tl: u32, n: u64) -> Archived {
        Archived {
            name: WalName::parse(&segment_name(tl, n, SS)).unwrap(),
            mtime_ms: Some(n as i64 * 1000),
        }
    }

    #[test]
    fn names_and_lsns() {
        let w = WalName::parse("000000010000000A000000FF").unwrap();
        assert_eq!(
            (w.kind, w.timeline, w.log, w.seg),
            (WalKind::Segment, 1, 10, 255)
        );
        assert_eq!(w.segno(SS), Some(10 * 256 + 255));
        assert_eq!(
            segment_name(1, 10 * 256 + 255, SS),
            "000000010000000A000000FF"
        );
        assert_eq!(
            WalName::parse("00000002.history").unwrap().kind,
            WalKind::History
        );
        assert_eq!(
            WalName::parse("000000010000000000000002.00000028.backup")
                .unwrap()
                .kind,
            WalKind::Backup
        );
        assert_eq!(
            WalName::parse("000000010000000000000005.partial")
                .unwrap()
                .kind,
            WalKind::Partial
        );
        for bad in [
            "",
            "../etc/passwd",
            "0000000100000000000000",
            "000000010000000000000005x",
            "00000001000000000000000g",
            "000000010000000000000002.backup",
            "0000000x.history",
            "000000010000000000000002.0000002.backup",
            "000000010000000a00000001",
        ] {
            assert!(WalName::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            WalName::parse("000000010000000000000100")
                .unwrap()
                .segno(SS),
            None
        );
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert!(Lsn::parse("1/").is_none() && Lsn::parse("x/1").is_none());
    }

    #[test]
    fn label_history_manifest() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-12-02 10:00:00 UTC\n\
                     LABEL: nightly\nSTART TIMELINE: 1\n";
        let b = parse_backup_label(label).unwrap();
        assert_eq!(b.start_lsn, Lsn(0x2000028));
        assert_eq!(b.start_timeline, 1);
        assert_eq!(b.label.as_deref(), Some("nightly"));
        let old = "START WAL LOCATION: 0/9000028 (file 000000030000000000000009)\n";
        assert_eq!(parse_backup_label(old).unwrap().start_timeline, 3);
        assert!(parse_backup_label("LABEL: x\n").is_err());

        let h = parse_history("1\t0/3000100\tno recovery target specified\n\n2\t0/5000000\tx\n")
            .unwrap();
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    parent: 1,
                    switch: Lsn(0x3000100)
                },
                HistoryEntry {
                    parent: 2,
                    switch: Lsn(0x5000000)
                },
            ]
        );
        assert!(parse_history("2\t0/1\tx\n1\t0/2\tx\n").is_err());

        let m = br#"..."WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(manifest_wal_end(m), Some((1, Lsn(0x2000138))));
        assert_eq!(manifest_wal_end(b"{}"), None);
    }

    /// A base backup during which the timeline changed (a standby promoted meanwhile): the
    /// manifest lists the ending timeline first, and that range holds the end.
    #[test]
    fn x27_manifest_wal_end_takes_the_ending_timeline() {
        let m = br#"..."WAL-Ranges": [
{ "Timeline": 2, "Start-LSN": "0/5000000", "End-LSN": "0/6000100" },
{ "Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/5000000" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(manifest_wal_end(m), Some((2, Lsn(0x6000100))));
    }

    #[test]
    fn gaps_and_reach() {
        let mut files: Vec<Archived> = (2..=5).map(|n| seg(1, n)).collect();
        files.extend((8..=9).map(|n| seg(1, n)));
        let c = Chain::new(SS, &files);
        let r = c.report();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ranges.len(), 2);
        assert_eq!(
            r[0].gaps,
            vec![Gap {
                timeline: 1,
                first_missing: segment_name(1, 6, SS),
                last_missing: segment_name(1, 7, SS),
                segments: 2,
            }]
        );
        let b = BaseBackupPoint {
            timeline: 1,
            start: Lsn(2 * SS as u64 + 40),
            end: Some(Lsn(3 * SS as u64 + 8)),
            wal_included: false,
        };
        let reach = c.reach(&b, None);
        assert!(reach.consistent);
        assert_eq!(
            reach.last_segment.as_deref(),
            Some(segment_name(1, 5, SS).as_str())
        );
        assert_eq!(reach.until_lsn, Some(Lsn(6 * SS as u64)));
        assert_eq!(reach.until_mtime_ms, Some(5000));
        assert_eq!(reach.cut_by_gap.unwrap().segments, 2);
        // A backup whose own WAL is missing cannot reach consistency.
        let b2 = BaseBackupPoint {
            timeline: 1,
            start: Lsn(6 * SS as u64),
            end: Some(Lsn(7 * SS as u64)),
            wal_included: false,
        };
        let r2 = c.reach(&b2, None);
        assert!(!r2.consistent);
        assert_eq!(
            r2.missing_for_consistency.as_deref(),
            Some(segment_name(1, 6, SS).as_str())
        );
        // ... unless it carries that WAL itself.
        let r3 = c.reach(
            &BaseBackupPoint {
                wal_included: true,
                ..b2
            },
            None,
        );
        assert!(r3.consistent);
        assert_eq!(
            r3.last_segment.as_deref(),
            Some(segment_name(1, 9, SS).as_str())
        );
    }

    #[test]
    fn timelines_follow_history() {
        // Timeline 1 up to segment 4; a promotion in segment 4 starts timeline 2.
        let mut files: Vec<Archived> = (2..=3).map(|n| seg(1, n)).collect();
        files.extend((4..=6).map(|n| seg(2, n)));
        let mut c = Chain::new(SS, &files);
        c.histories.insert(
            2,
            vec![HistoryEntry {
                parent: 1,
                switch: Lsn(4 * SS as u64 + 100),
            }],
        );
        let b = BaseBackupPoint {
            timeline: 1,
            start: Lsn(2 * SS as u64),
            end: Some(Lsn(2 * SS as u64 + 10)),
            wal_included: false,
        };
        let r = c.reach(&b, None);
        assert_eq!(r.timeline, 2);
        assert_eq!(
            r.last_segment.as_deref(),
            Some(segment_name(2, 6, SS).as_str())
        );
        // Staying on timeline 1 ends at its last segment.
        let r1 = c.reach(&b, Some(1));
        assert_eq!(
            r1.last_segment.as_deref(),
            Some(segment_name(1, 3, SS).as_str())
        );
    }

    #[test]
    fn page_header() {
        let mut p = vec![0u8; 64];
        p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        p[2..4].copy_from_slice(&2u16.to_le_bytes());
        p[24..32].copy_from_slice(&7_312_345_678_901u64.to_le_bytes());
        p[32..36].copy_from_slice(&SS.to_le_bytes());
        assert_eq!(segment_header(&p), Some((7_312_345_678_901, SS)));
        p[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert_eq!(segment_header(&p), None);
        assert_eq!(segment_header(&p[..10]), None);
    }
}
