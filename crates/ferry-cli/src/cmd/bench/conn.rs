//! One connection: the streaming verifier of what the server sends back, and the poll loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use ferry::Limits;
use ferry::proto::extension::deflate::RSV1;
use ferry::proto::frame::{FrameHeader, OpCode};
use ferry::proto::handshake::{ClientHandshake, ClientRequest, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::args::{Mode, Protocol};
use super::plan::{Http2Plan, Plan, build_frame};
use super::sequence::{SEQ_LEN, SeqState};
use super::settings::Target;
use super::shared::Worker;

pub(super) enum RxState {
    Header,
    Payload { remaining: u64, fin: bool },
}

/// The receive side: a reused buffer and the position in the echo stream.
pub(super) struct Rx {
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) state: RxState,
    /// Inside a message (its first frame has been seen).
    pub(super) in_message: bool,
    /// The current message is compressed (RSV1 on its first frame).
    pub(super) compressed: bool,
    /// Payload bytes of the current message verified so far (inflated bytes, if compressed).
    pub(super) offset: usize,
    /// After we sent a close: a close frame from the server ends the exchange.
    pub(super) closing: bool,
    pub(super) closed: bool,
    /// When permessage-deflate was negotiated: the inflater for the server's messages.
    pub(super) inflater: Option<super::deflate::Inflater>,
    /// fanout: where this receiver is in the publisher's sequence.
    pub(super) seq: Option<SeqState>,
}

impl Rx {
    pub(super) fn new(size: usize) -> Rx {
        Rx {
            buf: vec![0; size],
            start: 0,
            end: 0,
            state: RxState::Header,
            in_message: false,
            compressed: false,
            offset: 0,
            closing: false,
            closed: false,
            inflater: None,
            seq: None,
        }
    }

