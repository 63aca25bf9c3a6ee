//! The embedded default backend: a local directory.
//!
//! ```text
//! ROOT/config
//! ROOT/keys/<id>  ROOT/index/<id>  ROOT/snapshots/<id>  ROOT/locks/<id>
//! ROOT/data/<first two hex digits of id>/<id>
//! ROOT/wal/<cluster>/<WAL file name>   (made by the first `wal push`)
//! ```
//! Writes go to a hidden temp file in the destination directory, are fsynced, then linked to
//! the final name with `link(2)` (which, unlike `rename(2)`, never replaces an existing file),
//! and the directory is fsynced. A crash at any point leaves at most a `.tmp-*` file, never a
//! half-written object under a final name. Listing skips dot files, and under `wal/` every
//! name that is not `<cluster>/<file>` of the shape `valid_wal_name` checks.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Backend, Name};
use crate::error::{Error, ObjectKind, Result};

pub struct LocalBackend {
    root: PathBuf,
}

fn dir_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "",
        ObjectKind::Key => "keys",
        ObjectKind::Pack => "data",
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshots",
        ObjectKind::Lock => "locks",
        ObjectKind::Verification => "verifications",
        ObjectKind::Wal => "wal",
    }
}

/// Object names are ids (hex) or "config": anything else could escape the directory.
fn check_name(kind: ObjectKind, name: &str) -> Result<()> {
    let ok = if kind == ObjectKind::Config {
        name == "config"
    } else if kind == ObjectKind::Wal {
        super::valid_wal_name(name)
    } else {
        // Lowercase only (rule N2): an upper-case spelling would be a second name for the
        // same object on case-sensitive file systems.
        name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid {kind} object name {name:?}"
        )))
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    pub fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.join("config"),
            ObjectKind::Pack => self.root.join("data").join(&name[..2]).join(name),
            _ => self.root.join(dir_name(kind)).join(name),
        }
    }

    fn not_found_or(&self, kind: ObjectKind, name: &str, what: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ObjectNotFound {
                kind,
                id: name.to_string(),
            }
        } else {
            Error::io(format!("{what} {}", self.path(kind, name).display()), e)
        }
    }

    fn list_dir(dir: &Path, out: &mut Vec<(Name, u64)>) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let md = ent
                .metadata()
                .map_err(|e| Error::io(format!("stat {}", ent.path().display()), e))?;
            if md.is_file() {
                out.push((name, md.len()));
            }
        }
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.root.join("config").is_file())
    }

    fn create(&self) -> Result<()> {
        if self.root.exists() {
            let mut rd = fs::read_dir(&self.root)
                .map_err(|e| Error::io(format!("read {}", self.root.display()), e))?;
            if rd.next().is_some() {
                return Err(Error::RepositoryExists(format!(
                    "{} (directory is not empty)",
                    self.root.display()
                )));
            }
        }
        let mk = |p: PathBuf| {
            fs::create_dir_all(&p).map_err(|e| Error::io(format!("create {}", p.display()), e))
        };
        for k in ["keys", "index", "snapshots", "locks"] {
            mk(self.root.join(k))?;
        }
        for i in 0..=255u8 {
            mk(self.root.join("data").join(format!("{i:02x}")))?;
        }
        fsync_dir(&self.root.join("data"))?;
        fsync_dir(&self.root)?;
        Ok(())
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        let mut out = Vec::new();
        match kind {
            ObjectKind::Config => {
                if let Ok(md) = fs::metadata(self.root.join("config")) {
                    out.push(("config".to_string(), md.len()));
                }
            }
            ObjectKind::Pack => {
                let data = self.root.join("data");
                let rd = match fs::read_dir(&data) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Error::io(format!("list {}", data.display()), e)),
                };
                for ent in rd {
                    let ent = ent.map_err(|e| Error::io("list data", e))?;
                    if ent.path().is_dir() {
                        Self::list_dir(&ent.path(), &mut out)?;
                    }
                }
            }
            ObjectKind::Wal => {
                let wal = self.root.join("wal");
                let rd = match fs::read_dir(&wal) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Error::io(format!("list {}", wal.display()), e)),
                };
                for ent in rd {
                    let ent = ent.map_err(|e| Error::io("list wal", e))?;
                    let cluster = ent.file_name().to_string_lossy().into_owned();
                    if cluster.starts_with('.') || !ent.path().is_dir() {
                        continue;
                    }
                    let mut files = Vec::new();
                    Self::list_dir(&ent.path(), &mut files)?;
                    // Only names of the shape AW1 allows, as the S3 listing keeps: `get`
                    // refuses any other (X24), so a stray file such as an editor's backup
                    // copy, or a directory that is no cluster name, must not be listed.
                    out.extend(
                        files
                            .into_iter()
                            .map(|(n, s)| (format!("{cluster}/{n}"), s))
                            .filter(|(n, _)| super::valid_wal_name(n)),
                    );
                }
            }
            _ => Self::list_dir(&self.root.join(dir_name(kind)), &mut out)?,
        }
        out.sort();
        Ok(out)
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        fs::read(self.path(kind, name)).map_err(|e| self.not_found_or(kind, name, "read", e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let mut f = File::open(self.path(kind, name))
            .map_err(|e| self.not_found_or(kind, name, "open", e))?;
        let size = f
            .metadata()
            .map_err(|e| self.not_found_or(kind, name, "stat", e))?
            .len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                kind,
                name,
                format!("range {offset}+{len} beyond the object's {size} bytes (truncated?)"),
            ));
        }
        let n = usize::try_from(len).map_err(|_| Error::InvalidInput("range too large".into()))?;
        let mut buf = vec![0u8; n];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| self.not_found_or(kind, name, "read", e))?;
        Ok(buf)
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        check_name(kind, name)?;
        fs::metadata(self.path(kind, name))
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(kind, name, "stat", e))
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        check_name(kind, name)?;
        let md = fs::metadata(self.path(kind, name))
            .map_err(|e| self.not_found_or(kind, name, "stat", e))?;
        // A file system without mtimes is "not known", not an error.
        Ok(md.modified().ok())
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        check_name(kind, name)?;
        let dest = self.path(kind, name);
        let dir = dest
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        if kind == ObjectKind::Wal && !dir.is_dir() {
            // `wal/` and `wal/<cluster>/` appear with the first push, durably.
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            fsync_dir(dir.parent().expect("wal/<cluster> has a parent"))?;
            fsync_dir(&self.root)?;
        }
        if kind == ObjectKind::Pack && !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        // `verifications/` is not made by init (and repositories older than it lack it): the
        // first record creates it, durably.
        if kind == ObjectKind::Verification && !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            fsync_dir(&self.root)?;
        }
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd);
        // The last part of the name: WAL names (`cluster/file`) carry a directory.
        let base = name.rsplit('/').next().unwrap_or(name);
        let tmp = dir.join(format!(".tmp-{}-{}", base, hex::encode(rnd)));
        let result = (|| -> Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            f.write_all(data)
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(format!("write {}", dest.display()), e))?;
            drop(f);
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => {}
                // Content-named: an object already under this name holds these bytes.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("link {}", dest.display()), e)),
            }
            Ok(())
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        fsync_dir(&dir)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        check_name(kind, name)?;
        let p = self.path(kind, name);
        fs::remove_file(&p).map_err(|e| self.not_found_or(kind, name, "delete", e))?;
        fsync_dir(p.parent().expect("object paths have a parent"))
    }
}
