//! The bodies of the ferry-proto fuzz targets, and the invariants they check.
//!
//! A target does more than "does not panic": each one asserts what must hold whatever the input
//! (a failed assertion is a crash, so a bug), mostly by comparing two ways of doing the same
//! thing (all bytes in one read against the same bytes in many reads) and by decoding what the
//! connection sent with a decoder independent of the crate's.
//!
//! Input formats (see also `README.md`, and `make_seeds.py` which writes the seed corpora):
//! - `frame_decoder`: `[ctl] stream...`. `ctl` bit 7: small limits; bit 6: EOF at the end;
//!   bits 0-5: the read-size seed (0 = one read).
//! - `message_assembly`: a program of one-byte opcodes with operands, see [`message_assembly`].
//! - `server_handshake`, `client_handshake`: `[ctl] bytes...`. `ctl` bit 7: small limits;
//!   bits 0-6: the read-size seed.
//! - `deflate_inflate`: `[ctl] stream...` into a server with permessage-deflate negotiated.
//!   `ctl` bit 7: small limits (a 512-byte message cap, so bombs hit it); bit 6: the client
//!   keeps no context; bit 5: a 9-bit client window; bits 0-4: the read-size seed.

use std::time::{Duration, Instant};

use ferry_proto::handshake::{ClientHandshake, ClientRequest, Request, Response, ServerHandshake};
use ferry_proto::{
    CloseCode, Config, Connection, Event, Initiator, Keepalive, Limits, Message, Role, State,
};

/// The masking key of every client here (`Config::fixed_mask`), so runs are reproducible.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The client handshake key: the RFC 6455 §1.3 example nonce, so a seed can hold the right
/// `Sec-WebSocket-Accept` (s3pPLMBiTxaQ9kYGzzhZRbK+xOo=).
pub const HANDSHAKE_KEY: [u8; 16] = *b"the sample nonce";

// -------------------------------------------------------------------------------------------
// Input decoding

/// Reads the fuzz input as a stream of operands. Past the end every read yields zeros, so any
/// input decodes to something, the way `arbitrary::Unstructured` does.
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// Little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// SplitMix64, for read sizes derived from a one-byte seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Cuts `data` into reads: one read for seed 0, else reads of 1..=seed bytes.
pub fn reads(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || data.is_empty() {
        return vec![data];
    }
    let mut rng = SplitMix(u64::from(seed));
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.next() % u64::from(seed)) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

// -------------------------------------------------------------------------------------------
// An independent frame decoder, for what a connection sent

#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Decodes what a connection sent. Panics (a crash: a ferry-proto bug) on anything a conforming
/// sender cannot produce: a truncated frame, a non-minimal length.
pub fn parse_sent(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated header in sent bytes");
        let (b0, b1) = (bytes[0], bytes[1]);
        let (len, mut pos) = match b1 & 0x7f {
            126 => {
                let n = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
                assert!(n >= 126, "non-minimal 16-bit length");
                (n, 4)
            }
            127 => {
                let n = u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize;
                assert!(n > 0xffff, "non-minimal 64-bit length");
                (n, 10)
            }
            n => (n as usize, 2),
        };
        let masked = b1 & 0x80 != 0;
        let key = if masked {
            let key: [u8; 4] = bytes[pos..pos + 4].try_into().unwrap();
            pos += 4;
            key
        } else {
            [0; 4]
        };
        let payload = bytes[pos..pos + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        frames.push(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0x0f,
            masked,
            payload,
        });
        bytes = &bytes[pos + len..];
    }
    frames
}

