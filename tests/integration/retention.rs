//! The retention policy (`dumpvault::retention::apply`) against a simple, independent reference
//! model written here from the semantics in the module doc of src/retention.rs:
//!
//! - buckets in UTC: hour `YYYY-MM-DD HH`, day `YYYY-MM-DD`, ISO week `YYYY-Www` (ISO
//!   week-year), month `YYYY-MM`, year `YYYY`; the keys are computed here with chrono, not with
//!   the library's `Period::bucket`;
//! - order newest first by (time, id); the newest snapshot of a bucket represents it;
//! - `keep-<period> N`: the representatives of the N newest buckets that have snapshots;
//! - `keep-last N`, `keep-within D` (relative to the group's newest snapshot),
//!   `keep-within-<period> D` (representatives no older than D before the newest), `keep-tag`;
//! - the newest snapshot and every snapshot after `now` are always kept.
//!
//! The model groups by key with a hash map and takes the maximum per bucket, where the library
//! walks a sorted list; the two share nothing but chrono. Property tests compare the kept sets
//! (not the reason strings) for the whole policy and for each rule on its own (so one rule
//! cannot hide a bug in another); example tests pin the semantics with hand-computed sets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use proptest::prelude::*;

use dumpvault::backend::memory::MemoryBackend;
use dumpvault::crypto::KdfParams;
use dumpvault::error::Error;
use dumpvault::ops::forget::{self, GroupBy};
use dumpvault::repo::{InitOptions, Repo};
use dumpvault::retention::{self, Item, Period, Policy};
use dumpvault::snapshot::Filter;

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Snap {
    time: DateTime<Utc>,
    id: String,
    tags: BTreeMap<String, String>,
}

