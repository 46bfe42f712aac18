//! A deterministic in-memory client/server pair, in the style of quinn-proto's test `Pair`:
//! two `Connection`s joined by two byte pipes, each pipe delivering what was written in chunks
//! whose sizes come from a seeded sequence, and each end closing its transport when
//! `should_close_transport` says so (which the other end sees as EOF). Virtual time only.
//!
//! The tests run whole conversations (opening handshake included) under several chunkings and
//! check every event and the final `CloseInfo` of both ends.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ferry_proto::handshake::{ClientHandshake, ClientRequest, ServerHandshake};
use ferry_proto::{
    CloseCode, CloseInfo, Config, Connection, Event, Initiator, Limits, Message, Role, State,
};

/// How a pipe cuts what was written into reads.
#[derive(Clone, Debug)]
enum Chunking {
    /// Everything available in one read.
    Whole,
    /// Reads of exactly this many bytes (the last may be shorter).
    Fixed(usize),
    /// Reads of 1..=max bytes from a seeded sequence.
    Seeded { seed: u64, max: usize },
}

/// One direction of the transport: bytes written by one end, not yet read by the other.
#[derive(Debug)]
struct Pipe {
    bytes: VecDeque<u8>,
    chunking: Chunking,
    rng: SplitMix,
    /// The writing end closed its transport: after the bytes, the reader sees EOF.
    closed: bool,
    eof_delivered: bool,
}

impl Pipe {
    fn new(chunking: Chunking) -> Self {
        let seed = match chunking {
            Chunking::Seeded { seed, .. } => seed,
            _ => 0,
        };
        Pipe {
            bytes: VecDeque::new(),
            chunking,
            rng: SplitMix(seed),
            closed: false,
            eof_delivered: false,
        }
    }

    fn next_read_len(&mut self) -> usize {
        let n = match self.chunking {
            Chunking::Whole => self.bytes.len(),
            Chunking::Fixed(n) => n,
            Chunking::Seeded { max, .. } => self.rng.range(1, max),
        };
        n.min(self.bytes.len())
    }

    fn read(&mut self) -> Vec<u8> {
        let n = self.next_read_len();
        self.bytes.drain(..n).collect()
    }
}

/// One end: its connection and everything it reported.
#[derive(Debug)]
struct End {
    conn: Connection,
    events: Vec<Event>,
    /// This end closed its transport (it reads and writes nothing more).
    transport_closed: bool,
}

impl End {
    fn new(role: Role, config: Config, now: Instant, leftover: &[u8]) -> Self {
        let mut conn = Connection::new(role, config, now);
        conn.receive_data(leftover, now);
        End {
            conn,
            events: Vec::new(),
            transport_closed: false,
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn closed_info(&self) -> Option<&CloseInfo> {
        match self.events.last() {
            Some(Event::Closed(info)) => Some(info),
            _ => None,
        }
    }
}

struct Pair {
    client: End,
    server: End,
    /// Client to server.
    up: Pipe,
    /// Server to client.
    down: Pipe,
    now: Instant,
}

impl Pair {
    /// Runs the opening handshake over the pipes, then builds both connections, handing each
    /// the bytes that followed its handshake.
    fn connect(up: Chunking, down: Chunking, client_config: Config, server_config: Config) -> Pair {
        let now = t0();
        let limits = Limits::default();
        let mut up = Pipe::new(up);
        let mut down = Pipe::new(down);

        let request = ClientRequest::new("localhost", "/pair").protocol("test");
        let (mut client_hs, request_bytes) = ClientHandshake::new(&request, &limits).unwrap();
        up.bytes.extend(request_bytes);
        let mut server_hs = ServerHandshake::new(&limits);
        let mut accepted = loop {
            assert!(
                !up.bytes.is_empty(),
                "request ended before the server accepted it"
            );
            if let Some(request) = server_hs.receive(&up.read()).unwrap() {
                break request;
            }
        };
        assert_eq!(accepted.path(), "/pair");
        let server_leftover = [
            &accepted.take_leftover()[..],
            &up.bytes.drain(..).collect::<Vec<_>>(),
        ]
        .concat();
        down.bytes
            .extend(accepted.accept(accepted.choose_protocol(&["test"])));
        let response = loop {
            assert!(
                !down.bytes.is_empty(),
                "response ended before the client accepted it"
            );
            if let Some(response) = client_hs.receive(&down.read()).unwrap() {
                break response;
            }
        };
        assert_eq!(response.protocol.as_deref(), Some("test"));
        let client_leftover = [
            &response.leftover[..],
            &down.bytes.drain(..).collect::<Vec<_>>(),
        ]
        .concat();

        Pair {
            client: End::new(Role::Client, client_config, now, &client_leftover),
            server: End::new(Role::Server, server_config, now, &server_leftover),
            up,
            down,
            now,
        }
    }

    fn default(up: Chunking, down: Chunking) -> Pair {
        Pair::connect(up, down, Config::default(), Config::default())
    }

    /// Moves one read's worth of bytes each way (and transport closes and EOFs); returns
    /// whether anything happened.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        progress |= Self::write(&mut self.client, &mut self.up);
        progress |= Self::write(&mut self.server, &mut self.down);
        progress |= Self::read(&mut self.server, &mut self.up, now);
        progress |= Self::read(&mut self.client, &mut self.down, now);
        progress
    }

    /// Takes what `end` owes the peer into `pipe`, and closes its transport when it should.
    fn write(end: &mut End, pipe: &mut Pipe) -> bool {
        if end.transport_closed {
            return false;
        }
        let bytes = end.conn.take_transmit();
        let wrote = !bytes.is_empty();
        pipe.bytes.extend(&bytes[..]);
        if end.conn.should_close_transport() {
            end.transport_closed = true;
            pipe.closed = true;
            return true;
        }
        wrote
    }

    /// Delivers one read from `pipe` to `end`, or EOF once the writer closed and it is drained.
    fn read(end: &mut End, pipe: &mut Pipe, now: Instant) -> bool {
        if end.transport_closed {
            // A closed socket reads nothing; what was in flight is lost.
            pipe.bytes.clear();
            return false;
        }
        let progress = if !pipe.bytes.is_empty() {
            let chunk = pipe.read();
            end.conn.receive_data(&chunk, now);
            true
        } else if pipe.closed && !pipe.eof_delivered {
            pipe.eof_delivered = true;
            end.conn.receive_eof();
            true
        } else {
            false
        };
        end.events
            .extend(std::iter::from_fn(|| end.conn.poll_event()));
        // The application took every message at once: a failure held behind them may go on.
        if end.conn.is_stalled() {
            end.conn.handle_received(now);
            end.events
                .extend(std::iter::from_fn(|| end.conn.poll_event()));
            return true;
        }
        progress
    }

    /// Steps until nothing moves.
    fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never settled");
    }

