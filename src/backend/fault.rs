//! A fault-injecting `Backend` wrapper, for tests: it fails the Nth call of a given kind,
//! returns a short read, stores a truncated object while reporting success, flips a bit in
//! what a read returns, or deletes the object a read is about to fetch. Everything above the backend must turn each of these into a clear
//! error (or, for the silent ones, into damage that `fsck`/`restore` name), never into a
//! snapshot that cannot be restored or into unauthenticated bytes on the output.
//!
//! Invariants:
//! - Deterministic: which call faults is fixed by the rules (calls are counted per rule, in
//!   the order the wrapper sees them), and every random choice (which bit, how short) comes
//!   from a splitmix64 generator seeded by the caller. The same seed and the same sequence of
//!   calls inject the same faults.
//! - A fault never reaches the inner backend as a partial operation except `TruncateWrite`,
//!   which deliberately stores a prefix under the full object's name (what a store without
//!   atomic writes, or bad media, could leave), and `Vanish`, which deletes the object whole.
//! - Every injected fault is recorded (`injected`), so a test can assert that the error or
//!   the fsck report names exactly the object that was damaged.

use std::sync::{Arc, Mutex};

use super::{Backend, Name};
use crate::error::{Error, ObjectKind, Result};

/// Which backend call a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    GetRange,
    List,
    Delete,
    Size,
}

/// What happens to the call a rule fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with `Error::Backend` and does nothing (for `put`: nothing is stored).
    Fail,
    /// A read (`get`, `get_range`) returns fewer bytes than the object or range holds
    /// (at least one byte fewer; possibly none at all). Other calls: treated as `Fail`.
    ShortRead,
    /// A `put` stores only a prefix of the data (at least one byte fewer) under the full
    /// object's name, and reports success. Other calls: treated as `Fail`.
    TruncateWrite,
    /// A read returns the right number of bytes with one bit flipped (nothing is changed in
    /// the store). An empty read is returned unchanged. Other calls: treated as `Fail`.
    FlipBit,
    /// The object is deleted from the store just before a read or stat (`get`, `get_range`,
    /// `size`, `modified`) runs, which then finds it absent: what a concurrent prune does
    /// between another command's listing and its read. Other calls: treated as `Fail`.
    Vanish,
}

/// One rule: fault the `nth` (1-based) matching call, and the `times − 1` matching calls
/// after it (`times = u64::MAX`: every call from the `nth` on, an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub op: Op,
    /// Only calls about this object kind count; `None` counts every kind.
    pub kind: Option<ObjectKind>,
    pub nth: u64,
    pub times: u64,
    pub fault: Fault,
}

impl Rule {
    /// Fault the `nth` call of `op` (any object kind), once.
    pub fn nth(op: Op, nth: u64, fault: Fault) -> Rule {
        Rule {
            op,
            kind: None,
            nth,
            times: 1,
            fault,
        }
    }

    /// Only count calls about objects of `kind`.
    pub fn of(mut self, kind: ObjectKind) -> Rule {
        self.kind = Some(kind);
        self
    }

    /// Fault `times` consecutive matching calls (`u64::MAX`: all that follow).
    pub fn times(mut self, times: u64) -> Rule {
        self.times = times;
        self
    }

    fn matches(&self, op: Op, kind: ObjectKind) -> bool {
        self.op == op && self.kind.is_none_or(|k| k == kind)
    }
}

/// A fault that was injected: which call, on which object, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub op: Op,
    pub kind: ObjectKind,
    /// The object's name (empty for `list`).
    pub name: Name,
    pub fault: Fault,
    /// For `FlipBit`: the bit's position in the returned bytes (byte · 8 + bit). For
    /// `ShortRead` and `TruncateWrite`: how many bytes were returned or stored.
    pub detail: u64,
}

struct State {
    rules: Vec<(Rule, u64)>,
    rng: u64,
    injected: Vec<Injected>,
}

pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    state: Mutex<State>,
}

impl FaultBackend {
    /// Wrap `inner`; `seed` fixes every random choice (bit positions, short lengths).
    pub fn new(inner: Arc<dyn Backend>, seed: u64) -> FaultBackend {
        FaultBackend {
            inner,
            state: Mutex::new(State {
                rules: Vec::new(),
                rng: seed,
                injected: Vec::new(),
            }),
        }
    }

