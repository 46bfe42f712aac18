//! The echo route on a single-task `WebSocket`: the task that awaits the upgrade reads, echoes
//! and writes, with no connection task beside it and no queues between tasks, as `ferry echo`
//! does. The route only answers what it receives, so nothing else needs a handle to it;
//! shutdown, the idle timeout and a token's expiry reach it through the same task.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry::upgrade::UpgradedIo;
use ferry::{CloseCode, CloseInfo, Incoming, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::admission::Admission;
use super::auth::CLOSE_TOKEN_EXPIRED;
use super::idle::IdleTimer;
use super::metrics::Route;
use super::per_ip::Slot;

/// The timers an echo connection may have, in one box made only when one is configured: an
/// idle connection on the default settings carries neither (docs/memory.md).
pub struct Timers {
    /// The token's expiry, if a token opened the connection: the connection closes with 4001.
    expiry: Option<Pin<Box<Sleep>>>,
    /// `--idle-timeout`: the connection closes with 1001 once no message came for this long.
    idle: Option<IdleTimer>,
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
            idle: IdleTimer::new(idle),
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
            && idle.poll_expired(cx).is_ready()
        {
            return Poll::Ready(Next::Close(CloseCode::GOING_AWAY, "idle timeout"));
        }
        Poll::Pending
    }
}

/// The echo route, on the task that accepted it: waits for `upgrading` to yield the
/// WebSocket, then echoes every message until the connection closes.
///
/// This future is the connection's task for its whole life, so its size is paid by every idle
/// echo connection (docs/memory.md; a unit test below holds it to tokio's 768-byte task cell,
/// as `ferry echo`'s). Hence its shape:
/// - the WebSocket is a local, not an argument: an `async fn` keeps an argument moved into it
///   as well as its own binding of it, so an argument would be held twice;
/// - the loop is written out here, not in a function awaited from here, whose future would
///   hold a second copy of the references;
/// - the message is a local of a block that ends before the send is awaited, so the task
///   does not keep a moved-from slot for it beside the send;
/// - the server's state comes from `admission`, not from an `Arc` of its own;
/// - the slot, the admission and the timers are held to the end (the per-IP count and
///   `--max-connections` cover the WebSocket too).
pub async fn serve<S, U>(
    upgrading: Pin<Box<U>>,
    http2: bool,
    mut timers: Option<Box<Timers>>,
    _slot: Arc<Slot>,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: Future<Output = Result<WebSocket<UpgradedIo<S>>, ferry::Error>> + ?Sized,
{
    let mut ws = match upgrading.await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade failed");
            return;
        }
    };
    admission.state().metrics.opened(http2);
    let stop = admission.state().connections.add_task();
    // How the connection closed (`None`: the transport ended without a close to report).
    let closed = loop {
        if stop.asked() {
            break Some(close(&mut ws, CloseCode::GOING_AWAY, "server shutting down").await);
        }
        // The message lives in this block only, so that across the send's wait the task holds
        // the send (which owns the message) and not a second, moved-from slot for it.
        let (sending, len) = {
            let message = match poll_fn(|cx| {
                // The connection first; the rarer wake-ups are polled only when it has
                // nothing, so they cost nothing per message.
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
            .await
            {
                Next::Item(Some(Incoming::Message(message))) => message,
                Next::Item(Some(Incoming::Closed(info))) => break Some(info),
                Next::Item(None) => break None,
                Next::Close(code, reason) => break Some(close(&mut ws, code, reason).await),
            };
            if let Some(idle) = timers.as_mut().and_then(|t| t.idle.as_mut()) {
                idle.touch();
            }
            admission
                .state()
                .metrics
                .received(Route::Echo, message.len());
            let len = message.len() as u64;
            (ws.send(message), len)
        };
        // Fails only once the connection is closing; the next recv returns the close.
        if sending.await.is_ok() {
            admission.state().metrics.sent(Route::Echo, 1, len);
        }
    };
    // The socket closes first; the metrics and the registry follow.
    drop(ws);
    let state = admission.state();
    if let Some(info) = closed {
        state.metrics.closed(&info);
    }
    state.connections.remove_task(&stop);
}

/// The closing handshake, boxed: its future (its timeout included) would otherwise be part of
/// every connection's task for its whole life, for a step taken once.
fn close<'a, S>(
    ws: &'a mut WebSocket<S>,
    code: CloseCode,
    reason: &'a str,
) -> Pin<Box<impl Future<Output = CloseInfo> + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(ws.close(code, reason))
}

/// What woke the echo loop.
enum Next {
    /// The connection's next item.
    Item(Option<Incoming>),
    /// Shutdown, the token's expiry or the idle timeout: close with this.
    Close(CloseCode, &'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, from the function alone.
    fn future_size<A, B, C, D, E, F: Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An echo connection's task holds `serve`'s future for the connection's whole life.
    /// tokio adds its header and trailer (104 bytes) and rounds the cell up to a multiple of
    /// 128: up to 664 bytes fit a 768-byte cell, as `ferry echo`'s task does; past that the
    /// cell is 896 bytes, a memory regression on every idle echo connection (docs/memory.md).
    /// The wait for the stream is behind a thin pointer in the server; a `dyn`'s fat one here
    /// adds 8.
    #[test]
    fn the_echo_task_fits_a_768_byte_cell() {
        type Upgrading = dyn Future<Output = Result<WebSocket<UpgradedIo<tokio::net::TcpStream>>, ferry::Error>>
            + Send;
        let size = future_size(serve::<tokio::net::TcpStream, Upgrading>);
        assert!(size <= 664 + 8, "echo::serve's future is {size} bytes");
    }
}
