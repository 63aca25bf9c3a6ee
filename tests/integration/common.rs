//! Helpers shared by the integration tests: a scratch repository, a command builder with the
//! environment set, and deterministic test data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

// Exit codes, as documented in the README's "Exit codes" table.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NO_REPO: i32 = 3;
pub const EXIT_WRONG_PASSWORD: i32 = 4;
pub const EXIT_LOCK_HELD: i32 = 5;
pub const EXIT_PRODUCER: i32 = 6;
pub const EXIT_CORRUPT: i32 = 7;
/// fsck's name for exit 7: it found damage.
pub const EXIT_DAMAGED: i32 = EXIT_CORRUPT;
pub const EXIT_UNSUPPORTED: i32 = 8;
pub const EXIT_NOT_FOUND: i32 = 9;
pub const EXIT_INCOMPLETE: i32 = 10;
pub const EXIT_INTERRUPTED: i32 = 130;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dumpvault")
}

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The local repository directory (unused when `location` points elsewhere).
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// What `--repo` gets: the local directory, or e.g. an `s3://` URL.
    pub location: String,
    /// Extra environment for every command (S3 endpoint and credentials).
    pub extra_env: Vec<(String, String)>,
}

impl Env {
    /// A fresh, initialized repository (with the cheapest Argon2 parameters the floor allows).
    pub fn new() -> Env {
        let e = Env::uninit();
        e.init(&[]);
        e
    }

    /// Run `init` here with the cheapest Argon2 parameters the floor allows plus `extra`
    /// options (pack and chunk sizes); panics if it fails.
    pub fn init(&self, extra: &[&str]) {
        let mut args = vec!["init", "--kdf-memory", "19456", "--kdf-iterations", "2"];
        args.extend_from_slice(extra);
        let out = self.run(&args, b"");
        assert!(out.status.success(), "init failed: {}", stderr(&out));
    }

