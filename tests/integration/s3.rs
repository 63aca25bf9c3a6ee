//! The S3 backend against a real S3 server: Garage, started here on 127.0.0.1 in a temp dir
//! (single node, `replication_factor = 1`, `db_engine = "sqlite"`). Needs the `garage` binary
//! (`cargo install garage --locked`; `.ci/run` and scripts/install-test-deps.sh install it).
//! Also the backend conformance suite, run against local, memory and S3 alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dumpvault::backend::{self, Backend};
use dumpvault::error::{Error, ObjectKind};

use crate::common::*;

fn garage_bin() -> PathBuf {
    if have("garage") {
        return PathBuf::from("garage");
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".cargo/bin/garage");
    assert!(
        p.exists(),
        "garage is not installed: run scripts/install-test-deps.sh (cargo install garage --locked)"
    );
    p
}

pub struct Garage {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
    pub endpoint: String,
    key_id: String,
    secret: String,
    pub bucket: String,
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc) = (free_port(), free_port());
        let conf = dir.path().join("garage.toml");
        let secret: String = noise(32, s3 as u64)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            _dir: dir,
            conf,
            child: None,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
            bucket: "dumpvault-test".into(),
        };
        g.spawn_server();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let key = g.cli(&["key", "create", "test-key"]);
        let field = |name: &str| {
            key.lines()
                .find(|l| l.contains(name))
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or_else(|| panic!("no {name} in garage output: {key}"))
                .to_string()
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        g.cli(&["bucket", "create", &g.bucket.clone()]);
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &g.bucket.clone(),
            "--key",
            "test-key",
        ]);
        g
    }

    fn spawn_server(&mut self) {
        let log = std::fs::File::create(self.conf.with_file_name("server.log")).unwrap();
        // A small supervisor shell: it stops garage when the test process is gone (so no server
        // outlives the run, whichever test thread started it) or when it is sent SIGTERM.
        let script = format!(
            "'{g}' -c '{c}' server & G=$!; trap 'kill -9 $G; exit 0' TERM; \
             while kill -0 {me} 2>/dev/null && kill -0 $G 2>/dev/null; do sleep 0.3; done; \
             kill -9 $G 2>/dev/null; wait",
            g = garage_bin().display(),
            c = self.conf.display(),
            me = std::process::id()
        );
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c.stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        self.child = Some(c.spawn().expect("start garage"));
        let t0 = Instant::now();
        loop {
            let ok = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.conf)
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok
                && std::net::TcpStream::connect(self.endpoint.trim_start_matches("http://")).is_ok()
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "garage did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "garage {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop the server (as a crash would), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to our own child (the supervisor, which then kills garage).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
            let addr = self.endpoint.trim_start_matches("http://").to_string();
            let t0 = Instant::now();
            while std::net::TcpStream::connect(&addr).is_ok()
                && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn_server();
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("DUMPVAULT_S3_ENDPOINT".into(), self.endpoint.clone()),
            // No instance-metadata lookups on a machine without a network.
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// A fresh prefix in the bucket, so tests sharing one server never meet.
    pub fn location(&self) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("s3://{}/t{}-{n}", self.bucket, std::process::id())
    }

    /// Open the S3 backend in-process (the environment is process-wide, hence the lock).
    pub fn backend(&self, location: &str) -> Arc<dyn Backend> {
        static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = ENV.lock().unwrap();
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
        Arc::from(backend::open(location).expect("open S3 backend"))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One server for the tests that share it.
fn shared() -> &'static Garage {
    static G: OnceLock<Garage> = OnceLock::new();
    G.get_or_init(Garage::start)
}

// ---------------------------------------------------------------- conformance suite

fn id(n: u32) -> String {
    blake3::hash(&n.to_le_bytes()).to_hex().to_string()
}

/// What every backend must do. `b` must be empty.
pub fn conformance(b: Arc<dyn Backend>) {
    // Round trip, for every kind.
    assert!(!b.exists().unwrap());
    b.put(ObjectKind::Config, "config", b"cfg").unwrap();
    assert!(b.exists().unwrap());
    assert_eq!(b.get(ObjectKind::Config, "config").unwrap(), b"cfg");
    for (i, kind) in [
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
    ]
    .into_iter()
    .enumerate()
    {
        let data = noise(1000 + i * 10, i as u64);
        b.put(kind, &id(i as u32), &data).unwrap();
        assert_eq!(b.get(kind, &id(i as u32)).unwrap(), data, "{kind}");
        assert_eq!(b.size(kind, &id(i as u32)).unwrap(), data.len() as u64);
    }
    // Listing: exactly what was put, with sizes, per kind.
    for n in 10..13 {
        b.put(ObjectKind::Pack, &id(n), &vec![n as u8; n as usize * 100])
            .unwrap();
    }
    let mut want: Vec<(String, u64)> = (10..13).map(|n| (id(n), n as u64 * 100)).collect();
    want.push((id(1), 1010));
    want.sort();
    assert_eq!(b.list(ObjectKind::Pack).unwrap(), want);
    assert_eq!(b.list(ObjectKind::Index).unwrap(), vec![(id(2), 1020)]);
    // Ranged reads.
    let data = noise(100_000, 7);
    b.put(ObjectKind::Pack, &id(20), &data).unwrap();
    assert_eq!(
        b.get_range(ObjectKind::Pack, &id(20), 1234, 5000).unwrap(),
        &data[1234..6234]
    );
    assert_eq!(
        b.get_range(ObjectKind::Pack, &id(20), 99_990, 10).unwrap(),
        &data[99_990..]
    );
    assert!(
        b.get_range(ObjectKind::Pack, &id(20), 99_990, 11).is_err(),
        "past the end"
    );
    // Missing objects.
    for r in [
        b.get(ObjectKind::Pack, &id(99)).map(|_| ()),
        b.size(ObjectKind::Pack, &id(99)).map(|_| ()),
        b.get_range(ObjectKind::Pack, &id(99), 0, 1).map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::ObjectNotFound { .. })), "{r:?}");
    }
    // Never overwrite: content-named objects keep their first bytes.
    b.put(ObjectKind::Snapshot, &id(30), b"first").unwrap();
    b.put(ObjectKind::Snapshot, &id(30), b"second").unwrap();
    assert_eq!(b.get(ObjectKind::Snapshot, &id(30)).unwrap(), b"first");
    // Delete.
    b.delete(ObjectKind::Snapshot, &id(30)).unwrap();
    assert!(matches!(
        b.get(ObjectKind::Snapshot, &id(30)),
        Err(Error::ObjectNotFound { .. })
    ));
    // Concurrent writers, overlapping names with identical content.
    std::thread::scope(|s| {
        for t in 0..6u32 {
            let b = &b;
            s.spawn(move || {
                for n in 0..15u32 {
                    let k = 100 + (t * 10 + n) % 40;
                    b.put(ObjectKind::Index, &id(k), &k.to_le_bytes()).unwrap();
                }
            });
        }
    });
    let listed = b.list(ObjectKind::Index).unwrap();
    assert_eq!(listed.len(), 41, "40 concurrent names + the earlier one");
    for k in 100..140u32 {
        assert_eq!(b.get(ObjectKind::Index, &id(k)).unwrap(), k.to_le_bytes());
    }
}

