//! The task that owns a connection's transport and protocol state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use ferry_proto::{CloseCode, CloseInfo, Event, SendOptions, State};
use tokio::io::{AsyncRead, AsyncWrite};

use super::WRITE_HIGH_WATER;
use super::command::Command;
use super::engine::{Ending, Round};
use super::incoming::Incoming;
use super::shared::Shared;
use super::transport::{Read, Transport};

/// Rounds of work per poll before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 16;

/// How long a connection's queues stay unused before their last slots are freed. A busy
/// connection then allocates them again at most once per period, and a quiet one holds none.
const QUIET_AFTER: Duration = Duration::from_secs(1);

pub(crate) struct Driver<S> {
    t: Transport<S>,
    commands_open: bool,
    /// The drop-queue marker whose messages are being moved into the protocol, if one is.
    draining: Option<u64>,
    shared: Arc<Shared>,
    reported: bool,
    /// When the queues' kept slots are freed if they are empty then; armed when a read would
    /// block and some queue holds slots, or the drop queue was used.
    quiet: Option<Instant>,
    /// A drop-queue marker was taken since the queues were last freed.
    drop_queue_used: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(t: Transport<S>, shared: Arc<Shared>) -> Self {
        let mut driver = Driver {
            t,
            commands_open: true,
            draining: None,
            shared,
            reported: false,
            quiet: None,
            drop_queue_used: false,
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
        if self.commands_open {
            self.t.lend_transmit_buf();
        }
        while self.commands_open && self.t.conn.transmit().len() < WRITE_HIGH_WATER {
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
                        && self.t.conn.state() == State::Open
                    {
                        self.t.start_close(CloseCode::NORMAL, "");
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
                let _ = self.t.conn.send_with(message, options);
                self.shared.release(len);
            }
            Command::Prepared(frame) => {
                let _ = self.t.conn.send_prepared(&frame);
                self.shared.release(frame.len());
            }
            Command::Droppable(marker) => {
                self.drop_queue_used = true;
                self.draining = Some(marker);
                self.drain_marker();
            }
            Command::Ping(payload) => {
                let _ = self.t.conn.send_ping(payload);
            }
            Command::Close(code, reason) => self.t.start_close(code, &reason),
        }
    }

    /// Moves the droppable messages of the marker being drained into the protocol while little
    /// is waiting to be written, so the rest stay droppable. Returns whether any moved.
    fn drain_marker(&mut self) -> bool {
        let Some(marker) = self.draining else {
            return false;
        };
        let mut progress = false;
        while self.t.conn.transmit().len() < WRITE_HIGH_WATER {
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
            let _ = self.t.conn.send_prepared(&frame);
            self.shared.release(frame.len());
        }
        progress
    }

    /// Fails the connection on a violation the protocol held back (§7.1.7) once the application
    /// has taken the messages before it. Called after this round pulled any replies the
    /// application queued, so those go out before the close frame. Returns whether it did.
    fn resume_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.t.conn.is_stalled() || self.t.read_closed() {
            return false;
        }
        self.shared.stalled.store(true, Ordering::Release);
        self.shared.driver.register(cx.waker());
        if self.shared.received.load(Ordering::Acquire) > 0 {
            return false;
        }
        self.shared.stalled.store(false, Ordering::Release);
        self.t.conn.handle_received(Instant::now());
        self.dispatch_events();
        true
    }

