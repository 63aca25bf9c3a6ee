//! Progress on stderr: an indicatif bar only when stderr is a terminal and `--quiet` is off,
//! so cron mail and pipelines stay clean (not one escape code or carriage return reaches a
//! pipe or a file). With a known total (file input, restore, copy, fsck --read-data) the bar
//! shows the ETA; otherwise a spinner shows bytes so far and the rate. The message carries what
//! the command wants to add (bytes new to the repository, the current stream or phase).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Bytes read through `reader` so far (all streams of a backup).
    read: AtomicU64,
}

/// An input that moves the bar as bytes arrive: a slow producer shows progress at once, not
/// only after each 8 MiB block has been chunked.
struct Tally<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Tally<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.progress.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Some(b) = &self.progress.bar {
            b.set_position(total);
        }
        Ok(n)
    }
}

const WITH_TOTAL: &str =
    "{prefix} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";
const WITHOUT_TOTAL: &str = "{prefix} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec} {msg}";
/// Counts, not bytes (fsck's phases, repair, prune): a spinner until a total is known.
const COUNTS: &str = "{prefix} [{elapsed_precise}] {spinner} {msg}";
const COUNTS_WITH_TOTAL: &str = "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} eta {eta}";

fn style(tmpl: &str) -> ProgressStyle {
    ProgressStyle::with_template(tmpl).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// A byte-counting bar; `total` (when known and non-zero) gives a bar with an ETA.
    pub fn new(quiet: bool, total: Option<u64>, what: &str) -> Self {
        let show = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = show.then(|| {
            let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(style(match total {
                Some(t) if t > 0 => WITH_TOTAL,
                _ => WITHOUT_TOTAL,
            }));
            b.set_prefix(what.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(250));
            b
        });
        Progress {
            bar,
            read: AtomicU64::new(0),
        }
    }

    /// Wrap an input so that the bar's position is the bytes read from it (and from every
    /// other input wrapped by this bar). Use `message` for the rest, not `update`.
    pub fn reader<'a>(&'a self, inner: impl Read + 'a) -> Box<dyn Read + 'a> {
        Box::new(Tally {
            inner,
            progress: self,
        })
    }

    pub fn message(&self, msg: impl FnOnce() -> String) {
        if let Some(b) = &self.bar {
            b.set_message(msg());
        }
    }

    /// A bar whose position is not bytes: only the elapsed time, a spinner and the message.
    pub fn counting(quiet: bool, what: &str) -> Self {
        let p = Progress::new(quiet, None, what);
        if let Some(b) = &p.bar {
            b.set_style(style(COUNTS));
        }
        p
    }

    /// Learn (or correct) the total once it is known; 0 keeps the spinner.
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            if total > 0 && b.length() != Some(total) {
                b.set_length(total);
                b.set_style(style(WITH_TOTAL));
            }
        }
    }

    /// For `counting` bars: `done` of `total` items of phase `what` (a new phase restarts the
    /// bar, so the ETA is per phase).
    pub fn update_count(&self, what: &str, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            if b.length() != Some(total) || b.message() != what {
                b.reset();
                b.set_length(total);
                b.set_style(style(if total > 0 { COUNTS_WITH_TOTAL } else { COUNTS }));
                b.set_message(what.to_string());
            }
            b.set_position(done);
        }
    }

    pub fn update(&self, pos: u64, msg: impl FnOnce() -> String) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg());
        }
    }

    /// Remove the bar (the final summary is the caller's one line on stderr).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