#[test]
fn conformance_memory() {
    conformance(Arc::new(
        dumpvault::backend::memory::MemoryBackend::default(),
    ));
}

#[test]
fn conformance_local_and_interrupted_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(dumpvault::backend::local::LocalBackend::new(
        dir.path().join("r"),
    ));
    b.create().unwrap();
    conformance(Arc::clone(&b));
    // A write interrupted before its link leaves only a hidden temp file: never listed, never
    // readable under the final name.
    let name = id(500);
    let tmp = dir
        .path()
        .join("r/index")
        .join(format!(".tmp-{name}-0011223344556677"));
    std::fs::write(&tmp, b"half").unwrap();
    assert!(!b
        .list(ObjectKind::Index)
        .unwrap()
        .iter()
        .any(|(n, _)| *n == name));
    assert!(matches!(
        b.get(ObjectKind::Index, &name),
        Err(Error::ObjectNotFound { .. })
    ));
}

#[test]
fn conformance_s3() {
    let g = shared();
    conformance(g.backend(&g.location()));
}

#[test]
fn s3_unfinished_multipart_upload_leaves_no_object() {
    // An upload interrupted between its parts and its completion (a killed process, a lost
    // connection): the parts exist on the server, but nothing is under the final name.
    let g = shared();
    let loc = g.location();
    let b = g.backend(&loc);
    let prefix = loc
        .trim_start_matches(&format!("s3://{}/", g.bucket))
        .to_string();
    let name = id(7);
    let key = format!("{prefix}/data/{}/{name}", &name[..2]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(&g.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &g.key_id, &g.secret, None, None, "test",
            ))
            .build();
        let c = aws_sdk_s3::Client::from_conf(conf);
        let up = c
            .create_multipart_upload()
            .bucket(&g.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        c.upload_part()
            .bucket(&g.bucket)
            .key(&key)
            .upload_id(up.upload_id().unwrap())
            .part_number(1)
            .body(noise(6 * 1024 * 1024, 1).into())
            .send()
            .await
            .unwrap();
        // ... and the process dies here: no CompleteMultipartUpload.
    });
    assert!(b.list(ObjectKind::Pack).unwrap().is_empty());
    assert!(matches!(
        b.get(ObjectKind::Pack, &name),
        Err(Error::ObjectNotFound { .. })
    ));
}

