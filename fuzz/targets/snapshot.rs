//! `format::snapshot::decode` on raw manifest plaintext (JSON), then what every reader of a
//! listed snapshot does with it next: `Snapshot::total_size` (the `stats` and `snapshots`
//! commands) and `Filter::matches` (`restore latest`, `snapshots --name/--host/--tag`).
//!
//! Oracles: re-encoding a decoded snapshot decodes to the same value (re-decoding may fail
//! only where chrono cannot re-read an extreme date it normalized to UTC; that is tolerated);
//! a filter built from a snapshot's own name, host and tags matches it.

use dumpvault::format::snapshot;
use dumpvault::id::ObjectId;
use dumpvault::snapshot::Filter;

pub fn run(data: &[u8]) {
    let id = ObjectId([0; 32]);
    let Ok(s) = snapshot::decode(&id, data) else {
        return;
    };
    let _ = s.total_size();
    let filter = Filter {
        name: Some(s.name.clone()),
        host: Some(s.host.clone()),
        tags: s.tags.clone().into_iter().collect(),
    };
    assert!(filter.matches(&s));
    let encoded = snapshot::encode(&s);
    if encoded.len() <= snapshot::MAX_LEN {
        if let Ok(again) = snapshot::decode(&id, &encoded) {
            assert_eq!(again, s);
        }
    }
}
