//! The echo route on a single-task `WebSocket`: the task that awaits the upgrade reads, echoes
//! and writes, with no connection task beside it and no queues between tasks, as `ferry echo`
//! does. The route only answers what it receives, so nothing else needs a handle to it;
//! shutdown, the idle timeout and a token's expiry reach it through the same task.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry::{CloseCode, CloseInfo, Incoming, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::State;
use super::auth::CLOSE_TOKEN_EXPIRED;
use super::metrics::Route;
use super::registry::Stop;

/// Echoes every message until the connection closes; returns how it closed (`None`: the
/// transport ended without a close to report).
///
/// `expires_in`: the token's remaining life, if a token opened the connection; the connection
/// closes with 4001 when it runs out.
pub async fn run<S>(
    ws: &mut WebSocket<S>,
    state: &State,
    stop: &Stop,
    expires_in: Option<Duration>,
) -> Option<CloseInfo>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The timers are boxed and made only when configured: an idle connection on the default
    // settings carries neither (docs/memory.md).
    let mut expiry = expires_in.map(|d| Box::pin(tokio::time::sleep(d)));
    let idle = state.idle_timeout;
    let mut idle_timer = (!idle.is_zero()).then(|| Box::pin(tokio::time::sleep(idle)));
    // When a message last arrived; the idle timer, once it fires, moves to this plus `idle`
    // instead of being reset on every message.
    let mut last_message = Instant::now();
    let (code, reason) = loop {
        if stop.asked() {
            break (CloseCode::GOING_AWAY, "server shutting down");
        }
        let next = poll_fn(|cx| {
            // The connection first; the rarer wake-ups are polled only when it has nothing,
            // so they cost nothing per message.
            if let Poll::Ready(item) = ws.poll_recv(cx) {
                return Poll::Ready(Next::Item(item));
            }
            if stop.poll_asked(cx) {
                return Poll::Ready(Next::Close(CloseCode::GOING_AWAY, "server shutting down"));
            }
            if fired(&mut expiry, cx) {
                let code = CloseCode::from(CLOSE_TOKEN_EXPIRED);
                return Poll::Ready(Next::Close(code, "token expired"));
            }
            if fired(&mut idle_timer, cx) {
                return Poll::Ready(Next::IdleTimer);
            }
            Poll::Pending
        })
        .await;
        let item = match next {
            Next::Item(item) => item,
            Next::Close(code, reason) => break (code, reason),
            Next::IdleTimer => {
                let due = last_message + idle;
                if due > Instant::now() {
                    if let Some(timer) = idle_timer.as_mut() {
                        timer.as_mut().reset(due);
                    }
                    continue;
                }
                break (CloseCode::GOING_AWAY, "idle timeout");
            }
        };
        match item? {
            Incoming::Message(message) => {
                if idle_timer.is_some() {
                    last_message = Instant::now();
                }
                state.metrics.received(Route::Echo, message.len());
                let len = message.len() as u64;
                // Fails only once the connection is closing; the next recv returns the close.
                if ws.send(message).await.is_ok() {
                    state.metrics.sent(Route::Echo, 1, len);
                }
            }
            Incoming::Closed(info) => return Some(info),
        }
    };
    // Boxed: the closing handshake's future (its timeout included) would otherwise be part of
    // every connection's task for its whole life, for a step taken once.
    Some(Box::pin(ws.close(code, reason)).await)
}

/// What woke the echo loop.
enum Next {
    /// The connection's next item.
    Item(Option<Incoming>),
    /// Shutdown or the token's expiry: close with this.
    Close(CloseCode, &'static str),
    /// The idle timer fired; whether the connection was idle that long is checked then.
    IdleTimer,
}

/// Whether `timer` has fired (never, without one); registers for its firing if not.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
}
