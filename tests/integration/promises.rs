//! Promises the README makes that a new user found broken (issue 17): exit codes for refused
//! key parameters and empty passwords, labels that cannot inject lines, `restore -o DIR`, and
//! SIGTERM reaching every process of a producer. (`repair snapshots` as a verdict: fsck.rs.)

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::common::*;

fn count(env: &Env, sub: &str) -> usize {
    env.files_under(sub).len()
}

#[test]
fn argon2_parameters_below_the_floor_are_a_usage_error_on_init_and_key_add() {
    let env = Env::uninit();
    let out = env.run(
        &["init", "--kdf-memory", "1000", "--kdf-iterations", "2"],
        b"",
    );
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
    assert!(stderr(&out).contains("floor"), "{}", stderr(&out));
    assert!(!env.repo.join("config").exists(), "nothing written");

    let env = Env::new();
    let keys = count(&env, "keys");
    for (m, t) in [("1000", "2"), ("19456", "1")] {
        let out = env
            .cmd()
            .env("DUMPVAULT_NEW_PASSWORD", "second password")
            .args(["key", "add", "--kdf-memory", m, "--kdf-iterations", t])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
        assert!(stderr(&out).contains("floor"), "{}", stderr(&out));
        assert_eq!(count(&env, "keys"), keys, "no key file added");
    }
}

#[test]
fn newline_in_a_tag_name_or_host_is_refused_before_anything_runs() {
    let env = Env::new();
    let marker = env.dir.path().join("producer-ran");
    let producer = format!("touch {}; echo data", marker.display());
    let long = "n".repeat(10_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["--name", "s", "--tag", "k=v\nfake line"],
        vec!["--name", "s", "--tag", "k\x1b[31m=v"],
        vec!["--name", "two\nlines"],
        vec!["--name", ""],
        vec!["--name", &long],
        vec!["--name", "s", "--host", "h\nx"],
        vec!["--name", "s", "--host", ""],
    ];
    for extra in &cases {
        let mut args = vec!["backup"];
        args.extend(extra.iter().copied());
        args.extend(["--", "sh", "-c", &producer]);
        let out = env.run(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(!marker.exists(), "{extra:?}: the producer must not start");
    }
    assert_eq!(count(&env, "snapshots"), 0);
    // An empty tag value and a 255-byte name are fine.
    let name = "n".repeat(255);
    env.backup(b"x\n", &["--name", &name, "--tag", "empty="]);
    assert_eq!(env.snapshots_json(&[])[0]["name"], name.as_str());
}

#[test]
fn an_empty_password_file_is_named_as_a_usage_error_not_a_wrong_password() {
    let env = Env::new();
    let pf = env.dir.path().join("empty-pw");
    std::fs::write(&pf, "").unwrap();
    for content in ["", "\n"] {
        std::fs::write(&pf, content).unwrap();
        let out = env
            .cmd()
            .env_remove("DUMPVAULT_PASSWORD")
            .args(["--password-file", pf.to_str().unwrap(), "snapshots"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(pf.to_str().unwrap()) && stderr(&out).contains("empty"),
            "{}",
            stderr(&out)
        );
    }
    let out = env
        .cmd()
        .env("DUMPVAULT_PASSWORD", "")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("DUMPVAULT_PASSWORD"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restore_to_an_existing_directory_is_refused_before_reading_anything() {
    let env = Env::new();
    env.backup(&sql_like(1_000, 3), &["--name", "s"]);
    let dir = env.dir.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let missing = env.dir.path().join("no/such/dir/file.sql");
    for target in [&dir, &missing] {
        let out = env.run(
            &[
                "--json",
                "restore",
                "latest",
                "-o",
                target.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "no restore report: nothing was read");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let leftovers = restore_temp_files(env.dir.path());
    assert_eq!(leftovers, 0, "no temp file");
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a running or sleeping process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn poll(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_reaches_the_children_of_a_shell_producer_not_only_sh() {
    let env = Env::new();
    let pidfile = env.dir.path().join("child.pid");
    // The wrapper's child (standing in for pg_dump under a script) writes, then lingers.
    let script = format!(
        "echo start; sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let mut cmd = env.cmd();
    cmd.args(["backup", "--name", "s", "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // As under cron or systemd: no controlling terminal.
    // SAFETY: setsid(2) in the child between fork and exec touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    poll("the producer's child", Duration::from_secs(30), || {
        pidfile.exists()
    });
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    // Whatever happens below, the lingering child does not outlive the test.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: kill(2) on a pid this test's producer started; at worst it is gone.
            unsafe {
                libc::kill(self.0 as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    let _reap = Reap(grandchild);
    // SAFETY: kill(2) on the dumpvault process this test spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(EXIT_INTERRUPTED));
    poll(
        "the producer's child to die",
        Duration::from_secs(10),
        || !alive(grandchild),
    );
    assert_eq!(count(&env, "snapshots"), 0);
}
