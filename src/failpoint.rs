//! Crash injection for tests: `DUMPVAULT_FAILPOINT=<name>` makes the process abort (as a kill
//! would: no unwinding, no cleanup) when it reaches the named point. Costs one environment
//! lookup per point, only on the rare paths that declare one.

pub fn hit(name: &str) {
    if std::env::var_os("DUMPVAULT_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("dumpvault: failpoint {name}: aborting");
        std::process::abort();
    }
}
