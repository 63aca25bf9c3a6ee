//! `init`: create a repository (chunking, pack and compression parameters, the first key file).

use super::common::{print_json, Ctx, KdfArgs};
use crate::error::{Error, Result};
use crate::repo::{InitOptions, Repo};
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct InitArgs {
    /// Minimum chunk size in bytes.
    #[arg(long, default_value_t = crate::chunker::DEFAULT_MIN)]
    pub(super) chunk_min: u32,
    /// Average chunk size in bytes (a power of two).
    #[arg(long, default_value_t = crate::chunker::DEFAULT_AVG)]
    pub(super) chunk_avg: u32,
    /// Maximum chunk size in bytes.
    #[arg(long, default_value_t = crate::chunker::DEFAULT_MAX)]
    pub(super) chunk_max: u32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pub(super) pack_size: u32,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = 3)]
    pub(super) compression_level: i32,
    #[command(flatten)]
    pub(super) kdf: KdfArgs,
}

pub(super) fn run(ctx: &Ctx<'_>, a: &InitArgs) -> Result<()> {
    let backend = ctx.backend()?;
    if backend.exists()? {
        return Err(Error::RepositoryExists(backend.location()));
    }
    let pw = ctx.password("New repository password: ", true)?;
    if pw.is_empty() {
        return Err(Error::InvalidInput("refusing an empty password".into()));
    }
    let opts = InitOptions {
        chunk_min: a.chunk_min,
        chunk_avg: a.chunk_avg,
        chunk_max: a.chunk_max,
        pack_target: a.pack_size.saturating_mul(1024 * 1024),
        zstd_level: a.compression_level,
        kdf: a.kdf.params()?,
    };
    let repo = Repo::init(backend, pw.as_bytes(), &opts)?;
    let id = hex::encode(repo.config.repo_id);
    if ctx.cli.json {
        return print_json(&serde_json::json!({
            "repository_id": id, "location": repo.backend.location(), "key_id": repo.key_id,
        }));
    }
    ctx.say(format!(
        "created repository {} at {}",
        &id[..16],
        repo.backend.location()
    ));
    Ok(())
}
