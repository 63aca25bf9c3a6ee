//! User-level operations, each a function over an open `Repo`. They report through return
//! values (and an optional progress callback), never by printing: the CLI decides the output.

pub mod backup;
pub mod copy;
pub mod forget;
pub mod fsck;
pub mod pitr;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod verify;
pub mod wal;
