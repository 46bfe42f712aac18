//! Helpers shared by the ferry-proto integration tests: an independent frame encoder and
//! decoder (so the tests never check the crate against itself), connection constructors with
//! deterministic masks, and assertions on events and on the exact bytes sent.
//!
//! Every test binary uses a different subset of these, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_proto::{
    CloseCode, CloseInfo, Config, Connection, Event, Initiator, Limits, Message, Role, State,
};

/// The masking key every client under test uses (`Config::fixed_mask`): the key of the RFC 6455
/// §5.7 examples.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The masking key on frames the tests feed to a server, as a client peer would send them.
/// Different from [`MASK`] so a mix-up shows.
pub const PEER_MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

/// Opcodes (RFC 6455 §5.2, §11.8).
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The codes a connection may fail with on its own (§7.4.1): protocol error, invalid data,
/// message too big.
pub const FAILURE_CODES: [u16; 3] = [1002, 1007, 1009];

/// One fixed base instant for every test, so timer arithmetic is exact and nothing sleeps.
pub fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `t0() + ms` milliseconds.
pub fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

// -------------------------------------------------------------------------------------------
// Frame encoding

/// How the payload length is written in a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LenForm {
    /// The shortest form, as §5.2 requires of senders.
    Minimal,
    /// 126 followed by a 16-bit length.
    Bits16,
    /// 127 followed by a 64-bit length.
    Bits64,
}

/// XORs `payload` with `key` (§5.3).
pub fn masked(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect()
}

/// A frame header with an explicit length and length form.
pub fn header(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    form: LenForm,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let form = match form {
        LenForm::Minimal if len <= 125 => None,
        LenForm::Minimal if len <= 0xffff => Some(LenForm::Bits16),
        LenForm::Minimal => Some(LenForm::Bits64),
        other => Some(other),
    };
    match form {
        None => out.push(mask_bit | len as u8),
        Some(LenForm::Bits16) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        Some(_) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame: header in the minimal length form, then the payload, masked if `mask` is set.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    frame_with_form(fin, rsv, opcode, mask, payload, LenForm::Minimal)
}

/// A whole frame with a chosen length form.
pub fn frame_with_form(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    form: LenForm,
) -> Vec<u8> {
    let mut out = header(fin, rsv, opcode, mask, payload.len() as u64, form);
    match mask {
        Some(key) => out.extend(masked(payload, key)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as the peer of `role` sends it, so what a connection in `role` receives: masked
/// with [`PEER_MASK`] when the receiver is a server (§5.1), unmasked when it is a client.
pub fn to(role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = match role {
        Role::Server => Some(PEER_MASK),
        Role::Client => None,
    };
    frame(fin, 0, opcode, mask, payload)
}

/// A final frame to `role`.
pub fn to_fin(role: Role, opcode: u8, payload: &[u8]) -> Vec<u8> {
    to(role, true, opcode, payload)
}

/// The exact bytes a connection in `role` built by [`conn`] sends for a frame: masked with
/// [`MASK`] for a client, unmasked for a server.
pub fn sent_by(role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = match role {
        Role::Client => Some(MASK),
        Role::Server => None,
    };
    frame(fin, 0, opcode, mask, payload)
}

/// A close frame payload: the code in network byte order, then the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// The exact close frame a connection in `role` sends.
pub fn close_sent_by(role: Role, code: u16, reason: &str) -> Vec<u8> {
    sent_by(role, true, CLOSE, &close_payload(code, reason.as_bytes()))
}

/// Concatenates frames.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// -------------------------------------------------------------------------------------------
// Frame decoding (for checking what a connection transmitted without knowing it in advance)

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

/// Decodes a byte stream into frames. Fails on a truncated frame or a non-minimal length: a
/// conforming sender never produces either.
pub fn parse_frames(mut bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return Err(format!("truncated header: {bytes:?}"));
        }
        let (b0, b1) = (bytes[0], bytes[1]);
        let mut pos = 2;
        let len = match b1 & 0x7f {
            126 => {
                let b = bytes.get(2..4).ok_or("truncated 16-bit length")?;
                pos = 4;
                let n = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if n < 126 {
                    return Err(format!("non-minimal 16-bit length {n}"));
                }
                n
            }
            127 => {
                let b = bytes.get(2..10).ok_or("truncated 64-bit length")?;
                pos = 10;
                let n = u64::from_be_bytes(b.try_into().unwrap());
                if n <= 0xffff {
                    return Err(format!("non-minimal 64-bit length {n}"));
                }
                n
            }
            n => u64::from(n),
        };
        let mask = if b1 & 0x80 != 0 {
            let key: [u8; 4] = bytes
                .get(pos..pos + 4)
                .ok_or("truncated mask")?
                .try_into()
                .unwrap();
            pos += 4;
            Some(key)
        } else {
            None
        };
        let len = len as usize;
        let body = bytes.get(pos..pos + len).ok_or("truncated payload")?;
        let payload = match mask {
            Some(key) => masked(body, key),
            None => body.to_vec(),
        };
        frames.push(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0x0f,
            mask,
            payload,
        });
        bytes = &bytes[pos + len..];
    }
    Ok(frames)
}

// -------------------------------------------------------------------------------------------
// Connections

/// The test configuration: default limits, a fixed mask for clients.
pub fn config() -> Config {
    Config {
        fixed_mask: Some(MASK),
        ..Config::default()
    }
}

/// A configuration with the given limits.
pub fn config_with_limits(limits: Limits) -> Config {
    Config { limits, ..config() }
}

/// A connection in `role` with [`config`], started at [`t0`].
pub fn conn(role: Role) -> Connection {
    Connection::new(role, config(), t0())
}

/// A connection in `role` with `config`, started at [`t0`].
pub fn conn_with(role: Role, config: Config) -> Connection {
    Connection::new(role, config, t0())
}

/// Both roles, for tests that hold for either.
pub const ROLES: [Role; 2] = [Role::Server, Role::Client];

/// Takes every pending event.
pub fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// What a driver does after each read, for an application that takes every message at once:
/// takes the events, and while a failure is held back behind messages it just delivered
/// ([`Connection::is_stalled`]), processes again so the failure happens.
pub fn settle(conn: &mut Connection) -> Vec<Event> {
    let mut out = events(conn);
    while conn.is_stalled() {
        assert!(
            out.iter().any(|e| matches!(e, Event::Message(_))),
            "stalled without delivering a message: {out:?}"
        );
        conn.handle_received(t0());
        out.extend(events(conn));
    }
    out
}

/// Feeds `bytes` at [`t0`] as one read, then [`settle`]s: returns the events produced.
pub fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    conn.receive_data(bytes, t0());
    settle(conn)
}

