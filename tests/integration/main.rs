//! One integration-test binary (one link step). Each module drives the built `dumpvault`
//! binary or the library from outside, with a helper per scenario.

mod cli;
mod common;
mod damage;
mod e2e_pg;
mod e2e_redis;
mod faults;
mod fsck;
mod fuzz_replay;
mod library;
mod ops;
mod prune;
mod retention;
mod s3;
mod streams;
