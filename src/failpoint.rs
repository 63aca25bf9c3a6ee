//! Crash injection for tests: `DUMPVAULT_FAILPOINT=<name>` makes the process abort (as a kill
//! would: no unwinding, no cleanup) when it reaches the named point; `<name>@N` aborts on the
//! Nth time it is reached (1-based; `<name>` alone is `<name>@1`), so a point inside a loop
//! (after each pack upload, after each tree node) can kill the process at any iteration.
//! Costs one environment lookup per point, only on the rare paths that declare one.

use std::sync::atomic::{AtomicU64, Ordering};

static HITS: AtomicU64 = AtomicU64::new(0);

pub fn hit(name: &str) {
    let Some(v) = std::env::var_os("DUMPVAULT_FAILPOINT") else {
        return;
    };
    let v = v.to_string_lossy();
    let (point, nth) = match v.rsplit_once('@') {
        Some((p, n)) => (p, n.parse::<u64>().unwrap_or(1)),
        None => (&*v, 1),
    };
    // Only one point is armed per process, so one counter serves it.
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("dumpvault: failpoint {name} (hit {nth}): aborting");
        std::process::abort();
    }
}
