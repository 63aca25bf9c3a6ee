//! Run files: the on-disk form of the index that the cache keeps, so that neither `backup`
//! nor `restore` holds every index entry in memory (issue 14). A run is one immutable file of
//! fixed-size entries sorted by chunk ID, behind a fanout table of cumulative counts over the
//! ID's top bits; a lookup reads one small bucket with `pread`, so the page cache, not the
//! process, holds the table (format-spec/14-cache.md gives every byte).
//!
//! Invariants: entries are sorted by chunk ID (equal IDs may repeat: the same chunk stored in
//! two packs); `fanout[b]` is the number of entries whose top `bits` bits are at most `b`, so
//! the last value is the entry count; the file is exactly header + fanout + entries long.
//! [`Run::open`] checks all of that, and a lookup never trusts a bucket bound it did not check,
//! so a damaged run file is an error (the cache is then rebuilt), never a panic.
//!
//! Entries carry opaque 8-byte MACs computed by the cache ([`crate::cache`]): this module
//! neither computes nor checks them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::id::ChunkId;

pub const MAGIC: &[u8; 8] = b"DVIXRUN1";
pub const HEADER_LEN: u64 = 32;
pub const ENTRY_LEN: usize = 64;
/// [`Run::prefetcher`] advises the kernel this many bytes at a time.
const PREFETCH_STEP: u64 = 128 * 1024;
/// Fanout bits are chosen so that a bucket holds about this many entries.
const BUCKET_TARGET: u64 = 8;
const MAX_BITS: u32 = 22;

/// One entry: where a blob is, in the cache's own pack and index-file numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEntry {
    pub id: ChunkId,
    pub pack: u32,
    pub file: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: u8,
    pub comp: u8,
    pub mac: [u8; 8],
}

impl RunEntry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[..32].copy_from_slice(&self.id.0);
        b[32..36].copy_from_slice(&self.pack.to_le_bytes());
        b[36..40].copy_from_slice(&self.file.to_le_bytes());
        b[40..44].copy_from_slice(&self.offset.to_le_bytes());
        b[44..48].copy_from_slice(&self.stored_len.to_le_bytes());
        b[48..52].copy_from_slice(&self.raw_len.to_le_bytes());
        b[52] = self.kind;
        b[53] = self.comp;
        // 54..56 reserved, zero.
        b[56..64].copy_from_slice(&self.mac);
        b
    }

    /// Decode one entry; the reserved bytes must be zero.
    pub fn decode(b: &[u8]) -> Option<RunEntry> {
        if b.len() != ENTRY_LEN || b[54] != 0 || b[55] != 0 {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(RunEntry {
            id: ChunkId(b[..32].try_into().ok()?),
            pack: u(32),
            file: u(36),
            offset: u(40),
            stored_len: u(44),
            raw_len: u(48),
            kind: b[52],
            comp: b[53],
            mac: b[56..64].try_into().ok()?,
        })
    }
}

/// The fanout width for `count` entries.
pub fn bits_for(count: u64) -> u32 {
    let buckets = count.div_ceil(BUCKET_TARGET).max(1);
    (64 - (buckets - 1).leading_zeros()).min(MAX_BITS)
}

fn bucket(id: &ChunkId, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes"));
    (top >> (32 - bits)) as usize
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Cache(format!("index run {}: {why}", path.display()))
}

/// An open run file.
pub struct Run {
    file: File,
    path: std::path::PathBuf,
    count: u64,
    bits: u32,
    fanout: Vec<u32>,
}

