//! Authenticated encryption and the master key.
//!
//! Every sealed item is `nonce (24) ‖ ciphertext ‖ tag (16)` under XChaCha20-Poly1305 with a
//! fresh random 192-bit nonce; random nonces of that size never collide in practice, so no
//! counter state has to survive crashes. The associated data binds what the item is (its kind,
//! and for blobs its chunk ID), so an item moved to another ID or kind fails to open.
//! Secrets zeroize on drop and never appear in `Debug` output.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed item adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of the serialized master key material inside a key file.
pub const MASTER_KEY_LEN: usize = 32 + 32 + 8;

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// The repository's secret material, generated once at `init` and wrapped by key files.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    /// Encrypts blobs, pack headers, index files, snapshots and locks.
    pub data_key: [u8; 32],
    /// Keys the BLAKE3 that names chunks.
    pub id_key: [u8; 32],
    /// XORed into FastCDC's gear table so cut points are not predictable from content alone.
    pub chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = MasterKey {
            data_key: [0; 32],
            id_key: [0; 32],
            chunker_seed: 0,
        };
        random_bytes(&mut k.data_key);
        random_bytes(&mut k.id_key);
        let mut seed = [0u8; 8];
        random_bytes(&mut seed);
        k.chunker_seed = u64::from_le_bytes(seed);
        k
    }

    /// `data_key ‖ id_key ‖ chunker_seed (u64 LE)`, 72 bytes.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN));
        v.extend_from_slice(&self.data_key);
        v.extend_from_slice(&self.id_key);
        v.extend_from_slice(&self.chunker_seed.to_le_bytes());
        v
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != MASTER_KEY_LEN {
            return None;
        }
        let mut k = MasterKey {
            data_key: [0; 32],
            id_key: [0; 32],
            chunker_seed: 0,
        };
        k.data_key.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k.chunker_seed = u64::from_le_bytes(b[64..72].try_into().ok()?);
        Some(k)
    }

    /// Key for the config's MAC, derived so it is never the same key used for encryption.
    pub fn config_mac_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(blake3::derive_key(
            "dumpvault v1 config mac",
            &self.data_key,
        ))
    }

    /// Key for the MACs the local cache keeps over its rows (format-spec X10): derived, so the
    /// cache never holds anything computed under a key that encrypts, and only a holder of the
    /// data key can make rows the cache accepts.
    /// The key of the MACs on cached index entries (format-spec/14-cache.md, X10).
    pub fn cache_table_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(blake3::derive_key(
            "dumpvault cache table v1",
            &self.data_key,
        ))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.data_key, aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.data_key, aad, sealed)
    }

    /// [`MasterKey::open`] without allocating: decrypts `nonce ‖ ciphertext ‖ tag` in its own
    /// buffer and returns the plaintext part of it. On failure the buffer's contents are
    /// unspecified and nothing is returned.
    pub fn open_in_place<'b>(&self, aad: &[u8], sealed: &'b mut [u8]) -> Option<&'b [u8]> {
        open_in_place(&self.data_key, aad, sealed)
    }
}

/// Seal with a fresh random nonce: returns `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce);
    seal_with_nonce(key, &nonce, aad, plaintext)
}

/// Deterministic sealing, for known-answer tests only: production code must use [`seal`].
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ct);
    out
}

/// Open `nonce ‖ ciphertext ‖ tag`. `None` means the item is not authentic under this key and
/// associated data (tampered, truncated, moved, or the wrong key); no plaintext is released.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// [`open`] in place: the plaintext is left in `sealed[NONCE_LEN..len - TAG_LEN]`, which is
/// returned; `None` (and a scrambled buffer) when the item is not authentic.
pub fn open_in_place<'b>(key: &[u8; 32], aad: &[u8], sealed: &'b mut [u8]) -> Option<&'b [u8]> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            ct,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .ok()?;
    Some(&*ct)
}

/// Argon2id parameters of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The floor below which a key file is refused (OWASP's minimum for Argon2id: 19 MiB, t=2).
    pub const FLOOR: KdfParams = KdfParams {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    /// What `init` and `key add` use unless told otherwise: 64 MiB, 3 passes.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// A machine key file (format-spec/02, "Machine keys"): no password KDF at all, because
    /// what opens it is a 256-bit random secret that dumpvault generated, not a password, so
    /// there is nothing for a KDF to stretch.
    pub const MACHINE: KdfParams = KdfParams {
        m_cost: 0,
        t_cost: 0,
        p_cost: 0,
    };
    /// Upper bound: a hostile key file must not make us allocate unbounded memory (4 GiB).
    pub const CEILING_M_COST: u32 = 4 * 1024 * 1024;

    pub fn check(&self) -> Result<()> {
        let f = Self::FLOOR;
        if self.m_cost < f.m_cost || self.t_cost < f.t_cost || self.p_cost < f.p_cost {
            return Err(Error::WeakKeyParameters(format!(
                "Argon2id m={} KiB t={} p={} is below the floor m={} KiB t={} p={}",
                self.m_cost, self.t_cost, self.p_cost, f.m_cost, f.t_cost, f.p_cost
            )));
        }
        if self.m_cost > Self::CEILING_M_COST || self.t_cost > 100 || self.p_cost > 64 {
            return Err(Error::WeakKeyParameters(format!(
                "Argon2id m={} KiB t={} p={} exceeds the ceiling",
                self.m_cost, self.t_cost, self.p_cost
            )));
        }
        Ok(())
    }

    /// Derive the 32-byte wrapping key from a password.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        self.check()?;
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::WeakKeyParameters(e.to_string()))?;
        let mut memory: Vec<argon2::Block> = Vec::with_capacity(params.block_count());
        advise_huge_pages(&memory);
        memory.resize(params.block_count(), argon2::Block::default());
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        let derived = a.hash_password_into_with_memory(password, salt, out.as_mut(), &mut memory);
        for b in memory.iter_mut() {
            b.as_mut().zeroize();
        }
        derived.map_err(|e| Error::WeakKeyParameters(e.to_string()))?;
        Ok(out)
    }
}

