//! The sending half of a connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::{CloseCode, CloseInfo, FrameEncoding, Message, PreparedFrame};

use super::command::Command;
use super::shared::Shared;
use crate::error::{SendError, TrySendError};

/// What [`Sender::try_send_prepared`] does when the send queue is over its byte budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Queue nothing and hand the message back.
    #[default]
    Refuse,
    /// Drop the oldest droppable messages not yet being written until the new one fits.
    DropOldest,
}

/// Sends messages on a connection. Cheap to clone; every clone feeds the same ordered queue.
///
/// Messages are queued whole and written by the connection's own task, so a send never waits
/// for the network; it waits only while the queue is over its byte budget
/// (`Limits::send_queue_bytes`). See `docs/backpressure.md`.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// The state shared with the driver, for tests that look at its queues.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: the driver may close the connection if the receiver is gone too.
            self.shared.driver.wake();
        }
    }
}

impl Sender {
    /// The first handle of a connection (`Shared::senders` starts at one).
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Sender { shared }
    }

    /// Queues a whole message, waiting while the send queue is over its byte budget.
    ///
    /// Returns once the message is queued, not once it is written. Fails, handing the message
    /// back, if the connection is closing or closed. If this future is dropped before it
    /// completes, the message was not queued.
    ///
    /// ```no_run
    /// # async fn f(sender: ferry::Sender) -> Result<(), ferry::SendError> {
    /// sender.send("hello").await?;
    /// sender.send(vec![1u8, 2, 3]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_inner(message.into(), false).await
    }

    /// Like [`send`](Self::send), but never compressed, whatever was negotiated: for payloads
    /// known not to compress, or secrets that must not share a compression context with
    /// attacker-influenced data (the CRIME/BREACH class of attacks).
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_inner(message.into(), true).await
    }

    async fn send_inner(&self, mut message: Message, uncompressed: bool) -> Result<(), SendError> {
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            // Register before checking, so a release between the check and the wait is seen.
            notified.as_mut().enable();
            self.shared.space_wanted.store(true, Ordering::Release);
            match self.try_send_inner(message, uncompressed) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(m)) => return Err(SendError(m)),
                Err(TrySendError::Full(m)) => message = m,
            }
            notified.await;
        }
    }

    /// Queues a whole message if the send queue has room for it, without waiting.
    ///
    /// On a full queue the message comes back as [`TrySendError::Full`]: nothing is dropped
    /// silently. A message larger than the whole budget is taken only into an empty queue.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.try_send_inner(message.into(), false)
    }

    fn try_send_inner(&self, message: Message, uncompressed: bool) -> Result<(), TrySendError> {
        if self.shared.is_closing() {
            return Err(TrySendError::Closed(message));
        }
        let len = message.len();
        if !self.shared.try_reserve(len) {
            return Err(TrySendError::Full(message));
        }
        match self.ordinary(Command::Message(message, uncompressed)) {
            Ok(()) => Ok(()),
            Err(command) => {
                self.shared.release(len);
                match command {
                    Command::Message(message, _) => Err(TrySendError::Closed(message)),
                    // Only a message was sent above.
                    _ => Err(TrySendError::Closed(Message::binary(Bytes::new()))),
                }
            }
        }
    }

    /// Queues a message prepared for many connections (see [`ferry_proto::prepared`]) without
    /// waiting, and returns how many older messages were dropped to make room.
    ///
    /// With [`Overflow::Refuse`] a full queue hands the message back as
    /// [`TrySendError::Full`], like [`try_send`](Self::try_send). With
    /// [`Overflow::DropOldest`] the message is queued as droppable, and while the queue is over
    /// its budget the oldest droppable messages the connection has not started writing yet are
    /// dropped; messages queued otherwise (by `send`, `try_send`) and control frames never are.
    /// If dropping every droppable message still leaves no room, the new message comes back as
    /// [`TrySendError::Full`].
    pub fn try_send_prepared(
        &self,
        frame: PreparedFrame,
        overflow: Overflow,
    ) -> Result<usize, TrySendError> {
        if self.shared.is_closing() {
            return Err(TrySendError::Closed(frame.message().clone()));
        }
        let len = frame.len();
        if overflow == Overflow::Refuse {
            if !self.shared.try_reserve(len) {
                return Err(TrySendError::Full(frame.message().clone()));
            }
            return match self.ordinary(Command::Prepared(frame)) {
                Ok(()) => Ok(0),
                Err(command) => {
                    self.shared.release(len);
                    Err(TrySendError::Closed(match command {
                        Command::Prepared(frame) => frame.message().clone(),
                        _ => Message::binary(Bytes::new()),
                    }))
                }
            };
        }
        // Under the lock, so the driver takes entries and markers in one consistent order.
        let mut queue = self
            .shared
            .droppable
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        if !self.shared.try_reserve(len) {
            // Drop nothing when dropping everything droppable would still leave no room.
            let buffered = self.shared.buffered.load(Ordering::Acquire);
            let others = buffered.saturating_sub(queue.bytes);
            if !super::engine::fits(others, len, self.shared.send_budget) {
                return Err(TrySendError::Full(frame.message().clone()));
            }
            while !self.shared.try_reserve(len) {
                match queue.drop_oldest() {
                    Some(old) => {
                        self.shared.release(old);
                        dropped += 1;
                    }
                    None => return Err(TrySendError::Full(frame.message().clone())),
                }
            }
        }
        if !self.shared.marker_open.load(Ordering::Acquire) {
            queue.marker += 1;
            if self
                .shared
                .push_command(Command::Droppable(queue.marker))
                .is_err()
            {
                self.shared.release(len);
                return Err(TrySendError::Closed(frame.message().clone()));
            }
            self.shared.marker_open.store(true, Ordering::Release);
        }
        let marker = queue.marker;
        queue.bytes += len;
        super::shared::push_small(&mut queue.entries, (marker, frame));
        Ok(dropped)
    }

    /// Queues an ordinary command: droppable messages queued after it must follow it, so the
    /// open drop-queue marker (which precedes it) may no longer cover them.
    fn ordinary(&self, command: Command) -> Result<(), Command> {
        self.shared.marker_open.store(false, Ordering::Release);
        self.shared.push_command(command)
    }

    /// The connection's fan-out group: connections with equal encodings share one encoding of
    /// a [`PreparedMessage`](ferry_proto::PreparedMessage). `None` when this connection must
    /// encode each message itself.
    pub fn frame_encoding(&self) -> Option<FrameEncoding> {
        self.shared.frame_encoding
    }

    /// Bytes of messages queued and not yet handed to the connection for writing, like the
    /// browser's `WebSocket.bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// Queues a ping (at most 125 bytes of payload), after the messages already queued.
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        let payload = payload.into();
        if self.shared.is_closing() || payload.len() > 125 {
            return Err(SendError(Message::Binary(payload)));
        }
        self.ordinary(Command::Ping(payload))
            .map_err(|_| SendError(Message::binary(Bytes::new())))
    }

    /// The permessage-deflate parameters negotiated in the handshake, if compression is on.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.shared.deflate
    }

    /// Whether the connection is closing or closed: sends will fail.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closing()
    }

    /// Closes the connection: every message queued so far is written first, then the close
    /// frame. Returns how the connection ended, once the closing handshake completes or
    /// `Limits::close_timeout` passes (then the transport is dropped and the code is 1006).
    ///
    /// If the connection was already closing, this waits for that close to finish instead.
    pub async fn close(&self, code: CloseCode, reason: &str) -> CloseInfo {
        self.start_close(code, reason);
        match tokio::time::timeout(self.shared.close_timeout, self.closed()).await {
            Ok(info) => info,
            Err(_) => {
                // The queue never drained or the peer never answered: give up on the transport.
                self.shared.abort.store(true, Ordering::Release);
                self.shared.driver.wake();
                let info = super::engine::Ending::CloseTimeout.info();
                self.shared.set_closed(info.clone());
                self.shared.closed.get().cloned().unwrap_or(info)
            }
        }
    }

    /// Starts closing without waiting: queues the close frame behind every message already
    /// queued, and refuses new sends. For code that cannot wait (a broker dropping a slow
    /// subscriber, say); [`closed`](Self::closed) tells when it is done. Returns false if the
    /// connection was already closing.
    pub fn start_close(&self, code: CloseCode, reason: &str) -> bool {
        if self.shared.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _ = self.ordinary(Command::Close(code, reason.to_owned()));
        true
    }

    /// Waits until the connection has closed, and says how.
    pub async fn closed(&self) -> CloseInfo {
        loop {
            let notified = self.shared.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(info) = self.shared.closed.get() {
                return info.clone();
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{Limits, PreparedMessage};

    fn sender(budget: usize) -> Sender {
        let limits = Limits {
            send_queue_bytes: budget,
            ..Limits::default()
        };
        Sender::new(Arc::new(Shared::new(&limits, None, None)))
    }

    fn frame(byte: u8, len: usize) -> PreparedFrame {
        PreparedMessage::new(Message::binary(vec![byte; len])).frame(None)
    }

    #[test]
    fn a_stalled_connection_holds_one_marker_however_much_is_dropped() {
        let sender = sender(10_000);
        let mut dropped = 0;
        for i in 0..100_000u32 {
            dropped += sender
                .try_send_prepared(frame(i as u8, 1000), Overflow::DropOldest)
                .unwrap();
        }
        assert_eq!(dropped, 100_000 - 10);
        assert_eq!(sender.buffered_amount(), 10_000);
        // Nobody drains: still one command, not one per message.
        assert_eq!(sender.shared.commands().len(), 1);
        let queue = sender.shared.droppable.lock().unwrap();
        assert_eq!(queue.entries.len(), 10);
        assert_eq!(queue.bytes, 10_000);
        // The newest ten are what is left.
        let first = queue
            .entries
            .front()
            .map(|(_, f)| f.message().as_bytes()[0]);
        assert_eq!(first, Some((100_000u32 - 10) as u8));
    }

    #[test]
    fn an_ordinary_send_starts_a_new_marker_and_is_never_dropped() {
        let sender = sender(3000);
        sender
            .try_send_prepared(frame(1, 1000), Overflow::DropOldest)
            .unwrap();
        sender.try_send(vec![9u8; 1000]).unwrap();
        sender
            .try_send_prepared(frame(2, 1000), Overflow::DropOldest)
            .unwrap();
        // Full: the oldest droppable goes, the ordinary message stays.
        assert_eq!(
            sender.try_send_prepared(frame(3, 1000), Overflow::DropOldest),
            Ok(1)
        );
        let kinds: Vec<String> = std::iter::from_fn(|| sender.shared.commands().pop_front())
            .map(|c| match c {
                Command::Droppable(m) => format!("marker {m}"),
                Command::Message(..) => "message".to_owned(),
                _ => "other".to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["marker 1", "message", "marker 2"]);
        let mut queue = sender.shared.droppable.lock().unwrap();
        // Marker 1's only entry was dropped; marker 2 covers frames 2 and 3.
        assert!(queue.take(1).is_none());
        let taken: Vec<u8> = std::iter::from_fn(|| queue.take(2))
            .map(|f| f.message().as_bytes()[0])
            .collect();
        assert_eq!(taken, [2, 3]);
    }

    #[test]
    fn dropping_is_refused_when_it_could_not_make_room() {
        let sender = sender(2000);
        sender
            .try_send_prepared(frame(1, 500), Overflow::DropOldest)
            .unwrap();
        sender.try_send(vec![9u8; 1500]).unwrap();
        // 1500 ordinary bytes + 1000 > 2000 even with the droppable 500 gone: keep it.
        assert!(matches!(
            sender.try_send_prepared(frame(2, 1000), Overflow::DropOldest),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(sender.shared.droppable.lock().unwrap().entries.len(), 1);
    }
}
