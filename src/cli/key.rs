//! `key list|add|remove|passwd`: the key files (passwords) that wrap the master key.

use std::path::PathBuf;

use chrono::DateTime;
use clap::Subcommand;

use super::common::{print_json, Ctx, KdfArgs};
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub(super) enum KeyCmd {
    /// List key files.
    List,
    /// Add a password (new one from DUMPVAULT_NEW_PASSWORD, --new-password-file, or a prompt).
    Add {
        #[arg(long, env = "DUMPVAULT_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Add a machine key for unattended commands such as `wal push`: dumpvault generates a
    /// 256-bit secret, writes it to FILE (mode 0600, never overwriting) and adds a key file it
    /// opens without an Argon2id run. Point DUMPVAULT_PASSWORD_FILE at FILE.
    AddMachine {
        /// Where to write the secret.
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a key file by id prefix. The last key and the key in use cannot be removed.
    Remove { id: String },
    /// Change the password of the key in use.
    Passwd {
        #[arg(long, env = "DUMPVAULT_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

pub(super) fn run(ctx: &Ctx<'_>, k: &KeyCmd) -> Result<()> {
    let mut repo = ctx.open()?;
    match k {
        KeyCmd::List => {
            let keys = repo.list_keys()?;
            if ctx.cli.json {
                return print_json(&keys);
            }
            for k in keys {
                let created = DateTime::from_timestamp(k.created, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let kdf = if k.m_cost == 0 {
                    "machine key (256-bit secret)".to_string()
                } else {
                    format!("argon2id m={}KiB t={} p={}", k.m_cost, k.t_cost, k.p_cost)
                };
                println!(
                    "{} {}  {}  {}  {kdf}",
                    if k.current { "*" } else { " " },
                    &k.id.to_hex()[..16],
                    created,
                    k.label,
                );
            }
            Ok(())
        }
        KeyCmd::Add {
            new_password_file,
            label,
            kdf,
        } => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            if pw.is_empty() {
                return Err(Error::InvalidInput("refusing an empty password".into()));
            }
            let id = repo.add_key(pw.as_bytes(), kdf.params()?, label.as_deref())?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "added": id }));
            }
            ctx.say(format!("added key {}", &id.to_hex()[..16]));
            Ok(())
        }
        KeyCmd::AddMachine { secret_file, label } => {
            // Create the file first: a key file whose secret could not be saved would be a
            // key nobody holds.
            let mut f = create_secret_file(secret_file)?;
            let (id, secret) = match repo.add_machine_key(label.as_deref()) {
                Ok(v) => v,
                Err(e) => {
                    drop(f);
                    let _ = std::fs::remove_file(secret_file);
                    return Err(e);
                }
            };
            use std::io::Write;
            f.write_all(format!("{}\n", secret.as_str()).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(format!("write {}", secret_file.display()), e))?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "added": id, "secret_file": secret_file }));
            }
            ctx.say(format!(
                "added machine key {}; its secret is in {} (keep it like a password)",
                &id.to_hex()[..16],
                secret_file.display()
            ));
            Ok(())
        }
        KeyCmd::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "removed": removed }));
            }
            ctx.say(format!("removed key {}", &removed.to_hex()[..16]));
            Ok(())
        }
        KeyCmd::Passwd {
            new_password_file,
            kdf,
        } => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            if pw.is_empty() {
                return Err(Error::InvalidInput("refusing an empty password".into()));
            }
            let id = repo.change_password(pw.as_bytes(), kdf.params()?)?;
            if ctx.cli.json {
                return print_json(&serde_json::json!({ "key": id }));
            }
            ctx.say(format!("password changed; new key {}", &id.to_hex()[..16]));
            Ok(())
        }
    }
}

/// Open a new file readable by its owner only; an existing file is never replaced.
fn create_secret_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))
}
