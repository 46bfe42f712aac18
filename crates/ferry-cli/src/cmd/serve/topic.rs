//! The topic route, `/ws/topics/NAME`: the client is subscribed to the topic for as long as it
//! is connected, and every message it sends is published to the topic (when the topic's rule or
//! its token lets it publish).
//!
//! The connection is held by its `Sender`/`Receiver` handles, because the broker sends to it
//! from other connections' tasks. This task subscribes, then reads and publishes. It lives as
//! long as the connection, so every byte of its future is paid by each idle subscriber
//! (docs/memory.md), and it is shaped the way the echo route's task is:
//! - what the handshake settled is reduced, before the task is made, to what the loop needs:
//!   the topic's name, whether it may publish, and the timers (in one box, only if any);
//! - the loop is written out here, not in a function awaited from here;
//! - the steps taken once (subscribing, waiting for room in the broker's queue, reading out a
//!   refused connection) are boxed;
//! - Redis's answers to publishes under way wait in a plain queue of named futures, which
//!   allocates only once a publish waits for one.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry::pubsub::SubscriptionId;
use ferry::{CloseCode, CloseInfo, Incoming, Message, Receiver, Sender};

use super::State;
use super::admission::Admission;
use super::broker::{Answer, Publishing, TrySubmit, Unavailable};
use super::metrics::Route;
use super::per_ip::Slot;
use super::rate::Bucket;
use super::timers::Timers;

/// Publishes a topic connection may have under way at once: its messages are submitted in
/// order without waiting for each outcome, so one fast publisher is not held to one Redis
/// round trip per message.
const PUBLISH_WINDOW: usize = 256;

/// What the handshake settled about a topic connection.
pub struct TopicRequest {
    /// The topic's name (checked: 1 to 64 letters, digits, '.', '_' or '-').
    pub name: String,
    /// Whether the client may publish: the topic's rule, and its token if it has one.
    pub may_publish: bool,
}

/// The topic route, on its own task: waits for `upgrading` to yield the connection's handles,
/// subscribes it to the topic, and publishes what the client sends until the connection
/// closes.
///
/// A function returning an `async move` block rather than an `async fn`: an `async fn` keeps
/// each argument twice in its future (as moved in, and as its own binding), and this future is
/// held for the connection's life. The slot and the admission are held to the end: the per-IP
/// count and `--max-connections` cover the WebSocket too.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold every argument twice for the connection's life"
)]
pub fn serve<U>(
    upgrading: Pin<Box<U>>,
    http2: bool,
    topic: TopicRequest,
    timers: Option<Box<Timers>>,
    slot: Arc<Slot>,
    admission: Admission,
) -> impl Future<Output = ()>
where
    U: Future<Output = Result<(Sender, Receiver), ferry::Error>> + ?Sized,
{
    async move {
        let (sender, mut receiver) = match upgrading.await {
            Ok(handles) => handles,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let state = admission.state();
        state.metrics.opened(http2);
        let id = state.connections.add(sender.clone());
        let subscribed = subscribe(state, &sender, &topic.name).await;
        let closed = match subscribed {
            None => drain(&mut receiver).await,
            Some(subscription) => {
                let mut publisher = Publisher {
                    answers: VecDeque::new(),
                    bucket: Bucket::full(state.publish_rate),
                    may_publish: topic.may_publish,
                    timers,
                };
                let closed = loop {
                    // Each step is decided without awaiting, so the task keeps no slot for
                    // the item or the message beside the waits below.
                    let step = {
                        let next = poll_fn(|cx| publisher.poll_next(cx, &mut receiver)).await;
                        publisher.take(next, state, &sender, &topic.name)
                    };
                    match step {
                        Step::Next => {}
                        Step::Closed(closed) => break closed,
                        Step::Drain => break drain(&mut receiver).await,
                        Step::WaitForRoom(message, len) => {
                            let submitting = state.broker.submit(&topic.name, message);
                            let submitted = Box::pin(submitting).await;
                            if publisher.submitted(submitted, len, state, &sender, &topic.name) {
                                break drain(&mut receiver).await;
                            }
                        }
                    }
                };
                state.broker.unsubscribe(&topic.name, subscription);
                closed
            }
        };
        if let Some(info) = closed {
            state.metrics.closed(&info);
        }
        state.connections.remove(id);
        // Held to here: the per-IP count covers the WebSocket too.
        drop(slot);
    }
}

/// Subscribes the connection of `sender` to `topic`; if the broker cannot, starts its close
/// (1013) and returns `None`. Boxed: a connection does it once.
fn subscribe<'a>(
    state: &'a State,
    sender: &'a Sender,
    topic: &'a str,
) -> Pin<Box<impl Future<Output = Option<SubscriptionId>> + 'a>> {
    Box::pin(async move {
        match state.broker.subscribe(topic, sender.clone().into()).await {
            Ok(subscription) => Some(subscription),
            Err(err) => {
                state.metrics.broker_refused();
                tracing::warn!(topic, reason = %err, "cannot subscribe: the broker is unavailable");
                sender.start_close(CloseCode::TRY_AGAIN_LATER, "broker unavailable");
                None
            }
        }
    })
}