#[test]
fn s3_pg_dump_scenario_and_object_names_are_blake3() {
    let g = shared();
    let env = Env::at(g.location(), g.env());
    crate::e2e_pg::pg_scenario(&env);
    // Every object in the bucket is named by the BLAKE3 of its bytes (config excepted).
    let b = g.backend(&env.location);
    let mut n = 0;
    for kind in [
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        for (name, _) in b.list(kind).unwrap() {
            let bytes = b.get(kind, &name).unwrap();
            assert_eq!(blake3::hash(&bytes).to_hex().as_str(), name, "{kind}");
            n += 1;
        }
    }
    assert!(n >= 6);
    // Request counts appear in backup --json.
    let out = env.run(&["backup", "--json", "--name", "x"], &sql_like(10_000, 1));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["snapshot"]["requests"]["put"].as_u64().unwrap() >= 2,
        "{v}"
    );
    let out = env.run(&["fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn s3_redis_scenario() {
    let g = shared();
    crate::e2e_redis::redis_scenario(&Env::at(g.location(), g.env()));
}

#[test]
fn s3_round_trip_forget_prune_fsck() {
    let g = shared();
    let env = Env::at(g.location(), g.env());
    for i in 0..4 {
        env.backup(
            &sql_like(30_000 + i * 1000, 5),
            &[
                "--name",
                "s",
                "--time",
                &format!("2024-05-0{} 01:00:00", i + 1),
            ],
        );
    }
    let out = env.run(
        &[
            "forget",
            "--keep-last",
            "2",
            "--prune",
            "--max-unused",
            "0%",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.restore(&["latest"]), sql_like(33_000, 5));
    let out = env.run(&["fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut c = env.cmd();
    c.env_remove("DUMPVAULT_PASSWORD");
    let out = run_with(c, &["fsck", "--no-key"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn s3_server_killed_mid_backup_leaves_no_snapshot_and_next_backup_succeeds() {
    let mut g = Garage::start();
    let mut extra = g.env();
    extra.push(("DUMPVAULT_S3_MAX_ATTEMPTS".into(), "2".into()));
    let env = Env::at(g.location(), extra);
    env.backup(&sql_like(5_000, 1), &["--name", "s"]);
    // A slow producer: the server dies while the backup is streaming.
    let child = env
        .cmd()
        .args([
            "backup",
            "--name",
            "s",
            "--",
            "sh",
            "-c",
            "head -c 40000000 /dev/urandom; sleep 3; head -c 1000 /dev/urandom",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    g.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the backup must fail when S3 is gone"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("S3"),
        "{}",
        stderr(&out)
    );
    g.restart();
    assert_eq!(
        env.snapshots_json(&[]).len(),
        1,
        "no snapshot from the failed backup"
    );
    let data = sql_like(20_000, 2);
    env.backup(&data, &["--name", "s", "--lock-wait", "60s"]);
    assert_eq!(env.restore(&["latest"]), data);
    let out = env.run(&["fsck", "--read-data", "--json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn s3_wrong_credentials_fail_fast_with_a_clear_message() {
    let g = shared();
    let loc = g.location();
    let mut env_vars = g.env();
    env_vars.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    env_vars.push(("AWS_SECRET_ACCESS_KEY".into(), "0".repeat(64)));
    let mut e = Env::uninit();
    e.location = loc;
    e.extra_env = env_vars;
    let t0 = Instant::now();
    let out = e.run(
        &["init", "--kdf-memory", "19456", "--kdf-iterations", "2"],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "403 must not be retried for long"
    );
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
}
