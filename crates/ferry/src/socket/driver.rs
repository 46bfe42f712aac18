//! The task that owns a connection's transport and protocol state.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use ferry_proto::{
    CloseCode, CloseInfo, Connection, Event, Initiator, SendOptions, State, Utf8Bytes,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_util::io::{poll_read_buf, poll_write_buf};

use super::WRITE_HIGH_WATER;
use super::pool;
use super::receiver::Incoming;
use super::sender::Command;
use super::shared::Shared;

/// Room below which the receive buffer grows (to `pool::BUF_SIZE`, or the frame in flight)
/// before a read.
const MIN_READ: usize = 1024;
/// Rounds of work per poll before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 16;

pub(crate) struct Driver<S> {
    io: S,
    conn: Connection,
    commands_open: bool,
    /// The drop-queue marker whose messages are being moved into the protocol, if one is.
    draining: Option<u64>,
    shared: Arc<Shared>,
    timer: Option<Pin<Box<Sleep>>>,
    read_closed: bool,
    needs_flush: bool,
    /// Set once the transport failed; its text goes into the close reason.
    io_error: Option<io::Error>,
    reported: bool,
    /// Bounds the final flush once the protocol is done, against a peer that stopped reading.
    linger: Option<Pin<Box<Sleep>>>,
    /// The read buffer was grown past what the pool keeps, for a large frame: free it when idle
    /// rather than pool it (a pooled remnant would keep the whole large allocation alive).
    grown: bool,
    /// The previous large read buffer's remnant. Its message is usually still being echoed or
    /// used when the next large frame starts; by the frame after, it is gone and the allocation
    /// is reused instead of a fresh one (which glibc would get by growing the heap, and the
    /// kernel by faulting in and zeroing every page: `brk` and ~130 page faults per 1 MiB echo).
    spare: Option<BytesMut>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(io: S, conn: Connection, shared: Arc<Shared>) -> Self {
        let mut driver = Driver {
            io,
            conn,
            commands_open: true,
            draining: None,
            shared,
            timer: None,
            read_closed: false,
            needs_flush: false,
            io_error: None,
            reported: false,
            linger: None,
            grown: false,
            spare: None,
        };
        // Leftover bytes from the handshake may already have produced events.
        driver.dispatch_events();
        driver
    }

