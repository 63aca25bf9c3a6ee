//! SIGINT/SIGTERM handling. The first signal sets a flag that long loops poll, so the operation
//! unwinds normally: no snapshot is written, the lock is released, the producer is killed. If
//! the main thread is stuck in a read that the signal does not interrupt (stdin from a producer
//! that ignores the signal), a watchdog removes the registered lock and exits after a grace
//! period. A second signal terminates at once; write order makes that harmless too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::backend::Backend;
use crate::error::{exit, ObjectKind};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

type Cleanup = (Arc<dyn Backend>, String);
static CLEANUP: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());
static CHILD: Mutex<Option<u32>> = Mutex::new(None);
static INSTALLED: OnceLock<()> = OnceLock::new();

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Install the handlers (idempotent). Called by the CLI, not by library users.
pub fn install() {
    INSTALLED.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Second signal: default action (terminate).
            let _ = signal_hook::flag::register_conditional_default(sig, Arc::clone(&flag));
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        std::thread::Builder::new()
            .name("signal-watch".into())
            .spawn(move || watch(flag))
            .expect("spawn signal watcher");
    });
}

fn watch(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    INTERRUPTED.store(true, Ordering::Relaxed);
    if let Some(pid) = *CHILD.lock().unwrap_or_else(|p| p.into_inner()) {
        // SAFETY: kill(2) with a pid we spawned; at worst the process already exited.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    // Give the main thread time to unwind on its own.
    std::thread::sleep(Duration::from_secs(5));
    for (backend, name) in CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = backend.delete(ObjectKind::Lock, &name);
    }
    eprintln!("dumpvault: interrupted; no snapshot was written");
    std::process::exit(exit::INTERRUPTED);
}

/// Register a lock object the watchdog must delete if it has to exit on its own.
pub fn register_lock(backend: Arc<dyn Backend>, name: &str) {
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((backend, name.to_string()));
}

pub fn unregister_lock(name: &str) {
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(_, n)| n != name);
}

/// Register the producer child so a signal kills it (its output then ends).
pub fn set_child(pid: Option<u32>) {
    *CHILD.lock().unwrap_or_else(|p| p.into_inner()) = pid;
}
