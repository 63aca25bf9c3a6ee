//! Failed backups are visible in `--metrics-file` (issue 15, item 5): they commit no snapshot,
//! so before this only the staleness alert could notice them, and
//! `dumpvault_backup_last_producer_exit_status` was always 0.

use crate::common::*;

fn metric(text: &str, family: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&format!("name=\"{name}\"")))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
}

#[test]
fn a_failed_backup_writes_its_exit_code_failure_time_and_producer_status_to_the_metrics() {
    let env = Env::new();
    let prom = env.dir.path().join("dv.prom");
    let p = prom.to_str().unwrap();
    // One night: `--metrics-file`, command mode, this producer script.
    let night = |script: &str| {
        let args = [
            "--metrics-file",
            p,
            "backup",
            "--name",
            "shop",
            "--",
            "sh",
            "-c",
            script,
        ];
        env.run(&args, b"")
    };
    let out = night("echo partial; exit 3");
    assert_eq!(out.status.code(), Some(EXIT_PRODUCER), "{}", stderr(&out));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        metric(&text, "dumpvault_backup_last_exit_code", "shop"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dumpvault_backup_last_producer_exit_status", "shop"),
        Some(3.0),
        "{text}"
    );
    let failed_at = metric(
        &text,
        "dumpvault_backup_last_failure_timestamp_seconds",
        "shop",
    )
    .expect("failure time");
    assert!(failed_at > 1.0e9, "{text}");
    assert_eq!(
        metric(
            &text,
            "dumpvault_backup_last_success_timestamp_seconds",
            "shop"
        ),
        None,
        "no snapshot yet: {text}"
    );

    // The next night succeeds: exit code and producer status go back to 0, the failure stays.
    let out = night("echo whole");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        metric(&text, "dumpvault_backup_last_exit_code", "shop"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dumpvault_backup_last_producer_exit_status", "shop"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "dumpvault_backup_last_failure_timestamp_seconds",
            "shop"
        ),
        Some(failed_at)
    );
    assert!(metric(
        &text,
        "dumpvault_backup_last_success_timestamp_seconds",
        "shop"
    )
    .is_some());
}
