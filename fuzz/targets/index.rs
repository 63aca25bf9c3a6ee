//! `format::index::IndexFile::decode` on raw plaintext (what `envelope::open` returns for an
//! index file), then the decoded file loaded into the in-memory `index::Index`, as
//! `Repo::index` does. Hostile counts must neither panic nor allocate beyond the input.
//!
//! Oracles: the layout is canonical (decode → encode gives back the input); every entry lies
//! inside its pack's stated length; every entry is findable in the loaded index.

use dumpvault::format::index::IndexFile;
use dumpvault::id::ObjectId;
use dumpvault::index::Index;

pub fn run(data: &[u8]) {
    let id = ObjectId([0; 32]);
    let Ok(file) = IndexFile::decode(&id, data) else {
        return;
    };
    assert_eq!(
        file.encode(),
        data,
        "decode accepted a non-canonical index file"
    );
    let mut index = Index::default();
    index.add_file(&file);
    for p in &file.packs {
        for e in &p.entries {
            assert!(
                e.end() <= p.len,
                "entry beyond its pack's length was accepted"
            );
            assert!(index.get(&e.id).is_some());
        }
    }
}
