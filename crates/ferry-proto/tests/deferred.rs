//! The deferred failure: when a violation follows a message in the same read, the connection
//! delivers the message, holds the failure (`is_stalled`), and fails on the next call to
//! `handle_received` (or `receive_data`, or `receive_eof`), so the application can handle and
//! answer every message that arrived before the violation (Autobahn 3.2, 5.15: the echo of the
//! good message, then the close).

mod common;

use bytes::Bytes;
use common::*;
use ferry_proto::{CloseCode, Event, Initiator, Message, Role, SendError, State};

fn message_then_violation(role: Role) -> Vec<u8> {
    cat(&[&to_fin(role, TEXT, b"good"), &to_fin(role, 0x3, b"")])
}

#[test]
fn violation_after_message_in_same_read_is_held_until_the_next_call() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_violation(role), t0());
        assert_eq!(events(&mut c), vec![text("good")]);
        assert!(c.is_stalled());
        assert_eq!(c.state(), State::Open);
        assert!(c.transmit().is_empty());
        assert!(!c.should_close_transport());

        // The application answers the message; then the driver processes again.
        c.send(Message::text("good")).unwrap();
        c.handle_received(t0());
        assert!(!c.is_stalled());
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, TEXT, b"good"),
                &close_sent_by(role, 1002, "reserved opcode"),
            ])
        );
        assert_eq!(
            events(&mut c),
            vec![closed(1002, "reserved opcode", Initiator::Local, false)]
        );
        assert!(c.should_close_transport());
    }
}

#[test]
fn empty_read_fails_a_stalled_connection() {
    let mut c = conn(Role::Server);
    c.receive_data(&message_then_violation(Role::Server), t0());
    events(&mut c);
    c.receive_data(&[], t0());
    assert_failed(&mut c, 1002, "reserved opcode");
}

#[test]
fn more_data_while_stalled_fails_first_and_is_discarded() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_violation(role), t0());
        assert_eq!(events(&mut c), vec![text("good")]);
        c.receive_data(&to_fin(role, TEXT, b"never delivered"), t0());
        assert_failed(&mut c, 1002, "reserved opcode");
    }
}

#[test]
fn eof_while_stalled_reports_the_violation_not_1006() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_violation(role), t0());
        assert_eq!(events(&mut c), vec![text("good")]);
        c.receive_eof();
        assert_failed(&mut c, 1002, "reserved opcode");
    }
}

#[test]
fn close_while_stalled_then_failure_sends_one_close_frame() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_violation(role), t0());
        events(&mut c);
        c.close(CloseCode::NORMAL, "app", t0()).unwrap();
        c.handle_received(t0());
        assert_eq!(sent(&mut c), close_sent_by(role, 1000, "app"));
        assert_eq!(
            events(&mut c),
            vec![closed(1002, "reserved opcode", Initiator::Local, false)]
        );
        assert_eq!(c.send(Message::text("x")), Err(SendError::Closed));
    }
}

#[test]
fn no_hold_without_a_message_before_the_violation() {
    // Control frames and unfinished fragments are not messages: fail at once.
    for role in ROLES {
        for prefix in [
            to_fin(role, PING, b"p"),
            to_fin(role, PONG, b"p"),
            to(role, false, BINARY, b"part"),
        ] {
            let mut c = conn(role);
            c.receive_data(&cat(&[&prefix, &to_fin(role, 0x3, b"")]), t0());
            assert!(!c.is_stalled());
            assert_eq!(c.state(), State::Closed);
        }
    }
}

#[test]
fn held_violation_keeps_the_pongs_owed_before_it() {
    for role in ROLES {
        let wire = cat(&[
            &to_fin(role, TEXT, b"m"),
            &to_fin(role, PING, b"p"),
            &to(role, true, CONT, b"bad"),
        ]);
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &wire),
            vec![
                text("m"),
                Event::Ping(Bytes::from_static(b"p")),
                closed(
                    1002,
                    "unexpected continuation frame",
                    Initiator::Local,
                    false
                ),
            ]
        );
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, PONG, b"p"),
                &close_sent_by(role, 1002, "unexpected continuation frame"),
            ])
        );
    }
}

#[test]
fn invalid_utf8_after_message_is_held_too() {
    for role in ROLES {
        let wire = cat(&[&to_fin(role, BINARY, b"ok"), &to_fin(role, TEXT, b"\xff")]);
        let mut c = conn(role);
        c.receive_data(&wire, t0());
        assert_eq!(events(&mut c), vec![binary(b"ok")]);
        assert!(c.is_stalled());
        c.handle_received(t0());
        assert_failed(&mut c, 1007, "invalid UTF-8 in text");
    }
}

fn message_then_close(role: Role) -> Vec<u8> {
    cat(&[
        &to_fin(role, TEXT, b"good"),
        &to_fin(role, CLOSE, &close_payload(1000, b"bye")),
    ])
}

/// A peer that sends a message and its close together (`echo hi | ferry connect`) gets the
/// reply to the message before the answer to its close: the close waits, as a violation does,
/// until the application has seen the message. Before, the close was handled in the same
/// read, and the reply was refused as sent after the close.
#[test]
fn close_after_message_in_same_read_waits_for_the_reply() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_close(role), t0());
        assert_eq!(events(&mut c), vec![text("good")]);
        assert!(c.is_stalled());
        assert_eq!(c.state(), State::Open);
        c.send(Message::text("good"))
            .expect("the reply is taken: the close has not been handled yet");
        c.handle_received(t0());
        assert!(!c.is_stalled());
        assert_eq!(
            events(&mut c),
            vec![closed(1000, "bye", Initiator::Remote, true)]
        );
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, TEXT, b"good"),
                &close_sent_by(role, 1000, ""),
            ]),
            "{role:?}: the reply, then the answer to the close"
        );
    }
}

/// The transport ending while the close waits still reports the peer's close, not 1006.
#[test]
fn a_held_close_is_reported_when_the_transport_ends() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(&message_then_close(role), t0());
        assert_eq!(events(&mut c), vec![text("good")]);
        c.receive_eof();
        let closed_events = events(&mut c);
        assert!(
            matches!(closed_events.as_slice(), [Event::Closed(info)] if info.code == CloseCode::NORMAL && info.initiator == Initiator::Remote),
            "{role:?}: {closed_events:?}"
        );
    }
}