    /// Advances virtual time to the earliest deadline of either end and fires it.
    fn advance_to_next_timeout(&mut self) -> Option<Instant> {
        let next = [
            self.client.conn.poll_timeout(),
            self.server.conn.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        self.now = self.now.max(next);
        self.client.conn.handle_timeout(self.now);
        self.server.conn.handle_timeout(self.now);
        for end in [&mut self.client, &mut self.server] {
            end.events
                .extend(std::iter::from_fn(|| end.conn.poll_event()));
        }
        Some(next)
    }
}

fn chunkings() -> Vec<(Chunking, Chunking)> {
    vec![
        (Chunking::Whole, Chunking::Whole),
        (Chunking::Fixed(1), Chunking::Fixed(1)),
        (Chunking::Fixed(1), Chunking::Whole),
        (Chunking::Fixed(7), Chunking::Fixed(13)),
        (
            Chunking::Seeded { seed: 1, max: 10 },
            Chunking::Seeded { seed: 2, max: 3 },
        ),
        (
            Chunking::Seeded { seed: 3, max: 300 },
            Chunking::Seeded { seed: 4, max: 5000 },
        ),
        (
            Chunking::Seeded { seed: 5, max: 2 },
            Chunking::Seeded { seed: 6, max: 64 },
        ),
    ]
}

/// Messages both ways, pings both ways, fragmented messages both ways (by `send_fragmented`
/// and by `Config::fragment_size`), all checked at the other end.
fn converse(pair: &mut Pair) {
    let long_text = mixed_text(5000, 42);
    let long_binary = pattern(70_000);

    pair.client
        .conn
        .send(Message::text("hello server"))
        .unwrap();
    pair.server
        .conn
        .send(Message::text("hello client"))
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.take_events(), vec![text("hello server")]);
    assert_eq!(pair.client.take_events(), vec![text("hello client")]);

