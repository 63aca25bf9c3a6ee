//! S3 faults through a tiny fault-injecting HTTP proxy in front of a real Garage server: the
//! first N requests of a chosen method (and path fragment) get a 503, a 500 or a 403, or have
//! their connection reset; everything else is forwarded byte for byte (with `Connection:
//! close`, so every request opens its own connection and passes the proxy's judgement).
//! Retried faults (503, 500, reset) must not change the outcome; a 403 must fail fast with a
//! clear message and the documented exit code, leaving the repository unchanged.
//! Also: several processes backing up to one S3 repository at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

pub struct Proxy {
    pub endpoint: String,
    /// Faults injected so far.
    pub injected: Arc<AtomicUsize>,
    rule: Arc<Mutex<Option<Rule>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let rule: Arc<Mutex<Option<Rule>>> = Arc::new(Mutex::new(None));
        let injected = Arc::new(AtomicUsize::new(0));
        let (r, n) = (Arc::clone(&rule), Arc::clone(&injected));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let (up, r, n) = (upstream.clone(), Arc::clone(&r), Arc::clone(&n));
                std::thread::spawn(move || {
                    let _ = serve(c, &up, &r, &n);
                });
            }
        });
        Proxy {
            endpoint,
            injected,
            rule,
        }
    }

    pub fn set(&self, rule: Option<Rule>) {
        *self.rule.lock().unwrap() = rule;
        self.injected.store(0, Ordering::SeqCst);
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rule: &Mutex<Option<Rule>>,
    injected: &AtomicUsize,
) -> std::io::Result<()> {
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
    let fault = {
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
fn proxied_env(g: &Garage, proxy: &Proxy, max_attempts: &str) -> Env {
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
