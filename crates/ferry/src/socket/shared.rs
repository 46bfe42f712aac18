//! State shared between a connection's driver and its handles: atomics, wakers, and the two
//! queues between them.
//!
//! The queues are `VecDeque`s behind a `std` mutex rather than channels: a `VecDeque` allocates
//! slots as they are needed, where a channel allocates a block of 32 up front (about 1.5 KiB
//! each for these item types); and every lock is held only to push or pop one item, by
//! at most the driver and the one handle on the other side, so it is an uncontended atomic in
//! practice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::{CloseInfo, FrameEncoding, Limits, PreparedFrame};
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::command::Command;
use super::incoming::Incoming;

/// Queue slots kept while idle: the few a connection uses message by message.
const KEPT_SLOTS: usize = 4;

pub(crate) struct Shared {
    /// What the senders ask of the driver, in order.
    pub(crate) commands: Mutex<VecDeque<Command>>,
    /// Live `Sender` handles; the last one to go wakes the driver.
    pub(crate) senders: AtomicUsize,
    /// Set (under the `commands` lock) once the driver is gone: nothing queued would be taken.
    pub(crate) driver_gone: AtomicBool,
    /// Messages and the close for the receiver, in order.
    pub(crate) incoming: Mutex<VecDeque<Incoming>>,
    /// Cleared (under the `incoming` lock) when the `Receiver` is dropped.
    pub(crate) receiver_alive: AtomicBool,
    /// Wakes the receiver when an item is queued for it.
    pub(crate) receiver: AtomicWaker,
    /// Bytes of messages queued by senders and not yet taken by the driver.
    pub(crate) buffered: AtomicUsize,
    pub(crate) send_budget: usize,
    /// Set when a sender waits for room, so the driver notifies only when someone listens
    /// (`Notify` takes a lock).
    pub(crate) space_wanted: AtomicBool,
    pub(crate) space: Notify,
    /// Bytes of received messages not yet taken by the receiver.
    pub(crate) received: AtomicUsize,
    pub(crate) recv_budget: usize,
    /// `Limits::close_timeout`, for `Sender::close`.
    pub(crate) close_timeout: std::time::Duration,
    /// The driver holds a protocol failure until the receiver has taken every message.
    pub(crate) stalled: AtomicBool,
    /// Set (under the `incoming` lock) when the queues' quiet deadline found messages the
    /// receiver has not taken: the receiver wakes the driver once it has taken them all, and
    /// the driver frees the slots a quiet period later, rather than looking again every period
    /// while the application does not read.
    pub(crate) wake_when_taken: AtomicBool,
    /// No more messages may be queued: a close was requested, sent or received.
    pub(crate) closing: AtomicBool,
    /// The application gave up waiting for the close: drop the transport now.
    pub(crate) abort: AtomicBool,
    /// Wakes the driver (room in the receive queue, abort).
    pub(crate) driver: AtomicWaker,
    /// How the connection ended, once it has.
    pub(crate) closed: OnceLock<CloseInfo>,
    pub(crate) closed_notify: Notify,
    /// The negotiated permessage-deflate parameters, if any.
    pub(crate) deflate: Option<DeflateParams>,
    /// The connection's fan-out group (`Connection::frame_encoding`).
    pub(crate) frame_encoding: Option<FrameEncoding>,
    /// Messages queued as droppable, oldest first, not yet taken by the driver.
    pub(crate) droppable: Mutex<DropQueue>,
    /// The newest drop-queue marker may still cover new entries: it is in the command queue,
    /// not yet taken, and no ordinary command was queued after it. Cleared (without the lock)
    /// by every ordinary command, and by the driver when it takes the marker.
    pub(crate) marker_open: AtomicBool,
}