    // Pings are answered automatically, both ways.
    pair.client
        .conn
        .send_ping(Bytes::from_static(b"c-ping"))
        .unwrap();
    pair.server
        .conn
        .send_ping(Bytes::from_static(b"s-ping"))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![
            Event::Ping(Bytes::from_static(b"c-ping")),
            Event::Pong(Bytes::from_static(b"s-ping"))
        ]
    );
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::Ping(Bytes::from_static(b"s-ping")),
            Event::Pong(Bytes::from_static(b"c-ping"))
        ]
    );

    // Fragmented messages, with a ping queued between two of them and a 64-bit-length frame.
    // Nothing has been written when the ping is queued, so it leads (control frames wait for
    // the next frame boundary only, tests/control_lane.rs).
    pair.client
        .conn
        .send_fragmented(Message::text(long_text.as_str()), 333)
        .unwrap();
    pair.client
        .conn
        .send_ping(Bytes::from_static(b"between"))
        .unwrap();
    pair.client
        .conn
        .send(Message::binary(long_binary.clone()))
        .unwrap();
    pair.server
        .conn
        .send_fragmented(Message::binary(long_binary.clone()), 4096)
        .unwrap();
    pair.server.conn.send(Message::text("")).unwrap();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![
            Event::Ping(Bytes::from_static(b"between")),
            text(&long_text),
            binary(&long_binary),
        ]
    );
    assert_eq!(
        pair.client.take_events(),
        vec![
            binary(&long_binary),
            text(""),
            Event::Pong(Bytes::from_static(b"between")),
        ]
    );
    assert_eq!(pair.client.conn.state(), State::Open);
    assert_eq!(pair.server.conn.state(), State::Open);
}

fn assert_closed(end: &End, code: u16, reason: &str, initiator: Initiator, clean: bool) {
    assert_eq!(
        end.closed_info(),
        Some(&CloseInfo {
            code: CloseCode::from(code),
            reason: reason.into(),
            initiator,
            clean,
        }),
        "{:?} events {:?}",
        end.conn.role(),
        end.events
    );
    assert_eq!(
        end.events
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count(),
        1
    );
    assert_eq!(end.conn.state(), State::Closed);
}

#[test]
fn conversation_then_client_initiated_close() {
    for (up, down) in chunkings() {
        let mut pair = Pair::default(up.clone(), down.clone());
        converse(&mut pair);

        pair.client
            .conn
            .close(CloseCode::NORMAL, "client done", pair.now)
            .unwrap();
        pair.drive();
        assert_closed(&pair.server, 1000, "client done", Initiator::Remote, true);
        assert_closed(&pair.client, 1000, "", Initiator::Local, true);
        // The server closed first (§7.1.1); the client followed on EOF, before any timeout.
        assert!(pair.server.conn.should_close_transport());
        assert!(pair.client.conn.should_close_transport());
        assert!(pair.server.transport_closed && pair.client.transport_closed);
        assert!(pair.down.eof_delivered, "{up:?} {down:?}");
        assert_eq!(pair.client.conn.poll_timeout(), None);
        assert_eq!(pair.now, t0(), "no timer was needed");
    }
}

#[test]
fn conversation_then_server_initiated_close() {
    for (up, down) in chunkings() {
        let mut pair = Pair::default(up.clone(), down.clone());
        converse(&mut pair);

        pair.server
            .conn
            .close(CloseCode::GOING_AWAY, "server shutting down", pair.now)
            .unwrap();
        pair.drive();
        assert_closed(
            &pair.client,
            1001,
            "server shutting down",
            Initiator::Remote,
            true,
        );
        assert_closed(&pair.server, 1001, "", Initiator::Local, true);
        assert!(pair.server.conn.should_close_transport());
        assert!(pair.client.conn.should_close_transport());
        assert!(pair.down.eof_delivered, "{up:?} {down:?}");
        assert_eq!(pair.now, t0(), "no timer was needed");
    }
}

#[test]
fn simultaneous_close_is_clean_on_both_sides() {
    for (up, down) in chunkings() {
        let mut pair = Pair::default(up, down);
        converse(&mut pair);
        pair.client
            .conn
            .close(CloseCode::NORMAL, "c", pair.now)
            .unwrap();
        pair.server
            .conn
            .close(CloseCode::GOING_AWAY, "s", pair.now)
            .unwrap();
        pair.drive();
        // Each end sent its close first, so each initiated; each reports the other's code.
        assert_closed(&pair.client, 1001, "s", Initiator::Local, true);
        assert_closed(&pair.server, 1000, "c", Initiator::Local, true);
        assert!(pair.client.conn.should_close_transport());
        assert!(pair.server.conn.should_close_transport());
    }
}

#[test]
fn auto_fragmenting_ends_converse_with_small_limits() {
    // Config::fragment_size on both ends, with the receiver's fragment limit just enough.
    let fragmenting = |fragments| Config {
        fragment_size: Some(100),
        limits: Limits {
            max_fragments: fragments,
            ..Limits::default()
        },
        ..Config::default()
    };
    for (up, down) in chunkings() {
        let mut pair = Pair::connect(up, down, fragmenting(50), fragmenting(50));
        let payload = pattern(5000); // exactly 50 frames of 100
        pair.client
            .conn
            .send(Message::binary(payload.clone()))
            .unwrap();
        pair.server
            .conn
            .send(Message::text(mixed_text(4999, 9).as_str()))
            .unwrap();
        pair.drive();
        assert_eq!(pair.server.take_events(), vec![binary(&payload)]);
        assert_eq!(pair.client.take_events(), vec![text(&mixed_text(4999, 9))]);

        // One byte more is one fragment more: the server fails the connection with 1009, and
        // the client learns why from the close frame.
        pair.client
            .conn
            .send(Message::binary(pattern(5001)))
            .unwrap();
        pair.drive();
        assert_closed(
            &pair.server,
            1009,
            "too many fragments",
            Initiator::Local,
            false,
        );
        assert_closed(
            &pair.client,
            1009,
            "too many fragments",
            Initiator::Remote,
            true,
        );
        assert!(pair.client.conn.should_close_transport());
    }
}

