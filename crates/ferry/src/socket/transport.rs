//! Moves bytes between a transport and the protocol state machine: the read path (pooled and
//! frame-sized buffers), the write path, the protocol's timers, and the transport's end.
//!
//! Both ways of running a connection use it: the driver task behind [`Sender`](super::Sender)
//! and [`Receiver`](super::Receiver), and the single-task [`WebSocket`](super::WebSocket).
//! Neither queue nor event handling lives here: each caller decides when to read (the driver
//! stops while its receiver is over budget) and where events go.

use std::any::{Any, TypeId};
use std::future::Future;
use std::io;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ferry_proto::{CloseInfo, Connection, Utf8Bytes};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::pool;

/// Room below which the receive buffer grows (to `pool::BUF_SIZE`, or the frame in flight)
/// before a read.
const MIN_READ: usize = 1024;

/// How long a connection whose reads would block keeps its large read buffer (`Spare`) before
/// freeing it. A stream of large messages pauses between reads for far less, and a buffer freed
/// at every pause came back as a fresh allocation whose pages the kernel faulted in and zeroed
/// again (~130 page faults per 1 MiB message).
const SPARE_LINGER: Duration = Duration::from_secs(1);

/// Chunks gathered into one vectored write: headers and payloads of a batch of large messages.
const MAX_SLICES: usize = 16;

/// What one read did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes arrived and were handed to the protocol (which may have queued events).
    Data,
    /// The transport ended, or failed: the protocol was told, and has queued its close event.
    Ended,
    /// Nothing to read now; the waker is registered, and idle buffers went back to the pool.
    Pending,
}

pub(crate) struct Transport<S> {
    pub(crate) io: S,
    pub(crate) conn: Connection,
    timer: Option<Pin<Box<Sleep>>>,
    read_closed: bool,
    needs_flush: bool,
    /// Set once the transport failed; its text goes into the close reason.
    io_error: Option<io::Error>,
    /// Bounds the final flush once the protocol is done, against a peer that stopped reading.
    linger: Option<Pin<Box<Sleep>>>,
    /// The read buffer was grown past what the pool keeps, for a large frame: free it when idle
    /// rather than pool it (a pooled remnant would keep the whole large allocation alive).
    grown: bool,
    /// Whether finishing calls `poll_shutdown`. A plain TCP socket is closed by dropping it:
    /// close(2) sends the FIN after any unsent bytes, and a shutdown(2) first was one more
    /// syscall per connection (strace, `ferry bench handshakes`). Every other transport shuts
    /// down: TLS sends its close_notify there, and a pipe or Unix socket wrapper may need it.
    shutdown: bool,
    /// A large read buffer kept for the next large frame (boxed: most connections never have
    /// one, and this keeps their `Transport` small).
    spare: Option<Box<Spare>>,
}

/// A large read buffer between frames: the previous frame's allocation, reused for the next
/// instead of a fresh one (which glibc would get by growing the heap, and the kernel by faulting
/// in and zeroing every page: `brk` and ~130 page faults per 1 MiB message). Its message may
/// still be in use (being echoed, say) when the next frame starts; by the frame after, it is
/// usually gone.
struct Spare {
    buf: BytesMut,
    /// When it is freed: `SPARE_LINGER` after the connection's reads first would block with it
    /// unused, so an idle connection keeps no read buffer for long (docs/memory.md).
    expires: Option<Instant>,
}

