//! The sending half of a connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::{CloseCode, CloseInfo, Initiator, Message, Utf8Bytes};

use super::shared::Shared;
use crate::error::{SendError, TrySendError};

/// What the handles ask of the driver, in order.
#[derive(Debug)]
pub(crate) enum Command {
    /// A message, and whether it must go out uncompressed.
    Message(Message, bool),
    Ping(Bytes),
    Close(CloseCode, String),
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
        match self
            .shared
            .push_command(Command::Message(message, uncompressed))
        {
            Ok(()) => Ok(()),
            Err(command) => {
                self.shared.release(len);
                match command {
                    Command::Message(message, _) => Err(TrySendError::Closed(message)),
                    // Only a message was sent above.
                    Command::Ping(_) | Command::Close(..) => {
                        Err(TrySendError::Closed(Message::binary(Bytes::new())))
                    }
                }
            }
        }
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
        self.shared
            .push_command(Command::Ping(payload))
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
                let info = CloseInfo {
                    code: CloseCode::ABNORMAL,
                    reason: Utf8Bytes::from_static("close timeout"),
                    initiator: Initiator::Local,
                    clean: false,
                };
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
        let _ = self
            .shared
            .push_command(Command::Close(code, reason.to_owned()));
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