impl Run {
    /// Open and check a run file: header, length, and a monotonic fanout ending at the count.
    pub fn open(path: &Path) -> Result<Run> {
        let mut file = File::open(path)
            .map_err(|e| Error::io(format!("open index run {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat index run {}", path.display()), e))?
            .len();
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut h)
            .map_err(|_| corrupt(path, "shorter than its header"))?;
        if &h[..8] != MAGIC {
            return Err(corrupt(path, "bad magic"));
        }
        let count = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let bits = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        if bits > MAX_BITS || h[20..32].iter().any(|&b| b != 0) {
            return Err(corrupt(path, "bad header"));
        }
        let buckets = 1u64 << bits;
        let want = HEADER_LEN
            .checked_add(4 * buckets)
            .and_then(|n| n.checked_add(count.checked_mul(ENTRY_LEN as u64)?));
        if want != Some(len) || count > u32::MAX as u64 {
            return Err(corrupt(
                path,
                format!("{len} bytes do not fit {count} entries"),
            ));
        }
        // Decoded 64 KiB at a time: the raw bytes never sit beside the whole table.
        let mut fanout: Vec<u32> = Vec::with_capacity(buckets as usize);
        let mut raw = vec![0u8; (4 * buckets as usize).min(1 << 16)];
        while fanout.len() < buckets as usize {
            let n = raw.len().min(4 * (buckets as usize - fanout.len()));
            file.read_exact(&mut raw[..n])
                .map_err(|e| Error::io(format!("read index run {}", path.display()), e))?;
            fanout.extend(
                raw[..n]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
            );
        }
        if fanout.windows(2).any(|w| w[0] > w[1]) || *fanout.last().expect("1+") as u64 != count {
            return Err(corrupt(path, "fanout is not a cumulative count"));
        }
        Ok(Run {
            file,
            path: path.to_path_buf(),
            count,
            bits,
            fanout,
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries_at(&self) -> u64 {
        HEADER_LEN + 4 * self.fanout.len() as u64
    }

    /// Every entry with chunk ID `id` (usually none or one), appended to `out` with its
    /// position in the run (0-based, in sorted order).
    pub fn find(&self, id: &ChunkId, out: &mut Vec<(u64, RunEntry)>) -> Result<()> {
        let b = bucket(id, self.bits);
        let start = if b == 0 { 0 } else { self.fanout[b - 1] } as u64;
        let end = self.fanout[b] as u64;
        if start == end {
            return Ok(());
        }
        let mut buf = vec![0u8; ((end - start) as usize) * ENTRY_LEN];
        self.file
            .read_exact_at(&mut buf, self.entries_at() + start * ENTRY_LEN as u64)
            .map_err(|e| Error::io(format!("read index run {}", self.path.display()), e))?;
        // Binary search for the first entry >= id, then take the equal ones.
        let key = |i: usize| &buf[i * ENTRY_LEN..i * ENTRY_LEN + 32];
        let n = (end - start) as usize;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(mid) < &id.0[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        while lo < n && key(lo) == &id.0[..] {
            let e = RunEntry::decode(&buf[lo * ENTRY_LEN..(lo + 1) * ENTRY_LEN])
                .ok_or_else(|| corrupt(&self.path, "malformed entry"))?;
            out.push((start + lo as u64, e));
            lo += 1;
        }
        Ok(())
    }

    /// A job that asks the kernel to read the run's entries into the page cache
    /// (`POSIX_FADV_WILLNEED`): one sequential read instead of a random read per lookup once
    /// the page cache has lost the run (after a reboot, or under a database's memory
    /// pressure). The call may block while it queues the reads, so it is returned to be run on
    /// a thread of the caller's choosing, with its own descriptor. Advisory only: `find` still
    /// reads and checks what it uses.
    pub fn prefetcher(&self) -> Result<impl FnOnce() -> Result<()> + Send + 'static> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("reopen index run {}", self.path.display()), e))?;
        let (at, len, path) = (
            self.entries_at(),
            self.count * ENTRY_LEN as u64,
            self.path.clone(),
        );
        Ok(move || {
            use std::os::fd::AsRawFd;
            // Linux reads at most the device's read-ahead size (`read_ahead_kb`, often 128 KiB)
            // per call and ignores the rest of the range, so the range goes in steps no
            // bigger than that.
            let mut off = 0;
            while off < len {
                let n = PREFETCH_STEP.min(len - off);
                // SAFETY: posix_fadvise reads only its integer arguments; `file` is open.
                let r = unsafe {
                    libc::posix_fadvise(
                        file.as_raw_fd(),
                        (at + off) as libc::off_t,
                        n as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    )
                };
                if r != 0 {
                    return Err(Error::io(
                        format!("prefetch index run {}", path.display()),
                        std::io::Error::from_raw_os_error(r),
                    ));
                }
                off += n;
            }
            Ok(())
        })
    }

    /// All entries in order, read sequentially (for merges).
    pub fn iter(&self) -> Result<RunIter> {
        let mut f = self
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("reopen index run {}", self.path.display()), e))?;
        f.seek(SeekFrom::Start(self.entries_at()))
            .map_err(|e| Error::io(format!("seek index run {}", self.path.display()), e))?;
        Ok(RunIter {
            // A merge may read hundreds of runs at once (a first sync of a large repository):
            // 64 KiB each keeps that to tens of MiB.
            r: BufReader::with_capacity(1 << 16, f),
            left: self.count,
            last: None,
            path: self.path.clone(),
        })
    }
}

/// A sequential reader of a run's entries; checks the sort order as it goes.
pub struct RunIter {
    r: BufReader<File>,
    left: u64,
    last: Option<ChunkId>,
    path: std::path::PathBuf,
}

impl Iterator for RunIter {
    type Item = Result<RunEntry>;
    fn next(&mut self) -> Option<Result<RunEntry>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut b = [0u8; ENTRY_LEN];
        if let Err(e) = self.r.read_exact(&mut b) {
            self.left = 0;
            return Some(Err(Error::io(
                format!("read index run {}", self.path.display()),
                e,
            )));
        }
        let Some(e) = RunEntry::decode(&b) else {
            self.left = 0;
            return Some(Err(corrupt(&self.path, "malformed entry")));
        };
        if self.last.is_some_and(|l| l > e.id) {
            self.left = 0;
            return Some(Err(corrupt(&self.path, "entries out of order")));
        }
        self.last = Some(e.id);
        Some(Ok(e))
    }
}

