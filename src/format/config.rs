//! The repository config: the one object with a fixed name (`config`), written once at `init`.
//! It is plaintext so that a tool can read the format version without a password, and it
//! carries a keyed MAC so that tampering is detected once a key is opened.
//!
//! ```text
//! off len field
//!   0   8 magic "DVCONFIG"
//!   8   4 format version (u32)            — stable forever; everything after it may change
//!  12   8 incompat feature flags (u64)    — unknown bit: refuse to read or write
//!  20   8 ro_compat feature flags (u64)   — unknown bit: may read, must not write
//!  28   8 compat feature flags (u64)      — unknown bit: ignore
//!  36  32 repository id (random)
//!  68   4 chunker min size (u32)
//!  72   4 chunker average size (u32)
//!  76   4 chunker max size (u32)
//!  80   4 pack target size (u32)
//!  84   4 zstd level (i32)
//!  88   8 created, Unix seconds (i64)
//!  96  32 MAC: BLAKE3 keyed with derive_key("dumpvault v1 config mac", data_key) over bytes 0..96
//! 128     end
//! ```

use crate::crypto::MasterKey;
use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::format::FORMAT_VERSION;

pub const MAGIC: &[u8; 8] = b"DVCONFIG";
pub const LEN: usize = 128;
const MAC_OFFSET: usize = 96;

/// Feature bits this build understands (none yet in v1).
pub const KNOWN_INCOMPAT: u64 = 0;
pub const KNOWN_RO_COMPAT: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    pub incompat: u64,
    pub ro_compat: u64,
    pub compat: u64,
    pub repo_id: [u8; 32],
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    pub pack_target: u32,
    pub zstd_level: i32,
    pub created: i64,
}