/// Checks a sent stream is well-formed for `role`: masked iff client, RSV clear, known
/// opcodes, control frames final and short, data frames in valid message sequences, at most one
/// close frame and nothing after it. Returns the frames.
pub fn check_sent(role: Role, sent: &[u8]) -> Vec<Frame> {
    let frames = parse_sent(sent);
    let mut in_message = false;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.masked, role == Role::Client, "mask bit for {role:?}");
        assert_eq!(f.rsv, 0);
        match f.opcode {
            0x8..=0xa => {
                assert!(f.fin && f.payload.len() <= 125, "bad control frame {f:?}");
                if f.opcode == 0x8 {
                    assert_eq!(i, frames.len() - 1, "frames after the close frame");
                    assert_ne!(f.payload.len(), 1);
                    if f.payload.len() >= 2 {
                        let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                        assert!(
                            CloseCode::from(code).is_sendable(),
                            "sent close code {code}"
                        );
                        assert!(std::str::from_utf8(&f.payload[2..]).is_ok());
                    }
                }
            }
            0x0 => {
                assert!(in_message, "continuation without a message");
                in_message = !f.fin;
            }
            0x1 | 0x2 => {
                assert!(!in_message, "new message inside a message");
                in_message = !f.fin;
            }
            other => panic!("sent reserved opcode {other}"),
        }
    }
    frames
}

// -------------------------------------------------------------------------------------------
// Connection outcome