/// Droppable messages wait here, not in the command queue, so a sender can drop the oldest
/// ones without touching anything else queued.
///
/// Their place in the command order is kept by markers: a `Command::Droppable(id)` in the
/// command queue stands for every entry tagged with a marker up to `id`. A sender opens a new
/// marker only when the last one was taken or an ordinary command was queued after it
/// (`marker_open` false), so a connection that stopped reading holds at most one stale marker
/// per ordinary command, however many messages are published to it and dropped.
#[derive(Default)]
pub(crate) struct DropQueue {
    /// The newest marker id handed out.
    pub(crate) marker: u64,
    /// Entries, oldest first, each with the marker that covers it.
    pub(crate) entries: VecDeque<(u64, PreparedFrame)>,
    /// Bytes of the entries.
    pub(crate) bytes: usize,
}

impl DropQueue {
    /// Takes the oldest entry covered by marker `id`, if any is left: the driver calls this
    /// until `None` when it meets the marker. Entries of older markers were taken before.
    pub(crate) fn take(&mut self, id: u64) -> Option<PreparedFrame> {
        match self.entries.front() {
            Some((marker, _)) if *marker <= id => {
                let (_, frame) = self.entries.pop_front()?;
                self.bytes -= frame.len();
                Some(frame)
            }
            _ => None,
        }
    }

    /// Drops the oldest entry; returns its length.
    pub(crate) fn drop_oldest(&mut self) -> Option<usize> {
        let (_, frame) = self.entries.pop_front()?;
        self.bytes -= frame.len();
        Some(frame.len())
    }
}

impl Shared {
    pub(crate) fn new(
        limits: &Limits,
        deflate: Option<DeflateParams>,
        frame_encoding: Option<FrameEncoding>,
    ) -> Self {
        Shared {
            commands: Mutex::new(VecDeque::new()),
            senders: AtomicUsize::new(1),
            driver_gone: AtomicBool::new(false),
            incoming: Mutex::new(VecDeque::new()),
            receiver_alive: AtomicBool::new(true),
            receiver: AtomicWaker::new(),
            buffered: AtomicUsize::new(0),
            send_budget: limits.send_queue_bytes,
            space_wanted: AtomicBool::new(false),
            space: Notify::new(),
            received: AtomicUsize::new(0),
            recv_budget: limits.recv_queue_bytes,
            close_timeout: limits.close_timeout,
            stalled: AtomicBool::new(false),
            wake_when_taken: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            driver: AtomicWaker::new(),
            closed: OnceLock::new(),
            closed_notify: Notify::new(),
            deflate,
            frame_encoding,
            droppable: Mutex::new(DropQueue::default()),
            marker_open: AtomicBool::new(false),
        }
    }

