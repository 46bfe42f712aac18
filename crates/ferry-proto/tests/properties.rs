//! Property tests.
//!
//! (a) Whatever messages one end sends (text or binary, 0 to ~70 000 bytes including the
//!     length-form boundaries, whole or in fragments of any size, with pings between them),
//!     the other end receives exactly those messages, in order, however the byte stream is cut
//!     into reads; the pings, queued before anything was written, arrive ahead of them, in
//!     order (the control lane). Both directions.
//! (b) Whatever bytes a connection of either role receives (pure noise, or frames with random
//!     fields, after a valid prefix of frames), in any chunking, it never panics, and it ends
//!     in a consistent state: if it closed, the `Closed` event is the last and only one, its
//!     code is 1002, 1007 or 1009 when this end failed the connection (1006 after EOF, the
//!     peer's code after a clean close), and what it transmitted is a well-formed stream for
//!     its role ending in the matching close frame.

mod common;

use common::*;
use ferry_proto::{Config, Connection, Event, Initiator, Limits, Message, Role, State};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

fn peer(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// Read sizes, used in turn and cycled: mostly tiny, sometimes large.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![4 => 1usize..=8, 2 => 1usize..=512, 1 => 1usize..=20_000],
        1..16,
    )
}

/// Feeds `wire` to `conn` cut into reads of `sizes` (cycled), as a driver does: after each
/// read, take the events and, if a failure is held behind messages, process again (`settle`,
/// which also checks that a hold only ever follows a delivered message).
fn feed_chunked(conn: &mut Connection, wire: &[u8], sizes: &[usize]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut pos = 0;
    for size in sizes.iter().cycle() {
        if pos >= wire.len() {
            break;
        }
        let end = (pos + size).min(wire.len());
        events.extend(feed(conn, &wire[pos..end]));
        pos = end;
    }
    events
}

// -------------------------------------------------------------------------------------------
// (a) Messages arrive whole and in order

#[derive(Clone, Debug)]
enum Item {
    /// A message of `len` bytes built from `seed`, sent with `send` (`frag: None`) or
    /// `send_fragmented`.
    Message {
        text: bool,
        len: usize,
        seed: u64,
        frag: Option<usize>,
    },
    Ping(Vec<u8>),
}

fn message_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..=130,
        3 => prop::sample::select(vec![0usize, 1, 124, 125, 126, 127, 65535, 65536, 65537]),
        1 => 0usize..=70_000,
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => (
            any::<bool>(),
            message_len(),
            any::<u64>(),
            prop::option::of(prop_oneof![1usize..=16, 1usize..=2000, 1usize..=70_000]),
        )
            .prop_map(|(text, len, seed, frag)| Item::Message { text, len, seed, frag }),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Ping),
    ]
}

fn build(text: bool, len: usize, seed: u64) -> Message {
    if text {
        Message::text(mixed_text(len, seed))
    } else {
        let mut rng = SplitMix(seed);
        Message::binary((0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>())
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn messages_arrive_whole_and_in_order_under_any_chunking(
        sender in role(),
        items in prop::collection::vec(item(), 0..8),
        auto_fragment in prop::option::of(64usize..=5000),
        sizes in chunk_sizes(),
    ) {
        let sender_config = Config { fragment_size: auto_fragment, ..config() };
        // The receiver allows any number of fragments: this property is about reassembly.
        let receiver_config = config_with_limits(Limits { max_fragments: usize::MAX, ..Limits::default() });
        let mut tx = conn_with(sender, sender_config);
        let mut rx = conn_with(peer(sender), receiver_config);

        // Everything is queued before any byte is written, so the pings (control frames go at
        // the next frame boundary) arrive first, in order, then the messages, in order.
        let mut expected = Vec::new();
        let mut pings = Vec::new();
        let mut pongs = Vec::new();
        for item in &items {
            match item {
                Item::Message { text, len, seed, frag } => {
                    let message = build(*text, *len, *seed);
                    match frag {
                        // At most ~4000 frames per message, to keep debug builds quick.
                        Some(frag) => tx.send_fragmented(message.clone(), (*frag).max(len / 4000)).unwrap(),
                        None => tx.send(message.clone()).unwrap(),
                    }
                    expected.push(Event::Message(message));
                }
                Item::Ping(payload) => {
                    tx.send_ping(payload.clone().into()).unwrap();
                    pings.push(Event::Ping(payload.clone().into()));
                    pongs.extend(sent_by(peer(sender), true, PONG, payload));
                }
            }
        }
        pings.append(&mut expected);
        let expected = pings;
        let wire = sent(&mut tx);
        let events = feed_chunked(&mut rx, &wire, &sizes);
        prop_assert_eq!(events.len(), expected.len());
        for (got, want) in events.iter().zip(&expected) {
            // Compare without printing 70 kB payloads on failure.
            prop_assert!(got == want, "got {:?}, want {:?}", got, want);
        }
        prop_assert_eq!(rx.state(), State::Open);
        prop_assert!(rx.error().is_none());
        // The receiver owes exactly one pong per ping, with the ping's payload, in order.
        prop_assert_eq!(sent(&mut rx), pongs);
    }
}

// -------------------------------------------------------------------------------------------
// (b) Arbitrary input never panics and fails cleanly

/// A frame with random fields: mostly plausible, so the input gets past the header checks and
/// reaches the deeper rules (sequence, UTF-8, close codes, limits).
#[derive(Clone, Debug)]
struct RawFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    /// Masked the way the receiver's role expects.
    mask_ok: bool,
    form: LenForm,
    payload: Vec<u8>,
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        prop::sample::select(vec![
            0u16, 999, 1000, 1001, 1002, 1004, 1005, 1006, 1007, 1011, 1015, 1016, 2999, 3000,
            4999, 5000, 65535,
        ]),
        any::<u16>(),
    ];
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        3 => "[a-zé€😀 ]{0,30}".prop_map(String::into_bytes),
        2 => (code, prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(code, reason)| close_payload(code, &reason)),
        1 => prop::collection::vec(any::<u8>(), 120..140),
    ]
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    (
        prop::bool::weighted(0.7),
        prop_oneof![12 => Just(0u8), 1 => 1u8..8],
        prop_oneof![
            12 => prop::sample::select(vec![CONT, TEXT, BINARY, CLOSE, PING, PONG]),
            1 => 0u8..16,
        ],
        prop::bool::weighted(0.95),
        prop_oneof![8 => Just(LenForm::Minimal), 1 => Just(LenForm::Bits16), 1 => Just(LenForm::Bits64)],
        payload(),
    )
        .prop_map(|(fin, rsv, opcode, mask_ok, form, payload)| RawFrame {
            fin,
            rsv,
            opcode,
            mask_ok,
            form,
            payload,
        })
}