/// Takes the whole transmit queue as a `Vec`.
pub fn sent(conn: &mut Connection) -> Vec<u8> {
    conn.take_transmit().to_vec()
}

pub fn text(s: &str) -> Event {
    Event::Message(Message::text(s))
}

pub fn binary(data: &[u8]) -> Event {
    Event::Message(Message::binary(data.to_vec()))
}

pub fn closed(code: u16, reason: &str, initiator: Initiator, clean: bool) -> Event {
    Event::Closed(CloseInfo {
        code: CloseCode::from(code),
        reason: reason.into(),
        initiator,
        clean,
    })
}

/// Asserts that `conn` has just failed the connection (§7.1.7): the only pending event is
/// `Closed { code, reason, Local, clean: false }`, the transmit queue holds exactly one close
/// frame with that code and reason, and the transport may be closed at once.
pub fn assert_failed(conn: &mut Connection, code: u16, reason: &str) {
    assert_eq!(
        events(conn),
        vec![closed(code, reason, Initiator::Local, false)],
        "events"
    );
    assert_eq!(
        sent(conn),
        close_sent_by(conn.role(), code, reason),
        "bytes sent"
    );
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.should_close_transport());
    assert_eq!(
        conn.error().map(|e| e.close_code()),
        Some(CloseCode::from(code))
    );
}

/// Asserts that a fresh connection in `role` fails with `code` and `reason` on `input`, fed
/// whole and fed one byte at a time, and that it fails as soon as the last byte of `input`
/// arrives and not before.
pub fn assert_rejects(role: Role, input: &[u8], code: u16, reason: &str) {
    let mut whole = conn(role);
    whole.receive_data(input, t0());
    assert_failed(&mut whole, code, reason);

    let mut trickle = conn(role);
    let (last, head) = input.split_last().expect("non-empty input");
    for (i, byte) in head.iter().enumerate() {
        trickle.receive_data(&[*byte], t0());
        assert_eq!(
            trickle.state(),
            State::Open,
            "failed early, at byte {i} of {input:02x?}"
        );
        assert_eq!(events(&mut trickle), vec![], "events before byte {i}");
    }
    trickle.receive_data(&[*last], t0());
    assert_failed(&mut trickle, code, reason);
}

/// Asserts that a fresh connection in `role` accepts `input`, fed whole and one byte at a
/// time, producing exactly `expected` and transmitting exactly `reply`.
pub fn assert_accepts(role: Role, input: &[u8], expected: &[Event], reply: &[u8]) {
    let mut whole = conn(role);
    assert_eq!(feed(&mut whole, input), expected, "events, fed whole");
    assert_eq!(sent(&mut whole), reply, "bytes sent, fed whole");
    assert_eq!(whole.state(), State::Open);

    let mut trickle = conn(role);
    let mut got = Vec::new();
    for byte in input {
        got.extend(feed(&mut trickle, &[*byte]));
    }
    assert_eq!(got, expected, "events, fed one byte at a time");
    assert_eq!(
        sent(&mut trickle),
        reply,
        "bytes sent, fed one byte at a time"
    );
}

// -------------------------------------------------------------------------------------------
// Deterministic pseudo-randomness

/// SplitMix64: a tiny seeded generator, so chunkings and payloads are reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Text of exactly `len` bytes mixing 1-, 2-, 3- and 4-byte characters, so that any split of it
/// into frames or reads is likely to cut a character.
pub fn mixed_text(len: usize, seed: u64) -> String {
    const CHARS: [&str; 6] = ["a", "Z", "é", "€", "😀", " "];
    let mut rng = SplitMix(seed);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let c = CHARS[rng.range(0, CHARS.len() - 1)];
        if out.len() + c.len() <= len {
            out.push_str(c);
        } else {
            out.push('x');
        }
    }
    out
}

/// `len` bytes of a fixed non-repeating-looking pattern (`i * 31 + 7`, wrapping), so a
/// misplaced or dropped byte shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Writes up to `n` bytes of the transmit queue the way an I/O layer does: one `chunk()`, or
/// one vectored write of up to 64 slices.
pub fn write_some(conn: &mut Connection, n: usize, vectored: bool, out: &mut Vec<u8>) -> usize {
    use bytes::Buf;

    let transmit = conn.transmit();
    let mut written = 0;
    if vectored {
        let mut slots = [std::io::IoSlice::new(&[]); 64];
        let count = transmit.chunks_vectored(&mut slots);
        for slot in &slots[..count] {
            let take = slot.len().min(n - written);
            out.extend_from_slice(&slot[..take]);
            written += take;
            if written == n {
                break;
            }
        }
    } else {
        let chunk = transmit.chunk();
        written = chunk.len().min(n);
        out.extend_from_slice(&chunk[..written]);
    }
    transmit.advance(written);
    written
}