/// The bucket a time falls in, as a human-readable key (equality is all the model needs).
fn bucket_key(p: Period, t: DateTime<Utc>) -> String {
    match p {
        Period::Hourly => format!(
            "{:04}-{:02}-{:02} {:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour()
        ),
        Period::Daily => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
        Period::Weekly => {
            let w = t.iso_week();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        Period::Monthly => format!("{:04}-{:02}", t.year(), t.month()),
        Period::Yearly => format!("{:04}", t.year()),
    }
}

/// The sort key: larger is newer.
fn age_key(s: &Snap) -> (DateTime<Utc>, &str) {
    (s.time, s.id.as_str())
}

/// Index of the representative (newest by (time, id)) of every bucket.
fn representatives(p: Period, snaps: &[Snap]) -> Vec<usize> {
    let mut best: HashMap<String, usize> = HashMap::new();
    for (i, s) in snaps.iter().enumerate() {
        best.entry(bucket_key(p, s.time))
            .and_modify(|b| {
                if age_key(s) > age_key(&snaps[*b]) {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    let mut reps: Vec<usize> = best.into_values().collect();
    reps.sort_by_key(|&i| Reverse(age_key(&snaps[i])));
    reps
}

/// The indices the model keeps.
fn model(policy: &Policy, snaps: &[Snap], now: DateTime<Utc>) -> BTreeSet<usize> {
    let mut keep = BTreeSet::new();
    if snaps.is_empty() {
        return keep;
    }
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by_key(|&i| Reverse(age_key(&snaps[i])));
    let newest = order[0];
    let newest_time = snaps[newest].time;
    keep.insert(newest);
    keep.extend((0..snaps.len()).filter(|&i| snaps[i].time > now));
    if let Some(n) = policy.last {
        keep.extend(order.iter().take(n as usize));
    }
    for (&p, &n) in &policy.count {
        keep.extend(representatives(p, snaps).into_iter().take(n as usize));
    }
    if let Some(d) = policy.within {
        keep.extend((0..snaps.len()).filter(|&i| snaps[i].time >= newest_time - d));
    }
    for (&p, &d) in &policy.within_period {
        keep.extend(
            representatives(p, snaps)
                .into_iter()
                .filter(|&i| snaps[i].time >= newest_time - d),
        );
    }
    for (i, s) in snaps.iter().enumerate() {
        if policy.tags.iter().any(|(k, v)| s.tags.get(k) == Some(v)) {
            keep.insert(i);
        }
    }
    keep
}

/// Runs the library; checks the shape of its answer and returns the kept indices.
fn library(policy: &Policy, snaps: &[Snap], now: DateTime<Utc>) -> BTreeSet<usize> {
    let items: Vec<Item> = snaps
        .iter()
        .map(|s| Item {
            time: s.time,
            id: &s.id,
            tags: &s.tags,
        })
        .collect();
    let reasons = retention::apply(policy, &items, now);
    assert_eq!(reasons.len(), snaps.len(), "one reason list per item");
    (0..snaps.len())
        .filter(|&i| !reasons[i].is_empty())
        .collect()
}

/// `time id` of each index, for readable failure messages.
fn describe(snaps: &[Snap], set: &BTreeSet<usize>) -> BTreeSet<String> {
    set.iter()
        .map(|&i| {
            format!(
                "{} {}",
                snaps[i].time.format("%Y-%m-%d %H:%M:%S %a"),
                snaps[i].id
            )
        })
        .collect()
}

/// Every rule of `policy` as a policy of its own.
fn single_rules(policy: &Policy) -> Vec<(String, Policy)> {
    let mut out = Vec::new();
    if let Some(n) = policy.last {
        out.push((
            format!("last {n}"),
            Policy {
                last: Some(n),
                ..Default::default()
            },
        ));
    }
    for (&p, &n) in &policy.count {
        let mut q = Policy::default();
        q.count.insert(p, n);
        out.push((format!("{} {n}", p.name()), q));
    }
    if let Some(d) = policy.within {
        out.push((
            format!("within {d}"),
            Policy {
                within: Some(d),
                ..Default::default()
            },
        ));
    }
    for (&p, &d) in &policy.within_period {
        let mut q = Policy::default();
        q.within_period.insert(p, d);
        out.push((format!("{} within {d}", p.name()), q));
    }
    for t in &policy.tags {
        out.push((
            format!("tag {}={}", t.0, t.1),
            Policy {
                tags: vec![t.clone()],
                ..Default::default()
            },
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// Where the series starts: often a few days before New Year (so ISO weeks 52/53/01 and
/// week-years differing from calendar years are crossed), otherwise anywhere in 2019–2027;
/// sometimes aligned on an hour so later whole-hour gaps land exactly on bucket boundaries.
fn start_time() -> impl Strategy<Value = DateTime<Utc>> {
    let near_new_year = (2018i32..=2027, 0i64..14 * 86_400)
        .prop_map(|(y, s)| utc(y, 12, 21, 0) + Duration::seconds(s));
    let anywhere = (0i64..9 * 365 * 86_400).prop_map(|s| utc(2019, 1, 1, 0) + Duration::seconds(s));
    (prop_oneof![near_new_year, anywhere], any::<bool>()).prop_map(|(t, align)| {
        if align {
            t - Duration::seconds(t.timestamp().rem_euclid(3600))
        } else {
            t
        }
    })
}

/// The gap from one snapshot to the next.
fn gap() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => Just(Duration::zero()),                                    // equal timestamps
        4 => (1i64..3600).prop_map(Duration::seconds),                  // same hour, mostly
        4 => (1i64..24).prop_map(Duration::hours),                      // several a day
        4 => (3600i64..2 * 86_400).prop_map(Duration::seconds),         // about daily
        2 => (1i64..10).prop_map(Duration::days),                       // exact days
        2 => (1i64..60).prop_map(Duration::days),                       // weeks
        1 => (60i64..800).prop_map(|d| Duration::days(d) + Duration::hours(d % 24)), // long gaps
    ]
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop_oneof![Just(None), Just(Some("prod")), Just(Some("dev"))],
        prop::option::of(Just("yes")),
    )
        .prop_map(|(env, keep)| {
            let mut m = BTreeMap::new();
            if let Some(e) = env {
                m.insert("env".to_string(), e.to_string());
            }
            if let Some(k) = keep {
                m.insert("keep".to_string(), k.to_string());
            }
            m
        })
}

/// A group of snapshots (input order shuffled) and `now`, which lies anywhere from before the
/// oldest snapshot to years after the newest, often among the newest few.
fn group() -> impl Strategy<Value = (Vec<Snap>, DateTime<Utc>)> {
    let now_offset = prop_oneof![
        1 => Just(Duration::zero()),
        3 => (-40 * 86_400i64..40 * 86_400).prop_map(Duration::seconds),
        1 => (-1500 * 86_400i64..1500 * 86_400).prop_map(Duration::seconds),
    ];
    (
        start_time(),
        prop::collection::vec((gap(), any::<u8>(), tags()), 0..40),
        now_offset,
    )
        .prop_flat_map(|(start, steps, now_offset)| {
            let mut t = start;
            let snaps: Vec<Snap> = steps
                .into_iter()
                .enumerate()
                .map(|(i, (g, r, tags))| {
                    t += g;
                    // Unique ids whose order is unrelated to time or input order.
                    Snap {
                        time: t,
                        id: format!("{r:02x}{i:04x}"),
                        tags,
                    }
                })
                .collect();
            let newest = snaps.iter().map(|s| s.time).max().unwrap_or(start);
            (Just(snaps).prop_shuffle(), Just(newest + now_offset))
        })
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1i64..=72).prop_map(Duration::hours),
        (1i64..=400).prop_map(Duration::days),
        (1i64..=400 * 24).prop_map(Duration::hours),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    let n = || prop::option::weighted(0.4, 0u32..10);
    let d = || prop::option::weighted(0.25, duration());
    let all_tags = vec![
        ("env".to_string(), "prod".to_string()),
        ("env".to_string(), "dev".to_string()),
        ("keep".to_string(), "yes".to_string()),
        ("env".to_string(), "staging".to_string()), // no snapshot carries it
    ];
    (
        n(),
        prop::collection::vec(n(), 5),
        d(),
        prop::collection::vec(d(), 5),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::sample::subsequence(all_tags, 1..=2),
        ],
    )
        .prop_map(|(last, counts, within, withins, tags)| {
            let mut p = Policy {
                last,
                within,
                tags,
                ..Default::default()
            };
            for (period, n) in Period::ALL.into_iter().zip(counts) {
                if let Some(n) = n {
                    p.count.insert(period, n);
                }
            }
            for (period, d) in Period::ALL.into_iter().zip(withins) {
                if let Some(d) = d {
                    p.within_period.insert(period, d);
                }
            }
            p
        })
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The whole policy, and each of its rules alone, keep what the model keeps.
    #[test]
    fn apply_matches_reference_model((snaps, now) in group(), policy in policy()) {
        let mut cases = vec![("whole policy".to_string(), policy.clone())];
        cases.extend(single_rules(&policy));
        for (what, p) in &cases {
            let got = library(p, &snaps, now);
            let want = model(p, &snaps, now);
            prop_assert_eq!(
                describe(&snaps, &got),
                describe(&snaps, &want),
                "{} (now {}; left = library, right = model)",
                what,
                now
            );
        }
    }

    /// Many snapshots in few buckets, with ties everywhere, around New Year; durations and times
    /// on whole hours, so cutoffs fall exactly on snapshots (inclusive boundaries).
    #[test]
    fn dense_ties_match_reference_model(
        year in 2019i32..2027,
        hours in prop::collection::vec((0i64..96, 0i64..3, any::<u8>()), 1..40),
        n in 0u32..6,
        period in prop::sample::select(Period::ALL.to_vec()),
        within_h in 1i64..72,
    ) {
        // Four days from Dec 30 to Jan 2, whole hours or a second past: many equal times.
        let base = utc(year, 12, 30, 0);
        let empty = BTreeMap::new();
        let snaps: Vec<Snap> = hours
            .iter()
            .enumerate()
            .map(|(i, &(h, s, r))| Snap {
                time: base + Duration::hours(h) + Duration::seconds(s),
                id: format!("{r:02x}{i:04x}"),
                tags: empty.clone(),
            })
            .collect();
        let now = utc(year + 5, 1, 1, 0);
        let mut count = Policy::default();
        count.count.insert(period, n);
        let mut within_period = Policy::default();
        within_period.within_period.insert(period, Duration::hours(within_h));
        let within = Policy {
            within: Some(Duration::hours(within_h)),
            ..Default::default()
        };
        let last = Policy {
            last: Some(n),
            ..Default::default()
        };
        for p in [count, within_period, within, last] {
            prop_assert_eq!(
                describe(&snaps, &library(&p, &snaps, now)),
                describe(&snaps, &model(&p, &snaps, now)),
                "{:?}",
                p
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model's own bucket keys (so a wrong model cannot agree with a wrong library)
// ---------------------------------------------------------------------------------------------

#[test]
fn model_bucket_keys() {
    let t = Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).unwrap();
    assert_eq!(bucket_key(Period::Hourly, t), "2024-12-31 23");
    assert_eq!(bucket_key(Period::Daily, t), "2024-12-31");
    assert_eq!(bucket_key(Period::Monthly, t), "2024-12");
    assert_eq!(bucket_key(Period::Yearly, t), "2024");
    // Tuesday 2024-12-31 is in the first ISO week of 2025 (which starts Monday 2024-12-30).
    assert_eq!(bucket_key(Period::Weekly, t), "2025-W01");
    assert_eq!(
        bucket_key(Period::Weekly, utc(2024, 12, 29, 12)),
        "2024-W52"
    );
    // Friday 2021-01-01 belongs to 2020's week 53, which runs to Sunday 2021-01-03.
    assert_eq!(bucket_key(Period::Weekly, utc(2021, 1, 1, 0)), "2020-W53");
    assert_eq!(bucket_key(Period::Weekly, utc(2021, 1, 3, 23)), "2020-W53");
    assert_eq!(bucket_key(Period::Weekly, utc(2021, 1, 4, 0)), "2021-W01");
}

// ---------------------------------------------------------------------------------------------
// Examples with hand-computed expectations
// ---------------------------------------------------------------------------------------------

fn snaps_at(times: &[DateTime<Utc>]) -> Vec<Snap> {
    times
        .iter()
        .enumerate()
        .map(|(i, &time)| Snap {
            time,
            id: format!("{i:02}"),
            tags: BTreeMap::new(),
        })
        .collect()
}

/// The kept snapshots as `YYYY-MM-DD` (or `YYYY-MM-DD HH:MM id` with `detail`), oldest first.
fn kept_dates(policy: &Policy, snaps: &[Snap], now: DateTime<Utc>, detail: bool) -> Vec<String> {
    let kept = library(policy, snaps, now);
    assert_eq!(kept, model(policy, snaps, now), "model disagrees");
    let mut v: Vec<&Snap> = kept.iter().map(|&i| &snaps[i]).collect();
    v.sort_by_key(|s| age_key(s));
    v.iter()
        .map(|s| {
            if detail {
                format!("{} {}", s.time.format("%Y-%m-%d %H:%M"), s.id)
            } else {
                s.time.format("%Y-%m-%d").to_string()
            }
        })
        .collect()
}

fn policy_counts(counts: &[(Period, u32)]) -> Policy {
    let mut p = Policy::default();
    p.count.extend(counts.iter().copied());
    p
}

/// The acceptance scenario. Sixty snapshots, one every 2.5 days rounded down to whole
/// days (day offsets 0, 2, 5, 7, 10, 12, …, 145, 147 from 2024-01-03: every offset ≡ 0 or 2
/// mod 5), all at 02:00 UTC, so the last is 2024-05-29 (2024 is a leap year). Policy:
/// keep-daily 7, keep-weekly 4, keep-monthly 6.
///
/// - daily 7: every day holds one snapshot, so the 7 newest: May 29, 27, 24, 22, 19, 17, 14.
/// - weekly 4: 2024-01-01 is a Monday, so ISO weeks start on Jan 1 + 7k. The 4 newest weeks
///   with snapshots and their newest snapshot: W22 (May 27–Jun 2: 27, 29) → May 29;
///   W21 (May 20–26: 22, 24) → May 24; W20 (May 13–19: 14, 17, 19) → May 19;
///   W19 (May 6–12: 7, 9, 12) → May 12.
/// - monthly 6: only five months have snapshots, so all five, each by its newest:
///   May → May 29; April (Apr 30 = offset 118 ≡ 3, 117 ≡ 2) → Apr 29;
///   March (Mar 31 = 88 ≡ 3, 87 ≡ 2) → Mar 30; February (Feb 29 = 57 ≡ 2) → Feb 29;
///   January (Jan 31 = 28 ≡ 3, 27 ≡ 2) → Jan 30.
///
/// Union: 12 kept (May 29 kept by all three rules and as the newest), 48 removed.
#[test]
fn acceptance_sixty_snapshots_over_five_months() {
    let times: Vec<DateTime<Utc>> = (0..60i64)
        .map(|i| utc(2024, 1, 3, 2) + Duration::days(i * 5 / 2))
        .collect();
    assert_eq!(times[59], utc(2024, 5, 29, 2));
    let snaps = snaps_at(&times);
    let p = policy_counts(&[
        (Period::Daily, 7),
        (Period::Weekly, 4),
        (Period::Monthly, 6),
    ]);
    let now = utc(2024, 5, 30, 0);
    let want = [
        "2024-01-30",
        "2024-02-29",
        "2024-03-30",
        "2024-04-29",
        "2024-05-12",
        "2024-05-14",
        "2024-05-17",
        "2024-05-19",
        "2024-05-22",
        "2024-05-24",
        "2024-05-27",
        "2024-05-29",
    ];
    assert_eq!(kept_dates(&p, &snaps, now, false), want);
    // The same with the input in another order.
    let mut rev = snaps.clone();
    rev.reverse();
    assert_eq!(kept_dates(&p, &rev, now, false), want);
}

/// Equal times are ordered by id: the greatest id is the "newest".
#[test]
fn ties_are_broken_by_id() {
    let t = utc(2024, 3, 1, 12);
    let snaps: Vec<Snap> = [("b", t), ("a", t), ("c", t), ("z", t - Duration::hours(1))]
        .into_iter()
        .map(|(id, time)| Snap {
            time,
            id: id.into(),
            tags: BTreeMap::new(),
        })
        .collect();
    let now = utc(2025, 1, 1, 0);
    let last2 = Policy {
        last: Some(2),
        ..Default::default()
    };
    // "z" is the greatest id but an hour older: time comes first.
    assert_eq!(
        kept_dates(&last2, &snaps, now, true),
        ["2024-03-01 12:00 b", "2024-03-01 12:00 c"]
    );
    // keep-daily 1 with keep-last 0: only the day's representative, (12:00, "c"), which is also
    // the group's newest.
    let mut daily = policy_counts(&[(Period::Daily, 1)]);
    daily.last = Some(0);
    assert_eq!(
        kept_dates(&daily, &snaps, now, true),
        ["2024-03-01 12:00 c"]
    );
}

/// ISO weeks across New Year: 2020-12-31 (Thu), 2021-01-01 (Fri) and 2021-01-03 (Sun) are all
/// in 2020-W53; 2020-12-27 (Sun) is in 2020-W52; 2021-01-04 (Mon) starts 2021-W01.
#[test]
fn weeks_and_years_across_new_year() {
    let snaps = snaps_at(&[
        utc(2020, 12, 27, 10),
        utc(2020, 12, 31, 10),
        utc(2021, 1, 1, 10),
        utc(2021, 1, 3, 10),
        utc(2021, 1, 4, 10),
    ]);
    let now = utc(2022, 1, 1, 0);
    // Weeks: W01 → Jan 4; W53 → Jan 3 (not Dec 31, though that is in another calendar year).
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Weekly, 2)]), &snaps, now, false),
        ["2021-01-03", "2021-01-04"]
    );
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Weekly, 3)]), &snaps, now, false),
        ["2020-12-27", "2021-01-03", "2021-01-04"]
    );
    // Years are calendar years: 2021 → Jan 4; 2020 → Dec 31.
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Yearly, 5)]), &snaps, now, false),
        ["2020-12-31", "2021-01-04"]
    );
    // Months likewise: January 2021 → Jan 4; December 2020 → Dec 31.
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Monthly, 2)]), &snaps, now, false),
        ["2020-12-31", "2021-01-04"]
    );
}

