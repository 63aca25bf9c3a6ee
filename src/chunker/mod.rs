//! Content-defined chunking of a byte stream with FastCDC v2020 (the `fastcdc` crate, pinned in
//! Cargo.toml because cut points are part of the format: a different cut changes every chunk ID
//! and defeats deduplication against older snapshots).
//!
//! The chunker reads large blocks into a buffer of its own and hands out whole blocks with the
//! chunk ranges inside them, so no chunk is copied on its own. Cut points are identical to
//! chunking the whole stream at once: a cut is computed only when at least `max` bytes (or the
//! end of the stream) are available after the chunk's start, and FastCDC's cut depends only on
//! the bytes from the chunk's start up to `max` bytes further.
//!
//! A stream that begins with a tar header (a `pg_basebackup -Ft` base backup) is cut along its
//! structure instead: member headers alone, relation files at every 8 KiB page, FastCDC for
//! the rest ([`pages`]).

pub mod pages;

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use fastcdc::v2020::{FastCDC, Normalization};

use crate::error::{Error, Result};

/// Default chunker sizes, chosen by measurement (`benches/chunk-sizes.sh`, table in the
/// README): on a 4-day OLTP pg_dump corpus, a 16 KiB average stores 31 % less per day than
/// 32 KiB and 5.6x less than 1 MiB, for twice the index entries of 32 KiB (0.7 MB of index per
/// 290 MB dump). 8 KiB saves only 14 % more per day for twice the entries again.
pub const DEFAULT_MIN: u32 = 4 * 1024;
pub const DEFAULT_AVG: u32 = 16 * 1024;
pub const DEFAULT_MAX: u32 = 64 * 1024;

/// Bytes read per block (at least twice the max chunk size). 2 MiB stays in cache between
/// the stages that read it (copy in, cut, two hashes); it measured a little faster than 8 MiB.
const BLOCK: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub seed: u64,
}

/// A block of the stream and the chunks that tile it exactly.
pub struct Batch {
    pub data: Arc<Vec<u8>>,
    pub chunks: Vec<Range<usize>>,
}

pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    carry: Vec<u8>,
    eof: bool,
    block: usize,
    bytes_read: u64,
    /// Blocks handed back by the consumer (`recycle`), reused so that each block does not
    /// fault in fresh pages (with 8 MiB blocks that cost ~10 % of an incremental backup).
    spare: Vec<Vec<u8>>,
    /// Decided on the first block: whether the stream is a tar, cut along its structure.
    tar: Option<Option<pages::TarCutter>>,
    /// Stream offset of the next block's first byte (a chunk boundary).
    offset: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, params: ChunkerParams) -> Self {
        let block = BLOCK.max(2 * params.max as usize);
        Chunker {
            reader,
            params,
            carry: Vec::new(),
            eof: false,
            block,
            bytes_read: 0,
            spare: Vec::new(),
            tar: None,
            offset: 0,
        }
    }

    /// Whether the stream is being cut as a tar (known after the first batch).
    pub fn is_tar(&self) -> bool {
        matches!(self.tar, Some(Some(_)))
    }

    /// Give a consumed block's buffer back for reuse (at most two are kept).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() >= self.block && self.spare.len() < 2 {
            self.spare.push(buf);
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Read into `buf[filled..]` until the block is full or the stream ends; `buf` is at
    /// least a block long. Returns how many bytes of `buf` hold data.
    fn fill(&mut self, buf: &mut [u8], mut filled: usize) -> Result<usize> {
        while filled < self.block && !self.eof {
            if crate::signals::interrupted() {
                return Err(Error::Interrupted);
            }
            match self.reader.read(&mut buf[filled..self.block]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    filled += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read input", e)),
            }
        }
        Ok(filled)
    }

    /// The next block with its chunks, or `None` at the end of the stream.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        // A recycled block keeps its (stale, initialized) bytes: it is overwritten, never
        // zeroed again; only a new block is zeroed, once. (Re-zeroing every block was a memset
        // of the whole stream on the reader thread: 0.9 % of an incremental backup's CPU.)
        let mut buf = self.spare.pop().unwrap_or_default();
        if buf.len() < self.block {
            buf.resize(self.block, 0);
        }
        let carried = self.carry.len();
        buf[..carried].copy_from_slice(&self.carry);
        let filled = self.fill(&mut buf, carried)?;
        buf.truncate(filled);
        if buf.is_empty() {
            return Ok(None);
        }
        let tar = self
            .tar
            .get_or_insert_with(|| pages::looks_like_tar(&buf).then(pages::TarCutter::default));
        let chunks = match tar {
            Some(t) => t.cut(&buf, self.offset, self.eof, self.params),
            None => cut_block(&buf, self.eof, self.params),
        };
        let pos = chunks.last().map_or(0, |r| r.end);
        self.offset += pos as u64;
        self.carry.clear();
        self.carry.extend_from_slice(&buf[pos..]);
        buf.truncate(pos);
        Ok(Some(Batch {
            data: Arc::new(buf),
            chunks,
        }))
    }
}