    pub(super) fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.state = RxState::Header;
        self.in_message = false;
        self.compressed = false;
        self.offset = 0;
        self.closing = false;
        self.closed = false;
        self.inflater = None;
        self.seq = None;
    }

    /// Verifies what the buffer holds; returns the number of messages completed (echoes, or in
    /// fanout numbered messages; sync messages are counted in `seq`). A pong to send (for a
    /// ping from the server) is appended to `control`.
    pub(super) fn process(&mut self, plan: &Plan, control: &mut Vec<u8>) -> Result<u64> {
        let mut completed = 0;
        loop {
            let avail = self.buf.get(self.start..self.end).unwrap_or_default();
            match self.state {
                RxState::Payload { remaining, fin } => {
                    if remaining > 0 {
                        if avail.is_empty() {
                            break;
                        }
                        let take = remaining.min(avail.len() as u64) as usize;
                        let got = &avail[..take];
                        if self.compressed {
                            let inflater = self
                                .inflater
                                .as_mut()
                                .ok_or_else(|| anyhow!("internal: compressed without inflater"))?;
                            let (seq, offset) = (self.seq.as_ref(), &mut self.offset);
                            inflater.feed(got, false, &mut |piece| {
                                check_payload(plan, seq, *offset, piece)?;
                                *offset += piece.len();
                                Ok(())
                            })?;
                        } else {
                            check_payload(plan, self.seq.as_ref(), self.offset, got)?;
                            self.offset += take;
                        }
                        self.start += take;
                        let remaining = remaining - take as u64;
                        if remaining > 0 {
                            self.state = RxState::Payload { remaining, fin };
                            break;
                        }
                    }
                    self.state = RxState::Header;
                    if fin && self.finish_message(plan)? {
                        completed += 1;
                    }
                }
                RxState::Header => match plan.protocol {
                    Protocol::Tcp => {
                        let Some(prefix) = avail.get(..4) else { break };
                        let mut len = [0; 4];
                        len.copy_from_slice(prefix);
                        let len = u32::from_be_bytes(len);
                        if len as usize != plan.size {
                            bail!(
                                "echo length prefix says {len} bytes; {} were sent",
                                plan.size
                            );
                        }
                        self.start += 4;
                        self.in_message = true;
                        self.state = RxState::Payload {
                            remaining: u64::from(len),
                            fin: true,
                        };
                    }
                    Protocol::Ws => {
                        let Some((header, header_len)) = FrameHeader::parse(avail)
                            .map_err(|e| anyhow!("invalid frame from the server: {e}"))?
                        else {
                            break;
                        };
                        if header.mask.is_some() {
                            bail!("the server masked a frame (RFC 6455 §5.1 forbids it)");
                        }
                        // RFC 7692 §6: RSV1 marks a compressed message, on its first frame only;
                        // control frames are never compressed.
                        let compressed_start = header.rsv == RSV1
                            && self.inflater.is_some()
                            && !header.opcode.is_control()
                            && !self.in_message;
                        if header.rsv != 0 && !compressed_start {
                            bail!(
                                "the server set RSV bits {:#05b} {}",
                                header.rsv,
                                if self.inflater.is_some() {
                                    "where permessage-deflate allows none"
                                } else {
                                    "without an extension"
                                }
                            );
                        }
                        if header.opcode.is_control() {
                            let len = header.payload_len as usize;
                            if !header.fin || len > 125 {
                                bail!("the server sent an invalid control frame");
                            }
                            let Some(body) = avail.get(header_len..header_len + len) else {
                                break;
                            };
                            match header.opcode {
                                OpCode::Ping if !self.closing => {
                                    control.extend(build_frame(
                                        Protocol::Ws,
                                        OpCode::Pong,
                                        0,
                                        body,
                                        plan.mask,
                                    ));
                                }
                                OpCode::Close if self.closing => self.closed = true,
                                OpCode::Close => bail!("{}", describe_close(body)),
                                _ => {}
                            }
                            self.start += header_len + len;
                            continue;
                        }
                        if self.closing {
                            bail!("the server sent data after our close frame");
                        }
                        match (self.in_message, header.opcode) {
                            (false, op) if op == plan.opcode => self.in_message = true,
                            (true, OpCode::Continuation) => {}
                            (false, OpCode::Continuation) => {
                                bail!("the server sent a continuation frame outside a message")
                            }
                            (true, _) => bail!("the server started a message inside another"),
                            (false, op) => bail!("the echo is {op:?}; {:?} was sent", plan.opcode),
                        }
                        if compressed_start {
                            self.compressed = true;
                        }
                        // Compressed frames are checked after inflating.
                        if !self.compressed && header.payload_len > (plan.size - self.offset) as u64
                        {
                            bail!("echo longer than the message sent ({} bytes)", plan.size);
                        }
                        self.start += header_len;
                        self.state = RxState::Payload {
                            remaining: header.payload_len,
                            fin: header.fin,
                        };
                    }
                },
            }
        }
        // What is left is at most a partial header or control frame: move it to the front.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(completed)
    }

    /// The last frame of a message is in: inflate the sync-flush tail if compressed, and check
    /// the length. True for a whole message; false for a fan-out sync message (empty, before
    /// the first numbered one).
    pub(super) fn finish_message(&mut self, plan: &Plan) -> Result<bool> {
        if self.compressed {
            let inflater = self
                .inflater
                .as_mut()
                .ok_or_else(|| anyhow!("internal: compressed without inflater"))?;
            let (seq, offset) = (self.seq.as_ref(), &mut self.offset);
            inflater.feed(&[], true, &mut |piece| {
                check_payload(plan, seq, *offset, piece)?;
                *offset += piece.len();
                Ok(())
            })?;
        }
        self.compressed = false;
        self.in_message = false;
        let len = std::mem::take(&mut self.offset);
        match &mut self.seq {
            Some(seq) if len == 0 => {
                if seq.next > 0 {
                    bail!(
                        "an empty message after message #{}: only sync messages are empty, \
                         and they come first",
                        seq.next - 1
                    );
                }
                seq.syncs += 1;
                Ok(false)
            }
            seq => {
                if len != plan.size {
                    bail!(
                        "{} shorter than the message sent: {len} bytes of {}",
                        plan.noun(),
                        plan.size
                    );
                }
                if let Some(seq) = seq {
                    seq.advance();
                }
                Ok(true)
            }
        }
    }
}

