//! The echo route on a single-task `WebSocket`: the task that awaits the upgrade reads, echoes
//! and writes, with no connection task beside it and no queues between tasks, as `ferry echo`
//! does. The route only answers what it receives, so nothing else needs a handle to it;
//! shutdown, the idle timeout and a token's expiry reach it through the same task.

use std::future::pending;
use std::pin::Pin;
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
        let item = tokio::select! {
            // The connection first: the other branches are polled only when it has nothing,
            // so they cost nothing per message.
            biased;
            item = ws.recv() => item,
            () = stop.wait() => break (CloseCode::GOING_AWAY, "server shutting down"),
            () = fires(&mut expiry) => break (CloseCode::from(CLOSE_TOKEN_EXPIRED), "token expired"),
            () = fires(&mut idle_timer) => {
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

/// Completes when `timer` fires; never, without one.
async fn fires(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => pending().await,
    }
}