/// Write `entries` (sorted by ID; at most `max_count` of them) as a run file at `path`;
/// returns how many were written. The file is written whole, then synced: the caller renames
/// nothing, it records the name in the cache only after this returns.
pub fn write(
    path: &Path,
    max_count: u64,
    entries: impl Iterator<Item = Result<RunEntry>>,
) -> Result<u64> {
    let bits = bits_for(max_count);
    let buckets = 1usize << bits;
    let io = |e| Error::io(format!("write index run {}", path.display()), e);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(&vec![0u8; HEADER_LEN as usize + 4 * buckets])
        .map_err(io)?;
    let mut counts = vec![0u32; buckets];
    let mut n = 0u64;
    let mut last: Option<ChunkId> = None;
    for e in entries {
        let e = e?;
        if last.is_some_and(|l| l > e.id) {
            return Err(Error::Cache("index run entries are not sorted".into()));
        }
        if n == max_count {
            return Err(Error::Cache("more index run entries than announced".into()));
        }
        last = Some(e.id);
        counts[bucket(&e.id, bits)] += 1;
        w.write_all(&e.encode()).map_err(io)?;
        n += 1;
    }
    let mut header = Vec::with_capacity(HEADER_LEN as usize + 4 * buckets);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&n.to_le_bytes());
    header.extend_from_slice(&bits.to_le_bytes());
    header.extend_from_slice(&[0u8; 12]);
    let mut acc = 0u32;
    for c in counts {
        acc += c;
        header.extend_from_slice(&acc.to_le_bytes());
    }
    let mut f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(n)
}

