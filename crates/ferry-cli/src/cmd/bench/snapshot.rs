//! Snapshots of the load counters and of the server's CPU time, taken at the measured window's
//! ends (and for the progress line).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::proc::{read_proc_stat, read_proc_stat_self};
use super::shared::Shared;

/// The counters and CPU times at one instant.
#[derive(Clone, Copy)]
pub(super) struct Snapshot {
    pub(super) at: Instant,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) server_ticks: Option<u64>,
    pub(super) client_ticks: Option<u64>,
    /// fanout: messages published, and the publisher's copies received.
    pub(super) published: u64,
    pub(super) copies: u64,
}

/// Reads the counters of every load thread and the CPU times of the server (`pid`) and of this
/// process.
pub(super) fn snapshot(shared: &Shared, pid: Option<u32>) -> Snapshot {
    let (messages, bytes, _) = shared.totals();
    Snapshot {
        at: Instant::now(),
        messages,
        bytes,
        server_ticks: pid.and_then(|p| read_proc_stat(p).ok()),
        client_ticks: read_proc_stat_self().ok(),
        published: shared
            .hub
            .as_ref()
            .map_or(0, |h| h.published.load(Ordering::Relaxed)),
        copies: shared
            .counters
            .iter()
            .map(|c| c.copies.load(Ordering::Relaxed))
            .sum(),
    }
}