impl Spare {
    fn new(buf: BytesMut) -> Box<Self> {
        Box::new(Spare { buf, expires: None })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Transport<S> {
    pub(crate) fn new(io: S, conn: Connection) -> Self {
        let shutdown = TypeId::of::<S>() != TypeId::of::<TcpStream>();
        Transport {
            shutdown,
            io,
            conn,
            timer: None,
            read_closed: false,
            needs_flush: false,
            io_error: None,
            linger: None,
            grown: false,
            spare: None,
        }
    }

    /// Once the protocol is done with the transport (§7.1.1), writes what is left, bounded by
    /// `Limits::close_timeout` against a peer that stopped reading, and shuts the transport
    /// down. `Pending` while the protocol still needs it or the last bytes are on their way.
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.io_error.is_some() {
            return Poll::Ready(());
        }
        if !self.conn.should_close_transport() {
            return Poll::Pending;
        }
        if self.conn.should_abort_transport() && abort(&self.io) {
            // The peer stopped answering: nothing more will be read there, and what the kernel
            // still holds must not reach it later, after a newer connection's messages. The
            // reset goes when the socket is dropped.
            return Poll::Ready(());
        }
        if self.conn.transmit().has_remaining() {
            self.write(cx);
        }
        if self.conn.transmit().has_remaining() && self.io_error.is_none() {
            let timeout = self.conn.config().limits.close_timeout;
            let linger = self
                .linger
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            return match linger.as_mut().poll(cx) {
                // The peer stopped reading; what it did not take is lost with the transport.
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            };
        }
        if self.io_error.is_some() {
            return Poll::Ready(());
        }
        if !self.shutdown {
            // §7.1.1: the transport closes when it is dropped, right after this.
            return Poll::Ready(());
        }
        // §7.1.1: close the transport. A failed shutdown changes nothing for the peer.
        Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// Whether the transport failed (a read or write error): nothing more moves.
    pub(crate) fn failed(&self) -> bool {
        self.io_error.is_some()
    }

    /// Whether no more bytes will be read.
    pub(crate) fn read_closed(&self) -> bool {
        self.read_closed || self.io_error.is_some()
    }

    /// Puts the transport's error, if any, into a close reason the protocol left empty (the
    /// peer vanished: "connection reset by peer" says more than nothing).
    pub(crate) fn explain(&self, mut info: CloseInfo) -> CloseInfo {
        if let (Some(err), true) = (&self.io_error, info.reason.is_empty()) {
            info.reason = Utf8Bytes::from(err.to_string());
        }
        info
    }

    /// Gives the protocol a pooled buffer to encode small frames into, if it has none.
    pub(crate) fn lend_transmit_buf(&mut self) {
        if self.conn.wants_transmit_buf() {
            // Parked again at the next idle read if nothing uses it.
            self.conn.provide_transmit_buf(pool::take());
        }
    }

    /// Writes what the protocol has ready, and flushes. Returns whether bytes moved.
    pub(crate) fn write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.conn.transmit().has_remaining() && self.io_error.is_none() {
            match self.write_once(cx) {
                Poll::Ready(Ok(0)) => self.fail(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    self.needs_flush = true;
                }
                Poll::Ready(Err(err)) => self.fail(err),
                Poll::Pending => return progress,
            }
        }
        if self.needs_flush && self.io_error.is_none() {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(err)) => self.fail(err),
                Poll::Pending => {}
            }
        }
        progress
    }

    /// One write of what is waiting: a plain write when it is one chunk (the common case: a
    /// batch of small frames, or one large payload alone), a vectored one otherwise.
    fn write_once(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let transmit = self.conn.transmit();
        let mut io = Pin::new(&mut self.io);
        let written = if transmit.is_contiguous() || !io.is_write_vectored() {
            ready!(io.as_mut().poll_write(cx, transmit.chunk()))
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = transmit.chunks_vectored(&mut slices);
            ready!(io.as_mut().poll_write_vectored(cx, &slices[..n]))
        };
        if let Ok(n) = written {
            transmit.advance(n.min(transmit.remaining()));
        }
        Poll::Ready(written)
    }

    /// Whether everything the protocol produced has been written and flushed.
    pub(crate) fn flushed(&mut self) -> bool {
        !self.conn.transmit().has_remaining() && !self.needs_flush
    }

    /// Reads once into the protocol's receive buffer and processes what came.
    pub(crate) fn read(&mut self, cx: &mut Context<'_>) -> Read {
        if self.read_closed() {
            return Read::Ended;
        }
        self.prepare_read_buf();
        match poll_read_buf(Pin::new(&mut self.io), cx, self.conn.recv_buf()) {
            Poll::Ready(Ok(0)) => {
                self.read_closed = true;
                self.conn.receive_eof();
                Read::Ended
            }
            Poll::Ready(Ok(_)) => {
                self.conn.handle_received_with_clock(Instant::now);
                Read::Data
            }
            Poll::Ready(Err(err)) => {
                self.fail(err);
                Read::Ended
            }
            Poll::Pending => {
                self.release_idle_buffers();
                Read::Pending
            }
        }
    }

    /// Room for the rest of the frame in flight, whole (its length already passed
    /// `max_frame_size`), so a large frame is read in as few reads as the socket allows and
    /// never copied by repeated growth; a pooled buffer otherwise. Untouched capacity costs
    /// address space, not memory.
    fn prepare_read_buf(&mut self) {
        let want = self.conn.bytes_wanted().unwrap_or(0).max(MIN_READ);
        let buf = self.conn.recv_buf();
        if buf.capacity() == 0 {
            if std::mem::take(&mut self.grown) {
                // The remnant of the large buffer the last frame filled: the next large frame
                // can have its allocation back once that frame's message is gone.
                self.spare = Some(Spare::new(std::mem::take(buf)));
            }
            *buf = pool::take();
        }
        if !self.grown && buf.is_empty() && buf.capacity() < pool::BUF_SIZE / 2 {
            // Messages are split off the front of this buffer (zero copy), so its room shrinks
            // with each. Once they are gone the room comes back without a copy, so the next
            // frame starts at the front of the whole buffer instead of filling the remnant to
            // the brim and being moved by the growth that follows (a 64 KiB echo copied 64 KiB
            // per message). Not tried while half the room is left: small messages would pay
            // for it at every read; nor on a buffer grown for a large frame, which has its own
            // reuse (`spare`). If a message still holds the buffer, it stays as it is.
            let _ = buf.try_reclaim(pool::BUF_SIZE);
        }
        if buf.capacity() - buf.len() >= want {
            return;
        }
        if want <= pool::KEEP_MAX {
            buf.reserve(want.max(pool::BUF_SIZE));
            return;
        }
        let was_grown = std::mem::replace(&mut self.grown, true);
        let mut next = match self.spare.take() {
            Some(mut spare) => {
                spare.buf.clear();
                if spare.buf.try_reclaim(buf.len() + want) {
                    spare.buf
                } else {
                    BytesMut::with_capacity(buf.len() + want)
                }
            }
            None => BytesMut::with_capacity(buf.len() + want),
        };
        // The frame's first bytes move over.
        next.extend_from_slice(buf);
        let previous = std::mem::replace(buf, next);
        if !was_grown {
            pool::put(previous);
        } else if self.spare.is_none() {
            self.spare = Some(Spare::new(previous));
        }
    }

    /// A read would block: lend the I/O buffers back to the pool, and set a large one aside
    /// to be freed after `SPARE_LINGER` unless a frame needs it first.
    fn release_idle_buffers(&mut self) {
        if self.grown && self.conn.recv_buf().is_empty() && self.conn.bytes_wanted().is_none() {
            // Between frames (a large buffer still holding a frame's start stays put).
            self.grown = false;
            self.spare = Some(Spare::new(std::mem::take(self.conn.recv_buf())));
        }
        if let Some(spare) = &mut self.spare
            && spare.expires.is_none()
        {
            spare.expires = Some(Instant::now() + SPARE_LINGER);
        }
        self.conn.take_idle_buffers(pool::put);
    }

    /// Whether a large read buffer is set aside for the next large frame.
    #[cfg(test)]
    pub(crate) fn holds_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// The transport failed: the protocol learns it as an abrupt end (close code 1006).
    pub(crate) fn fail(&mut self, err: io::Error) {
        self.io_error = Some(err);
        self.read_closed = true;
        self.conn.receive_eof();
    }

    /// Arms the timer for the earliest of the protocol's next deadline, the spare buffer's
    /// expiry and the owner's own deadline `also`, and fires it when due. Returns the deadline
    /// that fired, if one did: the protocol may then have queued a ping or events, and the
    /// owner's deadline is due if it is at or before the one returned.
    pub(crate) fn poll_timer(
        &mut self,
        cx: &mut Context<'_>,
        also: Option<Instant>,
    ) -> Option<Instant> {
        let spare_expires = self.spare.as_ref().and_then(|spare| spare.expires);
        let Some(deadline) = [self.conn.poll_timeout(), spare_expires, also]
            .into_iter()
            .flatten()
            .min()
        else {
            if self.timer.is_some() {
                self.timer = None;
            }
            return None;
        };
        let wake_at = tokio::time::Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // Compared with the deadline that fired rather than the clock, so the spare goes
                // whenever its expiry was the one due (a timer left firing with nothing to do
                // would spin the task).
                if spare_expires.is_some_and(|expires| expires <= deadline) {
                    self.spare = None;
                }
                self.conn.handle_timeout(Instant::now());
                Some(deadline)
            }
            Poll::Pending => None,
        }
    }
}

