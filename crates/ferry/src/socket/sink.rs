//! The sending half as a `futures::Sink`, for code written against the futures traits
//! (`forward`, `send_all`, `SinkExt::send`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferry_proto::{CloseCode, Message};

use super::sender::Sender;
use crate::error::SendError;

type Pending = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send>>;

/// A [`Sender`] as a `futures::Sink<Message>`: [`Sender::into_sink`].
///
/// `poll_ready` is ready once the previous message is queued, so the send queue's byte budget
/// holds back the producer exactly as [`Sender::send`] does; `poll_flush` waits for the last
/// message to be queued (not written: queued messages are written by the connection's task);
/// `poll_close` starts the closing handshake with 1000 and waits for it to end.
///
/// ```no_run
/// # async fn f(sender: ferry::Sender) -> Result<(), ferry::SendError> {
/// use futures_util::{SinkExt, stream};
/// let mut sink = sender.into_sink();
/// let mut messages = stream::iter(["one", "two"].map(|t| Ok(ferry::Message::text(t))));
/// sink.send_all(&mut messages).await?;
/// sink.close().await?;
/// # Ok(()) }
/// ```
pub struct MessageSink {
    sender: Sender,
    pending: Option<Pending>,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for MessageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSink")
            .field("sender", &self.sender)
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// This sender as a `futures::Sink<Message>` ([`MessageSink`]).
    pub fn into_sink(self) -> MessageSink {
        MessageSink {
            sender: self,
            pending: None,
            closing: None,
        }
    }
}

impl MessageSink {
    /// The sender underneath, for what the sink does not do (ping, try_send).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        match &mut self.pending {
            None => Poll::Ready(Ok(())),
            Some(pending) => {
                let result = std::task::ready!(pending.as_mut().poll(cx));
                self.pending = None;
                Poll::Ready(result)
            }
        }
    }
}

impl futures_sink::Sink<Message> for MessageSink {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), SendError> {
        let this = self.get_mut();
        if this.sender.is_closed() {
            return Err(SendError(message));
        }
        let sender = this.sender.clone();
        this.pending = Some(Box::pin(async move { sender.send(message).await }));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        let sender = this.sender.clone();
        let closing = this.closing.get_or_insert_with(|| {
            Box::pin(async move {
                sender.close(CloseCode::NORMAL, "").await;
            })
        });
        std::task::ready!(closing.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}