    /// Add a rule. Its call count starts now: `nth = 1` is the next matching call.
    pub fn add(&self, rule: Rule) {
        self.state().rules.push((rule, 0));
    }

    /// Builder form of `add`.
    pub fn with(self, rule: Rule) -> FaultBackend {
        self.add(rule);
        self
    }

    /// Drop every rule (the store keeps whatever damage was done).
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// The faults injected so far, in order.
    pub fn injected(&self) -> Vec<Injected> {
        self.state().injected.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count this call against every rule; the first rule that fires decides. Returns the
    /// fault and a random word for the fault's choices.
    fn decide(&self, op: Op, kind: ObjectKind) -> Option<(Fault, u64)> {
        let mut st = self.state();
        let mut fired = None;
        for (rule, seen) in st.rules.iter_mut() {
            if !rule.matches(op, kind) {
                continue;
            }
            *seen += 1;
            let hit = *seen >= rule.nth && *seen - rule.nth < rule.times;
            if hit && fired.is_none() {
                fired = Some(rule.fault);
            }
        }
        let fault = fired?;
        Some((fault, splitmix64(&mut st.rng)))
    }

    fn record(&self, op: Op, kind: ObjectKind, name: &str, fault: Fault, detail: u64) {
        self.state().injected.push(Injected {
            op,
            kind,
            name: name.to_string(),
            fault,
            detail,
        });
    }

    /// Delete `name` from the inner store (it may be absent already) and record it.
    fn vanish(&self, op: Op, kind: ObjectKind, name: &str) {
        let _ = self.inner.delete(kind, name);
        self.record(op, kind, name, Fault::Vanish, 0);
    }

    fn fail(&self, op: Op, kind: ObjectKind, name: &str) -> Error {
        self.record(op, kind, name, Fault::Fail, 0);
        Error::Backend(format!("injected fault: {op:?} {kind} {name}"))
    }

    /// Apply a read fault to bytes the inner backend returned.
    fn damage_read(
        &self,
        op: Op,
        kind: ObjectKind,
        name: &str,
        (fault, r): (Fault, u64),
        mut data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        match fault {
            Fault::ShortRead => {
                let keep = match data.len() {
                    0 => 0,
                    n => (r % n as u64) as usize,
                };
                data.truncate(keep);
                self.record(op, kind, name, fault, keep as u64);
                Ok(data)
            }
            Fault::FlipBit => {
                if data.is_empty() {
                    return Ok(data);
                }
                let bit = r % (data.len() as u64 * 8);
                data[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.record(op, kind, name, fault, bit);
                Ok(data)
            }
            Fault::Fail | Fault::TruncateWrite | Fault::Vanish => Err(self.fail(op, kind, name)),
        }
    }
}

/// splitmix64: tiny, fast, and good enough to spread fault choices; deterministic by seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Backend for FaultBackend {
    fn location(&self) -> String {
        format!("fault:{}", self.inner.location())
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        match self.decide(Op::List, kind) {
            Some(_) => Err(self.fail(Op::List, kind, "")),
            None => self.inner.list(kind),
        }
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        match self.decide(Op::Get, kind) {
            Some((Fault::Fail, _)) => Err(self.fail(Op::Get, kind, name)),
            Some((Fault::Vanish, _)) => {
                self.vanish(Op::Get, kind, name);
                self.inner.get(kind, name)
            }
            Some(f) => {
                let data = self.inner.get(kind, name)?;
                self.damage_read(Op::Get, kind, name, f, data)
            }
            None => self.inner.get(kind, name),
        }
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.decide(Op::GetRange, kind) {
            Some((Fault::Fail, _)) => Err(self.fail(Op::GetRange, kind, name)),
            Some((Fault::Vanish, _)) => {
                self.vanish(Op::GetRange, kind, name);
                self.inner.get_range(kind, name, offset, len)
            }
            Some(f) => {
                let data = self.inner.get_range(kind, name, offset, len)?;
                self.damage_read(Op::GetRange, kind, name, f, data)
            }
            None => self.inner.get_range(kind, name, offset, len),
        }
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        match self.decide(Op::Size, kind) {
            Some((Fault::Vanish, _)) => {
                self.vanish(Op::Size, kind, name);
                self.inner.size(kind, name)
            }
            Some(_) => Err(self.fail(Op::Size, kind, name)),
            None => self.inner.size(kind, name),
        }
    }
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        // A stat, like `size`: the same rules fault it.
        match self.decide(Op::Size, kind) {
            Some((Fault::Vanish, _)) => {
                self.vanish(Op::Size, kind, name);
                self.inner.modified(kind, name)
            }
            Some(_) => Err(self.fail(Op::Size, kind, name)),
            None => self.inner.modified(kind, name),
        }
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        match self.decide(Op::Put, kind) {
            Some((Fault::TruncateWrite, r)) if !data.is_empty() => {
                let keep = (r % data.len() as u64) as usize;
                self.inner.put(kind, name, &data[..keep])?;
                self.record(Op::Put, kind, name, Fault::TruncateWrite, keep as u64);
                Ok(())
            }
            Some(_) => Err(self.fail(Op::Put, kind, name)),
            None => self.inner.put(kind, name, data),
        }
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        match self.decide(Op::Delete, kind) {
            Some(_) => Err(self.fail(Op::Delete, kind, name)),
            None => self.inner.delete(kind, name),
        }
    }
    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    fn store() -> Arc<dyn Backend> {
        let m = MemoryBackend::default();
        for i in 0..4 {
            m.put(ObjectKind::Pack, &format!("p{i}"), &[i as u8; 100])
                .unwrap();
        }
        m.put(ObjectKind::Index, "i0", b"index").unwrap();
        Arc::new(m)
    }

