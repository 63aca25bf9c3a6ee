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
                println!(
                    "{} {}  {}  {}  argon2id m={}KiB t={} p={}",
                    if k.current { "*" } else { " " },
                    &k.id.to_hex()[..16],
                    created,
                    k.label,
                    k.m_cost,
                    k.t_cost,
                    k.p_cost
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
