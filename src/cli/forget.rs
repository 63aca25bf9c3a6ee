//! `forget`: apply a grandfather-father-son retention policy per group, delete the snapshots it
//! does not keep (or print the plan with `--dry-run`), and optionally prune.

use std::io::Write;

use chrono::Utc;
use clap::Args;

use super::common::write_metrics;
use super::common::{parse_percent, print_json, Ctx, FilterArgs};
use super::prune::prune_run;
use crate::error::{Error, Result};
use crate::snapshot::parse_tag;

#[derive(Args, Debug)]
pub(super) struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub(super) keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_hourly: Option<u32>,
    /// ... of each of the N newest days that have one (UTC days).
    #[arg(long, value_name = "N")]
    pub(super) keep_daily: Option<u32>,
    /// ... of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_weekly: Option<u32>,
    /// ... of each of the N newest months that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_monthly: Option<u32>,
    /// ... of each of the N newest years that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the group's newest (e.g. 7d, 36h, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within_hourly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within_daily: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within_weekly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within_monthly: Option<chrono::Duration>,
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_duration)]
    pub(super) keep_within_yearly: Option<chrono::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub(super) keep_tags: Vec<(String, String)>,
    /// Group snapshots by these fields before applying the policy: name, host, tags.
    #[arg(long, value_delimiter = ',', default_value = "name")]
    pub(super) group_by: Vec<crate::ops::forget::GroupBy>,
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub(super) prune: bool,
    /// For --prune: repack packs with more than this share of unused bytes.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub(super) max_unused: f64,
    /// For --prune: keep archived WAL for only the newest N complete base backups of each
    /// cluster (as `prune --wal-keep-base-backups`).
    #[arg(long, requires = "prune")]
    pub(super) wal_keep_base_backups: Option<usize>,
}

impl ForgetArgs {
    pub(super) fn policy(&self) -> crate::retention::Policy {
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

pub(super) fn run(ctx: &Ctx<'_>, a: &ForgetArgs) -> Result<()> {
    use crate::ops::forget;
    let mut repo = ctx.open()?;
    let plan = forget::forget(
        &mut repo,
        &a.filter.filter(),
        &a.group_by,
        &a.policy(),
        Utc::now(),
        a.dry_run,
    )?;
    if !a.dry_run {
        write_metrics(ctx, &mut repo);
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
                    wal_keep_base_backups: a.wal_keep_base_backups,
                    ..Default::default()
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
        prune_run(
            ctx,
            &mut repo,
            a.max_unused,
            a.dry_run,
            a.wal_keep_base_backups,
        )?;
    }
    Ok(())
}
