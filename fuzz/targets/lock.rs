//! `format::lock::decode` on raw lock plaintext (JSON). `lock::is_stale` is not called: it
//! reads the clock, the hostname and probes PIDs with kill(2), so its result is not a function
//! of the input.
//!
//! Oracle: a lock that decodes and re-encodes decodes to the same value (re-decoding may fail
//! only where chrono cannot re-read an extreme date it normalized to UTC; that is tolerated).

use dumpvault::format::lock;
use dumpvault::id::ObjectId;

pub fn run(data: &[u8]) {
    let id = ObjectId([0; 32]);
    let Ok(l) = lock::decode(&id, data) else {
        return;
    };
    if let Ok(again) = lock::decode(&id, &lock::encode(&l)) {
        assert_eq!(again, l);
    }
}