    /// Whether there is room to read: not while a violation is held back, nor while the
    /// receiver's queue is over its budget (the receiver wakes the driver when it drains below).
    fn may_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.t.conn.is_stalled() {
            return false;
        }
        if self.shared.received.load(Ordering::Acquire) >= self.shared.recv_budget {
            // Check again after registering, in case it drained in between.
            self.shared.driver.register(cx.waker());
            if self.shared.received.load(Ordering::Acquire) >= self.shared.recv_budget {
                return false;
            }
        }
        true
    }

    fn dispatch_events(&mut self) {
        while let Some(event) = self.t.conn.poll_event() {
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
        if self.t.conn.state() != State::Open {
            self.shared.closing.store(true, Ordering::Release);
        }
    }

    fn report(&mut self, mut info: CloseInfo) {
        if self.reported {
            return;
        }
        self.reported = true;
        info = self.t.explain(info);
        let _ = self.shared.push_incoming(Incoming::Closed(info.clone()));
        self.shared.set_closed(info);
    }

    /// The application gave up on the close: report and stop.
    fn aborted(&mut self) -> bool {
        if !self.shared.abort.load(Ordering::Acquire) {
            return false;
        }
        self.report(Ending::CloseTimeout.info());
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Future for Driver<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.driver.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            if this.aborted() {
                return Poll::Ready(());
            }
            let mut progress = this.pull_commands();
            progress |= this.resume_stalled(cx);
            let may_read = this.may_read(cx);
            let round = this.t.round(cx, may_read, |read| {
                if read == Some(Read::Pending) {
                    // Idle: free what the queues hold beyond their kept slots, and arm the
                    // deadline that frees those too, unless the receiver is yet to take what
                    // the last deadline found (it wakes the driver when it has).
                    let keeps_slots = this.shared.release_idle_queues();
                    if (keeps_slots || this.drop_queue_used)
                        && this.quiet.is_none()
                        && !this.shared.wake_when_taken.load(Ordering::Acquire)
                    {
                        this.quiet = Some(super::now() + QUIET_AFTER);
                    }
                }
                this.quiet
            });
            let Round::Ran { read, fired, .. } = round else {
                // Nothing more is read: report what came before the end, and finish the
                // transport.
                this.dispatch_events();
                this.drain_dead_commands();
                ready!(this.t.poll_finish(cx));
                // The transport's end may have produced the close event just now; without
                // one, the end is reported as the single-task `WebSocket` reports it.
                this.dispatch_events();
                this.report(Ending::TransportClosed.info());
                return Poll::Ready(());
            };
            if matches!(read, Some(Read::Data | Read::Ended)) {
                this.dispatch_events();
            }
            if let Some(fired) = fired {
                if this.quiet.is_some_and(|quiet| quiet <= fired) {
                    this.drop_queue_used = false;
                    this.quiet = None;
                    this.shared.release_quiet_queues();
                }
                this.dispatch_events();
            }
            if !(progress || round.progress()) {
                return Poll::Pending;
            }
        }
        // Still busy: let other connections run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A split connection's own work, for a caller that polls it itself instead of spawning it:
/// reading, writing, keepalive and close timers, and moving messages between the transport
/// and the [`Sender`](crate::Sender) and [`Receiver`](crate::Receiver) handles. Nothing moves
/// while it is not polled: a message a `Sender` queued is written, and the transport closed
/// after the close, only while it is. So poll it whenever the task waits on the connection
/// (or on anything else), until it completes: once the connection is over and its transport
/// closed, which may be after the `Receiver` reported the close. Polled after that, it is
/// ready again at once.
///
/// [`WebSocket::split`](crate::WebSocket::split) spawns this as a task of its own;
/// [`WebSocket::split_with_driver`](crate::WebSocket::split_with_driver) hands it back, so a
/// task that already lives as long as the connection (one that also waits on other work, as a
/// pub/sub subscriber's does) can poll it beside that work, saving a task per connection.
///
/// ```no_run
/// # async fn f(ws: ferry::WebSocket<tokio::net::TcpStream>) {
/// let (sender, mut receiver, mut drive) = ws.split_with_driver();
/// let work = async {
///     while let Some(message) = receiver.recv_message().await {
///         let _ = sender.send(message).await;
///     }
/// };
/// // Both on this task: the connection moves while the work waits on it.
/// tokio::join!(&mut drive, work);
/// # }
/// ```
#[must_use = "nothing moves on the connection unless this is polled"]
pub struct Drive<S> {
    driver: Option<Driver<S>>,
}

impl<S> Drive<S> {
    pub(crate) fn new(driver: Option<Driver<S>>) -> Self {
        Drive { driver }
    }

    /// The driver, if the connection still has one, to spawn.
    pub(crate) fn into_driver(self) -> Option<Driver<S>> {
        self.driver
    }
}

impl<S> std::fmt::Debug for Drive<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("done", &self.driver.is_none())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Future for Drive<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(driver) = this.driver.as_mut() else {
            return Poll::Ready(());
        };
        if Pin::new(driver).poll(cx).is_ready() {
            // Dropped now: the handles learn the driver is gone, as when its task ends.
            this.driver = None;
            return Poll::Ready(());
        }
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
            let info = Ending::TaskEnded.info();
            let _ = self.shared.push_incoming(Incoming::Closed(info.clone()));
            self.shared.set_closed(info);
        }
        self.drain_dead_commands();
        // The receiver may be waiting for an item that will now never come.
        self.shared.receiver.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_proto::{PreparedMessage, Role};

    use crate::{Message, Overflow};

    /// Capacity of (commands, incoming, drop queue).
    fn capacities(sender: &crate::Sender) -> (usize, usize, usize) {
        let shared = sender.shared();
        let droppable = shared.droppable.lock().unwrap().entries.capacity();
        (
            shared.commands().capacity(),
            shared.incoming().capacity(),
            droppable,
        )
    }

    /// A connection's queues keep a few slots while it is busy, so a message costs no
    /// allocation, and free them within `QUIET_AFTER` once it is quiet: an idle subscriber that
    /// once received messages holds no queue memory.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_frees_its_queue_slots() {
        let config = crate::Config::default();
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let (sender, mut receiver) =
            crate::from_raw(server_io, Role::Server, &config, None, bytes::Bytes::new());
        let (peer_sender, mut peer_receiver) =
            crate::from_raw(client_io, Role::Client, &config, None, bytes::Bytes::new());

        for i in 0..3u8 {
            peer_sender
                .send(Message::binary(vec![i; 10]))
                .await
                .unwrap();
            assert_eq!(receiver.recv_message().await.unwrap().len(), 10);
            sender.send(Message::binary(vec![i; 10])).await.unwrap();
            let frame = PreparedMessage::new(Message::binary(vec![i; 20])).frame(None);
            sender
                .try_send_prepared(frame, Overflow::DropOldest)
                .unwrap();
            assert_eq!(peer_receiver.recv_message().await.unwrap().len(), 10);
            assert_eq!(peer_receiver.recv_message().await.unwrap().len(), 20);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (commands, incoming, droppable) = capacities(&sender);
        assert!(
            commands > 0 && incoming > 0 && droppable > 0,
            "busy: slots kept, ({commands}, {incoming}, {droppable})"
        );

        tokio::time::sleep(super::QUIET_AFTER).await;
        assert_eq!(capacities(&sender), (0, 0, 0), "quiet: every slot freed");

        // The connection still works, and frees again after the next burst.
        peer_sender.send(Message::text("again")).await.unwrap();
        assert_eq!(receiver.recv_message().await.unwrap().len(), 5);
        tokio::time::sleep(super::QUIET_AFTER + Duration::from_millis(10)).await;
        assert_eq!(capacities(&sender), (0, 0, 0));

        // A message the application leaves unread keeps its slot; once taken, with no read
        // after it to notice, the slot still goes.
        peer_sender.send(Message::text("unread")).await.unwrap();
        tokio::time::sleep(super::QUIET_AFTER * 2).await;
        assert!(capacities(&sender).1 > 0, "the unread message is kept");
        assert_eq!(receiver.recv_message().await.unwrap().len(), 6);
        tokio::time::sleep(super::QUIET_AFTER + Duration::from_millis(10)).await;
        assert_eq!(capacities(&sender), (0, 0, 0));
    }

    /// Counts the wakes of the task that polls a `Drive`.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A message the application does not take keeps its queue slot, and the driver does not
    /// wake every quiet period to look at it again: it waits for the receiver to say the
    /// message was taken, and frees the slot a period after that.
    #[tokio::test(start_paused = true)]
    async fn an_unread_message_does_not_wake_the_driver_every_period() {
        use std::future::Future;
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        use std::task::{Context, Waker};

        let config = crate::Config::default();
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let ws = crate::WebSocket::from_raw(server_io, Role::Server, &config, None, &[]);
        let (sender, mut receiver, mut drive) = ws.split_with_driver();
        let (peer_sender, _peer_receiver) =
            crate::from_raw(client_io, Role::Client, &config, None, bytes::Bytes::new());
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        // Polls the drive at once, then whenever it was woken, for `period` of paused time;
        // returns how many times it polled.
        let run = async |drive: &mut super::Drive<_>, period: Duration| {
            let mut polls = 0;
            let mut seen = usize::MAX;
            let steps = period.as_millis() / 10;
            for _ in 0..steps {
                let now = wakes.0.load(Ordering::SeqCst);
                if now != seen {
                    seen = now;
                    polls += 1;
                    let mut cx = Context::from_waker(&waker);
                    assert!(std::pin::Pin::new(&mut *drive).poll(&mut cx).is_pending());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            polls
        };

        peer_sender.send(Message::text("unread")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        run(&mut drive, Duration::from_millis(100)).await;
        assert!(
            capacities(&sender).1 > 0,
            "the message is queued for the receiver"
        );

        // The first poll, then at most the one quiet deadline.
        let polls = run(&mut drive, super::QUIET_AFTER * 5).await;
        assert!(
            polls <= 2,
            "{polls} polls in five quiet periods with the message unread"
        );
        assert!(
            capacities(&sender).1 > 0,
            "the unread message keeps its slot"
        );

        // Taking it wakes the driver, which frees the slot a quiet period later.
        assert_eq!(receiver.recv_message().await.unwrap().len(), 6);
        run(&mut drive, super::QUIET_AFTER + Duration::from_millis(100)).await;
        assert_eq!(capacities(&sender), (0, 0, 0));
    }
}