/// Takes events, and while a failure is held behind delivered messages, processes again, as a
/// driver does for an application that takes every message at once.
pub fn settle(conn: &mut Connection, now: Instant, events: &mut Vec<Event>) {
    let before = events.len();
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    while conn.is_stalled() {
        assert!(
            events[before..]
                .iter()
                .any(|e| matches!(e, Event::Message(_))),
            "stalled without delivering a message"
        );
        conn.handle_received(now);
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
}

/// What the application did to a connection, for [`check_outcome`].
#[derive(Default)]
pub struct AppActions {
    /// It called `close` successfully.
    pub closed: bool,
    /// It received EOF.
    pub eof: bool,
    /// Keepalive was on.
    pub keepalive: bool,
    /// It sent messages, pings or pongs of its own.
    pub sent_data: bool,
}

/// The invariants of a connection after any input: one `Closed` at most, last; a close code
/// that fits how it ended; a well-formed sent stream ending in the matching close frame.
pub fn check_outcome(conn: &Connection, events: &[Event], sent: &[u8], app: &AppActions) {
    let role = conn.role();
    assert!(!conn.is_stalled());
    let closes = events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert!(closes <= 1, "{closes} Closed events");
    let frames = check_sent(role, sent);
    let close_frame = frames.last().filter(|f| f.opcode == 0x8);
    if !app.closed && !app.sent_data {
        for f in &frames {
            assert!(
                f.opcode == 0xa || f.opcode == 0x8 || app.keepalive && f.opcode == 0x9,
                "sent opcode {} unprompted",
                f.opcode
            );
        }
    }
    match events.last() {
        Some(Event::Closed(info)) => {
            assert_eq!(conn.state(), State::Closed);
            let code = info.code.as_u16();
            if info.clean {
                let close = close_frame.expect("a clean close sent a close frame");
                if info.initiator == Initiator::Remote {
                    let echo = if code == 1005 {
                        vec![]
                    } else {
                        code.to_be_bytes().to_vec()
                    };
                    assert_eq!(close.payload, echo, "echo of {code}");
                }
                assert!(conn.error().is_none());
            } else {
                match code {
                    1006 => {
                        assert!(app.eof || info.reason.as_str() == "close timeout");
                        assert!(app.closed || close_frame.is_none());
                    }
                    1011 => {
                        assert!(app.keepalive);
                        assert_eq!(info.reason.as_str(), "keepalive ping timeout");
                    }
                    1002 | 1007 | 1009 => {
                        assert_eq!(info.initiator, Initiator::Local);
                        assert_eq!(conn.error().map(|e| e.close_code()), Some(info.code));
                        let close = close_frame.expect("a failure sends a close frame");
                        if !app.closed {
                            assert_eq!(close.payload[..2], code.to_be_bytes());
                            assert_eq!(&close.payload[2..], info.reason.as_bytes());
                        }
                    }
                    other => panic!("closed with {other} unclean"),
                }
                assert!(conn.should_close_transport());
            }
        }
        _ => {
            assert_ne!(conn.state(), State::Closed);
            assert!(!conn.should_close_transport());
            assert_eq!(close_frame.is_some(), app.closed);
        }
    }
}

// -------------------------------------------------------------------------------------------
// frame_decoder

fn small_limits() -> Limits {
    Limits {
        max_frame_size: 256,
        max_message_size: 512,
        max_fragments: 8,
        max_handshake_bytes: 512,
        max_headers: 8,
        ..Limits::default()
    }
}

fn run_server(
    stream: &[u8],
    chunks: &[&[u8]],
    limits: &Limits,
    eof: bool,
) -> (Vec<Event>, Vec<u8>, Connection) {
    let now = Instant::now();
    let config = Config {
        limits: limits.clone(),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config, now);
    let mut events = Vec::new();
    debug_assert_eq!(chunks.concat(), stream);
    for chunk in chunks {
        conn.receive_data(chunk, now);
        settle(&mut conn, now, &mut events);
    }
    if eof {
        conn.receive_eof();
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
    let sent = conn.take_transmit().to_vec();
    (events, sent, conn)
}

/// A server with permessage-deflate negotiated, fed arbitrary bytes (compressed frames with
/// RSV1, decompression bombs, broken deflate streams), in one read and in many: the same
/// events and bytes either way, a consistent outcome, and no message over the size cap however
/// much its payload inflates.
pub fn deflate_inflate(data: &[u8]) {
    use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let limits = if ctl & 0x80 != 0 {
        small_limits()
    } else {
        Limits::default()
    };
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: ctl & 0x40 != 0,
        server_max_window_bits: None,
        client_max_window_bits: (ctl & 0x20 != 0).then_some(9),
    };
    let run = |chunks: &[&[u8]]| {
        let now = Instant::now();
        let config = Config {
            limits: limits.clone(),
            ..Config::default()
        };
        let deflate = PerMessageDeflate::new(Role::Server, params, &DeflateConfig::default());
        let mut conn = Connection::new(Role::Server, config, now).with_extension(Box::new(deflate));
        let mut events = Vec::new();
        for chunk in chunks {
            conn.receive_data(chunk, now);
            settle(&mut conn, now, &mut events);
        }
        let sent = conn.take_transmit().to_vec();
        (events, sent, conn)
    };
    let (whole_events, whole_sent, _) = run(&[stream]);
    let (events, sent, conn) = run(&reads(stream, ctl & 0x1f));
    assert_eq!(whole_events, events, "events depend on the reads");
    assert_eq!(whole_sent, sent, "sent bytes depend on the reads");
    for event in &events {
        if let Event::Message(message) = event {
            assert!(
                message.len() <= limits.max_message_size,
                "a message of {} bytes passed a cap of {}",
                message.len(),
                limits.max_message_size
            );
        }
    }
    check_outcome(&conn, &events, &sent, &AppActions::default());
}

/// A server connection fed arbitrary bytes, in one read and in many: the same events and
/// bytes sent either way, and a consistent outcome.
pub fn frame_decoder(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let limits = if ctl & 0x80 != 0 {
        small_limits()
    } else {
        Limits::default()
    };
    let eof = ctl & 0x40 != 0;
    let (whole_events, whole_sent, whole) = run_server(stream, &[stream], &limits, eof);
    let (events, sent, chunked) = run_server(stream, &reads(stream, ctl & 0x3f), &limits, eof);
    assert_eq!(whole_events, events, "events depend on the reads");
    assert_eq!(whole_sent, sent, "sent bytes depend on the reads");
    assert_eq!(whole.state(), chunked.state());
    let app = AppActions {
        eof,
        ..AppActions::default()
    };
    check_outcome(&chunked, &events, &sent, &app);
}

// -------------------------------------------------------------------------------------------
// message_assembly

/// One end of the pair and what the test knows about it.
struct End {
    conn: Connection,
    events: Vec<Event>,
    /// Every byte it sent.
    sent: Vec<u8>,
    /// Messages its peer queued for it through the API.
    expected: Vec<Message>,
    /// A raw (fuzzer-built) frame was sent to it: its input is no longer a conforming stream.
    tainted: bool,
    app: AppActions,
    /// It closed its transport.
    transport_closed: bool,
}

impl End {
    fn new(role: Role, config: Config, now: Instant) -> End {
        let keepalive = config.keepalive.is_some();
        End {
            conn: Connection::new(role, config, now),
            events: Vec::new(),
            sent: Vec::new(),
            expected: Vec::new(),
            tainted: false,
            app: AppActions {
                keepalive,
                sent_data: true,
                ..AppActions::default()
            },
            transport_closed: false,
        }
    }
}

/// Bytes in flight one way.
#[derive(Default)]
struct Pipe {
    bytes: Vec<u8>,
    /// The writer closed its transport: EOF follows the bytes.
    closed: bool,
    eof_delivered: bool,
}

struct World {
    ends: [End; 2],
    /// `pipes[i]` carries bytes from `ends[i]` to `ends[1 - i]`.
    pipes: [Pipe; 2],
    now: Instant,
}

impl World {
    /// Moves what each end owes into its pipe, and closes transports that should be. An end
    /// whose transport is closed still writes (it cannot know); the bytes go nowhere.
    fn flush(&mut self) {
        for i in 0..2 {
            let end = &mut self.ends[i];
            let bytes = end.conn.take_transmit();
            end.sent.extend_from_slice(&bytes);
            if end.transport_closed {
                continue;
            }
            self.pipes[i].bytes.extend_from_slice(&bytes);
            if end.conn.should_close_transport() {
                end.transport_closed = true;
                self.pipes[i].closed = true;
            }
        }
    }

    /// Delivers up to `n` bytes (0: all) of the pipe into `ends[to]`, then EOF if due.
    fn deliver(&mut self, to: usize, n: usize) {
        let pipe = &mut self.pipes[1 - to];
        let end = &mut self.ends[to];
        if end.transport_closed {
            pipe.bytes.clear();
            return;
        }
        let n = if n == 0 {
            pipe.bytes.len()
        } else {
            n.min(pipe.bytes.len())
        };
        let chunk: Vec<u8> = pipe.bytes.drain(..n).collect();
        if !chunk.is_empty() {
            end.conn.receive_data(&chunk, self.now);
        }
        settle(&mut end.conn, self.now, &mut end.events);
        if pipe.closed && pipe.bytes.is_empty() && !pipe.eof_delivered {
            pipe.eof_delivered = true;
            end.app.eof = true;
            end.conn.receive_eof();
            end.events
                .extend(std::iter::from_fn(|| end.conn.poll_event()));
        }
        self.flush();
    }

    fn settle_all(&mut self) {
        for end in &mut self.ends {
            settle(&mut end.conn, self.now, &mut end.events);
        }
        self.flush();
    }
}

fn message_from(u: &mut Cursor) -> Message {
    let kind = u.u8();
    let len = usize::from(u.u16() % 2049);
    let payload = u.bytes(len);
    if kind & 1 == 1 {
        let mut text = String::from_utf8_lossy(payload).into_owned();
        let mut cut = text.len().min(2048);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        Message::text(text)
    } else {
        Message::binary(payload.to_vec())
    }
}

/// A frame with fuzzer-chosen fields, masked the right way unless the input says otherwise.
fn raw_frame(u: &mut Cursor, receiver: Role) -> Vec<u8> {
    let b0 = u.u8();
    let b1 = u.u8();
    let fin = b0 & 0x80 != 0;
    let rsv = if b0 & 0x40 != 0 { (b0 >> 4) & 7 } else { 0 };
    let opcode = b0 & 0x0f;
    let payload: Vec<u8> = if b1 & 0x02 != 0 {
        let code = u.u16();
        let n = usize::from(u.u8() % 128);
        [&code.to_be_bytes()[..], u.bytes(n)].concat()
    } else if b1 & 0x01 != 0 {
        let n = usize::from(u.u16() % 4200);
        u.bytes(n).to_vec()
    } else {
        let n = usize::from(u.u8());
        u.bytes(n).to_vec()
    };
    let wrong_mask = b1 & 0x80 != 0;
    let mask = ((receiver == Role::Server) != wrong_mask).then_some([0xa1, 0xb2, 0xc3, 0xd4]);
    let form = (b1 >> 4) & 3;
    let len = payload.len() as u64;
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match form {
        1 if len <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        2 => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        _ if len <= 125 => out.push(mask_bit | len as u8),
        _ if len <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(&payload);
    }
    out
}

/// A client and a server joined by two pipes, run by a program decoded from the input.
///
/// Both start from a valid, handshake-free prefix: the client sends a text message and a
/// fragmented binary one, the server a text message. Then each input byte is an operation
/// (`op % 10`, side `0` = client, `1` = server where one is named):
/// - `0`/`1`: that side sends a message: `[kind] [len: u16 % 2049] [payload] [frag]`
///   (`kind` bit 0: text, made valid; `frag` 0: `send`, else `send_fragmented` with
///   `frag * 8` bytes per frame, at least enough for 31 frames).
/// - `2`/`3`: that side's peer receives a raw frame: `[b0] [b1] [...]` (`b0`: FIN bit 7,
///   RSV bits 4-6 if bit 6, opcode bits 0-3; `b1`: wrong mask bit 7, length form bits 4-5,
///   close payload `[code: u16] [n] [reason]` if bit 1, else `[n: u16 % 4200]` if bit 0, else
///   `[n: u8]`, then `n` payload bytes).
/// - `4`/`5`: deliver `[n]` bytes (0: all) to that side.
/// - `6`: `[side] [n] [payload]`: ping.
/// - `7`: `[side] [code: u16] [n] [reason]`: close.
/// - `8`: `[t]`: advance time by `t * 50` ms and fire timers (the client has keepalive if the
///   first input byte is odd).
/// - `9`: `[side]`: the other side closes its transport; this side gets the bytes in flight,
///   then EOF.
///
/// At the end everything in flight is delivered, and: each side's outcome is consistent
/// ([`check_outcome`]), each side sent a well-formed stream, and a side that only ever
/// received what its peer's API produced never failed, and received exactly the messages sent
/// to it, in order (all of them, unless it closed before they arrived).
pub fn message_assembly(data: &[u8]) {
    let mut u = Cursor::new(data);
    let now = Instant::now();
    let limits = Limits {
        max_frame_size: 4096,
        max_message_size: 4096,
        max_fragments: 32,
        close_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let keepalive = u.bool().then_some(Keepalive {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(300),
    });
    // `..Config::default()` although every field is set today: `Config` is growing (extensions).
    #[allow(clippy::needless_update)]
    let client_config = Config {
        limits: limits.clone(),
        fixed_mask: Some(MASK),
        keepalive,
        fragment_size: Some(512),
        ..Config::default()
    };
    let server_config = Config {
        limits,
        ..Config::default()
    };
    let mut w = World {
        ends: [
            End::new(Role::Client, client_config, now),
            End::new(Role::Server, server_config, now),
        ],
        pipes: [Pipe::default(), Pipe::default()],
        now,
    };

    // The valid prefix.
    let prefix: [(usize, Message, usize); 3] = [
        (0, Message::text("hello from the client"), usize::MAX),
        (0, Message::binary((0u8..100).collect::<Vec<u8>>()), 30),
        (1, Message::text("hello from the server"), usize::MAX),
    ];
    for (side, message, frag) in prefix {
        w.ends[side]
            .conn
            .send_fragmented(message.clone(), frag)
            .unwrap();
        w.ends[1 - side].expected.push(message);
    }
    w.flush();

    let mut ops = 0;
    while !u.is_empty() && ops < 512 {
        ops += 1;
        let op = u.u8() % 10;
        match op {
            0 | 1 => {
                let side = usize::from(op);
                let message = message_from(&mut u);
                let frag = usize::from(u.u8());
                let len = message.len();
                let end = &mut w.ends[side];
                let result = if frag == 0 {
                    end.conn.send(message.clone())
                } else {
                    end.conn
                        .send_fragmented(message.clone(), (frag * 8).max(len / 31 + 1))
                };
                assert_eq!(result.is_ok(), end.conn.state() == State::Open);
                if result.is_ok() {
                    w.ends[1 - side].expected.push(message);
                }
            }
            2 | 3 => {
                let to = usize::from(op - 2);
                let bytes = raw_frame(&mut u, w.ends[to].conn.role());
                if !w.pipes[1 - to].closed {
                    w.pipes[1 - to].bytes.extend_from_slice(&bytes);
                    w.ends[to].tainted = true;
                }
            }
            4 | 5 => {
                let n = usize::from(u.u8());
                w.deliver(usize::from(op - 4), n);
            }
            6 => {
                let side = usize::from(u.u8() & 1);
                let n = usize::from(u.u8());
                let payload = u.bytes(n).to_vec();
                let end = &mut w.ends[side];
                let len = payload.len();
                match end.conn.send_ping(payload.into()) {
                    Ok(()) => assert!(len <= 125 && end.conn.state() == State::Open),
                    Err(_) => assert!(len > 125 || end.conn.state() != State::Open),
                }
            }
            7 => {
                let side = usize::from(u.u8() & 1);
                let code = CloseCode::from(u.u16());
                let n = usize::from(u.u8());
                let reason = String::from_utf8_lossy(u.bytes(n)).into_owned();
                let end = &mut w.ends[side];
                let open = end.conn.state() == State::Open;
                match end.conn.close(code, &reason, w.now) {
                    Ok(()) => {
                        assert!(open && code.is_sendable());
                        end.app.closed = true;
                    }
                    Err(_) => assert!(!open || !code.is_sendable()),
                }
            }
            8 => {
                w.now += Duration::from_millis(u64::from(u.u8()) * 50);
                for end in &mut w.ends {
                    if end.conn.poll_timeout().is_some_and(|d| d <= w.now) {
                        end.conn.handle_timeout(w.now);
                    }
                }
            }
            _ => {
                let to = usize::from(u.u8() & 1);
                if !w.ends[1 - to].transport_closed {
                    w.ends[1 - to].transport_closed = true;
                    w.pipes[1 - to].closed = true;
                }
                w.deliver(to, 0);
            }
        }
        w.settle_all();
    }

    // Deliver everything in flight, replies included.
    for _ in 0..8 {
        w.deliver(0, 0);
        w.deliver(1, 0);
    }
    assert!(
        w.pipes.iter().all(|p| p.bytes.is_empty()),
        "bytes still in flight"
    );

    for end in &w.ends {
        check_outcome(&end.conn, &end.events, &end.sent, &end.app);
        if end.tainted {
            continue;
        }
        assert!(
            end.conn.error().is_none(),
            "failed on a conforming stream: {:?}",
            end.conn.error()
        );
        let received: Vec<&Message> = end
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        assert!(
            received.len() <= end.expected.len(),
            "more messages than were sent"
        );
        for (got, want) in received.iter().zip(&end.expected) {
            assert!(*got == want, "message mismatch");
        }
        if end.conn.state() == State::Open && !end.transport_closed {
            assert_eq!(
                received.len(),
                end.expected.len(),
                "messages lost on an open connection"
            );
        }
    }
}

// -------------------------------------------------------------------------------------------
// Handshakes

/// Asserts an HTTP message has exactly one header block terminator, at the end of its head:
/// nothing the peer sent can split it.
fn assert_single_head(bytes: &[u8]) {
    let count = bytes.windows(4).filter(|w| w == b"\r\n\r\n").count();
    assert_eq!(
        count,
        1,
        "response split: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

fn request_summary(r: &Request) -> impl PartialEq + std::fmt::Debug {
    (
        r.path().to_owned(),
        r.headers()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect::<Vec<_>>(),
        r.protocols().to_vec(),
        r.extension_offers(),
        r.accept(r.protocols().first().map(String::as_str)),
    )
}

/// `ServerHandshake::receive` with arbitrary bytes: the same result in one read as in many,
/// a refusal for every error, and an accept response that cannot be split.
pub fn server_handshake(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let limits = if ctl & 0x80 != 0 {
        small_limits()
    } else {
        Limits::default()
    };
    let whole = ServerHandshake::new(&limits).receive(input);

    let mut hs = ServerHandshake::new(&limits);
    let chunks = reads(input, ctl & 0x7f);
    let mut chunked = Ok(None);
    let mut rest: Vec<u8> = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        chunked = hs.receive(chunk);
        if !matches!(chunked, Ok(None)) {
            rest = chunks[i + 1..].concat();
            break;
        }
    }
    match (whole, chunked) {
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "error depends on the reads");
            let refusal = a.refusal().expect("every server-side error has a refusal");
            assert!((400..500).contains(&refusal.status));
            let bytes = refusal.to_bytes();
            assert!(bytes.starts_with(b"HTTP/1.1 "));
            assert_single_head(&bytes);
        }
        (Ok(Some(mut a)), Ok(Some(mut b))) => {
            assert_eq!(
                request_summary(&a),
                request_summary(&b),
                "request depends on the reads"
            );
            let leftover_b = [&b.take_leftover()[..], &rest].concat();
            assert_eq!(
                a.take_leftover(),
                leftover_b,
                "leftover depends on the reads"
            );
            let response = a.accept(a.protocols().first().map(String::as_str));
            assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert_single_head(&response);
            // The leftover is the start of a WebSocket stream: hand it over.
            let mut conn = Connection::new(Role::Server, Config::default(), Instant::now());
            conn.receive_data(&leftover_b, Instant::now());
            let mut events = Vec::new();
            settle(&mut conn, Instant::now(), &mut events);
            let sent = conn.take_transmit().to_vec();
            check_outcome(&conn, &events, &sent, &AppActions::default());
        }
        (a, b) => panic!(
            "one read gave {:?}, many gave {:?}",
            a.map(|r| r.is_some()),
            b.map(|r| r.is_some())
        ),
    }
}

/// An HTTP/2 extended CONNECT (RFC 8441) as an HTTP/2 stack hands it over: the first byte
/// picks the server's settings (bit 0: deflate on; bits 1-2: which of "chat"/"superchat" it
/// speaks), then lines: method, `:protocol` ("-" for none), `:authority` ("-" for none),
/// `:path`, and one `name: value` header per line (names lowercase, as HTTP/2 requires).
///
/// Invariants: the same input always gives the same answer; a refusal is a 4xx or 501; an
/// accepted request answers 200 with no connection-specific header, no CR/LF/NUL in what it
/// writes, a subprotocol both sides named, and a connection that starts clean.
pub fn extended_connect(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let mut lines = input.split(|&b| b == b'\n');
    let mut field = || String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let method = field();
    let protocol = field();
    let authority = field();
    let path = field();
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    let optional = |text: &str| (text != "-").then(|| text.to_owned());
    let (protocol, authority) = (optional(&protocol), optional(&authority));
    let parse = || {
        Request::from_extended_connect(
            &method,
            protocol.as_deref(),
            authority.as_deref(),
            path.clone(),
            headers.clone(),
        )
    };
    let first = parse();
    match (&first, parse()) {
        (Ok(a), Ok(b)) => assert_eq!(request_summary(a), request_summary(&b)),
        (Err(a), Err(b)) => assert_eq!(a, &b),
        _ => panic!("the same request gave two answers"),
    }
    let mut request = match first {
        Err(err) => {
            let refusal = err
                .refusal()
                .expect("every server-side error has a refusal");
            assert!(
                (400..500).contains(&refusal.status) || refusal.status == 501,
                "refused with {}",
                refusal.status
            );
            return;
        }
        Ok(request) => request,
    };
    assert!(request.is_http2());
    let spoken: Vec<&str> = ["chat", "superchat"]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ctl & (2 << i) != 0)
        .map(|(_, p)| p)
        .collect();
    let offered = request.protocols().to_vec();
    let deflate = (ctl & 1 != 0).then(ferry_proto::extension::deflate::DeflateConfig::default);
    let accepted =
        request.accept_connection(&spoken, deflate.as_ref(), Config::default(), Instant::now());
    assert_eq!(accepted.status, 200);
    for (name, value) in &accepted.headers {
        let lower = name.to_ascii_lowercase();
        assert!(
            ![
                "connection",
                "upgrade",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "sec-websocket-accept",
            ]
            .contains(&lower.as_str()),
            "{name} in an HTTP/2 response"
        );
        for text in [*name, value.as_ref()] {
            assert!(
                !text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "{text:?}"
            );
        }
    }
    if let Some(chosen) = &accepted.protocol {
        assert!(spoken.contains(&chosen.as_str()), "{chosen} not spoken");
        assert!(offered.contains(chosen), "{chosen} not offered");
    }
    if accepted.deflate.is_some() {
        assert!(deflate.is_some(), "deflate negotiated while off");
    }
    let mut conn = accepted.connection;
    let mut events = Vec::new();
    settle(&mut conn, Instant::now(), &mut events);
    let sent = conn.take_transmit().to_vec();
    check_outcome(&conn, &events, &sent, &AppActions::default());
}

