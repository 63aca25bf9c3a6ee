//! End to end with a real Redis: an RDB from `redis-cli --rdb` → backup → restore, accepted by
//! `redis-check-rdb` and loaded by a fresh `redis-server` with the same keys.

use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn redis_rdb_backup_restore_loads_in_fresh_server() {
    redis_scenario(&Env::new());
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

    // The RDB over the replication protocol, exactly as an operator would fetch it.
    let rdb = env.dir.path().join("live.rdb");
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &r.port.to_string(), "--rdb"])
        .arg(&rdb)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli --rdb: {}", stderr(&out));
    let rdb_bytes = std::fs::read(&rdb).unwrap();
    assert!(rdb_bytes.starts_with(b"REDIS"));
    drop(r);

    env.backup(&rdb_bytes, &["--name", "cache", "--tag", "kind=rdb"]);
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

    let check = Command::new("redis-check-rdb")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "redis-check-rdb: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    let r2 = RedisServer::start_in(&restored_dir);
    assert_eq!(r2.cli(&["DBSIZE"]), "5505");
    assert_eq!(r2.cli(&["HGET", "cart:120", "qty"]), (120 % 7).to_string());
    assert_eq!(
        r2.cli(&["GET", "user:4999"]),
        "{\"id\":4999,\"name\":\"n4999\"}"
    );
}
