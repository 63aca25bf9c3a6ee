//! Grandfather-father-son retention as a pure function: given one group's snapshots (time, id,
//! tags) and a policy, decide which to keep and why. No I/O, so it is tested exhaustively
//! against a reference model (tests/integration/retention.rs).
//!
//! Semantics (also in the README, "Retention"):
//! - Times are bucketed in UTC. Buckets: hour `YYYY-MM-DD HH`, day `YYYY-MM-DD`, ISO week
//!   `YYYY-Www` (weeks start on Monday; the ISO week-year is used at year boundaries), month
//!   `YYYY-MM`, year `YYYY`.
//! - Snapshots are ordered newest first by (time, id); ties in time are broken by id.
//! - `--keep-daily N` (and hourly/weekly/monthly/yearly): walk the snapshots newest first; the
//!   newest snapshot of each bucket represents it; keep the representatives of the N newest
//!   buckets that have snapshots (empty days do not count: "the last N days with a backup").
//! - `--keep-last N`: the N newest snapshots.
//! - `--keep-within D`: every snapshot no older than D before the group's newest snapshot
//!   (relative to the newest snapshot, not to now, so a group whose backups stopped does not
//!   expire entirely).
//! - `--keep-within-daily D` (and siblings): the representatives of every bucket no older than
//!   D before the group's newest snapshot.
//! - `--keep-tag k=v`: every snapshot carrying that tag.
//! - The newest snapshot of a group is always kept, and so is every snapshot whose time lies in
//!   the future (after `now`); both still count in the buckets.
//! - An empty policy is refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket a time falls in, as a sortable integer key.
    pub fn bucket(self, t: DateTime<Utc>) -> i64 {
        let (y, m, d, h) = (
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
        );
        match self {
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub last: Option<u32>,
    /// N buckets per period.
    pub count: BTreeMap<Period, u32>,
    pub within: Option<Duration>,
    /// Every bucket within a duration, per period.
    pub within_period: BTreeMap<Period, Duration>,
    pub tags: Vec<(String, String)>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.count.is_empty()
            && self.within.is_none()
            && self.within_period.is_empty()
            && self.tags.is_empty()
    }
}

/// What the policy sees of a snapshot.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub time: DateTime<Utc>,
    /// Tie-breaker and identity (the snapshot id, hex).
    pub id: &'a str,
    pub tags: &'a BTreeMap<String, String>,
}

/// Per item, in input order: the reasons it is kept (empty = remove).
pub fn apply(policy: &Policy, items: &[Item<'_>], now: DateTime<Utc>) -> Vec<Vec<String>> {
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); items.len()];
    if items.is_empty() {
        return reasons;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| (items[b].time, items[b].id).cmp(&(items[a].time, items[a].id)));
    let newest = items[order[0]].time;
    reasons[order[0]].push("newest in group".into());
    for &i in &order {
        if items[i].time > now {
            reasons[i].push("in the future".into());
        }
    }
    if let Some(n) = policy.last {
        for (rank, &i) in order.iter().take(n as usize).enumerate() {
            reasons[i].push(format!("last {}/{n}", rank + 1));
        }
    }
    for (&period, &n) in &policy.count {
        let mut seen = 0u32;
        let mut last_bucket = None;
        for &i in &order {
            if seen >= n {
                break;
            }
            let b = period.bucket(items[i].time);
            if last_bucket == Some(b) {
                continue;
            }
            // Order is by time, so a bucket's snapshots are contiguous: the first is newest.
            last_bucket = Some(b);
            seen += 1;
            reasons[i].push(format!("{} {seen}/{n}", period.name()));
        }
    }
    if let Some(d) = policy.within {
        for &i in &order {
            if items[i].time >= newest - d {
                reasons[i].push(format!("within {}", fmt_duration(d)));
            }
        }
    }
    for (&period, &d) in &policy.within_period {
        let mut last_bucket = None;
        for &i in &order {
            if items[i].time < newest - d {
                break;
            }
            let b = period.bucket(items[i].time);
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                reasons[i].push(format!("{} within {}", period.name(), fmt_duration(d)));
            }
        }
    }
    for (k, v) in &policy.tags {
        for (i, it) in items.iter().enumerate() {
            if it.tags.get(k) == Some(v) {
                reasons[i].push(format!("tag {k}={v}"));
            }
        }
    }
    reasons
}

pub fn fmt_duration(d: Duration) -> String {
    let h = d.num_hours();
    if h % 24 == 0 {
        format!("{}d", h / 24)
    } else {
        format!("{h}h")
    }
}

/// Parse durations like `7d`, `36h`, `2w`, `6m` (30-day months), `1y` (365 days), `1y6m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("duration {s:?}: use a number with a unit h, d, w, m or y (e.g. 30d, 1y6m)");
    let mut total = Duration::zero();
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let hours = match c {
            'h' => 1,
            'd' => 24,
            'w' => 24 * 7,
            'm' => 24 * 30,
            'y' => 24 * 365,
            _ => return Err(bad()),
        };
        total += Duration::hours(n.checked_mul(hours).ok_or_else(bad)?);
    }
    if !num.is_empty() || total <= Duration::zero() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let empty = BTreeMap::new();
        let ids: Vec<String> = (0..6).map(|i| format!("{i:02}")).collect();
        let times = [
            t(2024, 1, 1, 1),
            t(2024, 1, 1, 23),
            t(2024, 1, 2, 5),
            t(2024, 1, 4, 5),
            t(2024, 1, 4, 6),
            t(2024, 1, 5, 0),
        ];
        let items: Vec<Item> = times
            .iter()
            .zip(&ids)
            .map(|(&time, id)| Item {
                time,
                id,
                tags: &empty,
            })
            .collect();
        let mut p = Policy::default();
        p.count.insert(Period::Daily, 3);
        let r = apply(&p, &items, t(2030, 1, 1, 0));
        let kept: Vec<usize> = (0..6).filter(|&i| !r[i].is_empty()).collect();
        // Days with backups: 5th, 4th (newest 06:00), 2nd. The 1st is beyond 3 days-with-backups.
        assert_eq!(kept, vec![2, 4, 5]);
        assert!(r[5].contains(&"newest in group".to_string()));
    }

    #[test]
    fn iso_weeks_cross_year_boundaries() {
        // 2024-12-30 (Mon) and 2025-01-05 (Sun) are both ISO week 2025-W01.
        assert_eq!(
            Period::Weekly.bucket(t(2024, 12, 30, 0)),
            Period::Weekly.bucket(t(2025, 1, 5, 0))
        );
        assert_ne!(
            Period::Weekly.bucket(t(2024, 12, 29, 0)),
            Period::Weekly.bucket(t(2024, 12, 30, 0))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), Duration::days(7));
        assert_eq!(parse_duration("1y6m").unwrap(), Duration::days(365 + 180));
        assert_eq!(parse_duration("36h").unwrap(), Duration::hours(36));
        for bad in ["", "7", "d", "7x", "0d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