fn response_summary(r: &Response) -> impl PartialEq + std::fmt::Debug {
    (r.status, r.headers.clone(), r.protocol.clone())
}

/// `ClientHandshake::receive` with arbitrary bytes: the same result in one read as in many,
/// and a success only for a 101 that carries the right accept and an offered subprotocol.
pub fn client_handshake(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let limits = if ctl & 0x80 != 0 {
        small_limits()
    } else {
        Limits::default()
    };
    let request = ClientRequest::new("server.example.com", "/chat")
        .protocol("chat")
        .protocol("superchat");
    let start = || {
        ClientHandshake::with_key(&request, &limits, HANDSHAKE_KEY)
            .unwrap()
            .0
    };
    let whole = start().receive(input);

    let mut hs = start();
    let chunks = reads(input, ctl & 0x7f);
    let mut chunked = Ok(None);
    let mut rest: Vec<u8> = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        chunked = hs.receive(chunk);
        if !matches!(chunked, Ok(None)) {
            rest = chunks[i + 1..].concat();
            break;
        }
    }
    match (whole, chunked) {
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "error depends on the reads"),
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(
                response_summary(&a),
                response_summary(&b),
                "response depends on the reads"
            );
            assert_eq!(
                a.leftover,
                [&b.leftover[..], &rest].concat(),
                "leftover depends on the reads"
            );
            assert_eq!(a.status, 101);
            let accepts: Vec<&[u8]> = a
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(accepts, [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".as_slice()]);
            if let Some(protocol) = &a.protocol {
                assert!(protocol == "chat" || protocol == "superchat");
            }
            let config = Config {
                fixed_mask: Some(MASK),
                ..Config::default()
            };
            let mut conn = Connection::new(Role::Client, config, Instant::now());
            conn.receive_data(&a.leftover, Instant::now());
            let mut events = Vec::new();
            settle(&mut conn, Instant::now(), &mut events);
            let sent = conn.take_transmit().to_vec();
            check_outcome(&conn, &events, &sent, &AppActions::default());
        }
        (a, b) => panic!(
            "one read gave {:?}, many gave {:?}",
            a.map(|r| r.is_some()),
            b.map(|r| r.is_some())
        ),
    }
}