/// Blocks at least this large are cut in two halves at once (`cut_block`).
const PARALLEL_CUT_MIN: usize = 1 << 20;

/// Cut `buf`, which starts at a chunk boundary, into chunks; the bytes after the last range
/// wait for more input (unless `eof`: then everything is cut). The result is exactly that of
/// cutting serially from 0.
///
/// Large blocks are cut as two halves in parallel: the head chain from 0 to the middle, and a
/// speculative tail chain from the middle to the end. A cut depends only on where its chunk
/// starts, so once the head chain, continued past the middle, lands on a point of the tail
/// chain, the two agree from there on; that takes a chunk or two on real data. Should they
/// never meet (e.g. long runs of one byte, cut at every `max`), the head chain simply runs to
/// the end, as a serial cut would.
fn cut_block(buf: &[u8], eof: bool, p: ChunkerParams) -> Vec<Range<usize>> {
    let cdc = FastCDC::with_level_and_seed(buf, p.min, p.avg, p.max, Normalization::Level1, p.seed);
    let (len, max) = (buf.len(), p.max as usize);
    // The end of the chunk that starts at `pos`, or None where the rest waits for input.
    let next = |pos: usize| -> Option<usize> {
        let remaining = len - pos;
        if remaining == 0 || (!eof && remaining < max) {
            return None;
        }
        Some(cdc.cut(pos, remaining).1)
    };
    let chain = |mut pos: usize, stop: usize| {
        let mut ends = Vec::new();
        while pos < stop {
            match next(pos) {
                Some(e) => {
                    ends.push(e);
                    pos = e;
                }
                None => break,
            }
        }
        ends
    };
    let ends = if len < PARALLEL_CUT_MIN.max(8 * max) {
        chain(0, len)
    } else {
        let middle = len / 2;
        let (mut head, tail) = rayon::join(|| chain(0, middle), || chain(middle, len));
        // The tail chain starts at `middle` itself.
        let mut pos = head.last().copied().unwrap_or(0);
        let mut i = 0; // first tail point >= pos, with `middle` as point -1
        loop {
            if pos == middle {
                head.extend_from_slice(&tail);
                break;
            }
            while i < tail.len() && tail[i] < pos {
                i += 1;
            }
            if tail.get(i) == Some(&pos) {
                head.extend_from_slice(&tail[i + 1..]);
                break;
            }
            match next(pos) {
                Some(e) => {
                    head.push(e);
                    pos = e;
                }
                None => break,
            }
        }
        head
    };
    let mut start = 0;
    ends.into_iter()
        .map(|e| {
            let r = start..e;
            start = e;
            r
        })
        .collect()
}

