//! Key files (`keys/<id>`): the master key material wrapped under an Argon2id-derived key.
//! Several key files may wrap the same master key, one per password.
//!
//! ```text
//! off   len field
//!   0     8 magic "DVKEYFIL"
//!   8     4 key file version (u32) = 1
//!  12    32 repository id (must equal the config's)
//!  44     4 Argon2id m_cost, KiB (u32)
//!  48     4 Argon2id t_cost (u32)
//!  52     4 Argon2id p_cost (u32)
//!  56    32 salt
//!  88     8 created, Unix seconds (i64)
//!  96     2 label length L (u16, <= 256)
//!  98     L label, UTF-8 (e.g. "root@db1")
//! 98+L  112 sealed master key: nonce (24) ‖ ciphertext (72) ‖ tag (16)
//! ```
//! Associated data of the seal: bytes `0 .. 98+L`, so parameters, salt and label are authentic.

use crate::crypto::{self, KdfParams, MasterKey, MASTER_KEY_LEN, SEAL_OVERHEAD};
use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::id::ObjectId;

pub const MAGIC: &[u8; 8] = b"DVKEYFIL";
pub const VERSION: u32 = 1;
pub const MAX_LABEL: usize = 256;
const SEALED_LEN: usize = MASTER_KEY_LEN + SEAL_OVERHEAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub repo_id: [u8; 32],
    pub kdf: KdfParams,
    pub salt: [u8; 32],
    pub created: i64,
    pub label: String,
    pub sealed: Vec<u8>,
}

impl KeyFile {
    /// Wrap `master` under `password`.
    pub fn create(
        master: &MasterKey,
        repo_id: [u8; 32],
        password: &[u8],
        kdf: KdfParams,
        label: &str,
        created: i64,
    ) -> Result<KeyFile> {
        if label.len() > MAX_LABEL {
            return Err(Error::InvalidInput(format!(
                "key label longer than {MAX_LABEL} bytes"
            )));
        }
        let mut salt = [0u8; 32];
        crypto::random_bytes(&mut salt);
        let wrap = if kdf == KdfParams::MACHINE {
            // Only a secret dumpvault generated may skip the KDF; a human password never can.
            let secret = crypto::parse_machine_secret(password).ok_or_else(|| {
                Error::InvalidInput("a machine key needs a generated machine secret".into())
            })?;
            crypto::machine_wrap_key(&secret, &salt)
        } else {
            kdf.derive(password, &salt)?
        };
        let mut kf = KeyFile {
            repo_id,
            kdf,
            salt,
            created,
            label: label.to_string(),
            sealed: Vec::new(),
        };
        let aad = kf.header();
        kf.sealed = crypto::seal(&wrap, &aad, &master.to_bytes());
        Ok(kf)
    }

    fn header(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(98 + self.label.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.repo_id);
        b.extend_from_slice(&self.kdf.m_cost.to_le_bytes());
        b.extend_from_slice(&self.kdf.t_cost.to_le_bytes());
        b.extend_from_slice(&self.kdf.p_cost.to_le_bytes());
        b.extend_from_slice(&self.salt);
        b.extend_from_slice(&self.created.to_le_bytes());
        b.extend_from_slice(&(self.label.len() as u16).to_le_bytes());
        b.extend_from_slice(self.label.as_bytes());
        b
    }

    /// Opened by a machine secret rather than a password (all three KDF parameters zero).
    pub fn is_machine(&self) -> bool {
        self.kdf == KdfParams::MACHINE
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.header();
        b.extend_from_slice(&self.sealed);
        b
    }

    pub fn decode(id: &ObjectId, bytes: &[u8]) -> Result<KeyFile> {
        let bad = |d: &str| Error::corrupt(ObjectKind::Key, id, d);
        let mut r = Reader::new(bytes);
        if r.take(8) != Some(MAGIC.as_slice()) {
            return Err(bad("bad magic"));
        }
        let version = r.u32().ok_or_else(|| bad("truncated"))?;
        if version == 0 {
            return Err(bad("key file version 0 is never valid"));
        }
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let short = || bad("truncated");
        let repo_id = r.array().ok_or_else(short)?;
        let kdf = KdfParams {
            m_cost: r.u32().ok_or_else(short)?,
            t_cost: r.u32().ok_or_else(short)?,
            p_cost: r.u32().ok_or_else(short)?,
        };
        let salt = r.array().ok_or_else(short)?;
        let created = r.i64().ok_or_else(short)?;
        let label_len = r.u16().ok_or_else(short)? as usize;
        if label_len > MAX_LABEL {
            return Err(bad("label too long"));
        }
        let label = std::str::from_utf8(r.take(label_len).ok_or_else(short)?)
            .map_err(|_| bad("label is not UTF-8"))?
            .to_string();
        let sealed = r.take(SEALED_LEN).ok_or_else(short)?.to_vec();
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(KeyFile {
            repo_id,
            kdf,
            salt,
            created,
            label,
            sealed,
        })
    }

