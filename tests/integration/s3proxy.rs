//! S3 faults through a tiny fault-injecting HTTP proxy in front of a real Garage server: the
//! first N requests of a chosen method (and path fragment) get a 503, a 500 or a 403, or have
//! their connection reset; everything else is forwarded byte for byte (with `Connection:
//! close`, so every request opens its own connection and passes the proxy's judgement).
//! Retried faults (503, 500, reset) must not change the outcome; a 403 must fail fast with a
//! clear message and the documented exit code, leaving the repository unchanged.
//! Append-only mode (`Proxy::append_only`): what S3 credentials without `s3:DeleteObject`
//! outside `locks/` give. Every DELETE of an object outside `locks/` gets 403 AccessDenied, and
//! so does a PUT over an object that exists outside `locks/` (found by asking Garage first, a
//! HEAD the proxy makes itself). Multipart aborts (`DELETE …?uploadId=`) pass: on AWS they are
//! `s3:AbortMultipartUpload`, not a deletion of an object. Every request head is recorded
//! (`Proxy::heads`) so a test can check the headers dumpvault sent.
//! Also: several processes backing up to one S3 repository at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dumpvault::backend::Backend;
use dumpvault::error::ObjectKind;

use crate::common::*;
use crate::s3::Garage;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Status(u16),
    Reset,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    /// Only requests whose path contains this (e.g. "/data/" for packs).
    pub path_contains: &'static str,
    /// How many matching requests get the fault (usize::MAX: all of them).
    pub times: usize,
    pub fault: Fault,
}

/// Append-only mode: how to tell whether a PUT would overwrite, and what was refused.
pub struct AppendOnly {
    /// The repository's objects, read straight from Garage.
    backend: Arc<dyn Backend>,
    /// The request-path prefix of the repository, `/BUCKET/PREFIX/`.
    base: String,
    /// `METHOD path` of every refused request.
    pub refused: Vec<String>,
}