impl<S> Drop for Transport<S> {
    fn drop(&mut self) {
        // The next connection on this thread takes these instead of allocating its own (a
        // handshake-per-connection workload would otherwise allocate and free 64 KiB each).
        let recv = std::mem::take(self.conn.recv_buf());
        if !self.grown {
            pool::put(recv);
        }
        self.conn.take_idle_buffers(pool::put);
    }
}

/// Makes dropping `io` reset a TCP connection (a zero linger: no FIN, unsent bytes dropped),
/// for the TCP streams ferry opens or accepts, plain or under TLS; returns whether it did.
/// Other transports close as they always do.
fn abort<S: 'static>(io: &S) -> bool {
    let io: &dyn Any = io;
    let tcp = if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        tcp
    } else if let Some(tcp) = tls_tcp(io) {
        tcp
    } else if let Some(tcp) = upgraded_tcp(io) {
        tcp
    } else {
        return false;
    };
    // A failure leaves the ordinary close, which is still a close.
    tcp.set_zero_linger().is_ok()
}

/// The TCP stream under a rustls stream ferry opens or accepts.
#[cfg(feature = "tls")]
fn tls_tcp(io: &dyn Any) -> Option<&TcpStream> {
    if let Some(tls) = io.downcast_ref::<tokio_rustls::client::TlsStream<TcpStream>>() {
        Some(tls.get_ref().0)
    } else {
        let tls = io.downcast_ref::<tokio_rustls::server::TlsStream<TcpStream>>()?;
        Some(tls.get_ref().0)
    }
}

