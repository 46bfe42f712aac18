//! The receiving half of a connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use ferry_proto::{CloseInfo, Message};

use super::incoming::Incoming;
use super::shared::Shared;

/// Receives whole messages from a connection.
///
/// Received messages wait for the application up to `Limits::recv_queue_bytes`; past that the
/// connection stops reading from its transport, so a slow reader slows the peer through TCP
/// rather than growing memory.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    finished: bool,
}

impl Receiver {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Receiver {
            shared,
            finished: false,
        }
    }

    /// The next message, or the close as the last item, then `None`.
    ///
    /// Cancel-safe: if the future is dropped before it completes (in `tokio::select!`, say), no
    /// message is lost; the next call returns it.
    ///
    /// ```no_run
    /// # async fn f(mut receiver: ferry::Receiver) {
    /// use ferry::{Incoming, Message};
    /// while let Some(item) = receiver.recv().await {
    ///     match item {
    ///         Incoming::Message(Message::Text(text)) => println!("text: {text}"),
    ///         Incoming::Message(Message::Binary(data)) => println!("{} bytes", data.len()),
    ///         Incoming::Closed(close) => println!("closed: {} {}", close.code, close.reason),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Incoming> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message, skipping the close item; `None` once the connection has closed.
    pub async fn recv_message(&mut self) -> Option<Message> {
        match self.recv().await? {
            Incoming::Message(message) => Some(message),
            Incoming::Closed(_) => None,
        }
    }

    /// Polls for the next item; the building block of `recv` and the `Stream` impl.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut item = self.shared.incoming().pop_front();
        if item.is_none() {
            // Register before looking again, so an item queued in between wakes us.
            self.shared.receiver.register(cx.waker());
            item = self.shared.incoming().pop_front();
        }
        let item = match item {
            Some(item) => Some(item),
            None if self.shared.driver_gone.load(Ordering::Acquire) => None,
            None => return Poll::Pending,
        };
        match item {
            Some(Incoming::Message(message)) => {
                let len = message.len();
                let before = self.shared.received.fetch_sub(len, Ordering::AcqRel);
                let after = before - len;
                // Crossing back under the budget: the driver may have paused reading. Drained
                // while the driver holds a failure: it may now fail the connection. Drained
                // after the driver found the queue still full at its quiet deadline: it may now
                // free the slots.
                let crossed = before >= self.shared.recv_budget && after < self.shared.recv_budget;
                if crossed
                    || (after == 0
                        && (self.shared.stalled.load(Ordering::Acquire)
                            || self.shared.take_wake_when_taken()))
                {
                    self.shared.driver.wake();
                }
                Poll::Ready(Some(Incoming::Message(message)))
            }
            Some(closed @ Incoming::Closed(_)) => {
                self.finished = true;
                Poll::Ready(Some(closed))
            }
            None => {
                // The driver ended without reporting a close (its runtime shut down).
                self.finished = true;
                let info = (self.shared.closed.get().cloned())
                    .unwrap_or_else(|| super::engine::Ending::TaskEnded.info());
                Poll::Ready(Some(Incoming::Closed(info)))
            }
        }
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.closed.get().cloned()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Nobody will take what is queued: discard it, return its bytes to the budget, and let
        // the driver read on (and close, if every sender is gone too).
        let dropped: usize = {
            let mut queue = self.shared.incoming();
            self.shared.receiver_alive.store(false, Ordering::Release);
            queue
                .drain(..)
                .map(|item| match item {
                    Incoming::Message(message) => message.len(),
                    Incoming::Closed(_) => 0,
                })
                .sum()
        };
        self.shared.received.fetch_sub(dropped, Ordering::AcqRel);
        self.shared.driver.wake();
    }
}

impl futures_core::Stream for Receiver {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.get_mut().poll_recv(cx)
    }
}

/// Once the close item has been yielded the stream is over, and polling it again yields `None`.
impl futures_core::stream::FusedStream for Receiver {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}
