//! `format::keyfile::KeyFile::decode` on raw key-file bytes (`keys/<id>`), which are read and
//! parsed before the password is tried. `KeyFile::unwrap` is deliberately not called: it runs
//! Argon2id with the file's own parameters (up to the 4 GiB ceiling), far too slow to fuzz.
//!
//! Oracle: the layout is canonical, so a key file that decodes re-encodes to the same bytes.

use dumpvault::format::keyfile::KeyFile;
use dumpvault::id::ObjectId;

pub fn run(data: &[u8]) {
    let id = ObjectId([0; 32]);
    let Ok(kf) = KeyFile::decode(&id, data) else {
        return;
    };
    // The floor/ceiling check is what `unwrap` does before any Argon2 work.
    let _ = kf.kdf.check();
    assert_eq!(
        kf.encode(),
        data,
        "decode accepted a non-canonical key file"
    );
}