    /// Reserves room for `len` bytes in the send queue. The rule: the queue never holds more than
    /// the budget, except one message larger than the whole budget, taken into an empty queue.
    pub(crate) fn try_reserve(&self, len: usize) -> bool {
        let mut current = self.buffered.load(Ordering::Acquire);
        loop {
            if !super::engine::fits(current, len, self.send_budget) {
                return false;
            }
            match self.buffered.compare_exchange_weak(
                current,
                current + len,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns `len` bytes to the send budget and wakes waiting senders, if any.
    pub(crate) fn release(&self, len: usize) {
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        if self.space_wanted.load(Ordering::Acquire) {
            self.space_wanted.store(false, Ordering::Release);
            self.space.notify_waiters();
        }
    }

    /// The command queue. Nothing panics while holding it, so a poisoned lock is still sound.
    pub(crate) fn commands(&self) -> MutexGuard<'_, VecDeque<Command>> {
        self.commands.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The receiver's queue. Nothing panics while holding it, so a poisoned lock is still sound.
    pub(crate) fn incoming(&self) -> MutexGuard<'_, VecDeque<Incoming>> {
        self.incoming.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a command for the driver and wakes it; hands the command back if the driver is gone.
    pub(crate) fn push_command(&self, command: Command) -> Result<(), Command> {
        {
            let mut queue = self.commands();
            if self.driver_gone.load(Ordering::Acquire) {
                return Err(command);
            }
            push_small(&mut queue, command);
        }
        self.driver.wake();
        Ok(())
    }

    /// Queues an item for the receiver and wakes it; hands the item back if it was dropped.
    pub(crate) fn push_incoming(&self, item: Incoming) -> Result<(), Incoming> {
        {
            let mut queue = self.incoming();
            if !self.receiver_alive.load(Ordering::Acquire) {
                return Err(item);
            }
            push_small(&mut queue, item);
        }
        self.receiver.wake();
        Ok(())
    }

    /// Frees what a burst grew the queues to, once they are empty. A few slots stay: freeing
    /// them too costs an allocation per queue per message (about 1,000 instructions per small
    /// echo under callgrind). Returns whether a queue still holds slots, for
    /// [`Shared::release_quiet_queues`] once the connection has been quiet a while.
    pub(crate) fn release_idle_queues(&self) -> bool {
        let mut commands = self.commands();
        if commands.is_empty() && commands.capacity() > KEPT_SLOTS {
            *commands = VecDeque::new();
        }
        let holds = commands.capacity() > 0;
        drop(commands);
        let mut incoming = self.incoming();
        if incoming.is_empty() && incoming.capacity() > KEPT_SLOTS {
            *incoming = VecDeque::new();
        }
        holds || incoming.capacity() > 0
    }

    /// Frees every slot of the empty queues, the drop queue's included: nothing went through
    /// them for a while, so an idle connection holds no queue memory (about 0.5 KiB per
    /// subscriber that once received a message, docs/memory.md).
    ///
    /// A queue that still holds items keeps its slots. Messages the receiver has not taken set
    /// `wake_when_taken`, so the receiver says when they are gone. Commands and drop-queue
    /// entries are still there only while the transport cannot take more, and the driver runs
    /// again when it can, then finds the queues idle at its next read.
    pub(crate) fn release_quiet_queues(&self) {
        fn free<T>(queue: &mut VecDeque<T>) -> bool {
            if queue.is_empty() {
                *queue = VecDeque::new();
                return false;
            }
            true
        }
        free(&mut self.commands());
        let mut incoming = self.incoming();
        if free(&mut incoming) {
            self.wake_when_taken.store(true, Ordering::Release);
        }
        drop(incoming);
        let mut droppable = self
            .droppable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        free(&mut droppable.entries);
    }

    /// Whether the driver asked to be woken once the receiver has taken every message
    /// (`wake_when_taken`); clears the request. A plain load first: the request is rare, and
    /// the receiver asks at every message that empties its queue.
    pub(crate) fn take_wake_when_taken(&self) -> bool {
        self.wake_when_taken.load(Ordering::Acquire)
            && self.wake_when_taken.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Records how the connection ended and wakes everyone waiting for it.
    pub(crate) fn set_closed(&self, info: CloseInfo) {
        self.closing.store(true, Ordering::Release);
        let _ = self.closed.set(info);
        self.closed_notify.notify_waiters();
        self.space.notify_waiters();
    }
}

/// Appends to a queue that may have no slots yet. Its first slot is one, not the four a
/// `VecDeque` starts with: a connection sent a single message (each subscriber of a topic woken
/// by one publish, say) allocates a quarter as much, 104 bytes for a command instead of 416,
/// and memory freed a quiet second later is less for the allocator to hold on to. A second
/// item grows the queue to four slots, as before.
pub(crate) fn push_small<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(item);
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("buffered", &self.buffered.load(Ordering::Relaxed))
            .field("closing", &self.is_closing())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    #[test]
    fn a_queue_starts_with_one_slot_and_grows_to_four() {
        let mut queue = VecDeque::new();
        super::push_small(&mut queue, 1u64);
        assert_eq!(queue.capacity(), 1);
        queue.pop_front();
        super::push_small(&mut queue, 2);
        assert_eq!(queue.capacity(), 1, "a slot that is there is reused");
        super::push_small(&mut queue, 3);
        assert_eq!(queue.capacity(), 4);
        assert_eq!(queue, [2, 3]);
    }
}
