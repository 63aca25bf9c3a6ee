//! End to end with a real PostgreSQL: a private cluster in a temp dir on a free port,
//! `pg_dump` → backup → restore → `psql` into a fresh database with the same rows.
//! Needs Debian's `postgresql` package (scripts/install-test-deps.sh installs it).

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

pub struct Pg {
    _dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub bin: PathBuf,
    pub port: u16,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/install-test-deps.sh")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

/// Run a server binary as the `postgres` user when we are root (initdb refuses root).
pub fn as_pg(prog: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

impl Pg {
    pub fn start() -> Pg {
        Pg::start_with(&[])
    }

    /// A new cluster started with extra `-c name=value` settings.
    pub fn start_with(settings: &[&str]) -> Pg {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            // The postgres user must reach the directory.
            Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .unwrap();
            std::fs::create_dir(&data).unwrap();
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
        }
        let out = as_pg(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        Pg::run_on(Some(dir), data, settings)
    }

    /// Start a server on an existing data directory (given to the postgres user when we are
    /// root), with extra `-c` settings. Waits until it accepts connections.
    pub fn run_on(dir: Option<tempfile::TempDir>, data: PathBuf, settings: &[&str]) -> Pg {
        let bin = pg_bin();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let port = free_port();
        let extra: String = settings.iter().map(|s| format!(" -c {s}")).collect();
        let out = as_pg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args([
                "-o",
                &format!("-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off{extra}"),
                "-l",
            ])
            .arg(data.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", stderr(&out));
        // A server kept in a `static` (one per test file) is never dropped: a watchdog stops
        // it (immediate shutdown) once this test process has exited.
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill -QUIT $(head -1 '{}/postmaster.pid') 2>/dev/null",
            std::process::id(),
            data.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        Pg {
            _dir: dir,
            data,
            bin,
            port,
        }
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bin.join(prog));
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_pg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM";

#[test]
fn pg_dump_backup_restore_into_fresh_database() {
    pg_scenario(&Env::new());
}

/// The foundation's pg_dump scenario, against whatever repository `env` points at (the S3
/// tests run it unchanged against Garage).
pub fn pg_scenario(env: &Env) {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE customers (id bigserial primary key, name text, email text, note text);
         INSERT INTO customers (name, email, note)
           SELECT 'Customer ' || g, md5(g::text) || '@example.com', repeat(md5((g*7)::text), g % 4)
           FROM generate_series(1, 20000) g;
         CREATE TABLE orders (id bigserial primary key, customer_id bigint, total numeric(12,2), payload jsonb);
         INSERT INTO orders (customer_id, total, payload)
           SELECT 1 + (g * 7919) % 20000, (g % 100000) / 100.0, jsonb_build_object('sku', md5(g::text), 'qty', g % 9)
           FROM generate_series(1, 60000) g;",
    );
    let want_c = pg.psql("shop", &format!("{FINGERPRINT} customers t"));
    let want_o = pg.psql("shop", &format!("{FINGERPRINT} orders t"));

    let pg_dump = pg.bin.join("pg_dump");
    let port = pg.port.to_string();
    // Command mode, as cron would run it.
    let mut c = env.cmd();
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", &port)
        .env("PGUSER", "postgres");
    let out = run_with(
        c,
        &[
            "backup",
            "--name",
            "shop",
            "--tag",
            "env=prod",
            "--",
            pg_dump.to_str().unwrap(),
            "shop",
        ],
        b"",
    );
    assert!(out.status.success(), "backup: {}", stderr(&out));

    // Next day: more rows, piped on stdin.
    // (Small rows inserted into `orders` would land in the free space of hundreds of heap pages
    // and touch chunks all over the table; a new table and a few updates is a quieter day.)
    pg.psql(
        "shop",
        "CREATE TABLE audit (id int, what text);
         INSERT INTO audit SELECT g, 'login ' || g FROM generate_series(1, 500) g;
         UPDATE orders SET total = total + 1 WHERE id IN (10, 20000, 40000);",
    );
    let day2 = pg.cmd("pg_dump").arg("shop").output().unwrap();
    assert!(day2.status.success());
    env.backup(&day2.stdout, &["--name", "shop", "--tag", "env=prod"]);
    let snaps = env.snapshots_json(&["--name", "shop"]);
    let (n1, n2) = (
        snaps[0]["streams"][0]["new_bytes"].as_u64().unwrap(),
        snaps[1]["streams"][0]["new_bytes"].as_u64().unwrap(),
    );
    assert!(n2 * 5 < n1, "day 2 stored {n2} bytes vs day 1 {n1}");

    let restored = env.restore(&["latest", "--tag", "env=prod"]);
    assert_eq!(restored, day2.stdout, "restore must be byte-exact");

    // Load the restored dump into a fresh database: same rows.
    pg.psql("postgres", "CREATE DATABASE shop_restored");
    let mut psql = pg
        .cmd("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", "shop_restored"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(psql.stdin.as_mut().unwrap(), &restored).unwrap();
    drop(psql.stdin.take());
    assert!(psql.wait().unwrap().success());
    assert_eq!(
        pg.psql("shop_restored", &format!("{FINGERPRINT} customers t")),
        want_c
    );
    let now_o = pg.psql("shop", &format!("{FINGERPRINT} orders t"));
    assert_ne!(now_o, want_o);
    assert_eq!(
        pg.psql("shop_restored", &format!("{FINGERPRINT} orders t")),
        now_o
    );

    // The first day restores too, from its own snapshot.
    let first = snaps[0]["id"].as_str().unwrap();
    let day1 = env.restore(&[first]);
    assert!(String::from_utf8_lossy(&day1).contains("PostgreSQL database dump complete"));
}

#[test]
fn failing_pg_dump_in_command_mode_leaves_no_snapshot() {
    let pg = Pg::start();
    let env = Env::new();
    let pg_dump = pg.bin.join("pg_dump");
    let mut c = env.cmd();
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres");
    let out = run_with(
        c,
        &[
            "backup",
            "--name",
            "shop",
            "--",
            pg_dump.to_str().unwrap(),
            "no_such_database",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pg_dump exited with status 1"),
        "{}",
        stderr(&out)
    );
    assert!(env.files_under("snapshots").is_empty());
    assert!(env.files_under("index").is_empty());
}

/// Bug: a cut-off `pg_dump -Fc` archive was stored with exit 0 and no warning, even one byte
/// short. Now, on this test's cluster: the complete archive round-trips through `pg_restore`
/// and is recorded `complete: true` (command mode and pipe); the same archive one byte short
/// through a pipe (`head -c`) is refused with exit 6 and leaves no snapshot, unless
/// `--allow-truncated`.
#[test]
fn cut_off_pg_dump_custom_archive_stored_with_exit_0() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE inv");
    pg.psql(
        "inv",
        "CREATE TABLE items (id int primary key, v text);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 30000) g;",
    );
    let want = pg.psql("inv", &format!("{FINGERPRINT} items t"));
    let env = Env::new();
    let mut c = env.cmd();
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres");
    let pg_dump = pg.bin.join("pg_dump");
    let out = run_with(
        c,
        &[
            "backup",
            "--name",
            "inv",
            "--",
            pg_dump.to_str().unwrap(),
            "-Fc",
            "-Z0",
            "inv",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = env.dir.path().join("inv.dump");
    let out = env.run(
        &[
            "restore",
            "latest",
            "--name",
            "inv",
            "-o",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    pg.psql("postgres", "CREATE DATABASE inv2");
    let out = pg
        .cmd("pg_restore")
        .args(["-d", "inv2"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", stderr(&out));
    assert_eq!(pg.psql("inv2", &format!("{FINGERPRINT} items t")), want);
    let snaps = env.snapshots_json(&["--name", "inv"]);
    let dump = &snaps[0]["streams"][0]["dump"];
    assert_eq!(
        (&dump["kind"], &dump["complete"]),
        (&"pg_dump_custom".into(), &true.into()),
        "{dump}"
    );

    // Through a pipe, whole and one byte short.
    let pipe = |cut: &str, name: &str, extra: &str| {
        let base = env.cmd();
        let mut c = Command::new("sh");
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .env("PGUSER", "postgres")
            .env("PG_DUMP", &pg_dump)
            .env("DUMPVAULT", bin())
            .arg("-c")
            .arg(format!(
                "n=$(\"$PG_DUMP\" -Fc -Z0 inv | wc -c) && \"$PG_DUMP\" -Fc -Z0 inv | head -c {cut} | \"$DUMPVAULT\" backup --name {name} {extra}"
            ))
            .output()
            .unwrap()
    };
    let out = pipe("$((n - 1))", "inv-cut", "");
    assert_eq!(out.status.code(), Some(EXIT_PRODUCER), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("looks like a truncated pg_dump_custom dump") && err.contains("data block"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(env.snapshots_json(&["--name", "inv-cut"]).len(), 0);
    assert_eq!(env.snapshots_json(&[]).len(), 1, "nothing committed");

    let out = pipe("$((n - 1))", "inv-cut", "--allow-truncated");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    let snaps = env.snapshots_json(&["--name", "inv-cut"]);
    assert_eq!(snaps[0]["streams"][0]["dump"]["complete"], false);

    let out = pipe("\"$n\"", "inv-pipe", "");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    let snaps = env.snapshots_json(&["--name", "inv-pipe"]);
    assert_eq!(snaps[0]["streams"][0]["dump"]["complete"], true);
    assert_eq!(snaps[0]["streams"][0]["size"], snaps_size(&env, "inv"));
}

/// The size of the stream in the named series' latest snapshot.
fn snaps_size(env: &Env, name: &str) -> serde_json::Value {
    env.snapshots_json(&["--name", name])[0]["streams"][0]["size"].clone()
}