fn encode_raw(receiver: Role, f: &RawFrame) -> Vec<u8> {
    let wants_mask = receiver == Role::Server;
    let mask = (wants_mask == f.mask_ok).then_some([0x0f, 0xf0, 0x55, 0xaa]);
    frame_with_form(f.fin, f.rsv, f.opcode, mask, &f.payload, f.form)
}

/// A valid frame sequence: whole and fragmented messages, pings and pongs; it may end in the
/// middle of a fragmented message.
fn valid_prefix(receiver: Role) -> impl Strategy<Value = Vec<u8>> {
    let piece = (any::<bool>(), "[a-z€]{0,20}", 0usize..4);
    let control = prop::option::of((any::<bool>(), prop::collection::vec(any::<u8>(), 0..10)));
    prop::collection::vec((piece, control), 0..5).prop_map(move |pieces| {
        let mut out = Vec::new();
        for ((is_text, payload, parts), control) in pieces {
            let opcode = if is_text { TEXT } else { BINARY };
            let payload = payload.into_bytes();
            match payload.len().checked_div(parts) {
                None => out.extend(to(receiver, true, opcode, &payload)),
                Some(per_part) => {
                    // Split into about `parts` frames; the last is left open when `parts == 3`,
                    // so the noise that follows lands inside a message.
                    let mut chunks: Vec<&[u8]> = payload.chunks(per_part + 1).collect();
                    if chunks.is_empty() {
                        chunks.push(&[]);
                    }
                    for (i, chunk) in chunks.iter().enumerate() {
                        let fin = i + 1 == chunks.len() && parts != 3;
                        out.extend(to(receiver, fin, if i == 0 { opcode } else { CONT }, chunk));
                    }
                    if parts == 3 {
                        return out;
                    }
                }
            }
            if let Some((is_ping, body)) = control {
                out.extend(to(receiver, true, if is_ping { PING } else { PONG }, &body));
            }
        }
        out
    })
}

fn noise(receiver: Role) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(raw_frame(), 0..8).prop_map(move |frames| {
            frames
                .iter()
                .flat_map(|f| encode_raw(receiver, f))
                .collect()
        }),
    ]
}

fn role_and_input() -> impl Strategy<Value = (Role, Vec<u8>)> {
    role().prop_flat_map(|role| {
        (Just(role), valid_prefix(role), noise(role))
            .prop_map(|(role, prefix, noise)| (role, [prefix, noise].concat()))
    })
}

