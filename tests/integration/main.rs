//! One integration-test binary (one link step). Each module drives the built `dumpvault`
//! binary or the library from outside, with a helper per scenario.

mod append_only;
mod badinput;
mod cache_trust;
mod cli;
mod common;
mod crash;
mod damage;
mod e2e_pg;
mod e2e_pitr;
mod e2e_redis;
mod faults;
mod fsck;
mod fuzz_replay;
mod layers;
mod library;
mod metrics_failures;
mod ops;
mod promises;
mod prune;
mod retention;
mod s3;
mod s3proxy;
mod streams;
mod tamper;
mod vectors;
mod wal;