/// `keep-daily N` counts days that have a snapshot, not calendar days: a long gap does not
/// use up the count.
#[test]
fn empty_buckets_do_not_count() {
    let snaps = snaps_at(&[
        utc(2023, 1, 1, 3),
        utc(2023, 1, 1, 9),
        utc(2023, 1, 2, 3),
        utc(2023, 6, 1, 3),
    ]);
    let now = utc(2023, 6, 2, 0);
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Daily, 3)]), &snaps, now, true),
        [
            "2023-01-01 09:00 01",
            "2023-01-02 03:00 02",
            "2023-06-01 03:00 03"
        ]
    );
    // Hourly: 4 hours with snapshots, all distinct, so keep-hourly 4 keeps everything.
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Hourly, 4)]), &snaps, now, false).len(),
        4
    );
}

/// keep-within is measured from the group's newest snapshot (inclusive), not from now, so a
/// series whose backups stopped years ago does not expire entirely.
#[test]
fn keep_within_is_relative_to_newest_and_inclusive() {
    let snaps = snaps_at(&[
        utc(2020, 1, 1, 0),
        utc(2020, 1, 3, 0), // exactly 7 days before the newest: kept
        utc(2020, 1, 3, 1),
        utc(2020, 1, 10, 0), // newest
    ]);
    let now = utc(2026, 1, 1, 0);
    let p = Policy {
        within: Some(Duration::days(7)),
        ..Default::default()
    };
    assert_eq!(
        kept_dates(&p, &snaps, now, true),
        [
            "2020-01-03 00:00 01",
            "2020-01-03 01:00 02",
            "2020-01-10 00:00 03"
        ]
    );
}