/// Checks the invariants of a connection that received arbitrary input (and never had
/// `close` called on it).
fn check_outcome(conn: &mut Connection, events: &[Event], eof: bool) -> Result<(), TestCaseError> {
    let role = conn.role();
    prop_assert!(!conn.is_stalled());
    let closed_at: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Closed(_)))
        .map(|(i, _)| i)
        .collect();
    prop_assert!(closed_at.len() <= 1, "several Closed events: {:?}", events);
    if let Some(&i) = closed_at.first() {
        prop_assert_eq!(i, events.len() - 1, "Closed is not the last event");
    }

    // What this end sent is a well-formed stream for its role: masked iff client, RSV clear,
    // known opcodes, control frames final and short; pongs and at most one close, last.
    let wire = sent(conn);
    let frames = parse_frames(&wire).map_err(|e| TestCaseError::fail(format!("transmit: {e}")))?;
    for f in &frames {
        prop_assert_eq!(f.mask.is_some(), role == Role::Client);
        prop_assert_eq!(f.rsv, 0);
        prop_assert!(
            f.opcode == PONG || f.opcode == CLOSE,
            "sent opcode {}",
            f.opcode
        );
        prop_assert!(f.fin && f.payload.len() <= 125);
    }
    let closes = frames.iter().filter(|f| f.opcode == CLOSE).count();
    prop_assert!(closes <= 1);
    let close_sent = frames.last().filter(|f| f.opcode == CLOSE);
    prop_assert_eq!(closes == 1, close_sent.is_some(), "close frame not last");

    match events.last() {
        Some(Event::Closed(info)) => {
            prop_assert_eq!(conn.state(), State::Closed);
            let code = info.code.as_u16();
            if info.clean {
                // The input held a valid close frame: it was echoed with its code.
                prop_assert_eq!(info.initiator, Initiator::Remote);
                let echo = close_sent.expect("a clean close is echoed");
                let want = if code == 1005 {
                    vec![]
                } else {
                    code.to_be_bytes().to_vec()
                };
                prop_assert_eq!(&echo.payload, &want);
                prop_assert!(conn.error().is_none());
                prop_assert_eq!(conn.should_close_transport(), role == Role::Server || eof);
            } else if code == 1006 {
                prop_assert!(eof, "1006 without EOF");
                prop_assert!(close_sent.is_none());
                prop_assert!(conn.should_close_transport());
            } else {
                prop_assert!(FAILURE_CODES.contains(&code), "failed with {}", code);
                prop_assert_eq!(info.initiator, Initiator::Local);
                prop_assert_eq!(conn.error().map(|e| e.close_code().as_u16()), Some(code));
                let close = close_sent.expect("a failure sends a close frame");
                prop_assert_eq!(&close.payload[..2], &code.to_be_bytes()[..]);
                prop_assert_eq!(&close.payload[2..], info.reason.as_bytes());
                prop_assert!(conn.should_close_transport());
            }
        }
        _ => {
            prop_assert!(!eof, "EOF without Closed");
            prop_assert_eq!(conn.state(), State::Open);
            prop_assert!(close_sent.is_none());
            prop_assert!(!conn.should_close_transport());
        }
    }
    // Nothing more comes out, whatever else arrives.
    conn.receive_data(&[0x88, 0x80, 0, 0, 0, 0], t0());
    conn.receive_eof();
    let more: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
    if events.last().is_some_and(|e| matches!(e, Event::Closed(_))) {
        prop_assert!(more.is_empty(), "events after Closed: {:?}", more);
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_input_never_panics_and_fails_with_a_valid_close(
        (role, input) in role_and_input(),
        sizes in chunk_sizes(),
        eof in any::<bool>(),
        small_limits in any::<bool>(),
    ) {
        let limits = if small_limits {
            Limits { max_frame_size: 64, max_message_size: 100, max_fragments: 4, ..Limits::default() }
        } else {
            Limits::default()
        };
        let mut c = conn_with(role, config_with_limits(limits));
        let mut events = feed_chunked(&mut c, &input, &sizes);
        if eof {
            c.receive_eof();
            events.extend(std::iter::from_fn(|| c.poll_event()));
        }
        check_outcome(&mut c, &events, eof)?;
    }

    #[test]
    fn pure_noise_never_panics(
        role in role(),
        input in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in chunk_sizes(),
        eof in any::<bool>(),
    ) {
        let mut c = conn(role);
        let mut events = feed_chunked(&mut c, &input, &sizes);
        if eof {
            c.receive_eof();
            events.extend(std::iter::from_fn(|| c.poll_event()));
        }
        check_outcome(&mut c, &events, eof)?;
    }

    #[test]
    fn outcome_does_not_depend_on_chunking(
        (role, input) in role_and_input(),
        sizes in chunk_sizes(),
    ) {
        // The same bytes fed whole and fed in reads give the same events and the same reply,
        // for a driver that follows the contract (`feed` settles held failures).
        let mut whole = conn(role);
        let whole_events = feed(&mut whole, &input);
        let mut chunked = conn(role);
        let chunked_events = feed_chunked(&mut chunked, &input, &sizes);
        prop_assert_eq!(whole_events, chunked_events);
        prop_assert_eq!(sent(&mut whole), sent(&mut chunked));
        prop_assert_eq!(whole.state(), chunked.state());
    }
}
