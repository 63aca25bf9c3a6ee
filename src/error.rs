//! The library's error type. Every failure a user can meet has a variant, and every variant maps
//! to one documented process exit code (`Error::exit_code`), so scripts can tell a wrong password
//! from a corrupt pack from a failed `pg_dump`.

use std::fmt;

/// What kind of stored object an error is about. Used to name damaged objects precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
    /// A restore-drill record (`verifications/`, written by `verify`).
    Verification,
    /// An archived PostgreSQL WAL file (`wal/<cluster>/<file>`, written by `wal push`).
    Wal,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Verification,
        ObjectKind::Wal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Lock => "lock",
            ObjectKind::Verification => "verification",
            ObjectKind::Wal => "wal",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored object failed authentication, parsing, or its content hash. `what` names the
    /// object (kind and id), `detail` says what was wrong with it.
    #[error("corrupt {kind} {id}: {detail}")]
    Corrupt {
        kind: ObjectKind,
        id: String,
        detail: String,
    },
    /// A blob (chunk or chunk list) failed verification.
    #[error("corrupt chunk {chunk} in pack {pack}: {detail}")]
    CorruptBlob {
        chunk: String,
        pack: String,
        detail: String,
    },
    /// The restored stream's whole-stream hash or size disagrees with the snapshot.
    #[error("restored stream does not match snapshot {snapshot}: {detail}")]
    StreamMismatch { snapshot: String, detail: String },
    #[error("no key file of this repository opens with the given password")]
    WrongPassword,
    #[error("no dumpvault repository at {0}")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),
    #[error(
        "repository format version {found} is newer than this dumpvault supports ({supported}); upgrade dumpvault"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("repository requires features this dumpvault does not know (flags {0:#x}); upgrade dumpvault")]
    UnsupportedFeatures(u64),
    #[error("repository is locked: {0}")]
    LockHeld(String),
    #[error("producer failed: {0}")]
    ProducerFailed(String),
    #[error("input is empty (pass --allow-empty to store an empty stream)")]
    EmptyInput,
    #[error("interrupted by signal: stopped at a safe point, and no snapshot was written")]
    Interrupted,
    #[error("no snapshot matches {0}")]
    SnapshotNotFound(String),
    #[error("object {kind} {id} not found")]
    ObjectNotFound { kind: ObjectKind, id: String },
    #[error("key parameters refused: {0}")]
    WeakKeyParameters(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage backend: {0}")]
    Backend(String),
    /// A check could not run to the end (storage unreachable, I/O error): not a verdict.
    #[error("check incomplete: {0}")]
    CheckIncomplete(String),
    /// fsck found damage; the report has the details.
    #[error("repository damaged: {0}")]
    Damaged(String),
    #[error("cache: {0}")]
    Cache(String),
    /// The stream is a dump of a known kind that evidently ends too early (no completion
    /// trailer, no RDB EOF or a bad CRC-64): nothing was committed.
    #[error("{0} (nothing was committed; pass --allow-truncated to store it anyway)")]
    TruncatedDump(String),
    /// `wal fetch`: the file is not in the archive (exit 1, what PostgreSQL's recovery reads
    /// as "no more WAL here").
    #[error("not in the archive: {0}")]
    WalAbsent(String),
    /// `wal fetch`: the file may be archived but could not be delivered intact (storage
    /// unreachable after retries, damage, wrong key). Exit 126, which PostgreSQL treats as a
    /// fatal error of restore_command, so recovery stops instead of ending early.
    #[error("{0} (recovery must stop here rather than end early)")]
    RecoveryFatal(String),
    /// `wal push`: the name is archived with other content; both copies are kept.
    #[error("WAL conflict: {0}")]
    WalConflict(String),
    /// `verify`: the snapshot restored intact but the verifier command rejected it.
    #[error("restore drill failed: {0}")]
    VerifyFailed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Documented exit codes (README, "Exit codes"). Keep this table and the README in step.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NO_REPOSITORY: i32 = 3;
    pub const WRONG_PASSWORD: i32 = 4;
    pub const LOCK_HELD: i32 = 5;
    pub const PRODUCER_FAILED: i32 = 6;
    pub const CORRUPT: i32 = 7;
    pub const UNSUPPORTED_VERSION: i32 = 8;
    pub const NOT_FOUND: i32 = 9;
    pub const CHECK_INCOMPLETE: i32 = 10;
    pub const VERIFY_FAILED: i32 = 11;
    pub const RECOVERY_FATAL: i32 = 126;
    pub const INTERRUPTED: i32 = 130;
}

impl Error {
    pub fn corrupt(kind: ObjectKind, id: impl fmt::Display, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            kind,
            id: id.to_string(),
            detail: detail.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Corrupt { .. }
            | Error::CorruptBlob { .. }
            | Error::StreamMismatch { .. }
            | Error::Damaged(_) => exit::CORRUPT,
            Error::CheckIncomplete(_) => exit::CHECK_INCOMPLETE,
            Error::WrongPassword | Error::WeakKeyParameters(_) => exit::WRONG_PASSWORD,
            Error::NoRepository(_) => exit::NO_REPOSITORY,
            Error::UnsupportedVersion { .. } | Error::UnsupportedFeatures(_) => {
                exit::UNSUPPORTED_VERSION
            }
            Error::LockHeld(_) => exit::LOCK_HELD,
            Error::ProducerFailed(_) | Error::EmptyInput | Error::TruncatedDump(_) => {
                exit::PRODUCER_FAILED
            }
            Error::VerifyFailed(_) => exit::VERIFY_FAILED,
            Error::WalAbsent(_) => exit::ERROR,
            Error::RecoveryFatal(_) => exit::RECOVERY_FATAL,
            Error::Interrupted => exit::INTERRUPTED,
            Error::SnapshotNotFound(_) | Error::ObjectNotFound { .. } => exit::NOT_FOUND,
            Error::InvalidInput(_) => exit::USAGE,
            Error::RepositoryExists(_)
            | Error::Io { .. }
            | Error::Backend(_)
            | Error::Cache(_)
            | Error::WalConflict(_) => exit::ERROR,
        }
    }

    /// True for the errors that mean "the stored data is damaged".
    pub fn is_corruption(&self) -> bool {
        self.exit_code() == exit::CORRUPT
    }
}
