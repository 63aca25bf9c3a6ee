//! Where a backup's bytes come from: a file or fifo opened when its turn comes, or a producer
//! command whose exit status decides whether the snapshot may commit (fail closed: a non-zero
//! exit or a signal commits nothing). The producer is killed and reaped if the backup ends early.

use std::process::{Child, Command, Stdio};

use super::progress::Progress;
use crate::error::{Error, Result};
use crate::ops::backup::{OpenedStream, StreamInput};
use crate::snapshot::Source;

/// Grow a pipe's kernel buffer to 1 MiB (the unprivileged limit on Linux; skipped elsewhere,
/// for non-pipes, and when refused). With the default 64 KiB, a fast producer and the backup
/// wake each other for every 64 KiB.
pub(super) fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = fd.as_raw_fd();
        // SAFETY: fstat writes into a zeroed stat we own; fcntl only resizes the pipe.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
                libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// The exit status of the last producer this process waited for (128 + N for signal N), for
/// the metrics of a failed backup; `i32::MIN`: none ran.
static LAST_STATUS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(i32::MIN);

pub(super) fn reset_last_status() {
    LAST_STATUS.store(i32::MIN, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn last_status() -> Option<i32> {
    Some(LAST_STATUS.load(std::sync::atomic::Ordering::Relaxed)).filter(|s| *s != i32::MIN)
}

/// A producer child process, killed and reaped if the backup ends early.
pub(super) struct Producer {
    pub(super) child: Option<Child>,
    pub(super) argv: Vec<String>,
    /// The child leads a process group of its own (decided once, at spawn).
    group: bool,
}

impl Producer {
    pub(super) fn spawn(argv: &[String]) -> Result<(Producer, std::process::ChildStdout)> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Without a terminal (cron, systemd, CI) a SIGTERM reaches dumpvault alone: the
        // producer gets a process group of its own so that the signal can be passed to all of
        // it (`sh -c 'pg_dump …'`, a wrapper script's children), not just to its first process.
        // At a terminal the producer stays in the foreground group, where Ctrl-C already
        // reaches every process and pg_dump can still prompt for a password.
        let group = !has_controlling_terminal();
        if group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::ProducerFailed(format!("cannot start {:?}: {e}", argv[0])))?;
        crate::signals::set_child(Some(crate::signals::Child {
            pid: child.id(),
            group,
        }));
        let out = child.stdout.take().expect("stdout was piped");
        widen_pipe(&out);
        Ok((
            Producer {
                child: Some(child),
                argv: argv.to_vec(),
                group,
            },
            out,
        ))
    }

    /// Wait for the producer and judge it: only a clean exit 0 may commit a snapshot.
    pub(super) fn finish(&mut self) -> Result<Source> {
        let mut child = self.child.take().expect("finish called once");
        let status = child.wait().map_err(|e| Error::io("wait for producer", e));
        crate::signals::set_child(None);
        let status = status?;
        {
            use std::os::unix::process::ExitStatusExt;
            let shell_style = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            LAST_STATUS.store(shell_style, std::sync::atomic::Ordering::Relaxed);
        }
        let prog = &self.argv[0];
        if let Some(code) = status.code() {
            if code != 0 {
                return Err(Error::ProducerFailed(format!(
                    "{prog} exited with status {code}"
                )));
            }
        } else {
            use std::os::unix::process::ExitStatusExt;
            return Err(Error::ProducerFailed(format!(
                "{prog} was killed by signal {}",
                status.signal().unwrap_or(0)
            )));
        }
        Ok(Source::Command {
            argv: self.argv.clone(),
            exit_status: 0,
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group, when it has one: a wrapper's children must not outlive it.
            if self.group {
                // SAFETY: kill(2) on the process group we created; at worst it is gone.
                unsafe {
                    libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = c.kill();
            let _ = c.wait();
            crate::signals::set_child(None);
        }
    }
}

/// A stream read from a file or fifo, opened only when its turn comes (a fifo's writer may be
/// waiting for the previous stream to finish).
pub(super) fn file_input<'a>(name: String, path: String, bar: &'a Progress) -> StreamInput<'a> {
    StreamInput {
        name,
        open: Box::new(move || {
            let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?;
            let f = bar.reader(f);
            let abs = std::fs::canonicalize(&path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.clone());
            Ok(OpenedStream {
                reader: Box::new(f),
                finish: Box::new(move || Ok(Source::File { path: abs })),
            })
        }),
    }
}

/// A stream produced by a command, started only when its turn comes and judged (exit 0, no
/// signal) before the next one starts.
pub(super) fn command_input<'a>(
    name: String,
    argv: Vec<String>,
    bar: &'a Progress,
) -> StreamInput<'a> {
    StreamInput {
        name,
        open: Box::new(move || {
            let (mut producer, out) = Producer::spawn(&argv)?;
            Ok(OpenedStream {
                reader: bar.reader(out),
                finish: Box::new(move || producer.finish()),
            })
        }),
    }
}

/// Whether this process has a controlling terminal (an interactive session) rather than
/// running under cron, systemd or CI.
fn has_controlling_terminal() -> bool {
    // SAFETY: open(2) of a constant path and close(2) of the descriptor it returned.
    unsafe {
        let fd = libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY);
        if fd < 0 {
            return false;
        }
        libc::close(fd);
        true
    }
}