/// Merge sorted entry streams into one sorted stream (a k-way merge over the heads), keeping
/// only the entries `keep` accepts.
pub fn merge<'a>(
    mut inputs: Vec<RunIter>,
    keep: impl Fn(&RunEntry) -> bool + 'a,
) -> impl Iterator<Item = Result<RunEntry>> + 'a {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut heap: BinaryHeap<Reverse<(ChunkId, usize, [u8; ENTRY_LEN])>> = BinaryHeap::new();
    let mut failed: Option<Error> = None;
    for (i, it) in inputs.iter_mut().enumerate() {
        match it.next() {
            Some(Ok(e)) => heap.push(Reverse((e.id, i, e.encode()))),
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
    }
    std::iter::from_fn(move || loop {
        if let Some(e) = failed.take() {
            heap.clear();
            return Some(Err(e));
        }
        let Reverse((_, i, raw)) = heap.pop()?;
        match inputs[i].next() {
            Some(Ok(n)) => heap.push(Reverse((n.id, i, n.encode()))),
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
        let e = RunEntry::decode(&raw).expect("encoded above");
        if keep(&e) {
            return Some(Ok(e));
        }
    })
}

/// How many of the pages of the file at `path`, from byte `from` on, are in the page cache,
/// and how many pages that is (`mincore` over a read-only mapping). For the tests and the scale
/// bench, which check what the read-ahead did.
pub fn resident_pages(path: &Path, from: u64) -> std::io::Result<(usize, usize)> {
    use std::os::fd::AsRawFd;
    const PAGE: usize = 4096;
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok((0, 0));
    }
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: a read-only shared mapping of an open file, never dereferenced and unmapped
    // before returning; mincore writes one byte per page into `vec`, which has that many.
    let r = unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if m == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::mincore(m, len, vec.as_mut_ptr());
        libc::munmap(m, len);
        r
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tail = &vec[(from as usize / PAGE).min(vec.len())..];
    Ok((tail.iter().filter(|&&b| b & 1 == 1).count(), tail.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32) -> RunEntry {
        let id = *blake3::hash(&i.to_le_bytes()).as_bytes();
        RunEntry {
            id: ChunkId(id),
            pack: i % 7,
            file: i % 3,
            offset: i,
            stored_len: 100 + i,
            raw_len: 60 + i,
            kind: (i % 2) as u8,
            comp: 1,
            mac: [i as u8; 8],
        }
    }

    fn sorted(range: std::ops::Range<u32>) -> Vec<RunEntry> {
        let mut v: Vec<RunEntry> = range.map(entry).collect();
        v.sort_by_key(|e| e.id);
        v
    }

    #[test]
    fn write_open_find_and_iterate() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u32, 1, 5, 1000, 20_000] {
            let p = dir.path().join(format!("r{n}"));
            let v = sorted(0..n);
            assert_eq!(
                write(&p, n as u64, v.iter().copied().map(Ok)).unwrap(),
                n as u64
            );
            let r = Run::open(&p).unwrap();
            assert_eq!(r.count(), n as u64);
            for i in (0..n).step_by(7) {
                let mut out = vec![];
                r.find(&entry(i).id, &mut out).unwrap();
                let pos = v.iter().position(|e| *e == entry(i)).unwrap() as u64;
                assert_eq!(out, vec![(pos, entry(i))]);
            }
            let mut out = vec![];
            r.find(&entry(n + 1).id, &mut out).unwrap();
            assert!(out.is_empty());
            let all: Vec<RunEntry> = r.iter().unwrap().map(|e| e.unwrap()).collect();
            assert_eq!(all, v);
        }
    }

    #[test]
    fn prefetch_reads_the_run_into_the_page_cache() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        // 12.8 MB: more than one advice call reads on any disk (Linux caps a call at the
        // device's read-ahead size, 8 MiB on the VM this was written on).
        write(&p, 200_000, sorted(0..200_000).into_iter().map(Ok)).unwrap();
        let r = Run::open(&p).unwrap();
        // Evict it (the file is synced, so its pages are clean and may be dropped).
        let f = File::open(&p).unwrap();
        // SAFETY: integer arguments only.
        assert_eq!(
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
            0
        );
        // Only the entries are read ahead; the header and fanout were read by `open`.
        let (before, pages) = resident_pages(&p, r.entries_at()).unwrap();
        assert!(pages > 3000);
        r.prefetcher().unwrap()().unwrap();
        // Readahead is asynchronous: wait (bounded) for the pages to arrive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = resident_pages(&p, r.entries_at()).unwrap().0;
        while after < pages && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            after = resident_pages(&p, r.entries_at()).unwrap().0;
        }
        // A filesystem that ignores DONTNEED leaves `before` high: then only `after` says
        // anything.
        assert_eq!(
            after, pages,
            "pages resident after the prefetch (before: {before})"
        );
        if before == pages {
            eprintln!("note: the filesystem kept the run cached through POSIX_FADV_DONTNEED");
        }
    }

    #[test]
    fn merge_keeps_order_duplicates_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let a = sorted(0..3000);
        let b = sorted(2000..5000);
        let (pa, pb, pc) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write(&pa, 3000, a.iter().copied().map(Ok)).unwrap();
        write(&pb, 3000, b.iter().copied().map(Ok)).unwrap();
        let (ra, rb) = (Run::open(&pa).unwrap(), Run::open(&pb).unwrap());
        let n = write(
            &pc,
            6000,
            merge(vec![ra.iter().unwrap(), rb.iter().unwrap()], |e| {
                e.file != 0
            }),
        )
        .unwrap();
        let rc = Run::open(&pc).unwrap();
        let got: Vec<RunEntry> = rc.iter().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(got.len() as u64, n);
        let mut want: Vec<RunEntry> = a.into_iter().chain(b).filter(|e| e.file != 0).collect();
        want.sort_by_key(|e| e.id);
        assert_eq!(got, want);
        // An ID in both inputs is found twice.
        let twice = (2000..3000).find(|i| i % 3 != 0).unwrap();
        let mut out = vec![];
        rc.find(&entry(twice).id, &mut out).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn damaged_runs_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        write(&p, 100, sorted(0..100).into_iter().map(Ok)).unwrap();
        let good = std::fs::read(&p).unwrap();
        let mut cases: Vec<Vec<u8>> =
            vec![good[..good.len() - 1].to_vec(), good[..10].to_vec(), vec![]];
        let mut magic = good.clone();
        magic[0] ^= 1;
        cases.push(magic);
        let mut bits = good.clone();
        bits[16] = 30;
        cases.push(bits);
        let mut fan = good.clone();
        fan[HEADER_LEN as usize] = 0xff;
        cases.push(fan);
        for (i, c) in cases.iter().enumerate() {
            std::fs::write(&p, c).unwrap();
            assert!(
                matches!(Run::open(&p), Err(Error::Cache(_))),
                "case {i} opened"
            );
        }
        // Entries out of order are caught by the sequential reader.
        let mut swapped = good.clone();
        let at = HEADER_LEN as usize + 4 * (1 << bits_for(100));
        let (x, y) = (at, at + ENTRY_LEN);
        let first: Vec<u8> = swapped[x..y].to_vec();
        let second: Vec<u8> = swapped[y..y + ENTRY_LEN].to_vec();
        swapped[x..y].copy_from_slice(&second);
        swapped[y..y + ENTRY_LEN].copy_from_slice(&first);
        std::fs::write(&p, &swapped).unwrap();
        if let Ok(r) = Run::open(&p) {
            assert!(r.iter().unwrap().any(|e| e.is_err()));
        }
    }
}