    /// Moves queued commands into the protocol while little is waiting to be written.
    ///
    /// The driver's waker is registered (in `poll`) before this looks at the queue, so a command
    /// pushed after the look wakes it.
    fn pull_commands(&mut self) -> bool {
        let mut progress = false;
        if self.commands_open && self.conn.wants_transmit_buf() {
            // Parked again at the next idle read if no command uses it.
            self.conn.provide_transmit_buf(pool::take());
        }
        while self.commands_open && self.conn.transmit().len() < WRITE_HIGH_WATER {
            // A marker's messages come before any later command.
            if self.draining.is_some() {
                progress |= self.drain_marker();
                continue;
            }
            let command = self.shared.commands().pop_front();
            match command {
                Some(command) => {
                    progress = true;
                    self.apply(command);
                }
                None if self.shared.senders.load(Ordering::Acquire) == 0 => {
                    self.commands_open = false;
                    progress = true;
                    // Every sender is gone. With the receiver gone too, nobody can use this
                    // connection any more: close it.
                    if !self.shared.receiver_alive.load(Ordering::Acquire)
                        && self.conn.state() == State::Open
                    {
                        let _ = self.conn.close(CloseCode::NORMAL, "", Instant::now());
                        self.shared.closing.store(true, Ordering::Release);
                    }
                }
                None => break,
            }
        }
        progress
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Message(message, uncompressed) => {
                let len = message.len();
                // After a close, a queued message is dropped: §5.5.1 forbids data after close.
                let options = SendOptions {
                    uncompressed,
                    ..SendOptions::default()
                };
                let _ = self.conn.send_with(message, options);
                self.shared.release(len);
            }
            Command::Prepared(frame) => {
                let _ = self.conn.send_prepared(&frame);
                self.shared.release(frame.len());
            }
            Command::Droppable(marker) => {
                self.draining = Some(marker);
                self.drain_marker();
            }
            Command::Ping(payload) => {
                let _ = self.conn.send_ping(payload);
            }
            Command::Close(code, reason) => {
                if self.conn.close(code, &reason, Instant::now()).is_err()
                    && self.conn.state() == State::Open
                {
                    // An unsendable code from the application: close normally instead of never.
                    let _ = self.conn.close(CloseCode::NORMAL, &reason, Instant::now());
                }
            }
        }
    }

    /// Moves the droppable messages of the marker being drained into the protocol while little
    /// is waiting to be written, so the rest stay droppable. Returns whether any moved.
    fn drain_marker(&mut self) -> bool {
        let Some(marker) = self.draining else {
            return false;
        };
        let mut progress = false;
        while self.conn.transmit().len() < WRITE_HIGH_WATER {
            let frame = {
                let mut queue = self
                    .shared
                    .droppable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if queue.marker == marker {
                    // Entries queued from now on need a marker after this point.
                    self.shared.marker_open.store(false, Ordering::Release);
                }
                queue.take(marker)
            };
            // `None`: the rest of this marker's entries were taken, or dropped to make room
            // (their bytes released then).
            let Some(frame) = frame else {
                self.draining = None;
                break;
            };
            progress = true;
            let _ = self.conn.send_prepared(&frame);
            self.shared.release(frame.len());
        }
        progress
    }

    /// Writes what the protocol has ready. Returns whether bytes moved.
    fn write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.conn.transmit().has_remaining() && self.io_error.is_none() {
            match poll_write_buf(Pin::new(&mut self.io), cx, self.conn.transmit()) {
                Poll::Ready(Ok(0)) => self.fail_io(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    self.needs_flush = true;
                }
                Poll::Ready(Err(err)) => self.fail_io(err),
                Poll::Pending => return progress,
            }
        }
        if self.needs_flush && self.io_error.is_none() {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(err)) => self.fail_io(err),
                Poll::Pending => {}
            }
        }
        progress
    }

    /// Reads and processes bytes unless the receiver's queue is over budget.
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.read_closed || self.io_error.is_some() {
            return false;
        }
        if self.conn.is_stalled() {
            // A violation follows messages the application has not taken yet. Fail only once it
            // has taken them, and after this round pulled any replies it queued, so those go out
            // before the close frame.
            self.shared.stalled.store(true, Ordering::Release);
            self.shared.driver.register(cx.waker());
            if self.shared.received.load(Ordering::Acquire) > 0 {
                return false;
            }
            self.shared.stalled.store(false, Ordering::Release);
            self.conn.handle_received(Instant::now());
            self.dispatch_events();
            return true;
        }
        if self.shared.received.load(Ordering::Acquire) >= self.shared.recv_budget {
            // Paused: the receiver wakes us when it drains below the budget. Check again after
            // registering, in case it drained in between.
            self.shared.driver.register(cx.waker());
            if self.shared.received.load(Ordering::Acquire) >= self.shared.recv_budget {
                return false;
            }
        }
        // Room for the rest of the frame in flight, whole (its length already passed
        // `max_frame_size`), so a large frame is read in as few reads as the socket allows and
        // never copied by repeated growth; a pooled buffer otherwise. Untouched capacity costs
        // address space, not memory.
        let want = self.conn.bytes_wanted().unwrap_or(0).max(MIN_READ);
        let buf = self.conn.recv_buf();
        if buf.capacity() == 0 {
            if std::mem::take(&mut self.grown) {
                // The remnant of the large buffer the last frame filled: the next large frame
                // can have its allocation back once that frame's message is gone.
                self.spare = Some(std::mem::take(buf));
            }
            *buf = pool::take();
        }
        if buf.capacity() - buf.len() < want {
            if want > pool::KEEP_MAX {
                let was_grown = std::mem::replace(&mut self.grown, true);
                let mut next = match self.spare.take() {
                    Some(mut spare) => {
                        spare.clear();
                        if spare.try_reclaim(buf.len() + want) {
                            spare
                        } else {
                            BytesMut::with_capacity(buf.len() + want)
                        }
                    }
                    None => BytesMut::with_capacity(buf.len() + want),
                };
                // The frame's first bytes move over.
                next.extend_from_slice(buf);
                let previous = std::mem::replace(buf, next);
                if !was_grown {
                    pool::put(previous);
                } else if self.spare.is_none() {
                    self.spare = Some(previous);
                }
            } else {
                buf.reserve(want.max(pool::BUF_SIZE));
            }
        }
        match poll_read_buf(Pin::new(&mut self.io), cx, self.conn.recv_buf()) {
            Poll::Ready(Ok(0)) => {
                self.read_closed = true;
                self.conn.receive_eof();
            }
            Poll::Ready(Ok(_)) => self.conn.handle_received(Instant::now()),
            Poll::Ready(Err(err)) => self.fail_io(err),
            Poll::Pending => {
                if std::mem::take(&mut self.grown) {
                    let grown = std::mem::take(self.conn.recv_buf());
                    if !grown.is_empty() || self.conn.bytes_wanted().is_some() {
                        // Still in use: keep it, and free it at a later idle read.
                        *self.conn.recv_buf() = grown;
                        self.grown = true;
                    } else {
                        // Idle: neither large allocation is kept.
                        self.spare = None;
                    }
                }
                self.conn.take_idle_buffers(pool::put);
                self.shared.release_idle_queues();
                return false;
            }
        }
        self.dispatch_events();
        true
    }

    fn dispatch_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Message(message) => {
                    let len = message.len();
                    self.shared.received.fetch_add(len, Ordering::AcqRel);
                    if self
                        .shared
                        .push_incoming(Incoming::Message(message))
                        .is_err()
                    {
                        // Nobody is receiving: discard, and keep the budget honest.
                        self.shared.received.fetch_sub(len, Ordering::AcqRel);
                    }
                }
                Event::Ping(_) | Event::Pong(_) => {}
                Event::Closed(info) => self.report(info),
            }
        }
        if self.conn.state() != State::Open {
            self.shared.closing.store(true, Ordering::Release);
        }
    }

    fn report(&mut self, mut info: CloseInfo) {
        if self.reported {
            return;
        }
        self.reported = true;
        if let (Some(err), true) = (&self.io_error, info.reason.is_empty()) {
            info.reason = Utf8Bytes::from(err.to_string());
        }
        let _ = self.shared.push_incoming(Incoming::Closed(info.clone()));
        self.shared.set_closed(info);
    }

    fn fail_io(&mut self, err: io::Error) {
        self.io_error = Some(err);
        self.read_closed = true;
        self.conn.receive_eof();
        self.dispatch_events();
    }

    /// Arms the timer for the protocol's next deadline and fires it when due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.conn.poll_timeout() else {
            self.timer = None;
            return false;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.conn.handle_timeout(Instant::now());
                self.dispatch_events();
                true
            }
            Poll::Pending => false,
        }
    }

    /// The application gave up on the close: report and stop.
    fn aborted(&mut self) -> bool {
        if !self.shared.abort.load(Ordering::Acquire) {
            return false;
        }
        self.report(CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: Utf8Bytes::from_static("close timeout"),
            initiator: Initiator::Local,
            clean: false,
        });
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.driver.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            if this.aborted() {
                return Poll::Ready(());
            }
            let mut progress = this.pull_commands();
            progress |= this.write(cx);
            if this.io_error.is_some() {
                this.drain_dead_commands();
                return Poll::Ready(());
            }
            if this.conn.should_close_transport() && this.conn.transmit().has_remaining() {
                let timeout = this.conn.config().limits.close_timeout;
                let linger = this
                    .linger
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if linger.as_mut().poll(cx).is_ready() {
                    // The peer stopped reading; what it did not take is lost with the transport.
                    this.drain_dead_commands();
                    return Poll::Ready(());
                }
            }
            if this.conn.should_close_transport() && !this.conn.transmit().has_remaining() {
                this.drain_dead_commands();
                // §7.1.1: close the transport. A failed shutdown changes nothing for the peer.
                return match Pin::new(&mut this.io).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready(()),
                };
            }
            progress |= this.read(cx);
            progress |= this.poll_timer(cx);
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let other connections run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S> Driver<S> {
    /// Releases what senders still have queued once the connection can no longer send it.
    /// Marks the driver gone first, under the queue's lock, so no sender queues after the drain.
    fn drain_dead_commands(&mut self) {
        let mut dead = {
            let mut queue = self.shared.commands();
            self.shared.driver_gone.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        for command in dead.drain(..) {
            match command {
                Command::Message(message, _) => self.shared.release(message.len()),
                Command::Prepared(frame) => self.shared.release(frame.len()),
                _ => {}
            }
        }
        let mut droppable = self
            .shared
            .droppable
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while let Some(len) = droppable.drop_oldest() {
            self.shared.release(len);
        }
    }
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        if !self.reported {
            let info = CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: Utf8Bytes::from_static("connection task ended"),
                initiator: Initiator::Local,
                clean: false,
            };
            let _ = self.shared.push_incoming(Incoming::Closed(info.clone()));
            self.shared.set_closed(info);
        }
        self.drain_dead_commands();
        // The receiver may be waiting for an item that will now never come.
        self.shared.receiver.wake();
    }
}
