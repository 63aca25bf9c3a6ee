//! Where passwords come from, in order: `DUMPVAULT_PASSWORD`, `--password-file`,
//! `--password-command`, then a prompt on the terminal. Passwords are zeroized on drop.

use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub struct Sources<'a> {
    pub env_var: &'a str,
    pub file: Option<&'a std::path::Path>,
    pub command: Option<&'a str>,
    pub prompt: &'a str,
    /// Ask twice on a terminal (for new passwords).
    pub confirm: bool,
}

fn trim_newline(mut s: String) -> Zeroizing<String> {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    Zeroizing::new(s)
}

/// The password from the first source that is set. No repository accepts an empty password
/// (`init` and `key add` refuse one), so an empty result names its source as a usage error
/// (exit 2) instead of trying every key file and reporting a wrong password.
pub fn get(src: &Sources<'_>) -> Result<Zeroizing<String>> {
    let (p, from) = get_any(src)?;
    if p.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the password from {from} is empty"
        )));
    }
    Ok(p)
}

fn get_any(src: &Sources<'_>) -> Result<(Zeroizing<String>, String)> {
    if let Ok(p) = std::env::var(src.env_var) {
        return Ok((Zeroizing::new(p), src.env_var.to_string()));
    }
    if let Some(f) = src.file {
        let s = Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err(|e| Error::io(format!("read password file {}", f.display()), e))?,
        );
        // The first line is the password; a trailing newline is not part of it.
        let p = trim_newline(s.lines().next().unwrap_or("").to_string());
        return Ok((p, format!("password file {} (its first line)", f.display())));
    }
    if let Some(cmd) = src.command {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io("run password command", e))?;
        if !out.status.success() {
            return Err(Error::InvalidInput(format!(
                "password command failed ({})",
                out.status
            )));
        }
        let s = String::from_utf8(out.stdout)
            .map_err(|_| Error::InvalidInput("password command printed non-UTF-8".into()))?;
        return Ok((trim_newline(s), "the password command".to_string()));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        || std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        let p = Zeroizing::new(
            rpassword::prompt_password(src.prompt).map_err(|e| Error::io("read password", e))?,
        );
        if src.confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Repeat password: ")
                    .map_err(|e| Error::io("read password", e))?,
            );
            if *again != *p {
                return Err(Error::InvalidInput("passwords do not match".into()));
            }
        }
        return Ok((p, "the prompt".to_string()));
    }
    Err(Error::InvalidInput(format!(
        "no password: set {}, or pass a password file or command",
        src.env_var
    )))
}
