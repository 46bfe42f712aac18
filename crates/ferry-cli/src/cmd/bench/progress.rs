//! The progress line on stderr while a run goes.

use std::io::{self, IsTerminal, Write as _};
use std::time::{Duration, Instant};

pub(super) struct Progress {
    pub(super) enabled: bool,
    pub(super) tty: bool,
    pub(super) last_print: Instant,
    pub(super) last_messages: u64,
    pub(super) last_at: Instant,
    pub(super) printed: bool,
}

impl Progress {
    pub(super) fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: !quiet,
            tty: io::stderr().is_terminal(),
            last_print: now,
            last_messages: 0,
            last_at: now,
            printed: false,
        }
    }

    pub(super) fn show(&mut self, line: impl FnOnce(f64) -> String, messages: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        if now.duration_since(self.last_print) < every {
            return;
        }
        let secs = now.duration_since(self.last_at).as_secs_f64();
        let rate = (messages.saturating_sub(self.last_messages)) as f64 / secs.max(1e-9);
        self.last_messages = messages;
        self.last_at = now;
        self.last_print = now;
        let text = line(rate);
        let mut err = io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        self.printed = true;
    }

    pub(super) fn finish(&mut self) {
        if self.enabled && self.tty && self.printed {
            let _ = write!(io::stderr(), "\r\x1b[2K");
            let _ = io::stderr().flush();
        }
    }
}