    pub fn uninit() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env {
            location: repo.display().to_string(),
            dir,
            repo,
            cache,
            extra_env: Vec::new(),
        }
    }

    /// A fresh, initialized repository at `location` with `extra_env` set for every command.
    pub fn at(location: String, extra_env: Vec<(String, String)>) -> Env {
        let mut e = Env::uninit();
        e.location = location;
        e.extra_env = extra_env;
        e.init(&[]);
        e
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        c.env("DUMPVAULT_REPO", &self.location)
            .env("DUMPVAULT_PASSWORD", PASSWORD)
            .env("DUMPVAULT_CACHE_DIR", &self.cache)
            .env_remove("DUMPVAULT_PASSWORD_FILE")
            .env_remove("DUMPVAULT_PASSWORD_COMMAND");
        c
    }

    /// `key add` with the cheapest Argon2 parameters; asserts it succeeded.
    pub fn add_key(&self, new_password: &str) {
        let out = self
            .cmd()
            .env("DUMPVAULT_NEW_PASSWORD", new_password)
            .args([
                "key",
                "add",
                "--kdf-memory",
                "19456",
                "--kdf-iterations",
                "2",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "key add: {}", stderr(&out));
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with(self.cmd(), args, stdin)
    }

    /// Back up `data` from stdin; returns the snapshot id printed on stdout.
    pub fn backup(&self, data: &[u8], extra: &[&str]) -> String {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        let out = self.run(&args, data);
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn restore(&self, args: &[&str]) -> Vec<u8> {
        let mut a = vec!["restore"];
        a.extend_from_slice(args);
        let out = self.run(&a, b"");
        assert!(out.status.success(), "restore failed: {}", stderr(&out));
        out.stdout
    }

    pub fn snapshots_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut a = vec!["snapshots", "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a, b"");
        assert!(out.status.success(), "snapshots failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("snapshots --json is JSON")
    }

    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        walk(&self.repo.join(sub), &mut v);
        v.sort();
        v
    }

    /// Every file in the repository with its contents, to prove a failed command changed nothing.
    pub fn fingerprint(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        walk(&self.repo, &mut v);
        v.sort();
        v.into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn run_with(mut c: Command, args: &[&str], stdin: &[u8]) -> Output {
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn dumpvault");
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait dumpvault");
    writer.join().unwrap();
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A deterministic, dump-like stream: SQL insert lines with pseudo-random values.
pub fn sql_like(lines: usize, seed: u64) -> Vec<u8> {
    // Distinct seeds must give distinct streams (`seed | 1` alone maps 4 and 5 together).
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(lines * 80);
    for i in 0..lines {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(
            format!(
                "INSERT INTO orders VALUES ({i}, 'sku-{:08x}', {}.{:02}, 'customer {}');\n",
                s as u32,
                (s >> 40) % 1000,
                (s >> 20) % 100,
                (s >> 8) % 50_000
            )
            .as_bytes(),
        );
    }
    out
}

/// Incompressible pseudo-random bytes.
/// A library-level repository in memory with a cheap KDF and 1 MiB packs, opened with `pw`
/// (prune and fsck tests that need many packs from little data).
pub fn memory_repo(pw: &[u8]) -> std::sync::Arc<dyn dumpvault::backend::Backend> {
    use dumpvault::repo::{InitOptions, Repo};
    let inner: std::sync::Arc<dyn dumpvault::backend::Backend> =
        std::sync::Arc::new(dumpvault::backend::memory::MemoryBackend::default());
    let init = InitOptions {
        kdf: dumpvault::crypto::KdfParams::FLOOR,
        pack_target: 1024 * 1024,
        ..Default::default()
    };
    drop(Repo::init(std::sync::Arc::clone(&inner), pw, &init).unwrap());
    inner
}

/// Two dumps for prune: A (SQL then noise, over several 1 MiB packs) and B, A's first half
/// plus new noise, so that once A is gone some of A's packs are wholly unused and the one
/// where B diverges is partly used.
pub fn dump_and_half(seed: u64, noise_a: usize, noise_b: usize) -> (Vec<u8>, Vec<u8>) {
    let mut a = sql_like(15_000, seed);
    a.extend_from_slice(&noise(noise_a, seed + 1));
    let mut b = a[..a.len() / 2].to_vec();
    b.extend_from_slice(&noise(noise_b, seed + 2));
    (a, b)
}

pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    // Distinct seeds must give distinct streams (`seed | 1` alone maps 4 and 5 together).
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A private redis-server on 127.0.0.1 and a free port, with no persistence of its own; killed
/// on drop. It loads `dump.rdb` from its directory at start when there is one.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A server with an empty directory of its own.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        RedisServer::spawn(&path, Some(dir))
    }

    /// A server working in `dir` (loading `dir/dump.rdb` if it exists).
    pub fn start_in(dir: &Path) -> RedisServer {
        RedisServer::spawn(dir, None)
    }

    fn spawn(dir: &Path, owned: Option<tempfile::TempDir>) -> RedisServer {
        assert!(
            have("redis-server") && have("redis-cli") && have("redis-check-rdb"),
            "redis-server / redis-cli / redis-check-rdb missing: run scripts/install-test-deps.sh"
        );
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--dbfilename", "dump.rdb"])
            // Diskless sync (Redis 7's default, stated so it stays on) makes `redis-cli --rdb -`
            // end its stream with the 40-byte end-of-transfer mark, as in production; no delay
            // keeps the tests fast (the default waits 5 s before sending).
            .args(["--repl-diskless-sync", "yes"])
            .args(["--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = RedisServer {
            child,
            port,
            _dir: owned,
        };
        let t0 = std::time::Instant::now();
        while r.cli(&["PING"]) != "PONG" {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "redis did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        r
    }

    /// Run `redis-cli` against this server; its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `args` with a wrong password (and a new password for `key add`/`passwd`): exit 4, an
/// error that says "password", and nothing on stdout.
pub fn assert_wrong_password_refused(env: &Env, args: &[&str]) {
    let out = env
        .cmd()
        .env("DUMPVAULT_PASSWORD", "wrong")
        .env("DUMPVAULT_NEW_PASSWORD", "another")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(EXIT_WRONG_PASSWORD),
        "{args:?}: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("password"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?}");
}

/// Restore temp files (`.NAME.dumpvault-XXXX`) left in `dir`: a failed `restore -o` must leave none.
pub fn restore_temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("dumpvault-")
        })
        .count()
}

/// `forget --keep-last 2` (asserted to succeed), then the kept snapshots' ids with their
/// restored bytes: the setup of tests that give prune packs to delete and to repack.
pub fn forget_all_but_last_two(env: &Env) -> Vec<(String, Vec<u8>)> {
    let out = env.run(&["forget", "--keep-last", "2"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    env.snapshots_json(&[])
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().to_string();
            let data = env.restore(&[&id]);
            (id, data)
        })
        .collect()
}