/// A subscribed topic connection's state between its messages.
struct Publisher {
    /// Redis's answers to the publishes under way, oldest first. The memory broker publishes
    /// before `try_submit` returns, so it never leaves one here.
    answers: VecDeque<Answer>,
    /// `--publish-rate`.
    bucket: Bucket,
    may_publish: bool,
    timers: Option<Box<Timers>>,
}

/// What woke the topic loop.
enum Next {
    /// The connection's next item.
    Item(Option<Incoming>),
    /// The token's expiry or the idle timeout: close with this.
    Close(CloseCode, &'static str),
    /// The broker did not publish a message of this connection.
    Refused(Unavailable),
}

/// What the loop does next.
enum Step {
    /// Wait for the next item.
    Next,
    /// The connection is over: how it closed (`None`: the transport ended without a close).
    Closed(Option<CloseInfo>),
    /// A close is under way: read until it completes, discarding messages.
    Drain,
    /// The broker's queue is full: wait for room for this message (of this many bytes).
    WaitForRoom(Message, u64),
}

impl Publisher {
    /// The next thing to act on: an answer refused, the connection's next item, or a timer.
    /// Answers are taken in order, so a refusal is reported for the first message refused; no
    /// item is read while the window of publishes under way is full.
    fn poll_next(&mut self, cx: &mut Context<'_>, receiver: &mut Receiver) -> Poll<Next> {
        while let Some(answer) = self.answers.front_mut() {
            match Pin::new(answer).poll(cx) {
                // Redis gives no delivery count: each node counts what it delivers.
                Poll::Ready(Ok(_)) => drop(self.answers.pop_front()),
                Poll::Ready(Err(err)) => return Poll::Ready(Next::Refused(err)),
                Poll::Pending => break,
            }
        }
        if self.answers.len() < PUBLISH_WINDOW
            && let Poll::Ready(item) = receiver.poll_recv(cx)
        {
            return Poll::Ready(Next::Item(item));
        }
        match self.timers.as_mut() {
            Some(timers) => timers
                .poll(cx)
                .map(|(code, reason)| Next::Close(code, reason)),
            None => Poll::Pending,
        }
    }

