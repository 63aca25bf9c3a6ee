//! Progress on stderr: an indicatif bar only when stderr is a terminal and `--quiet` is off,
//! so cron mail and pipelines stay clean.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(quiet: bool, total: Option<u64>, what: &str) -> Self {
        let show = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = show.then(|| {
            let b = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let tmpl = if total.is_some() {
                "{prefix} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}"
            } else {
                "{prefix} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec} {msg}"
            };
            b.set_style(ProgressStyle::with_template(tmpl).unwrap_or_else(|_| ProgressStyle::default_bar()));
            b.set_prefix(what.to_string());
            b
        });
        Progress { bar }
    }

    pub fn update(&self, pos: u64, msg: impl FnOnce() -> String) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