/// Checks `got`, the payload bytes at `offset` of the message being received, against what was
/// sent: the plan's payload, whose first bytes in fan-out are the sequence number `seq` expects.
pub(super) fn check_payload(
    plan: &Plan,
    seq: Option<&SeqState>,
    offset: usize,
    got: &[u8],
) -> Result<()> {
    let Some(expected) = plan.payload.get(offset..offset + got.len()) else {
        bail!(
            "{} longer than the message sent ({} bytes)",
            plan.noun(),
            plan.size
        );
    };
    let numbered = match seq {
        Some(seq) if offset < SEQ_LEN => {
            let n = (SEQ_LEN - offset).min(got.len());
            if got[..n] != seq.prefix[offset..offset + n] {
                bail!(
                    "expected message #{} (sequence number {:?}) but got one starting {:?} at \
                     byte {offset}: a message was lost, repeated or reordered",
                    seq.next,
                    String::from_utf8_lossy(&seq.prefix),
                    String::from_utf8_lossy(&got[..n])
                );
            }
            n
        }
        _ => 0,
    };
    let (got, expected) = (&got[numbered..], &expected[numbered..]);
    if got != expected {
        let i = got
            .iter()
            .zip(expected)
            .position(|(g, e)| g != e)
            .unwrap_or(0);
        bail!(
            "{} differs from the message sent at byte {} of {} (sent {:#04x}, got {:#04x})",
            plan.noun(),
            offset + numbered + i,
            plan.size,
            expected.get(i).copied().unwrap_or(0),
            got.get(i).copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// The error for a close frame the server sent first, with a hint for the codes a benchmark
/// provokes.
pub(super) fn describe_close(body: &[u8]) -> String {
    let code = body.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
    let hint = match code {
        Some(1013) => {
            ": the server found this connection too slow (1013); with fanout, lower --pipeline \
             or raise the server's --send-queue"
        }
        Some(1009) => {
            ": the message is over the server's limit (1009); raise its --max-message-size"
        }
        _ => "",
    };
    format!(
        "the server sent a close frame (code {}, reason {reason:?}){hint}",
        code.map_or_else(|| "none".to_owned(), |c| c.to_string())
    )
}

/// A benchmark connection's byte stream: its own TCP connection, or a stream of an HTTP/2
/// connection (--http2).
pub(super) enum BenchStream {
    Tcp(TcpStream),
    Http2(ferry::http2::Http2Stream),
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BenchStream::Http2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BenchStream::Http2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BenchStream::Http2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BenchStream::Http2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub(super) struct Conn {
    pub(super) id: usize,
    pub(super) stream: BenchStream,
    pub(super) rx: Rx,
    /// Messages granted whose last byte is not yet written.
    pub(super) unsent: u64,
    /// Bytes of the first unsent frame already written.
    pub(super) write_off: usize,
    /// When each message whose first byte is written, and whose echo is not complete, started.
    pub(super) sent: VecDeque<Instant>,
    /// Control frames to send (pongs) at the next frame boundary.
    pub(super) control: Vec<u8>,
}

impl Conn {
    pub(super) fn new(id: usize, stream: BenchStream, rx: Rx, pipeline: usize) -> Conn {
        Conn {
            id,
            stream,
            rx,
            unsent: 0,
            write_off: 0,
            sent: VecDeque::with_capacity(pipeline),
            control: Vec::new(),
        }
    }

    /// Sends the granted messages and verifies echoes until none is outstanding. With a worker,
    /// every echo is counted and timed and grants the next message; without, it only verifies.
    pub(super) fn poll_exchange(
        &mut self,
        cx: &mut TaskContext<'_>,
        plan: &Plan,
        worker: Option<&Worker<'_>>,
    ) -> Poll<Result<()>> {
        let frame_len = plan.frame_len;
        loop {
            // Write until the socket is full: a pending pong at a frame boundary, then the
            // granted messages, as many frames per write as the batch holds.
            loop {
                let chunk = if !self.control.is_empty() && self.write_off == 0 {
                    &self.control[..]
                } else if self.unsent > 0 {
                    let frames = self.unsent.min(plan.batch_frames as u64) as usize;
                    plan.batch
                        .get(self.write_off..frames * frame_len)
                        .unwrap_or_default()
                } else {
                    break;
                };
                let control = !self.control.is_empty() && self.write_off == 0;
                let n = match Pin::new(&mut self.stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                };
                if control {
                    self.control.drain(..n);
                    continue;
                }
                let before = self.write_off;
                let started = (before + n).div_ceil(frame_len) - before.div_ceil(frame_len);
                if started > 0 {
                    let now = Instant::now();
                    self.sent.extend(std::iter::repeat_n(now, started));
                }
                let total = before + n;
                self.unsent -= (total / frame_len) as u64;
                self.write_off = total % frame_len;
            }
            if self.unsent == 0 && self.sent.is_empty() && self.control.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Read and verify.
            let rx = &mut self.rx;
            if rx.end == rx.buf.len() {
                return Poll::Ready(Err(anyhow!("internal: read buffer full")));
            }
            let mut buf = ReadBuf::new(&mut rx.buf[rx.end..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        let n = self.sent.len();
                        return Poll::Ready(Err(anyhow!(
                            "the server closed the TCP connection with {n} message{} in flight",
                            if n == 1 { "" } else { "s" }
                        )));
                    }
                    rx.end += n;
                    let done = match rx.process(plan, &mut self.control) {
                        Ok(done) => done,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if done == 0 {
                        continue;
                    }
                    if done > self.sent.len() as u64 {
                        return Poll::Ready(Err(anyhow!(
                            "the server echoed {done} messages with only {} sent",
                            self.sent.len()
                        )));
                    }
                    let now = Instant::now();
                    match worker {
                        Some(w) if w.measuring() => {
                            let mut hist = w.hist.borrow_mut();
                            for sent in self.sent.drain(..done as usize) {
                                hist.record(now.saturating_duration_since(sent));
                            }
                        }
                        _ => {
                            self.sent.drain(..done as usize);
                        }
                    }
                    if let Some(w) = worker {
                        w.count(done);
                        self.unsent += w.grant(done);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One message, verified, outside the measured loop (handshakes and idle modes).
    pub(super) async fn echo_once(&mut self, plan: &Plan) -> Result<()> {
        self.unsent = 1;
        poll_fn(|cx| self.poll_exchange(cx, plan, None)).await
    }

    /// The closing handshake: our close, the server's close, then the server's FIN (the server
    /// closes TCP first, RFC 6455 §7.1.1). For tcp: our FIN, then theirs.
    pub(super) async fn close(&mut self, plan: &Plan) -> Result<()> {
        match plan.protocol {
            Protocol::Ws => {
                self.stream.write_all(&plan.close_frame).await?;
                self.rx.closing = true;
                let mut scratch = Vec::new();
                while !self.rx.closed {
                    let rx = &mut self.rx;
                    let n = self.stream.read(&mut rx.buf[rx.end..]).await?;
                    if n == 0 {
                        bail!("the server closed TCP without answering our close frame");
                    }
                    rx.end += n;
                    rx.process(plan, &mut scratch)?;
                }
            }
            Protocol::Tcp => self.stream.shutdown().await?,
        }
        // Then the server's FIN.
        match self.stream.read(&mut self.rx.buf[..]).await? {
            0 => Ok(()),
            _ => bail!("the server sent data after the close"),
        }
    }
}

pub(super) fn write_zero() -> anyhow::Error {
    anyhow!("the server stopped accepting data (write returned 0)")
}

/// Connects (from `source`, when given) with TCP_NODELAY on.
pub(super) async fn connect(target: &Target, source: Option<IpAddr>) -> Result<TcpStream> {
    let hint = |e: io::Error| {
        let fix = match (e.raw_os_error(), e.kind()) {
            (Some(24), _) => {
                "too many open files: raise the limit (ulimit -n) or lower --connections"
            }
            (Some(23), _) => "the system's file table is full: lower --connections",
            (Some(98 | 99), _) if source.is_some() => {
                "out of local ports, or --source-ips holds an address this host does not have: \
                 add source addresses"
            }
            (Some(98 | 99), _) => {
                "out of local ports (about 28k per source address): spread connections with \
                 --source-ips 127.0.0.2-127.0.0.9"
            }
            (_, io::ErrorKind::ConnectionRefused) => {
                "nothing is listening there: start the server or fix --url"
            }
            _ => "check --url and that the server is up",
        };
        anyhow!("connect to {}: {e}; {fix}", target.addr)
    };
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(hint)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(hint)?;
    }
    let stream = socket.connect(target.addr).await.map_err(hint)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The opening handshake, over the connection's own read buffer (bytes after the response stay
/// in it, for the frame parser).
pub(super) async fn upgrade(
    stream: &mut TcpStream,
    rx: &mut Rx,
    plan: &Plan,
    target: &Target,
    path: &str,
) -> Result<()> {
    let mut request = ClientRequest::new(target.host.clone(), path);
    request.deflate = plan.deflate.as_ref().map(|d| d.offer.clone());
    let (mut handshake, bytes) = ClientHandshake::new(&request, &Limits::default())
        .map_err(|e| anyhow!("--url: cannot build the handshake request: {e}"))?;
    stream.write_all(&bytes).await?;
    loop {
        let n = stream.read(&mut rx.buf[..]).await?;
        if n == 0 {
            bail!("the server closed the connection during the handshake");
        }
        let data = rx.buf.get(..n).unwrap_or_default();
        if let Some(response) = handshake
            .receive(data)
            .map_err(|e| anyhow!("handshake refused: {e}"))?
        {
            return adopt(&response, rx, plan);
        }
    }
}

/// Takes the accepted response: the inflater for what it agreed, and the bytes after it (over
/// HTTP/1.1) moved to the front of the read buffer.
fn adopt(response: &Response, rx: &mut Rx, plan: &Plan) -> Result<()> {
    let inflater = match (&plan.deflate, response.deflate) {
        (None, None) => None,
        (None, Some(_)) => bail!("the server accepted an extension that was not offered"),
        (Some(_), None) => bail!(
            "--deflate: the server declined permessage-deflate; turn it on in the server \
                 (ferry echo: drop --no-deflate) or drop --deflate"
        ),
        (Some(_), Some(params)) => {
            // The payload was compressed once with our window; a server that allows us
            // less could not inflate it.
            if let Some(bits) = params
                .client_max_window_bits
                .filter(|&b| b < super::deflate::OWN_WINDOW_BITS)
            {
                bail!(
                    "--deflate: the server limits our window to {bits} bits; ferry \
                         bench compresses with {}",
                    super::deflate::OWN_WINDOW_BITS
                );
            }
            let _ = plan.negotiated.set(params.to_header());
            Some(super::deflate::Inflater::new(
                params.server_max_window_bits.unwrap_or(15),
                params.server_no_context_takeover,
            ))
        }
    };
    let leftover = &response.leftover[..];
    rx.reset();
    rx.inflater = inflater;
    rx.buf
        .get_mut(..leftover.len())
        .ok_or_else(|| anyhow!("handshake leftover larger than the read buffer"))?
        .copy_from_slice(leftover);
    rx.end = leftover.len();
    Ok(())
}

/// Connect to connection `id`'s server ([`Plan::target`]), and upgrade for WebSocket.
pub(super) async fn open(plan: &Plan, id: usize, source_index: usize, rx: Rx) -> Result<Conn> {
    let target = plan.target(id);
    let opening = async {
        let mut rx = rx;
        let stream = match &plan.http2 {
            Some(http2) => BenchStream::Http2(open_stream(plan, http2, id, target, &mut rx).await?),
            None => {
                let mut stream = connect(target, plan.source(source_index)).await?;
                if plan.protocol == Protocol::Ws {
                    upgrade(&mut stream, &mut rx, plan, target, &plan.path(id)).await?;
                }
                BenchStream::Tcp(stream)
            }
        };
        if plan.mode == Mode::Fanout {
            rx.seq = Some(SeqState::new());
        }
        Ok::<_, anyhow::Error>(Conn::new(id, stream, rx, plan.pipeline))
    };
    let result = match tokio::time::timeout(plan.timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "connect and upgrade took longer than --timeout {:?}; is the server overloaded?",
            plan.timeout
        )),
    };
    if plan.targets.len() > 1 {
        // Several servers: say which one failed.
        return result.with_context(|| format!("--url {}", target.url));
    }
    result
}

/// --http2: connection `id`'s WebSocket as a stream of its group's HTTP/2 connection, which the
/// first of the group opens.
async fn open_stream(
    plan: &Plan,
    http2: &Http2Plan,
    id: usize,
    target: &Target,
    rx: &mut Rx,
) -> Result<ferry::http2::Http2Stream> {
    let key = (target.url.clone(), id / http2.streams);
    let connection = {
        let mut connections = http2.connections.lock().await;
        match connections.get(&key) {
            Some(connection) if connection.is_open() => connection.clone(),
            _ => {
                let config = ferry::Config {
                    deflate: plan.deflate.as_ref().map(|d| d.offer.clone()),
                    proxy: ferry::proxy::ProxySetting::None,
                    ..ferry::Config::default()
                };
                let url = format!("ws://{}", target.host);
                let connection = ferry::http2::Http2Connection::connect(&url, &config)
                    .await
                    .map_err(|e| anyhow!("--http2: {e}"))?;
                connections.insert(key, connection.clone());
                connection
            }
        }
    };
    let (stream, response) = connection
        .websocket_stream(&plan.path(id))
        .await
        .map_err(|e| anyhow!("handshake refused: {e}"))?;
    adopt(&response, rx, plan)?;
    Ok(stream)
}
