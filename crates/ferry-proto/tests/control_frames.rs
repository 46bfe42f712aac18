//! RFC 6455 §5.5: control frames. At most 125 bytes, never fragmented, may arrive between the
//! fragments of a message; a ping is answered with a pong carrying the same payload.

mod common;

use bytes::Bytes;
use common::*;
use ferry_proto::{Event, Message, Role, SendError, State};

fn ping(payload: &[u8]) -> Event {
    Event::Ping(Bytes::copy_from_slice(payload))
}

fn pong(payload: &[u8]) -> Event {
    Event::Pong(Bytes::copy_from_slice(payload))
}

#[test]
fn ping_answered_with_pong_same_payload() {
    // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response
    // ... the Pong frame ... MUST have identical 'Application data' as found in the message
    // body of the Ping frame being replied to."
    for role in ROLES {
        for payload in [&b""[..], b"x", b"\x00\xff binary \xfe", &[0xab; 125]] {
            assert_accepts(
                role,
                &to_fin(role, PING, payload),
                &[ping(payload)],
                &sent_by(role, true, PONG, payload),
            );
        }
    }
}

#[test]
fn every_ping_gets_its_own_pong_in_order() {
    for role in ROLES {
        let wire = cat(&[
            &to_fin(role, PING, b"1"),
            &to_fin(role, TEXT, b"between"),
            &to_fin(role, PING, b"2"),
        ]);
        assert_accepts(
            role,
            &wire,
            &[ping(b"1"), text("between"), ping(b"2")],
            &cat(&[
                &sent_by(role, true, PONG, b"1"),
                &sent_by(role, true, PONG, b"2"),
            ]),
        );
    }
}

#[test]
fn pong_is_reported_and_not_answered() {
    // §5.5.3: an unsolicited pong is allowed and needs no response.
    for role in ROLES {
        assert_accepts(
            role,
            &to_fin(role, PONG, b"heartbeat"),
            &[pong(b"heartbeat")],
            &[],
        );
    }
}

#[test]
fn control_frame_of_125_bytes_is_accepted() {
    for role in ROLES {
        let payload = [b'p'; 125];
        assert_accepts(role, &to_fin(role, PONG, &payload), &[pong(&payload)], &[]);
        let close = close_payload(1000, &[b'r'; 123]);
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &to_fin(role, CLOSE, &close)),
            vec![closed(
                1000,
                &"r".repeat(123),
                ferry_proto::Initiator::Remote,
                true
            )]
        );
    }
}

#[test]
fn control_frame_over_125_bytes_1002() {
    // §5.5: "All control frames MUST have a payload length of 125 bytes or less." Decided from
    // the header, before the payload arrives.
    for role in ROLES {
        let mask = (role == Role::Server).then_some(PEER_MASK);
        for opcode in [PING, PONG, CLOSE] {
            for (len, form) in [
                (126, LenForm::Minimal),
                (65535, LenForm::Bits16),
                (1 << 40, LenForm::Bits64),
            ] {
                let wire = header(true, 0, opcode, mask, len, form);
                assert_rejects(role, &wire, 1002, "control frame too long");
            }
            // Even a short payload in a longer length form is still 125 or less, so accepted.
            let wire = frame_with_form(true, 0, opcode, mask, b"", LenForm::Bits16);
            let mut c = conn(role);
            c.receive_data(&wire, t0());
            assert!(c.error().is_none(), "{role:?} {opcode}: {:?}", c.error());
        }
    }
}

#[test]
fn fragmented_control_frame_1002() {
    // §5.5: "Control frames ... MUST NOT be fragmented."
    for role in ROLES {
        for opcode in [PING, PONG, CLOSE] {
            let wire = to(role, false, opcode, b"");
            assert_rejects(role, &wire, 1002, "fragmented control frame");
        }
        // Also when it arrives in the middle of a fragmented message.
        let mut c = conn(role);
        assert_eq!(feed(&mut c, &to(role, false, TEXT, b"part")), vec![]);
        c.receive_data(&to(role, false, PING, b""), t0());
        assert_failed(&mut c, 1002, "fragmented control frame");
    }
}

#[test]
fn control_frame_interleaved_in_fragmented_message() {
    // §5.4: "Control frames MAY be injected in the middle of a fragmented message"; the pong
    // goes out at once, before the message is complete.
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(feed(&mut c, &to(role, false, TEXT, b"Hel")), vec![]);
        assert_eq!(
            feed(&mut c, &to(role, true, PING, b"mid")),
            vec![ping(b"mid")]
        );
        assert_eq!(sent(&mut c), sent_by(role, true, PONG, b"mid"));
        assert_eq!(
            feed(&mut c, &to(role, true, PONG, b"unsolicited")),
            vec![pong(b"unsolicited")]
        );
        assert_eq!(
            feed(&mut c, &to(role, true, CONT, b"lo")),
            vec![text("Hello")]
        );
        assert_eq!(sent(&mut c), Vec::<u8>::new());
        assert_eq!(c.state(), State::Open);
    }
}

#[test]
fn close_interleaved_in_fragmented_message_closes() {
    // A close in the middle of a message ends the connection; the partial message is dropped.
    for role in ROLES {
        let wire = cat(&[
            &to(role, false, BINARY, b"partial"),
            &to_fin(role, CLOSE, &close_payload(1001, b"leaving")),
            &to(role, true, CONT, b"never"),
        ]);
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &wire),
            vec![closed(
                1001,
                "leaving",
                ferry_proto::Initiator::Remote,
                true
            )]
        );
        assert_eq!(sent(&mut c), close_sent_by(role, 1001, ""));
    }
}

#[test]
fn send_ping_and_pong_over_125_bytes_refused() {
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(
            c.send_ping(Bytes::from(vec![0; 126])),
            Err(SendError::ControlPayloadTooLong(126))
        );
        assert_eq!(
            c.send_pong(Bytes::from(vec![0; 200])),
            Err(SendError::ControlPayloadTooLong(200))
        );
        assert!(c.transmit().is_empty());
        assert_eq!(c.state(), State::Open);
        c.send_ping(Bytes::from(vec![1; 125])).unwrap();
        assert_eq!(sent(&mut c), sent_by(role, true, PING, &[1; 125]));
    }
}

#[test]
fn ping_goes_ahead_of_messages_not_yet_written() {
    // Control frames wait behind at most the frame being written (tests/control_lane.rs): here
    // nothing has been written yet, so the ping leads.
    for role in ROLES {
        let mut c = conn(role);
        c.send(Message::text("a")).unwrap();
        c.send_ping(Bytes::from_static(b"p")).unwrap();
        c.send(Message::text("b")).unwrap();
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, PING, b"p"),
                &sent_by(role, true, TEXT, b"a"),
                &sent_by(role, true, TEXT, b"b"),
            ])
        );
    }
}
