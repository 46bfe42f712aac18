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

/// The timers an echo connection may have, in one box made only when one is configured: an
/// idle connection on the default settings carries neither (docs/memory.md).
pub struct Timers {
    /// The token's expiry, if a token opened the connection: the connection closes with 4001.
    expiry: Option<Pin<Box<Sleep>>>,
    /// `--idle-timeout`: the connection closes with 1001 once no message came for this long.
    idle: Option<Idle>,
}

struct Idle {
    timer: Pin<Box<Sleep>>,
    after: Duration,
    /// When a message last arrived. The timer, once it fires, moves to this plus `after`
    /// instead of being reset on every message.
    last_message: Instant,
}

impl Timers {
    /// The timers for a token with `expires_in` left (if any) and an idle timeout (0: none);
    /// `None` when there are neither.
    pub fn new(expires_in: Option<Duration>, idle: Duration) -> Option<Box<Timers>> {
        if expires_in.is_none() && idle.is_zero() {
            return None;
        }
        Some(Box::new(Timers {
            expiry: expires_in.map(|d| Box::pin(tokio::time::sleep(d))),
            idle: (!idle.is_zero()).then(|| Idle {
                timer: Box::pin(tokio::time::sleep(idle)),
                after: idle,
                last_message: Instant::now(),
            }),
        }))
    }

    /// Whether a timer fired; registers `cx` for their firing if not.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(expiry) = self.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            let code = CloseCode::from(CLOSE_TOKEN_EXPIRED);
            return Poll::Ready(Next::Close(code, "token expired"));
        }
        if let Some(idle) = self.idle.as_mut()
            && idle.timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Next::IdleTimer);
        }
        Poll::Pending
    }
}

/// Echoes every message until the connection closes; returns how it closed (`None`: the
/// transport ended without a close to report).
pub async fn run<S>(
    ws: &mut WebSocket<S>,
    state: &State,
    stop: &Stop,
    mut timers: Option<Box<Timers>>,
) -> Option<CloseInfo>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
            match timers.as_mut() {
                Some(timers) => timers.poll(cx),
                None => Poll::Pending,
            }
        })
        .await;
        let item = match next {
            Next::Item(item) => item,
            Next::Close(code, reason) => break (code, reason),
            Next::IdleTimer => {
                if let Some(idle) = timers.as_mut().and_then(|t| t.idle.as_mut()) {
                    let due = idle.last_message + idle.after;
                    if due > Instant::now() {
                        idle.timer.as_mut().reset(due);
                        continue;
                    }
                }
                break (CloseCode::GOING_AWAY, "idle timeout");
            }
        };
        match item? {
            Incoming::Message(message) => {
                if let Some(idle) = timers.as_mut().and_then(|t| t.idle.as_mut()) {
                    idle.last_message = Instant::now();
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