/// Limits `init` enforces on chunker and pack parameters, and that readers check too.
pub const CHUNK_MIN_FLOOR: u32 = 256;
pub const CHUNK_MAX_CEILING: u32 = 16 * 1024 * 1024;
pub const PACK_TARGET_MIN: u32 = 1024 * 1024;
pub const PACK_TARGET_MAX: u32 = 1024 * 1024 * 1024;

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (a, b, c) = (self.chunk_min, self.chunk_avg, self.chunk_max);
        if !(a >= CHUNK_MIN_FLOOR && a <= b && b <= c && c <= CHUNK_MAX_CEILING) {
            return Err(format!(
                "chunker sizes min={a} avg={b} max={c} must satisfy {CHUNK_MIN_FLOOR} <= min <= avg <= max <= {CHUNK_MAX_CEILING}"
            ));
        }
        if !b.is_power_of_two() || b < 1024 {
            return Err(format!(
                "chunker average {b} must be a power of two >= 1024"
            ));
        }
        // The limits of the pinned FastCDC implementation, which asserts on anything outside.
        if a > 1024 * 1024 || b > 4 * 1024 * 1024 || c < 1024 {
            return Err(format!(
                "chunker sizes min={a} avg={b} max={c}: need min <= 1 MiB, avg <= 4 MiB, max >= 1 KiB"
            ));
        }
        if !(PACK_TARGET_MIN..=PACK_TARGET_MAX).contains(&self.pack_target) {
            return Err(format!("pack target {} out of range", self.pack_target));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(format!(
                "zstd level {} out of range 1..=22",
                self.zstd_level
            ));
        }
        Ok(())
    }

    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.incompat.to_le_bytes());
        b.extend_from_slice(&self.ro_compat.to_le_bytes());
        b.extend_from_slice(&self.compat.to_le_bytes());
        b.extend_from_slice(&self.repo_id);
        b.extend_from_slice(&self.chunk_min.to_le_bytes());
        b.extend_from_slice(&self.chunk_avg.to_le_bytes());
        b.extend_from_slice(&self.chunk_max.to_le_bytes());
        b.extend_from_slice(&self.pack_target.to_le_bytes());
        b.extend_from_slice(&self.zstd_level.to_le_bytes());
        b.extend_from_slice(&self.created.to_le_bytes());
        debug_assert_eq!(b.len(), MAC_OFFSET);
        let mac = blake3::keyed_hash(&key.config_mac_key(), &b);
        b.extend_from_slice(mac.as_bytes());
        b
    }

    /// Parse without a key: checks magic, version and feature flags only. The MAC is checked
    /// later by [`Config::verify_mac`], once a key file has been opened.
    pub fn decode(bytes: &[u8]) -> Result<Config> {
        let bad = |d: &str| Error::corrupt(ObjectKind::Config, "config", d);
        let mut r = Reader::new(bytes);
        if r.take(8) != Some(MAGIC.as_slice()) {
            return Err(bad("bad magic: not a dumpvault config"));
        }
        let version = r.u32().ok_or_else(|| bad("truncated"))?;
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(bad("format version 0"));
        }
        if bytes.len() != LEN {
            return Err(bad(&format!("length {} != {LEN}", bytes.len())));
        }
        let short = || bad("truncated");
        let c = Config {
            version,
            incompat: r.u64().ok_or_else(short)?,
            ro_compat: r.u64().ok_or_else(short)?,
            compat: r.u64().ok_or_else(short)?,
            repo_id: r.array().ok_or_else(short)?,
            chunk_min: r.u32().ok_or_else(short)?,
            chunk_avg: r.u32().ok_or_else(short)?,
            chunk_max: r.u32().ok_or_else(short)?,
            pack_target: r.u32().ok_or_else(short)?,
            zstd_level: r.u32().ok_or_else(short)? as i32,
            created: r.i64().ok_or_else(short)?,
        };
        if c.incompat & !KNOWN_INCOMPAT != 0 {
            return Err(Error::UnsupportedFeatures(c.incompat & !KNOWN_INCOMPAT));
        }
        c.validate().map_err(|d| bad(&d))?;
        Ok(c)
    }

    pub fn verify_mac(bytes: &[u8], key: &MasterKey) -> Result<()> {
        if bytes.len() != LEN {
            return Err(Error::corrupt(ObjectKind::Config, "config", "bad length"));
        }
        let mac = blake3::keyed_hash(&key.config_mac_key(), &bytes[..MAC_OFFSET]);
        // blake3::Hash compares in constant time.
        if mac != blake3::Hash::from_bytes(bytes[MAC_OFFSET..].try_into().expect("length checked"))
        {
            return Err(Error::corrupt(
                ObjectKind::Config,
                "config",
                "MAC mismatch: the config was modified",
            ));
        }
        Ok(())
    }

    /// Whether this build may write to (or prune) the repository.
    pub fn check_writable(&self) -> Result<()> {
        if self.ro_compat & !KNOWN_RO_COMPAT != 0 {
            return Err(Error::UnsupportedFeatures(
                self.ro_compat & !KNOWN_RO_COMPAT,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            version: 1,
            incompat: 0,
            ro_compat: 0,
            compat: 0,
            repo_id: [9; 32],
            chunk_min: 16 * 1024,
            chunk_avg: 64 * 1024,
            chunk_max: 256 * 1024,
            pack_target: 16 * 1024 * 1024,
            zstd_level: 3,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip_and_mac() {
        let k = MasterKey::generate();
        let b = sample().encode(&k);
        assert_eq!(b.len(), LEN);
        assert_eq!(Config::decode(&b).unwrap(), sample());
        Config::verify_mac(&b, &k).unwrap();
        let mut t = b.clone();
        t[70] ^= 1;
        assert!(Config::verify_mac(&t, &k).is_err());
        assert!(Config::verify_mac(&b, &MasterKey::generate()).is_err());
    }

    #[test]
    fn newer_version_and_unknown_features_refused() {
        let k = MasterKey::generate();
        let mut b = sample().encode(&k);
        b[8] = 2;
        assert!(matches!(
            Config::decode(&b),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let mut s = sample();
        s.incompat = 1 << 5;
        assert!(matches!(
            Config::decode(&s.encode(&k)),
            Err(Error::UnsupportedFeatures(_))
        ));
        let mut s = sample();
        s.ro_compat = 1;
        let c = Config::decode(&s.encode(&k)).unwrap();
        assert!(c.check_writable().is_err());
    }

    #[test]
    fn truncation_is_an_error() {
        let b = sample().encode(&MasterKey::generate());
        for n in 0..b.len() {
            assert!(Config::decode(&b[..n]).is_err(), "len {n}");
        }
    }
}
