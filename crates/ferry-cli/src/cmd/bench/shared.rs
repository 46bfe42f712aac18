//! State shared between the main thread and the load threads: the phase, the counters, and
//! what the connections of one load thread share.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};

use super::histogram::Histogram;
use super::hub::Hub;
use super::plan::Plan;

pub(super) const CONNECTING: u8 = 0;
pub(super) const WARMUP: u8 = 1;
pub(super) const MEASURE: u8 = 2;
pub(super) const STOP: u8 = 3;
pub(super) const ABORT: u8 = 4;

/// One load thread's counters, on a cache line of their own.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct Counters {
    /// Echoes, handshakes, or in fanout deliveries to subscribers.
    pub(super) messages: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) connected: AtomicU64,
    /// fanout: the publisher's copies of its own messages.
    pub(super) copies: AtomicU64,
}

pub(super) struct Shared {
    pub(super) phase: AtomicU8,
    pub(super) counters: Vec<Counters>,
    /// fanout: the publisher's sequence and the completion counts.
    pub(super) hub: Option<Hub>,
}

impl Shared {
    pub(super) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    pub(super) fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    pub(super) fn totals(&self) -> (u64, u64, u64) {
        self.counters.iter().fold((0, 0, 0), |(m, b, c), x| {
            (
                m + x.messages.load(Ordering::Relaxed),
                b + x.bytes.load(Ordering::Relaxed),
                c + x.connected.load(Ordering::Relaxed),
            )
        })
    }
}

/// What a load thread tells the main thread.
pub(super) enum Event {
    /// Connected (or failed to); now waiting for the go.
    Ready(Result<()>),
    /// Every connection got its last echo back (before closing).
    Drained,
    /// fanout: every subscriber and the publisher got a sync message, so all are subscribed.
    Synced,
    /// Finished: the latency histogram, and warnings (unclean closes).
    Done(Result<(Histogram, Vec<String>)>),
}

/// What the connections of one load thread share (one task, so plain cells).
pub(super) struct Worker<'a> {
    pub(super) plan: &'a Plan,
    pub(super) shared: &'a Shared,
    pub(super) counters: &'a Counters,
    /// Messages (or handshakes) still to start, with --messages.
    pub(super) budget: Cell<Option<u64>>,
    pub(super) hist: RefCell<Histogram>,
}

impl Worker<'_> {
    /// Up to `n` more messages may be sent, unless the run is stopping or the budget is spent.
    pub(super) fn grant(&self, n: u64) -> u64 {
        if self.shared.phase() >= STOP {
            return 0;
        }
        match self.budget.get() {
            None => n,
            Some(left) => {
                let n = n.min(left);
                self.budget.set(Some(left - n));
                n
            }
        }
    }

    pub(super) fn count(&self, messages: u64) {
        self.counters
            .messages
            .fetch_add(messages, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(messages * self.plan.size as u64, Ordering::Relaxed);
    }

    pub(super) fn measuring(&self) -> bool {
        self.shared.phase() == MEASURE
    }
}

/// Resolves when the run is aborted, or `grace` after it is stopped.
pub(super) async fn watch(shared: &Shared, grace: Duration, what: &str) -> anyhow::Error {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        match shared.phase() {
            ABORT => return anyhow!("aborted"),
            STOP => {
                tokio::time::sleep(grace).await;
                return anyhow!("{what} within --timeout {grace:?} after the end of the run");
            }
            _ => {}
        }
    }
}