/// Cut points of a whole in-memory buffer, for tests and benchmarks.
pub fn cut_points(data: &[u8], p: ChunkerParams) -> Vec<usize> {
    FastCDC::with_level_and_seed(data, p.min, p.avg, p.max, Normalization::Level1, p.seed)
        .map(|c| c.offset + c.length)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), so golden vectors need no fixture file.
    pub fn pseudo_random(len: usize, mut s: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn params(seed: u64) -> ChunkerParams {
        ChunkerParams {
            min: DEFAULT_MIN,
            avg: DEFAULT_AVG,
            max: DEFAULT_MAX,
            seed,
        }
    }

    fn stream_cuts(data: &[u8], p: ChunkerParams, read_size: usize) -> Vec<usize> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(b.len()).min(self.1);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut c = Chunker::new(Trickle(data, read_size), p);
        let mut out = Vec::new();
        let mut base = 0;
        while let Some(b) = c.next_batch().unwrap() {
            let mut covered = 0;
            for r in &b.chunks {
                assert_eq!(r.start, covered, "chunks must tile the block");
                covered = r.end;
                out.push(base + r.end);
            }
            assert_eq!(covered, b.data.len());
            base += b.data.len();
        }
        out
    }

    #[test]
    fn streaming_equals_whole_buffer() {
        let data = pseudo_random(20 * 1024 * 1024 + 12345, 42);
        let p = params(0x1234_5678_9abc_def0);
        let whole = cut_points(&data, p);
        assert_eq!(stream_cuts(&data, p, 1 << 20), whole);
        assert_eq!(stream_cuts(&data, p, 777_777), whole);
        assert_eq!(*whole.last().unwrap(), data.len());
    }

    /// The two-halves cut equals the serial cut: on random data (the chains meet), on runs of
    /// one byte (they never meet: every chunk is `max` long from its own start), on a mix, and
    /// with or without the end of the stream.
    #[test]
    fn parallel_cut_equals_serial_cut() {
        let p = params(0x5eed);
        let mut mixed = pseudo_random(3 << 20, 9);
        mixed.extend(std::iter::repeat_n(0u8, 2 << 20));
        mixed.extend(pseudo_random(3 << 20, 10));
        let mut zeros_then_random = vec![0u8; (5 << 20) + 12_345];
        zeros_then_random.extend(pseudo_random(1 << 20, 11));
        for data in [
            pseudo_random((8 << 20) + 777, 3),
            vec![7u8; (6 << 20) + 5],
            mixed,
            zeros_then_random,
        ] {
            assert!(data.len() >= PARALLEL_CUT_MIN.max(8 * p.max as usize));
            let serial = cut_points(&data, p);
            let ends = |v: Vec<Range<usize>>| v.into_iter().map(|r| r.end).collect::<Vec<_>>();
            assert_eq!(ends(cut_block(&data, true, p)), serial);
            // Without the end of the stream, the serial cut stops where less than `max`
            // bytes remain; the prefix must agree exactly.
            let partial = ends(cut_block(&data, false, p));
            let last = *partial.last().unwrap();
            assert!(data.len() - last < p.max as usize);
            assert_eq!(partial[..], serial[..partial.len()]);
        }
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(4 << 20, 7);
        assert_ne!(cut_points(&data, params(1)), cut_points(&data, params(2)));
    }

    #[test]
    fn empty_stream_has_no_batches() {
        let mut c = Chunker::new(&b""[..], params(0));
        assert!(c.next_batch().unwrap().is_none());
    }

    /// Golden cut points: if this fails, the chunker changed and every stored chunk ID with it.
    /// The same vector is printed in format-spec/ (known-answer vectors).
    #[test]
    fn golden_cut_points() {
        let data = pseudo_random(1 << 20, 0xdead_beef);
        // Explicit sizes, not the defaults: the vector pins the algorithm, not a tuning choice.
        let p = ChunkerParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 128 * 1024,
            seed: 0x0123_4567_89ab_cdef,
        };
        let cuts = cut_points(&data, p);
        assert_eq!(cuts, GOLDEN_CUTS);
    }
    const GOLDEN_CUTS: &[usize] = &[
        45968, 93318, 148182, 172057, 184522, 225740, 234011, 300535, 319373, 393643, 430893,
        457603, 492379, 536012, 577584, 617297, 728619, 764607, 792234, 825396, 899093, 915296,
        942695, 1018070, 1048576,
    ];
}