    /// Acts on `next`: a message is checked against the connection's permission and rate,
    /// and submitted to the broker.
    fn take(&mut self, next: Next, state: &State, sender: &Sender, topic: &str) -> Step {
        let message = match next {
            Next::Item(Some(Incoming::Message(message))) => message,
            Next::Item(Some(Incoming::Closed(info))) => return Step::Closed(Some(info)),
            Next::Item(None) => return Step::Closed(None),
            Next::Close(code, reason) => {
                // The close is under way; the items before it still come.
                sender.start_close(code, reason);
                return Step::Next;
            }
            Next::Refused(err) => {
                refuse_publish(state, sender, topic, &err);
                return Step::Drain;
            }
        };
        if let Some(timers) = self.timers.as_mut() {
            timers.touch();
        }
        state.metrics.received(Route::Topics, message.len());
        if !self.may_publish {
            state.metrics.forbidden("publish");
            sender.start_close(
                CloseCode::POLICY_VIOLATION,
                "this connection may not publish to this topic",
            );
            return Step::Drain;
        }
        if self
            .bucket
            .take(state.publish_rate, std::time::Instant::now())
            .is_err()
        {
            state.metrics.rate_limited("publish");
            sender.start_close(CloseCode::POLICY_VIOLATION, "publish rate exceeded");
            return Step::Drain;
        }
        let len = message.len() as u64;
        // Without waiting when the broker has room (always, in memory).
        let submitted = match state.broker.try_submit(topic, message) {
            Ok(publishing) => Ok(publishing),
            Err(TrySubmit::Full(message)) => return Step::WaitForRoom(message, len),
            Err(TrySubmit::Unavailable(err)) => Err(err),
        };
        if self.submitted(submitted, len, state, sender, topic) {
            Step::Drain
        } else {
            Step::Next
        }
    }

    /// Records a message's submission of `len` bytes; `true` if the broker refused it (the
    /// connection's close is then under way).
    fn submitted(
        &mut self,
        submitted: Result<Publishing, Unavailable>,
        len: u64,
        state: &State,
        sender: &Sender,
        topic: &str,
    ) -> bool {
        match submitted {
            // The memory broker has published already: count the deliveries now.
            Ok(Publishing::Done(published)) => {
                let delivered = published.delivered.unwrap_or(0) as u64;
                state
                    .metrics
                    .sent(Route::Topics, delivered, delivered * len);
                false
            }
            Ok(Publishing::Sent(answer)) => {
                self.answers.push_back(answer);
                false
            }
            Err(err) => {
                refuse_publish(state, sender, topic, &err);
                true
            }
        }
    }
}

/// A topic connection's message was not published: tell the client by closing (1013), so it
/// never takes silence for delivery.
fn refuse_publish(state: &State, sender: &Sender, topic: &str, err: &Unavailable) {
    state.metrics.broker_refused();
    tracing::warn!(topic, reason = %err, "publish refused: the broker is unavailable");
    sender.start_close(
        CloseCode::TRY_AGAIN_LATER,
        "broker unavailable; message not published",
    );
}

/// Reads until the close, discarding messages; yields how it closed. Boxed: a connection
/// does this once, at its end, and the task would otherwise carry its future for life.
fn drain(receiver: &mut Receiver) -> Pin<Box<impl Future<Output = Option<CloseInfo>> + Send + '_>> {
    Box::pin(async move {
        loop {
            match receiver.recv().await? {
                Incoming::Message(_) => {}
                Incoming::Closed(info) => return Some(info),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, from the function alone.
    fn future_size<A, B, C, D, E, F, G: Future>(_: impl FnOnce(A, B, C, D, E, F) -> G) -> usize {
        std::mem::size_of::<G>()
    }

    /// A topic connection's task holds `serve`'s future for the connection's whole life.
    /// tokio adds 104 bytes and rounds the cell up to a multiple of 128: up to 280 bytes fit a
    /// 384-byte cell (the future is 256 bytes; it was 1,128, in a 1,280-byte cell, when the loop
    /// was a function awaited beside the whole outcome of the handshake). The wait for the
    /// handles is behind a thin pointer in the server; a `dyn`'s fat one here adds 8.
    #[test]
    fn the_topic_task_fits_a_384_byte_cell() {
        type Upgrading = dyn Future<Output = Result<(Sender, Receiver), ferry::Error>> + Send;
        let size = future_size(serve::<Upgrading>);
        assert!(size <= 280 + 8, "topic::serve's future is {size} bytes");
    }
}
