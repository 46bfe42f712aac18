//! The echo route on a single-task `WebSocket`: the task that awaits the upgrade reads, echoes
//! and writes, with no connection task beside it and no queues between tasks, as `ferry echo`
//! does. The route only answers what it receives, so nothing else needs a handle to it;
//! shutdown, the idle timeout and a token's expiry reach it through the same task.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use ferry::upgrade::UpgradedIo;
use ferry::{CloseCode, CloseInfo, Incoming, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use super::admission::Admission;
use super::metrics::Route;
use super::per_ip::Slot;
use super::timers::Timers;

/// The echo route, on the task that accepted it: waits for `upgrading` to yield the
/// WebSocket, then echoes every message until the connection closes.
///
/// This future is the connection's task for its whole life, so its size is paid by every idle
/// echo connection (docs/memory.md; a unit test below holds it to tokio's 768-byte task cell,
/// as `ferry echo`'s). Hence its shape:
/// - a function returning an `async move` block, not an `async fn`: an `async fn` keeps each
///   argument moved into it as well as its own binding of it, so every argument would be held
///   twice (640 bytes now, 664 as an `async fn`); the WebSocket is a local, not an argument,
///   for the same reason;
/// - the loop is written out here, not in a function awaited from here, whose future would
///   hold a second copy of the references;
/// - the message is a local of a block that ends before the send is awaited, so the task
///   does not keep a moved-from slot for it beside the send;
/// - the server's state comes from `admission`, not from an `Arc` of its own;
/// - the slot, the admission and the timers are held to the end (the per-IP count and
///   `--max-connections` cover the WebSocket too).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold every argument twice for the connection's life"
)]
pub fn serve<S, U>(
    upgrading: Pin<Box<U>>,
    http2: bool,
    mut timers: Option<Box<Timers>>,
    slot: Arc<Slot>,
    admission: Admission,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: Future<Output = Result<WebSocket<UpgradedIo<S>>, ferry::Error>> + ?Sized,
{
    async move {
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
                        return Poll::Ready(Next::Close(
                            CloseCode::GOING_AWAY,
                            "server shutting down",
                        ));
                    }
                    match timers.as_mut() {
                        Some(timers) => timers
                            .poll(cx)
                            .map(|(code, reason)| Next::Close(code, reason)),
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
                if let Some(timers) = timers.as_mut() {
                    timers.touch();
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
        // Held to here: the per-IP count covers the WebSocket too.
        drop(slot);
    }
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
    /// 128: up to 664 bytes fit a 768-byte cell, as `ferry echo`'s task does (the future is
    /// 640 bytes); past that the cell is 896 bytes, a memory regression on every idle echo
    /// connection (docs/memory.md).
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
