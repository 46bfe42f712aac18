//! Who gets in: a place under `--max-connections` per connection, and what happens when the
//! listener cannot accept at all (out of file descriptors).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::State;
use super::metrics::Metrics;

/// A place under `--max-connections`, taken when a handshake is accepted and given back when
/// the connection ends (or its upgrade fails): `ferry_connections_open` counts these.
pub struct Admission(Arc<State>);

impl Admission {
    /// Takes a place if one is free.
    pub fn new(state: &Arc<State>) -> Option<Admission> {
        let max = state.max_connections as u64;
        state
            .metrics
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(Admission(state.clone()))
    }

    /// The server this place is in. A connection's task reaches the server's state through
    /// its admission rather than a second `Arc` of its own (a word less per connection).
    pub fn state(&self) -> &Arc<State> {
        &self.0
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// An episode of failing accepts (out of file descriptors, most often): logged once when it
/// starts and once when it ends, with the count; counted in `ferry_accept_errors_total`; and
/// each failure waits longer (10 ms doubling to 1 s), since retrying at once only fails again.
/// The episode ends at the first accept 3 s (three of the longest pauses) after the last
/// failure: right after one, the backlog of waiting connections often fails again at once.
#[derive(Default)]
pub struct AcceptFailures {
    since: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
    count: u64,
    pause: Duration,
}

/// How long accepts must stay free of failures for an episode to end.
const ACCEPT_QUIET: Duration = Duration::from_secs(3);

impl AcceptFailures {
    pub fn failed(&mut self, err: &std::io::Error, metrics: &Metrics) -> Duration {
        #[cfg(unix)]
        let out_of_files = [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE]
            .iter()
            .any(|e| err.raw_os_error() == Some(e.raw_os_error()));
        #[cfg(not(unix))]
        let out_of_files = false;
        let kind = if out_of_files {
            "no_file_descriptors"
        } else {
            "other"
        };
        metrics.accept_failed(kind);
        self.count += 1;
        self.last = Some(std::time::Instant::now());
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            self.pause = Duration::from_millis(10);
            tracing::error!(error = %err, "accept failed; retrying with a growing pause, and counting further failures until an accept succeeds (ferry_accept_errors_total)");
        } else {
            self.pause = (self.pause * 2).min(Duration::from_secs(1));
        }
        self.pause
    }

    pub fn recovered(&mut self) {
        if self.last.is_some_and(|last| last.elapsed() < ACCEPT_QUIET) {
            return;
        }
        if let Some(since) = self.since.take() {
            tracing::warn!(
                failures = self.count,
                lasted_ms = since.elapsed().as_millis() as u64,
                "accepting again"
            );
            self.count = 0;
        }
    }
}