pub struct Proxy {
    pub endpoint: String,
    /// Faults injected so far.
    pub injected: Arc<AtomicUsize>,
    rule: Arc<Mutex<Option<Rule>>>,
    mode: Arc<Mutex<Option<AppendOnly>>>,
    /// The head (request line and headers) of every request seen, in order.
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let rule: Arc<Mutex<Option<Rule>>> = Arc::new(Mutex::new(None));
        let mode: Arc<Mutex<Option<AppendOnly>>> = Arc::new(Mutex::new(None));
        let heads: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let injected = Arc::new(AtomicUsize::new(0));
        let st = State {
            rule: Arc::clone(&rule),
            mode: Arc::clone(&mode),
            heads: Arc::clone(&heads),
            injected: Arc::clone(&injected),
        };
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let (up, st) = (upstream.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(c, &up, &st);
                });
            }
        });
        Proxy {
            endpoint,
            injected,
            rule,
            mode,
            heads,
        }
    }

    /// Turn append-only mode on for the repository at `location` (an `s3://BUCKET/PREFIX`
    /// whose objects `backend` reads), or off with `None`. Returns what the previous mode
    /// refused.
    pub fn append_only(&self, on: Option<(Arc<dyn Backend>, &str)>) -> Vec<String> {
        let mode = on.map(|(backend, location)| AppendOnly {
            backend,
            base: format!(
                "/{}/",
                location.trim_start_matches("s3://").trim_end_matches('/')
            ),
            refused: Vec::new(),
        });
        let old = std::mem::replace(&mut *self.mode.lock().unwrap(), mode);
        old.map(|m| m.refused).unwrap_or_default()
    }

    /// Requests refused so far by append-only mode.
    pub fn refused(&self) -> Vec<String> {
        self.mode
            .lock()
            .unwrap()
            .as_ref()
            .map(|m| m.refused.clone())
            .unwrap_or_default()
    }

    pub fn set(&self, rule: Option<Rule>) {
        *self.rule.lock().unwrap() = rule;
        self.injected.store(0, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct State {
    rule: Arc<Mutex<Option<Rule>>>,
    mode: Arc<Mutex<Option<AppendOnly>>>,
    heads: Arc<Mutex<Vec<String>>>,
    injected: Arc<AtomicUsize>,
}

/// The repository object a request path names (`/BUCKET/PREFIX/snapshots/<id>?x-id=…`), if
/// it names one under `base`.
fn object_of(path: &str, base: &str) -> Option<(ObjectKind, String)> {
    let key = path.split('?').next()?.strip_prefix(base)?;
    let parts: Vec<&str> = key.split('/').collect();
    let kind = match parts.as_slice() {
        ["config"] => return Some((ObjectKind::Config, "config".into())),
        ["data", _, _] => ObjectKind::Pack,
        ["index", _] => ObjectKind::Index,
        ["snapshots", _] => ObjectKind::Snapshot,
        ["keys", _] => ObjectKind::Key,
        ["verifications", _] => ObjectKind::Verification,
        ["locks", _] => ObjectKind::Lock,
        _ => return None,
    };
    Some((kind, parts.last()?.to_string()))
}

/// Append-only mode's verdict: does this request delete or overwrite an object outside locks/?
fn refuse(mode: &mut AppendOnly, method: &str, path: &str) -> bool {
    let target = object_of(path, &mode.base);
    if matches!(target, Some((ObjectKind::Lock, _))) {
        return false;
    }
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let refuse = match method {
        // An abort frees upload parts; it deletes no object.
        "DELETE" => !query.contains("uploadId="),
        // Uploading a part writes no object yet; a plain PUT over an existing one overwrites.
        "PUT" if !query.contains("uploadId=") => {
            target.is_some_and(|(kind, name)| mode.backend.size(kind, &name).is_ok())
        }
        // A batch delete (`POST ?delete`).
        "POST" => query.split('&').any(|p| p == "delete" || p == "delete="),
        _ => false,
    };
    if refuse {
        mode.refused.push(format!("{method} {path}"));
    }
    refuse
}

fn serve(client: TcpStream, upstream: &str, st: &State) -> std::io::Result<()> {
    let (rule, injected) = (&*st.rule, &*st.injected);
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let end = line == b"\r\n";
        // Hop-by-hop: we force our own Connection header.
        let lower = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if !lower.starts_with("connection:") {
            if end {
                head.extend_from_slice(b"Connection: close\r\n");
            }
            head.extend_from_slice(&line);
        }
        if end {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let header = |name: &str| {
        text.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    st.heads.lock().unwrap().push(text.clone());
    let denied = st
        .mode
        .lock()
        .unwrap()
        .as_mut()
        .is_some_and(|m| refuse(m, &method, &path));
    let fault = if denied {
        Some(Fault::Status(403))
    } else {
        let g = rule.lock().unwrap();
        match &*g {
            Some(r) if r.method == method && path.contains(r.path_contains) => {
                let n = injected.fetch_add(1, Ordering::SeqCst);
                if n < r.times {
                    Some(r.fault)
                } else {
                    injected.fetch_sub(1, Ordering::SeqCst);
                    None
                }
            }
            _ => None,
        }
    };
    let mut client_w = client.try_clone()?;
    match fault {
        Some(Fault::Reset) => {
            // SO_LINGER 0: close() sends a RST, as a crashed middlebox would.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
            unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                );
            }
            drop(reader);
            drop(client_w);
            drop(client);
            Ok(())
        }
        Some(Fault::Status(code)) => {
            // Read the body first (unless the client waits for 100-continue), so the client
            // sees a clean HTTP error, not a broken pipe.
            let expect = header("expect").is_some_and(|v| v.contains("100"));
            if !expect {
                let len: u64 = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
            }
            let (reason, code_word) = match code {
                503 => ("Slow Down", "SlowDown"),
                500 => ("Internal Server Error", "InternalError"),
                403 => ("Forbidden", "AccessDenied"),
                _ => ("Error", "InternalError"),
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code_word}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client_w.write_all(resp.as_bytes())?;
            let _ = client_w.shutdown(Shutdown::Both);
            Ok(())
        }
        None => {
            let mut up = TcpStream::connect(upstream)?;
            up.write_all(&head)?;
            // Whatever the client sends after the head (the body) goes up; the response comes
            // back until the server closes (it will: Connection: close).
            let mut up_w = up.try_clone()?;
            let pump = std::thread::spawn(move || {
                let _ = std::io::copy(&mut reader, &mut up_w);
                let _ = up_w.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut up, &mut client_w);
            let _ = client_w.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            let _ = pump.join();
            Ok(())
        }
    }
}

/// A repository on Garage reached through the proxy; init goes straight to Garage.
pub fn proxied_env(g: &Garage, proxy: &Proxy, max_attempts: &str) -> Env {
    let mut env = Env::at(g.location(), g.env());
    for (k, v) in env.extra_env.iter_mut() {
        if k == "DUMPVAULT_S3_ENDPOINT" {
            *v = proxy.endpoint.clone();
        }
    }
    env.extra_env
        .push(("DUMPVAULT_S3_MAX_ATTEMPTS".into(), max_attempts.into()));
    env
}

/// Every object of the repository with its bytes (locks excluded: a failed command's lock is
/// checked separately).
fn listing(g: &Garage, env: &Env) -> Vec<(ObjectKind, String, Vec<u8>)> {
    let b = g.backend(&env.location);
    let mut v = Vec::new();
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        for (name, _) in b.list(kind).unwrap() {
            let bytes = b.get(kind, &name).unwrap();
            v.push((kind, name, bytes));
        }
    }
    v
}

fn locks(g: &Garage, env: &Env) -> usize {
    g.backend(&env.location)
        .list(ObjectKind::Lock)
        .unwrap()
        .len()
}

fn fsck_ok(env: &Env) {
    let out = env.run(&["--no-cache", "fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn s3_503_500_and_resets_are_retried_and_403_fails_clearly() {
    let g = Garage::start();
    let proxy = Proxy::start(&g.endpoint);
    let env = proxied_env(&g, &proxy, "5");
    let first = sql_like(20_000, 1);
    let id1 = env.backup(&first, &["--name", "s"]);

    // Retried faults: the backup and the restore succeed as if nothing happened.
    for (data_n, (method, fault)) in (2u64..).zip([
        ("PUT", Fault::Status(503)),
        ("PUT", Fault::Status(500)),
        ("PUT", Fault::Reset),
        ("GET", Fault::Status(503)),
        ("GET", Fault::Status(500)),
        ("GET", Fault::Reset),
    ]) {
        let ctx = format!("{method} {fault:?}");
        let mut data = sql_like(20_000, data_n);
        data.extend_from_slice(&noise(300_000, data_n));
        proxy.set(Some(Rule {
            method,
            path_contains: "",
            times: 2,
            fault,
        }));
        let id = if method == "PUT" {
            let id = env.backup(&data, &["--name", "s"]);
            assert_eq!(
                proxy.injected.load(Ordering::SeqCst),
                2,
                "{ctx}: faults injected"
            );
            proxy.set(None);
            id
        } else {
            proxy.set(None);
            let id = env.backup(&data, &["--name", "s"]);
            proxy.set(Some(Rule {
                method,
                path_contains: "",
                times: 2,
                fault,
            }));
            id
        };
        let out = env.run(&["--no-cache", "restore", &id], b"");
        assert!(out.status.success(), "{ctx}: restore: {}", stderr(&out));
        assert!(out.stdout == data, "{ctx}: byte-exact");
        if method == "GET" {
            assert_eq!(
                proxy.injected.load(Ordering::SeqCst),
                2,
                "{ctx}: faults injected"
            );
        }
        proxy.set(None);
    }
    fsck_ok(&env);

    // 403 on every pack upload: a clear failure, exit 1, not retried for long, and nothing
    // left behind (the lock it took is removed again).
    let before = listing(&g, &env);
    proxy.set(Some(Rule {
        method: "PUT",
        path_contains: "/data/",
        times: usize::MAX,
        fault: Fault::Status(403),
    }));
    let t0 = std::time::Instant::now();
    let out = env.run(&["backup", "--name", "s"], &noise(500_000, 99));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("access denied"), "{}", stderr(&out));
    assert!(t0.elapsed().as_secs() < 30, "403 is not retried for long");
    proxy.set(None);
    assert_eq!(listing(&g, &env), before, "403: repository unchanged");
    assert_eq!(locks(&g, &env), 0, "403: lock released");

    // Connection reset on every pack upload: fails after the bounded retries, same outcome.
    proxy.set(Some(Rule {
        method: "PUT",
        path_contains: "/data/",
        times: usize::MAX,
        fault: Fault::Reset,
    }));
    let out = env.run(&["backup", "--name", "s"], &noise(500_000, 98));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("S3"), "{}", stderr(&out));
    proxy.set(None);
    assert_eq!(listing(&g, &env), before, "reset: repository unchanged");
    assert_eq!(locks(&g, &env), 0, "reset: lock released");

    // 403 on reads: restore fails clearly, writes nothing.
    proxy.set(Some(Rule {
        method: "GET",
        path_contains: "",
        times: usize::MAX,
        fault: Fault::Status(403),
    }));
    let out = env.run(&["--no-cache", "restore", &id1], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    proxy.set(None);
    assert_eq!(listing(&g, &env), before);
    assert_eq!(env.restore(&["--no-cache", &id1]), first);
    fsck_ok(&env);
}

#[test]
fn concurrent_backups_to_one_s3_repository() {
    let g = Garage::start();
    let env = Env::at(g.location(), g.env());
    let snaps = crate::crash::concurrent_backups(&env, 4);
    crate::crash::assert_all_restore(&env, &snaps);
}

/// Every object but the locks, with its bytes.
fn all_objects(g: &Garage, env: &Env) -> BTreeMap<(ObjectKind, String), Vec<u8>> {
    let b = g.backend(&env.location);
    let mut v = BTreeMap::new();
    for kind in ObjectKind::ALL {
        if kind == ObjectKind::Lock {
            continue;
        }
        for (name, _) in b.list(kind).unwrap() {
            let bytes = b.get(kind, &name).unwrap();
            v.insert((kind, name), bytes);
        }
    }
    v
}

/// Issue 15 item 4: credentials that may PUT but not DELETE (outside locks/) nor overwrite
/// are enough for backup, restore, verify and fsck; forget and prune fail clearly, naming the
/// refused request, and delete nothing.
#[test]
fn s3_append_only_credentials_suffice_for_backup_and_verify() {
    let g = Garage::start();
    let proxy = Proxy::start(&g.endpoint);
    let env = proxied_env(&g, &proxy, "3");
    let on = || proxy.append_only(Some((g.backend(&env.location), &env.location)));
    on();

    let old = noise(300_000, 11);
    let old_id = env.backup(&old, &["--name", "s"]);
    let new = sql_like(20_000, 12);
    // Same data again: every pack, chunk and index is already there (no overwrite either).
    let new_id = env.backup(&new, &["--name", "s"]);
    env.backup(&new, &["--name", "t"]);
    assert!(env.restore(&["--no-cache", &new_id]) == new);
    let out = env.run(&["verify", &new_id, "--", "cat"], b"");
    assert!(out.status.success(), "verify: {}", stderr(&out));
    fsck_ok(&env);
    assert_eq!(
        proxy.refused(),
        Vec::<String>::new(),
        "backup, restore, verify and fsck asked for no deletion and no overwrite"
    );
    assert!(
        proxy
            .heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("DELETE ") && h.contains("/locks/")),
        "lock removal still goes through"
    );

    // forget: the first snapshot DELETE is refused; the error names it; nothing changes.
    let before = all_objects(&g, &env);
    let out = env.run(&["forget", "--keep-last", "1"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for want in ["S3 DELETE", "/snapshots/", "403", "access denied"] {
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
    }
    assert_eq!(all_objects(&g, &env), before, "forget deleted nothing");
    assert_eq!(locks(&g, &env), 0, "forget released its lock");

    // The forget run with the full credentials; then prune with the append-only ones.
    proxy.append_only(None);
    let out = env.run(&["forget", "--keep-last", "1", "--name", "s"], b"");
    assert!(out.status.success(), "forget: {}", stderr(&out));
    on();
    let before = all_objects(&g, &env);
    let out = env.run(&["--no-cache", "prune"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for want in ["S3 DELETE", "403", "access denied"] {
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
    }
    let refused = proxy.refused();
    assert!(
        refused.iter().any(|r| r.starts_with("DELETE ")),
        "{refused:?}"
    );
    let after = all_objects(&g, &env);
    for (k, b) in &before {
        assert!(after.get(k) == Some(b), "prune deleted or changed {k:?}");
    }
    // At most the superseding index file prune writes before deleting the old ones.
    assert!(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .all(|(kind, _)| *kind == ObjectKind::Index),
        "prune added more than an index file"
    );
    assert_eq!(locks(&g, &env), 0, "prune released its lock");

    // Intact; the full credentials finish the job.
    fsck_ok(&env);
    proxy.append_only(None);
    let out = env.run(&["--no-cache", "prune"], b"");
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let out = env.run(&["--no-cache", "restore", &old_id], b"");
    assert_eq!(out.status.code(), Some(9), "forgotten: {}", stderr(&out));
    assert!(env.restore(&["--no-cache", &new_id]) == new);
    fsck_ok(&env);
}

/// `backup --s3-object-lock-days N` sends Object Lock retention on the PUTs of packs, index
/// files and snapshots (not on locks, which must stay removable). Garage does not enforce
/// Object Lock; what is checked is the request.
#[test]
fn s3_object_lock_days_sends_retention_headers() {
    let g = Garage::start();
    let proxy = Proxy::start(&g.endpoint);
    let env = proxied_env(&g, &proxy, "3");
    proxy.heads.lock().unwrap().clear();
    let t0 = chrono::Utc::now();
    let id = env.backup(&noise(200_000, 21), &["--s3-object-lock-days", "7"]);
    let heads = proxy.heads.lock().unwrap().clone();
    let puts = |dir: &str| -> Vec<String> {
        heads
            .iter()
            .filter(|h| h.starts_with("PUT ") && h.lines().next().unwrap().contains(dir))
            .map(|h| h.to_ascii_lowercase())
            .collect()
    };
    for dir in ["/data/", "/index/", "/snapshots/"] {
        let p = puts(dir);
        assert!(!p.is_empty(), "no PUT of {dir}");
        for h in p {
            assert!(h.contains("x-amz-object-lock-mode: compliance"), "{h}");
            let until = h
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-object-lock-retain-until-date:"))
                .unwrap_or_else(|| panic!("no retain-until date: {h}"))
                .trim()
                .to_uppercase();
            let until = chrono::DateTime::parse_from_rfc3339(&until).expect("RFC 3339 date");
            let days = (until.with_timezone(&chrono::Utc) - t0).num_hours();
            assert!((7 * 24 - 1..=7 * 24 + 1).contains(&days), "{h}");
            assert!(
                h.contains("content-md5:"),
                "Object Lock PUTs need Content-MD5: {h}"
            );
        }
    }
    let locks_put = puts("/locks/");
    assert!(!locks_put.is_empty());
    assert!(
        locks_put.iter().all(|h| !h.contains("x-amz-object-lock")),
        "locks are not retained"
    );
    // Without the flag, no retention is asked for.
    proxy.heads.lock().unwrap().clear();
    env.backup(&noise(200_000, 22), &[]);
    assert!(proxy
        .heads
        .lock()
        .unwrap()
        .iter()
        .all(|h| !h.to_ascii_lowercase().contains("x-amz-object-lock")));
    assert!(env.restore(&["--no-cache", &id]) == noise(200_000, 21));
}