/// keep-within-daily D keeps the newest snapshot of every day whose representative is no
/// older than D before the group's newest.
#[test]
fn keep_within_daily() {
    let snaps = snaps_at(&[
        utc(2022, 3, 1, 1),
        utc(2022, 3, 1, 23),
        utc(2022, 3, 2, 8),
        utc(2022, 3, 2, 20),
        utc(2022, 3, 4, 5),
        utc(2022, 3, 4, 6),
    ]);
    let now = utc(2022, 4, 1, 0);
    let mut p = Policy::default();
    // Cutoff 2022-03-01 22:00: Mar 1's representative (23:00) is within, so it is kept.
    p.within_period.insert(Period::Daily, Duration::hours(56));
    assert_eq!(
        kept_dates(&p, &snaps, now, true),
        [
            "2022-03-01 23:00 01",
            "2022-03-02 20:00 03",
            "2022-03-04 06:00 05"
        ]
    );
    // Cutoff 2022-03-02 06:00: Mar 1 is out entirely.
    p.within_period.insert(Period::Daily, Duration::hours(48));
    assert_eq!(
        kept_dates(&p, &snaps, now, true),
        ["2022-03-02 20:00 03", "2022-03-04 06:00 05"]
    );
}

/// Snapshots after `now` are always kept, and they still count in the buckets.
#[test]
fn future_snapshots_are_kept_and_count() {
    let snaps = snaps_at(&[
        utc(2024, 6, 1, 0),
        utc(2024, 6, 2, 0),
        utc(2024, 6, 3, 0), // now is between these two
        utc(2024, 6, 4, 0),
        utc(2024, 6, 5, 0),
    ]);
    let now = utc(2024, 6, 3, 12);
    // keep-daily 2 is used up by the two future days; nothing before now survives.
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Daily, 2)]), &snaps, now, false),
        ["2024-06-04", "2024-06-05"]
    );
    // keep-daily 3 reaches the newest past day.
    assert_eq!(
        kept_dates(&policy_counts(&[(Period::Daily, 3)]), &snaps, now, false),
        ["2024-06-03", "2024-06-04", "2024-06-05"]
    );
    // keep-last 0: the future ones (and the newest among them) only.
    let p = Policy {
        last: Some(0),
        ..Default::default()
    };
    assert_eq!(
        kept_dates(&p, &snaps, now, false),
        ["2024-06-04", "2024-06-05"]
    );
}

