//! `format::config::Config::decode`: the one object read before any key is open, so it is the
//! first thing a hostile repository feeds us. Also `Config::verify_mac` on the same bytes.
//!
//! Oracle beyond "no panic": the config layout is canonical, so a config that decodes must
//! re-encode to the same first 96 bytes, and its re-encoding must carry a valid MAC.

use dumpvault::crypto::MasterKey;
use dumpvault::format::config::{Config, LEN};

pub fn run(data: &[u8]) {
    let key = MasterKey::from_bytes(&[7u8; 72]).expect("72 bytes make a master key");
    let _ = Config::verify_mac(data, &key);
    let Ok(config) = Config::decode(data) else {
        return;
    };
    let _ = config.check_writable();
    let again = config.encode(&key);
    assert_eq!(again.len(), LEN);
    assert_eq!(
        again[..96],
        data[..96],
        "decode accepted a non-canonical config"
    );
    assert!(Config::verify_mac(&again, &key).is_ok());
}