    /// Unwrap the master key. `Ok(None)` means the password does not open this key file.
    /// Parameters below the floor are refused before any work is done.
    pub fn unwrap(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let wrap = if self.is_machine() {
            match crypto::parse_machine_secret(password) {
                Some(secret) => crypto::machine_wrap_key(&secret, &self.salt),
                None => return Ok(None),
            }
        } else {
            self.kdf.derive(password, &self.salt)?
        };
        Ok(
            crypto::open(&wrap, &self.header(), &self.sealed).and_then(|pt| {
                let k = MasterKey::from_bytes(&pt);
                let mut pt = pt;
                zeroize::Zeroize::zeroize(&mut pt);
                k
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let m = MasterKey::generate();
        let kf = KeyFile::create(&m, [3; 32], b"pw", KdfParams::FLOOR, "t@h", 5).unwrap();
        let b = kf.encode();
        let id = ObjectId::of(&b);
        let kf2 = KeyFile::decode(&id, &b).unwrap();
        assert_eq!(kf, kf2);
        assert_eq!(kf2.unwrap(b"pw").unwrap().unwrap().id_key, m.id_key);
        assert!(kf2.unwrap(b"nope").unwrap().is_none());
        // A machine key opens with its secret only, and never with a password.
        let secret = crypto::new_machine_secret();
        let mk =
            KeyFile::create(&m, [3; 32], secret.as_bytes(), KdfParams::MACHINE, "m", 5).unwrap();
        assert!(mk.is_machine());
        assert_eq!(
            mk.unwrap(secret.as_bytes()).unwrap().unwrap().id_key,
            m.id_key
        );
        assert!(mk.unwrap(b"pw").unwrap().is_none());
        let other = crypto::new_machine_secret();
        assert!(mk.unwrap(other.as_bytes()).unwrap().is_none());
        assert!(KeyFile::create(&m, [3; 32], b"pw", KdfParams::MACHINE, "m", 5).is_err());
        for n in 0..b.len() {
            assert!(KeyFile::decode(&id, &b[..n]).is_err());
        }
    }

    #[test]
    fn params_are_authenticated_and_floored() {
        let m = MasterKey::generate();
        let kf = KeyFile::create(&m, [3; 32], b"pw", KdfParams::FLOOR, "", 5).unwrap();
        let mut b = kf.encode();
        // Raise t_cost: the MAC over the header must fail.
        b[48] += 1;
        let k = KeyFile::decode(&ObjectId::of(&b), &b).unwrap();
        assert!(k.unwrap(b"pw").unwrap().is_none());
        // Lower m_cost below the floor: refused outright.
        let mut b = kf.encode();
        b[44..48].copy_from_slice(&1024u32.to_le_bytes());
        let k = KeyFile::decode(&ObjectId::of(&b), &b).unwrap();
        assert!(matches!(k.unwrap(b"pw"), Err(Error::WeakKeyParameters(_))));
    }

    /// K3–K5 on short inputs, in the order the spec gives: fewer than 8 bytes or a wrong magic
    /// is "bad magic"; the magic with 0–3 more bytes is "truncated" (K4 cannot be read); from
    /// 12 bytes on the version decides (0: damage, above 1: too new, even if nothing follows);
    /// version 1 with fewer than 98 + L + 112 bytes is "truncated".
    #[test]
    fn k3_k5_short_inputs() {
        let id = ObjectId([0; 32]);
        let detail = |b: &[u8]| match KeyFile::decode(&id, b) {
            Err(Error::Corrupt { detail, .. }) => detail,
            other => panic!("{b:?}: {other:?}"),
        };
        for n in 0..8 {
            assert_eq!(detail(&MAGIC[..n]), "bad magic", "{n} bytes");
        }
        assert_eq!(detail(b"DVKEYFIM\x01\0\0\0"), "bad magic");
        for extra in 0..4 {
            let b = [&MAGIC[..], &[1, 0, 0][..extra]].concat();
            assert_eq!(detail(&b), "truncated", "{} bytes", b.len());
        }
        let b = [&MAGIC[..], &[0, 0, 0, 0]].concat();
        assert!(detail(&b).contains("version 0"));
        let b = [&MAGIC[..], &[2, 0, 0, 0]].concat();
        assert!(matches!(
            KeyFile::decode(&id, &b),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let full = KeyFile::create(
            &MasterKey::generate(),
            [3; 32],
            b"pw",
            KdfParams::FLOOR,
            "ab",
            5,
        )
        .unwrap()
        .encode();
        assert_eq!(full.len(), 212);
        for n in 12..full.len() {
            assert_eq!(detail(&full[..n]), "truncated", "{n} bytes");
        }
    }

    /// Regression for issue X7: version 0 was reported as "newer than this dumpvault".
    #[test]
    fn x7_version_zero_is_damage() {
        let m = MasterKey::generate();
        let mut b = KeyFile::create(&m, [3; 32], b"pw", KdfParams::FLOOR, "", 5)
            .unwrap()
            .encode();
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        let e = KeyFile::decode(&ObjectId::of(&b), &b).unwrap_err();
        assert!(
            e.is_corruption() && e.to_string().contains("version 0"),
            "{e}"
        );
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let e = KeyFile::decode(&ObjectId::of(&b), &b).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }
}
