//! `copy` carries the drill records (`verifications/`) to the target (issue 15 item 5b).

use std::collections::BTreeMap;

use crate::common::*;

#[test]
fn copy_carries_verification_records() {
    let src = Env::new();
    let dst = Env::new();
    let a = src.backup(&sql_like(3_000, 7), &["--name", "db"]);
    let b = src.backup(&sql_like(3_000, 8), &["--name", "db"]);
    // One passing drill of `a`, a failing one of `b`.
    let out = src.run(&["verify", &a, "--", "cat"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = src.run(&["verify", &b, "--", "false"], b"");
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));

    let copy = |what: &str| {
        let mut c = src.cmd();
        c.env("DUMPVAULT_TO_PASSWORD", PASSWORD);
        let out = run_with(c, &["--json", "copy", "--to", &dst.location], b"");
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = copy("first copy");
    assert_eq!(r["verifications_copied"], 2, "{r}");

    // The target's listing shows the same verdicts for the copied snapshots, under the
    // target's ids (a copied snapshot has a new id there).
    let last = |env: &Env| -> BTreeMap<String, serde_json::Value> {
        env.snapshots_json(&[])
            .into_iter()
            .map(|s| {
                // Keyed by the snapshot's time: ids differ per repository.
                let v = s["last_verification"].clone();
                (s["time"].as_str().unwrap().to_string(), v)
            })
            .collect()
    };
    let (s, d) = (last(&src), last(&dst));
    assert_eq!(s.len(), 2);
    assert_eq!(s, d, "target shows the source's drill verdicts");
    assert!(d.values().any(|v| v["ok"] == true) && d.values().any(|v| v["ok"] == false));
    let tgt: Vec<String> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["target_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!tgt.contains(&a) && !tgt.contains(&b), "ids differ: {r}");
    assert_eq!(dst.files_under("verifications").len(), 2);

    // Re-running copies nothing twice; a drill run on the source since does reach the target.
    let r = copy("second copy");
    assert_eq!(r["verifications_copied"], 0, "{r}");
    assert_eq!(dst.files_under("verifications").len(), 2);
    let out = src.run(&["verify", &b, "--", "cat"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = copy("third copy");
    assert_eq!(r["verifications_copied"], 1, "{r}");
    assert_eq!(last(&src), last(&dst));
    // The records are sealed under the target's key: the target's fsck accepts them.
    let out = dst.run(&["fsck"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
}
