//! End to end with a real Redis, as the README shows it: `redis-cli --rdb - | dumpvault backup`
//! through a pipe, and `dumpvault backup -- redis-cli --rdb -` in command mode, from a live
//! server with diskless sync (Redis 7's default), so the stream ends with the 40-byte
//! end-of-transfer mark → restore byte-exact → accepted by `redis-check-rdb` and loaded by a
//! fresh `redis-server` with the same keys.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// Bug: `redis-cli --rdb - | dumpvault backup` (the README's Redis workflow) and its command
/// mode were always refused with exit 6, because the truncation check did not allow for the
/// end-of-transfer mark redis-cli writes after a diskless-sync RDB.
#[test]
fn redis_cli_rdb_pipe_and_command_mode_always_refused() {
    redis_scenario(&Env::new());
}

/// Run `script` with `sh -c` and the environment `env.cmd()` would give dumpvault, with
/// `$DUMPVAULT` naming the binary: a pipeline exactly as an operator would type it.
fn shell(env: &Env, script: &str) -> Output {
    let base = env.cmd();
    let mut c = Command::new("sh");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("DUMPVAULT", bin())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The restored file is an RDB `redis-check-rdb` accepts, and a fresh server loads the keys.
fn assert_loads(dir: &Path, rdb: &Path) {
    let check = Command::new("redis-check-rdb").arg(rdb).output().unwrap();
    assert!(
        check.status.success(),
        "redis-check-rdb: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    let r2 = RedisServer::start_in(dir);
    assert_eq!(r2.cli(&["DBSIZE"]), "5505");
    assert_eq!(r2.cli(&["HGET", "cart:120", "qty"]), (120 % 7).to_string());
    assert_eq!(
        r2.cli(&["GET", "user:4999"]),
        "{\"id\":4999,\"name\":\"n4999\"}"
    );
}

/// The stream's `dump` info: a complete RDB followed by the end-of-transfer mark.
fn assert_marked(env: &Env, tag: &str) -> serde_json::Value {
    let snaps = env.snapshots_json(&["--tag", tag]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = &snaps[0]["streams"][0];
    let d = &s["dump"];
    assert_eq!(d["kind"], "redis_rdb", "{s}");
    assert_eq!(d["complete"], true, "{s}");
    assert_eq!(d["eof_mark"], true, "{s}");
    s.clone()
}

/// The foundation's Redis scenario against whatever repository `env` points at.
pub fn redis_scenario(env: &Env) {
    let src_dir = env.dir.path().join("redis-src");
    std::fs::create_dir(&src_dir).unwrap();
    let r = RedisServer::start_in(&src_dir);
    // A few thousand keys of several types, via a pipeline.
    let mut script = String::new();
    for i in 0..5000 {
        script.push_str(&format!(
            "SET user:{i} \"{{\\\"id\\\":{i},\\\"name\\\":\\\"n{i}\\\"}}\"\n"
        ));
        if i % 10 == 0 {
            script.push_str(&format!("HSET cart:{i} sku {i} qty {}\n", i % 7));
            script.push_str(&format!("RPUSH events:{} e{i}\n", i % 50));
        }
    }
    let mut c = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &r.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    let dbsize = r.cli(&["DBSIZE"]);
    assert_eq!(dbsize, "5505");

    // The README's pipe, with a `tee` to keep what redis-cli wrote (dumpvault still reads a
    // pipe); the pipeline's status is dumpvault's, as in a cron job.
    let written = env.dir.path().join("redis-cli-stdout");
    let out = shell(
        env,
        &format!(
            "redis-cli -h 127.0.0.1 -p {} --rdb - | tee '{}' | \"$DUMPVAULT\" backup --name cache --tag kind=rdb",
            r.port,
            written.display()
        ),
    );
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    let rdb_bytes = std::fs::read(&written).unwrap();
    assert!(rdb_bytes.starts_with(b"REDIS"));
    // The mark: 40 hex digits after the RDB's EOF opcode and CRC-64.
    let n = rdb_bytes.len();
    assert!(rdb_bytes[n - 40..].iter().all(u8::is_ascii_hexdigit));
    assert_eq!(rdb_bytes[n - 49], 0xFF);
    let s = assert_marked(env, "kind=rdb");
    assert_eq!(s["size"], n as u64);
    assert_eq!(s["source"]["kind"], "stdin");

    // Command mode, as cron would run it.
    let out = shell(
        env,
        &format!(
            "\"$DUMPVAULT\" backup --name cache --tag kind=cmd -- redis-cli -h 127.0.0.1 -p {} --rdb -",
            r.port
        ),
    );
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    let s = assert_marked(env, "kind=cmd");
    assert_eq!(s["source"]["kind"], "command");
    drop(r);

    let restored_dir = env.dir.path().join("redis-restored");
    std::fs::create_dir(&restored_dir).unwrap();
    let restored = restored_dir.join("dump.rdb");
    let out = env.run(
        &[
            "restore",
            "latest",
            "--tag",
            "kind=rdb",
            "-o",
            restored.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&restored).unwrap(), rdb_bytes, "byte-exact");
    assert_loads(&restored_dir, &restored);

    // The command-mode snapshot: restore checks its size and BLAKE3 itself; its bytes are
    // another transfer (another mark), so they load the same keys but are not `rdb_bytes`.
    let cmd_dir = env.dir.path().join("redis-restored-cmd");
    std::fs::create_dir(&cmd_dir).unwrap();
    let restored = cmd_dir.join("dump.rdb");
    let out = env.run(
        &[
            "restore",
            "latest",
            "--tag",
            "kind=cmd",
            "-o",
            restored.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_loads(&cmd_dir, &restored);
}