#[test]
fn violation_after_a_message_fails_after_the_message_is_answered() {
    // The server gets a good message and a reserved opcode in one read: it delivers the
    // message, the application echoes it, and only then does the close frame follow.
    for (up, down) in chunkings() {
        let mut pair = Pair::default(up, down);
        let wire = cat(&[
            &frame(true, 0, TEXT, Some(MASK), b"echo me"),
            &frame(true, 0, 0x3, Some(MASK), b""),
        ]);
        pair.server.conn.receive_data(&wire, pair.now);
        pair.server
            .events
            .extend(std::iter::from_fn(|| pair.server.conn.poll_event()));
        assert_eq!(pair.server.take_events(), vec![text("echo me")]);
        assert!(pair.server.conn.is_stalled());
        pair.server.conn.send(Message::text("echo me")).unwrap();
        pair.drive();
        assert_eq!(pair.client.events[0], text("echo me"));
        assert_closed(
            &pair.client,
            1002,
            "reserved opcode",
            Initiator::Remote,
            true,
        );
        assert_closed(
            &pair.server,
            1002,
            "reserved opcode",
            Initiator::Local,
            false,
        );
        assert!(pair.client.conn.should_close_transport());
    }
}

#[test]
fn client_gives_up_waiting_for_the_server_to_close() {
    // A server that answers the close but never closes the TCP connection: the client closes
    // its end after the close timeout.
    let mut pair = Pair::default(Chunking::Whole, Chunking::Whole);
    pair.client
        .conn
        .close(CloseCode::NORMAL, "", pair.now)
        .unwrap();
    // Deliver the client's close and the server's echo by hand, without the server closing.
    let close = pair.client.conn.take_transmit();
    pair.server.conn.receive_data(&close, pair.now);
    let echo = pair.server.conn.take_transmit();
    pair.client.conn.receive_data(&echo, pair.now);
    pair.client
        .events
        .extend(std::iter::from_fn(|| pair.client.conn.poll_event()));
    assert_closed(&pair.client, 1000, "", Initiator::Local, true);
    assert!(!pair.client.conn.should_close_transport());
    let deadline = pair.advance_to_next_timeout().unwrap();
    assert_eq!(deadline, t0() + Limits::default().close_timeout);
    assert!(pair.client.conn.should_close_transport());
    // Still exactly one Closed event, and still clean.
    assert_closed(&pair.client, 1000, "", Initiator::Local, true);
}

#[test]
fn silent_peer_close_timeout_then_eof_for_the_other() {
    // The client closes; the server's end never reads (a dead peer). After the timeout the
    // client reports 1006 and closes its transport; the server then sees EOF (1006 too).
    let mut pair = Pair::default(Chunking::Fixed(3), Chunking::Fixed(3));
    pair.client
        .conn
        .close(CloseCode::NORMAL, "", pair.now)
        .unwrap();
    let _lost = pair.client.conn.take_transmit();
    assert_eq!(
        pair.advance_to_next_timeout(),
        Some(t0() + Limits::default().close_timeout)
    );
    assert_closed(&pair.client, 1006, "close timeout", Initiator::Local, false);
    pair.drive();
    assert_closed(&pair.server, 1006, "", Initiator::Remote, false);
    assert!(pair.server.conn.should_close_transport());
}

#[test]
fn keepalive_over_the_pair() {
    let keepalive = Config {
        keepalive: Some(ferry_proto::Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
        }),
        ..Config::default()
    };
    let mut pair = Pair::connect(
        Chunking::Fixed(2),
        Chunking::Fixed(5),
        keepalive.clone(),
        Config::default(),
    );
    // Three rounds: ping at 20 s, 40 s, 60 s, each answered.
    for round in 1..=3u64 {
        assert_eq!(
            pair.advance_to_next_timeout(),
            Some(t0() + Duration::from_secs(20 * round))
        );
        pair.drive();
        assert_eq!(
            pair.server.take_events(),
            vec![Event::Ping(Bytes::copy_from_slice(&round.to_be_bytes()))]
        );
        assert_eq!(
            pair.client.take_events(),
            vec![Event::Pong(Bytes::copy_from_slice(&round.to_be_bytes()))]
        );
    }
    assert_eq!(pair.client.conn.state(), State::Open);
}