/// The spelling of a machine secret: this prefix and 64 lower-case hex digits.
pub const MACHINE_SECRET_PREFIX: &str = "dvmk1-";

/// The 32 bytes of a machine secret, if `s` is one (surrounding whitespace ignored).
pub fn parse_machine_secret(s: &[u8]) -> Option<zeroize::Zeroizing<[u8; 32]>> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let hex_part = s.strip_prefix(MACHINE_SECRET_PREFIX)?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_part, out.as_mut()).ok()?;
    Some(out)
}

/// A new machine secret, spelled for a password file.
pub fn new_machine_secret() -> zeroize::Zeroizing<String> {
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    random_bytes(b.as_mut());
    zeroize::Zeroizing::new(format!(
        "{MACHINE_SECRET_PREFIX}{}",
        hex::encode(b.as_ref())
    ))
}

/// The wrapping key of a machine key file: BLAKE3 in key-derivation mode over the secret and
/// the key file's salt. A full-entropy secret needs no stretching: guessing it is a 2^256
/// search, with or without Argon2 in front.
pub fn machine_wrap_key(secret: &[u8; 32], salt: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key("dumpvault machine key v1");
    h.update(secret);
    h.update(salt);
    zeroize::Zeroizing::new(*h.finalize().as_bytes())
}

/// Ask Linux to back a large allocation with transparent huge pages (with THP in its common
/// "madvise" mode they are used only when asked): Argon2id's 64 MiB then takes a few dozen
/// page faults instead of 16,384 (measured: 16,784 -> 902 for a whole `snapshots` run), and its
/// random block reads need fewer TLB entries. Call it before the memory is first touched.
/// Advice only: nothing changes where it is not supported.
fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = (start + v.capacity() * std::mem::size_of::<T>()) & !(HUGE - 1);
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: the range lies inside the vector's own allocation and is page-aligned;
            // MADV_HUGEPAGE changes how it is backed, never its contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = MasterKey::generate();
        let s = k.seal(b"aad", b"hello");
        assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(b"aad", &s).unwrap(), b"hello");
        assert!(k.open(b"other", &s).is_none(), "aad must be bound");
        let mut t = s.clone();
        t[30] ^= 1;
        assert!(k.open(b"aad", &t).is_none(), "bit flip must be detected");
        assert!(k.open(b"aad", &s[..s.len() - 1]).is_none());
        assert!(k.open(b"aad", &s[..10]).is_none());
        let mut buf = s.clone();
        assert_eq!(k.open_in_place(b"aad", &mut buf).unwrap(), b"hello");
        let mut buf = t.clone();
        assert!(k.open_in_place(b"aad", &mut buf).is_none());
        let mut buf = s.clone();
        assert!(k.open_in_place(b"other", &mut buf).is_none());
    }

    #[test]
    fn nonces_are_fresh() {
        let k = MasterKey::generate();
        assert_ne!(
            k.seal(b"", b"x")[..NONCE_LEN],
            k.seal(b"", b"x")[..NONCE_LEN]
        );
    }

    /// Known-answer test, also printed in format-spec/ (section "Known-answer vectors").
    #[test]
    fn xchacha_known_answer() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 24] = core::array::from_fn(|i| 0x40 + i as u8);
        let sealed = seal_with_nonce(&key, &nonce, b"dumpvault", b"hello, dumpvault");
        assert_eq!(
            hex::encode(&sealed),
            KAT_SEALED,
            "XChaCha20-Poly1305 known answer changed"
        );
        assert_eq!(
            open(&key, b"dumpvault", &sealed).unwrap(),
            b"hello, dumpvault"
        );
    }
    /// Cross-checked against PyCryptodome's XChaCha20-Poly1305.
    const KAT_SEALED: &str = "404142434445464748494a4b4c4d4e4f5051525354555657bc5c691cbfcc5972fa99f7c8cee909e6fcfb7b7b0c86c09ef66b89ebc0efe48f";

    #[test]
    fn argon2_known_answer_and_floor() {
        let p = KdfParams::FLOOR;
        let k = p.derive(b"correct horse", &[7u8; 32]).unwrap();
        assert_eq!(hex::encode(*k), KAT_ARGON2);
        let weak = KdfParams {
            m_cost: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(matches!(
            weak.derive(b"x", &[0; 32]),
            Err(Error::WeakKeyParameters(_))
        ));
    }
    /// Cross-checked against argon2-cffi (the reference C implementation).
    const KAT_ARGON2: &str = "dfceb9fef461168193da7570953b192e399577a55b057abb50e42a4a454d6ba0";

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey::generate();
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn master_key_round_trip() {
        let k = MasterKey::generate();
        let b = k.to_bytes();
        let k2 = MasterKey::from_bytes(&b).unwrap();
        assert_eq!(k.data_key, k2.data_key);
        assert_eq!(k.id_key, k2.id_key);
        assert_eq!(k.chunker_seed, k2.chunker_seed);
        assert!(MasterKey::from_bytes(&b[..71]).is_none());
    }
}
