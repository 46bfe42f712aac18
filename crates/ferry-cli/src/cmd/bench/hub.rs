//! What the load threads of a fan-out run share about the publisher's messages: which are
//! in flight, and each thread's count of its receivers per message.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::task::AtomicWaker;

/// What the load threads share about the publisher's messages.
pub(super) struct Hub {
    /// Messages published: the next sequence number.
    pub(super) published: AtomicU64,
    /// Messages that every receiver has.
    pub(super) completed: AtomicU64,
    /// Per ring slot: load threads still to finish that message.
    pub(super) remaining: Box<[AtomicU32]>,
    /// Per ring slot: when the message was written, in ns since `epoch`.
    pub(super) sent_at: Box<[AtomicU64]>,
    pub(super) ring_mask: u64,
    pub(super) epoch: Instant,
    /// The number of messages published in all, once the publisher has stopped; `u64::MAX`
    /// before.
    pub(super) total: AtomicU64,
    /// Receivers that have seen a sync message.
    pub(super) synced: AtomicUsize,
    /// Subscribers plus the publisher.
    pub(super) receivers: usize,
    pub(super) threads: u32,
    /// Woken when a message completes, so a publisher waiting for room in the window goes on.
    pub(super) publisher: AtomicWaker,
}

impl Hub {
    pub(super) fn new(window: usize, subscribers: usize, threads: usize) -> Hub {
        // A slot is reused `ring` messages later, when at most `window` are in flight: by then
        // the slot's message is complete (messages complete in order).
        let ring = window.max(1).next_power_of_two();
        Hub {
            published: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            remaining: (0..ring).map(|_| AtomicU32::new(0)).collect(),
            sent_at: (0..ring).map(|_| AtomicU64::new(0)).collect(),
            ring_mask: ring as u64 - 1,
            epoch: Instant::now(),
            total: AtomicU64::new(u64::MAX),
            synced: AtomicUsize::new(0),
            receivers: subscribers + 1,
            threads: threads as u32,
            publisher: AtomicWaker::new(),
        }
    }

    pub(super) fn slot(&self, seq: u64) -> usize {
        (seq & self.ring_mask) as usize
    }

    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn in_flight(&self) -> u64 {
        self.published
            .load(Ordering::Acquire)
            .saturating_sub(self.completed.load(Ordering::Acquire))
    }
}

/// One load thread's count of its receivers per message.
pub(super) struct Tally {
    /// Per ring slot: receivers of this thread that have the message.
    pub(super) got: RefCell<Vec<u32>>,
    /// Receivers on this thread.
    pub(super) receivers: u32,
    /// Messages received by this thread's receivers, all together.
    pub(super) received: Cell<u64>,
}

impl Tally {
    pub(super) fn new(hub: &Hub, receivers: usize) -> Tally {
        Tally {
            got: RefCell::new(vec![0; hub.remaining.len()]),
            receivers: receivers as u32,
            received: Cell::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_at_least_the_window() {
        for (window, ring) in [(1, 1), (3, 4), (16, 16), (17, 32)] {
            let hub = Hub::new(window, 4, 1);
            assert_eq!(hub.remaining.len(), ring);
            assert_eq!(hub.slot(ring as u64 + 1), 1 % ring);
        }
    }
}