    #[test]
    fn fails_exactly_the_nth_call_of_its_kind() {
        let f = FaultBackend::new(store(), 1).with(
            Rule::nth(Op::Get, 2, Fault::Fail)
                .of(ObjectKind::Pack)
                .times(2),
        );
        assert!(f.get(ObjectKind::Index, "i0").is_ok()); // another kind: not counted
        assert!(f.get(ObjectKind::Pack, "p0").is_ok()); // 1st
        assert!(matches!(
            f.get(ObjectKind::Pack, "p1"),
            Err(Error::Backend(_))
        )); // 2nd
        assert!(f.get(ObjectKind::Pack, "p2").is_err()); // 3rd
        assert!(f.get(ObjectKind::Pack, "p3").is_ok()); // 4th: the rule is spent
        let names: Vec<_> = f.injected().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["p1", "p2"]);
    }

    #[test]
    fn failed_put_stores_nothing_and_truncated_put_stores_a_prefix() {
        let inner = store();
        let f = FaultBackend::new(Arc::clone(&inner), 7)
            .with(Rule::nth(Op::Put, 1, Fault::Fail))
            .with(Rule::nth(Op::Put, 2, Fault::TruncateWrite));
        assert!(f.put(ObjectKind::Pack, "a", &[1; 50]).is_err());
        assert!(matches!(
            inner.get(ObjectKind::Pack, "a"),
            Err(Error::ObjectNotFound { .. })
        ));
        f.put(ObjectKind::Pack, "b", &[2; 50]).unwrap();
        let stored = inner.get(ObjectKind::Pack, "b").unwrap();
        assert!(stored.len() < 50 && stored.iter().all(|&b| b == 2));
        assert_eq!(f.injected()[1].detail, stored.len() as u64);
    }

    #[test]
    fn read_faults_are_deterministic_by_seed() {
        let read = |seed| {
            let f = FaultBackend::new(store(), seed)
                .with(Rule::nth(Op::GetRange, 1, Fault::FlipBit))
                .with(Rule::nth(Op::Get, 1, Fault::ShortRead));
            let flipped = f.get_range(ObjectKind::Pack, "p3", 10, 50).unwrap();
            let short = f.get(ObjectKind::Pack, "p3").unwrap();
            (flipped, short)
        };
        let (a, s) = read(42);
        assert_eq!(a.len(), 50);
        let diff: u32 = a.iter().map(|b| (b ^ 3).count_ones()).sum();
        assert_eq!(diff, 1, "exactly one bit flipped");
        assert!(s.len() < 100);
        assert_eq!(read(42), (a, s), "same seed, same faults");
        // The store itself is unchanged by read faults.
        let inner = store();
        let f = FaultBackend::new(Arc::clone(&inner), 3)
            .with(Rule::nth(Op::Get, 1, Fault::FlipBit).times(u64::MAX));
        let _ = f.get(ObjectKind::Pack, "p0").unwrap();
        assert_eq!(inner.get(ObjectKind::Pack, "p0").unwrap(), vec![0; 100]);
    }
}