/// keep-tag keeps every snapshot carrying the tag; a tag no snapshot has still keeps the newest.
#[test]
fn keep_tag_and_newest_always_kept() {
    let mut snaps = snaps_at(&[
        utc(2024, 1, 1, 0),
        utc(2024, 2, 1, 0),
        utc(2024, 3, 1, 0),
        utc(2024, 4, 1, 0),
    ]);
    snaps[1].tags.insert("keep".into(), "yes".into());
    snaps[2].tags.insert("keep".into(), "no".into());
    let now = utc(2025, 1, 1, 0);
    let tagged = Policy {
        tags: vec![("keep".into(), "yes".into())],
        ..Default::default()
    };
    assert_eq!(
        kept_dates(&tagged, &snaps, now, false),
        ["2024-02-01", "2024-04-01"]
    );
    let absent = Policy {
        tags: vec![("env".into(), "nowhere".into())],
        ..Default::default()
    };
    assert!(!absent.is_empty());
    assert_eq!(kept_dates(&absent, &snaps, now, false), ["2024-04-01"]);
    // A single snapshot is always kept, whatever the policy.
    assert_eq!(kept_dates(&absent, &snaps[..1], now, false), ["2024-01-01"]);
}

/// An empty policy is recognized as such (and `forget` refuses it); any one option makes it
/// non-empty.
#[test]
fn empty_policy_is_refused() {
    assert!(Policy::default().is_empty());
    let mut non_empty = single_rules(&Policy {
        last: Some(1),
        within: Some(Duration::days(1)),
        tags: vec![("a".into(), "b".into())],
        count: Period::ALL.iter().map(|&p| (p, 1)).collect(),
        within_period: Period::ALL
            .iter()
            .map(|&p| (p, Duration::days(1)))
            .collect(),
    });
    assert_eq!(non_empty.len(), 13);
    for (what, p) in non_empty.drain(..) {
        assert!(!p.is_empty(), "{what}");
    }

    // Through the library's forget: refused before anything is read or deleted.
    let backend = Arc::new(MemoryBackend::default());
    let mut repo = Repo::init(
        backend,
        b"pw",
        &InitOptions {
            kdf: KdfParams::FLOOR,
            ..Default::default()
        },
    )
    .unwrap();
    let err = forget::plan(
        &mut repo,
        &Filter::default(),
        &[GroupBy::Name],
        &Policy::default(),
        Utc::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("empty policy")),
        "{err}"
    );
}
