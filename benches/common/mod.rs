//! Shared by the benches: a deterministic stream that looks like `pg_dump --inserts` output.
//!
//! Benchmarks of compression and of the whole pipeline mean little on random bytes (zstd gives
//! up) or on a repeated line (zstd's window swallows it, every chunk deduplicates against the
//! first). This generator writes
//! SQL text whose values come from a xorshift RNG over small vocabularies, so it compresses like
//! a real dump (zlib level 6 on 32 KiB chunks of it: 4.7x; zstd level 3 is in the same range)
//! yet no two lines repeat and no chunk is duplicated inside the stream. Same seed, same bytes,
//! on every machine: no `rand` crate.
#![allow(dead_code)]

use std::io::Write;

pub const MIB: usize = 1024 * 1024;
/// The stream the benches push through each stage: large enough to span several 8 MiB chunker
/// blocks and 16 MiB packs, small enough for ten samples of the whole pipeline in seconds.
pub const STREAM_LEN: usize = 64 * MIB;

/// xorshift64 (Marsaglia): fast, deterministic, good enough to pick words.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Seeds are spread by an odd multiplier before the low bit is set (the all-zero state
        // is a fixed point): `seed | 1` alone gave seeds 2k and 2k+1 one stream, so benches
        // that back up "new" bytes with seeds `s + i` stored the same bytes twice.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// Uniform-enough integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Maria", "Jose", "Anna", "Wei", "Olga", "Ahmed", "Lucia", "Kenji", "Fatima", "John", "Ines",
    "Pavel", "Amara", "Lars", "Sofia", "Raj", "Elena", "Tomas", "Yuki", "Chloe",
];
const LAST: &[&str] = &[
    "Lopez", "Silva", "Novak", "Chen", "Ivanova", "Haddad", "Rossi", "Tanaka", "Okafor", "Smith",
    "Moreau", "Kowalski", "Jensen", "Garcia", "Patel", "Popescu", "Dvorak", "Sato", "Martin",
    "Nguyen",
];
const CITIES: &[&str] = &[
    "Lisbon", "Porto", "Madrid", "Lyon", "Berlin", "Krakow", "Brno", "Osaka", "Lagos", "Austin",
    "Toronto", "Pune", "Aarhus", "Turin", "Cluj",
];
const STATUS: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];

const PREAMBLE: &str = "--
-- PostgreSQL database dump
--

-- Dumped from database version 16.4
-- Dumped by pg_dump version 16.4

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;

CREATE TABLE public.customers (
    id bigint NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    city text,
    created_at date NOT NULL
);

CREATE TABLE public.orders (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL,
    price numeric(10,2) NOT NULL,
    status text NOT NULL,
    created_at timestamp with time zone NOT NULL
);
";

/// How a complete plain pg_dump ends; backup refuses a pg_dump stream without it (dumpkind).
const FOOTER: &str = "\n--\n-- PostgreSQL database dump complete\n--\n\n";

/// Exactly `len` bytes of SQL-dump-like text, ending like a complete dump; the same
/// `(len, seed)` always gives the same bytes.
pub fn sql_dump(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 64 * 1024);
    out.extend_from_slice(PREAMBLE.as_bytes());
    let (mut customer, mut order) = (1u64, 1u64);
    // Table sections alternate, as when a dump is assembled from several tables' data.
    while out.len() < len {
        out.extend_from_slice(
            b"\n--\n-- Data for Name: customers; Type: TABLE DATA; Schema: public; Owner: shop\n--\n\n",
        );
        for _ in 0..200 + rng.below(300) {
            let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
            writeln!(
                out,
                "INSERT INTO public.customers VALUES ({customer}, '{first} {last}', '{}.{}{}@example.com', '{}', '20{:02}-{:02}-{:02}');",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                customer % 1000,
                rng.pick(CITIES),
                15 + rng.below(10),
                1 + rng.below(12),
                1 + rng.below(28),
            )
            .expect("writing to a Vec cannot fail");
            customer += 1;
        }
        out.extend_from_slice(
            b"\n--\n-- Data for Name: orders; Type: TABLE DATA; Schema: public; Owner: shop\n--\n\n",
        );
        for _ in 0..1000 + rng.below(2000) {
            writeln!(
                out,
                "INSERT INTO public.orders VALUES ({order}, {}, 'sku-{:06x}', {}, {}.{:02}, '{}', '2024-{:02}-{:02} {:02}:{:02}:{:02}+00');",
                1 + rng.below(customer),
                rng.below(40_000),
                1 + rng.below(9),
                1 + rng.below(500),
                rng.below(100),
                rng.pick(STATUS),
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60),
            )
            .expect("writing to a Vec cannot fail");
            order += 1;
        }
    }
    out.truncate(len.saturating_sub(FOOTER.len()));
    out.extend_from_slice(FOOTER.as_bytes());
    out.truncate(len);
    out
}