#[cfg(not(feature = "tls"))]
fn tls_tcp(_: &dyn Any) -> Option<&TcpStream> {
    None
}

/// The TCP stream under a WebSocket taken back from a hyper server (`ferry::upgrade`), for
/// the connection types `ferry serve` and most servers use: TCP, and rustls over TCP.
#[cfg(feature = "hyper")]
fn upgraded_tcp(io: &dyn Any) -> Option<&TcpStream> {
    use crate::upgrade::UpgradedIo;
    if let Some(upgraded) = io.downcast_ref::<UpgradedIo<TcpStream>>() {
        return upgraded.own();
    }
    #[cfg(feature = "tls")]
    if let Some(upgraded) =
        io.downcast_ref::<UpgradedIo<tokio_rustls::server::TlsStream<TcpStream>>>()
    {
        return upgraded.own().map(|tls| tls.get_ref().0);
    }
    None
}

#[cfg(not(feature = "hyper"))]
fn upgraded_tcp(_: &dyn Any) -> Option<&TcpStream> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_keepalive_abort_resets_tcp_and_leaves_other_transports_alone() {
        let (_client, server) = tcp_pair().await;
        assert!(abort(&server));
        assert_eq!(server.linger().unwrap(), Some(Duration::ZERO));
        let (pipe, _other) = tokio::io::duplex(64);
        assert!(!abort(&pipe), "an in-memory pipe has no TCP to reset");
    }

    /// `ferry serve`'s echo route runs on the socket taken back from hyper, wrapped in
    /// `UpgradedIo`: a keepalive failure must still reset it.
    #[cfg(feature = "hyper")]
    #[tokio::test]
    async fn a_tcp_stream_taken_back_from_hyper_is_reset_too() {
        let (_client, server) = tcp_pair().await;
        let io = crate::upgrade::UpgradedIo::Own(server);
        assert!(abort(&io));
        assert_eq!(io.own().unwrap().linger().unwrap(), Some(Duration::ZERO));
    }
}
