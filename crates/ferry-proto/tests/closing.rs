//! RFC 6455 §5.5.1 and §7: the close frame, the closing handshake, status codes, who closes
//! the transport and when, and what happens when the peer never answers or just goes away.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferry_proto::{CloseCode, Initiator, Limits, Message, Role, SendError, State};

const CLOSE_TIMEOUT_MS: u64 = 5000; // Limits::default().close_timeout

#[test]
fn default_close_timeout_is_what_these_tests_assume() {
    assert_eq!(
        Limits::default().close_timeout,
        Duration::from_millis(CLOSE_TIMEOUT_MS)
    );
}

// -------------------------------------------------------------------------------------------
// Receiving a close first (§5.5.1: "MUST send a Close frame in response")

#[test]
fn close_frame_is_echoed_with_same_code() {
    for role in ROLES {
        for code in [1000, 1001, 1003, 1008, 1011, 3000, 4999] {
            let mut c = conn(role);
            let events = feed(&mut c, &to_fin(role, CLOSE, &close_payload(code, b"why")));
            assert_eq!(events, vec![closed(code, "why", Initiator::Remote, true)]);
            // The echo carries the code and no reason.
            assert_eq!(sent(&mut c), close_sent_by(role, code, ""));
            assert_eq!(c.state(), State::Closed);
            assert!(c.error().is_none());
        }
    }
}

#[test]
fn empty_close_frame_is_echoed_empty_and_reported_as_1005() {
    // §7.1.5: no status code received: "_The WebSocket Connection Close Code_ is considered to
    // be 1005"; the echo has no body either.
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &to_fin(role, CLOSE, b"")),
            vec![closed(1005, "", Initiator::Remote, true)]
        );
        assert_eq!(sent(&mut c), sent_by(role, true, CLOSE, b""));
    }
}

#[test]
fn server_closes_transport_right_after_receiving_close() {
    // §7.1.1: "the server ... SHOULD close the underlying TCP connection" first.
    let mut server = conn(Role::Server);
    feed(
        &mut server,
        &to_fin(Role::Server, CLOSE, &close_payload(1000, b"")),
    );
    assert!(server.should_close_transport());
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn client_waits_for_eof_after_receiving_close() {
    // §7.1.1: the client waits for the server to close the TCP connection.
    let mut client = conn(Role::Client);
    feed(
        &mut client,
        &to_fin(Role::Client, CLOSE, &close_payload(1000, b"")),
    );
    assert_eq!(client.state(), State::Closed);
    assert!(!client.should_close_transport());
    client.receive_eof();
    assert!(client.should_close_transport());
    // No second Closed event: the connection was already closed, cleanly.
    assert_eq!(events(&mut client), vec![]);
}

#[test]
fn poll_timeout_is_none_after_eof_ends_close_wait() {
    // Regression: EOF ended the client's wait for the server to close, but the close-wait
    // deadline stayed armed, so `poll_timeout` kept asking for a timer with nothing left to
    // time out. Every other way the transport becomes done (server close handshake, failure,
    // the timeout itself) clears it.
    for initiator in [Initiator::Remote, Initiator::Local] {
        let mut client = conn(Role::Client);
        if initiator == Initiator::Local {
            client.close(CloseCode::NORMAL, "", t0()).unwrap();
        }
        feed(
            &mut client,
            &to_fin(Role::Client, CLOSE, &close_payload(1000, b"")),
        );
        assert_eq!(client.poll_timeout(), Some(at(CLOSE_TIMEOUT_MS)));
        client.receive_eof();
        assert!(client.should_close_transport());
        assert_eq!(client.poll_timeout(), None, "{initiator:?}");
    }
}

#[test]
fn client_waits_for_eof_at_most_the_close_timeout() {
    let mut client = conn(Role::Client);
    client.receive_data(
        &to_fin(Role::Client, CLOSE, &close_payload(1000, b"")),
        at(100),
    );
    events(&mut client);
    let deadline = at(100 + CLOSE_TIMEOUT_MS);
    assert_eq!(client.poll_timeout(), Some(deadline));
    client.handle_timeout(deadline - Duration::from_nanos(1));
    assert!(!client.should_close_transport());
    client.handle_timeout(deadline);
    assert!(client.should_close_transport());
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(events(&mut client), vec![]);
    // The echo is still there to be written; the timeout does not drop it.
    assert_eq!(sent(&mut client), close_sent_by(Role::Client, 1000, ""));
}

#[test]
fn data_after_close_received_is_discarded() {
    // §5.5.1: after the close frame, nothing more is processed.
    for role in ROLES {
        let wire = cat(&[
            &to_fin(role, TEXT, b"before"),
            &to_fin(role, CLOSE, &close_payload(1000, b"")),
            &to_fin(role, TEXT, b"after"),
            &to_fin(role, PING, b"after"),
        ]);
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &wire),
            vec![text("before"), closed(1000, "", Initiator::Remote, true)]
        );
        assert_eq!(sent(&mut c), close_sent_by(role, 1000, ""));
        // Even garbage later is ignored.
        assert_eq!(feed(&mut c, &[0xff; 10]), vec![]);
        assert!(c.transmit().is_empty());
    }
}

// -------------------------------------------------------------------------------------------
// Closing first

#[test]
fn close_sends_exact_frame_and_enters_closing() {
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::GOING_AWAY, "bye", t0()).unwrap();
        assert_eq!(sent(&mut c), close_sent_by(role, 1001, "bye"));
        assert_eq!(c.state(), State::Closing);
        assert!(!c.should_close_transport());
        assert_eq!(events(&mut c), vec![]);
    }
}

#[test]
fn server_close_then_echo_closes_transport_right_after() {
    let mut server = conn(Role::Server);
    server.close(CloseCode::NORMAL, "done", t0()).unwrap();
    sent(&mut server);
    let events = feed(
        &mut server,
        &to_fin(Role::Server, CLOSE, &close_payload(1000, b"ack")),
    );
    assert_eq!(events, vec![closed(1000, "ack", Initiator::Local, true)]);
    assert!(server.should_close_transport());
    assert!(server.transmit().is_empty(), "no second close frame");
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn client_close_then_echo_waits_for_eof() {
    let mut client = conn(Role::Client);
    client.close(CloseCode::NORMAL, "", t0()).unwrap();
    sent(&mut client);
    client.receive_data(
        &to_fin(Role::Client, CLOSE, &close_payload(1000, b"")),
        at(10),
    );
    assert_eq!(
        events(&mut client),
        vec![closed(1000, "", Initiator::Local, true)]
    );
    assert!(!client.should_close_transport());
    assert!(client.transmit().is_empty(), "no second close frame");
    assert_eq!(client.poll_timeout(), Some(at(10 + CLOSE_TIMEOUT_MS)));
    client.receive_eof();
    assert!(client.should_close_transport());
    assert_eq!(events(&mut client), vec![]);
}

#[test]
fn closed_reports_the_peers_code_when_it_differs() {
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "mine", t0()).unwrap();
        sent(&mut c);
        assert_eq!(
            feed(
                &mut c,
                &to_fin(role, CLOSE, &close_payload(1001, b"theirs"))
            ),
            vec![closed(1001, "theirs", Initiator::Local, true)]
        );
    }
}

#[test]
fn close_timeout_when_peer_never_answers() {
    // §7.1.1: the closing end does not wait forever: Closed { 1006, clean: false }.
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "", at(0)).unwrap();
        sent(&mut c);
        assert_eq!(c.poll_timeout(), Some(at(CLOSE_TIMEOUT_MS)));
        c.handle_timeout(at(CLOSE_TIMEOUT_MS - 1));
        assert_eq!(events(&mut c), vec![]);
        assert_eq!(c.state(), State::Closing);
        c.handle_timeout(at(CLOSE_TIMEOUT_MS));
        assert_eq!(
            events(&mut c),
            vec![closed(1006, "close timeout", Initiator::Local, false)]
        );
        assert!(c.should_close_transport());
        assert!(c.transmit().is_empty(), "1006 is never sent");
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn no_data_after_close_sent() {
    // §5.5.1: "after sending a Close frame, the endpoint MUST NOT send any more data frames";
    // ferry sends nothing more at all, not even pongs, while it still delivers what arrives.
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "", t0()).unwrap();
        let close_frame = sent(&mut c);
        assert_eq!(c.send(Message::text("late")), Err(SendError::Closed));
        assert_eq!(
            c.send_fragmented(Message::text("late"), 1),
            Err(SendError::Closed)
        );
        assert_eq!(c.send_ping(Bytes::new()), Err(SendError::Closed));
        assert_eq!(c.send_pong(Bytes::new()), Err(SendError::Closed));
        assert_eq!(c.close(CloseCode::NORMAL, "", t0()), Err(SendError::Closed));
        let wire = cat(&[&to_fin(role, TEXT, b"in flight"), &to_fin(role, PING, b"p")]);
        assert_eq!(
            feed(&mut c, &wire),
            vec![
                text("in flight"),
                ferry_proto::Event::Ping(Bytes::from_static(b"p"))
            ]
        );
        assert!(
            c.transmit().is_empty(),
            "{role:?} sent after its close frame"
        );
        assert_eq!(close_frame, close_sent_by(role, 1000, ""));
    }
}

#[test]
fn send_after_close_is_refused_in_every_closed_state() {
    for role in ROLES {
        // After receiving a close, after failing, after EOF, after the close timeout.
        let mut received = conn(role);
        feed(&mut received, &to_fin(role, CLOSE, b""));
        let mut failed = conn(role);
        feed(&mut failed, &to_fin(role, 0x3, b""));
        let mut eof = conn(role);
        eof.receive_eof();
        let mut timed_out = conn(role);
        timed_out.close(CloseCode::NORMAL, "", t0()).unwrap();
        timed_out.handle_timeout(at(CLOSE_TIMEOUT_MS));
        for mut c in [received, failed, eof, timed_out] {
            assert_eq!(c.state(), State::Closed);
            sent(&mut c);
            assert_eq!(c.send(Message::binary(vec![1])), Err(SendError::Closed));
            assert_eq!(c.send_ping(Bytes::new()), Err(SendError::Closed));
            assert_eq!(c.close(CloseCode::NORMAL, "", t0()), Err(SendError::Closed));
            assert!(c.transmit().is_empty());
        }
    }
}

#[test]
fn close_refuses_codes_that_may_not_be_sent() {
    // §7.4.1: 1005, 1006 and 1015 MUST NOT be set as a status code in a close frame; nor may
    // the undefined ranges.
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut c = conn(Role::Server);
        assert_eq!(
            c.close(CloseCode::from(code), "", t0()),
            Err(SendError::InvalidCloseCode(code))
        );
        assert_eq!(c.state(), State::Open);
        assert!(c.transmit().is_empty());
    }
}

#[test]
fn close_reason_is_cut_to_123_bytes_on_a_character_boundary() {
    // §5.5: the close payload (2 + reason) must stay within 125 bytes.
    for role in ROLES {
        let mut c = conn(role);
        let reason = "é".repeat(100); // 200 bytes
        c.close(CloseCode::NORMAL, &reason, t0()).unwrap();
        assert_eq!(sent(&mut c), close_sent_by(role, 1000, &"é".repeat(61))); // 122 bytes

        let mut c = conn(role);
        let reason = "a".repeat(200);
        c.close(CloseCode::NORMAL, &reason, t0()).unwrap();
        assert_eq!(sent(&mut c), close_sent_by(role, 1000, &"a".repeat(123)));
    }
}

// -------------------------------------------------------------------------------------------
// Validation of a received close frame

#[test]
fn close_code_validation() {
    // §7.4: codes below 1000, 1004-1006, 1015, 1016-2999 and 5000+ may not appear on the wire:
    // 1002. 1000-1003, 1007-1014 and 3000-4999 are fine and are echoed.
    let invalid = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 5001, 65535,
    ];
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for role in ROLES {
        for code in invalid {
            let wire = to_fin(role, CLOSE, &close_payload(code, b""));
            assert_rejects(role, &wire, 1002, "invalid close code");
        }
        for code in valid {
            let mut c = conn(role);
            assert_eq!(
                feed(&mut c, &to_fin(role, CLOSE, &close_payload(code, b"ok"))),
                vec![closed(code, "ok", Initiator::Remote, true)],
                "{code}"
            );
            assert_eq!(sent(&mut c), close_sent_by(role, code, ""), "{code}");
        }
    }
}

#[test]
fn one_byte_close_payload_1002() {
    // §5.5.1: a body, if present, starts with a two-byte code.
    for role in ROLES {
        assert_rejects(
            role,
            &to_fin(role, CLOSE, &[0x03]),
            1002,
            "close frame too short",
        );
    }
}

#[test]
fn close_reason_invalid_utf8_1007() {
    // §5.5.1: the reason "is not guaranteed to be human readable" but MUST be UTF-8; §8.1.
    for role in ROLES {
        for reason in [
            &b"\xff"[..],
            b"ok\xc0\xaf",
            b"\xed\xa0\x80",
            b"cut \xe2\x82",
        ] {
            let wire = to_fin(role, CLOSE, &close_payload(1000, reason));
            assert_rejects(role, &wire, 1007, "invalid UTF-8 in close reason");
        }
    }
}

#[test]
fn invalid_close_while_closing_sends_no_second_close() {
    // Failing after our own close frame: no new close frame, Closed with the error's code.
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "", t0()).unwrap();
        sent(&mut c);
        assert_eq!(
            feed(&mut c, &to_fin(role, CLOSE, &close_payload(1005, b""))),
            vec![closed(1002, "invalid close code", Initiator::Local, false)]
        );
        assert!(c.transmit().is_empty());
        assert!(c.should_close_transport());
    }
}

#[test]
fn protocol_error_while_closing_fails_without_second_close() {
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "", t0()).unwrap();
        sent(&mut c);
        assert_eq!(
            feed(&mut c, &to_fin(role, 0xb, b"")),
            vec![closed(1002, "reserved opcode", Initiator::Local, false)]
        );
        assert!(c.transmit().is_empty());
        assert!(c.should_close_transport());
    }
}

// -------------------------------------------------------------------------------------------
// The transport ends without a closing handshake (§7.1.5: 1006)

#[test]
fn eof_without_close_is_1006() {
    for role in ROLES {
        let mut c = conn(role);
        c.receive_eof();
        assert_eq!(
            events(&mut c),
            vec![closed(1006, "", Initiator::Remote, false)]
        );
        assert!(c.should_close_transport());
        assert!(c.transmit().is_empty(), "1006 is never sent");
        assert_eq!(c.state(), State::Closed);
    }
}

#[test]
fn eof_in_the_middle_of_a_frame_or_message_is_1006() {
    for role in ROLES {
        let wire = cat(&[
            &to(role, false, TEXT, b"part"),
            &to(role, true, CONT, b"rest"),
        ]);
        let mut c = conn(role);
        assert_eq!(feed(&mut c, &wire[..wire.len() - 2]), vec![]);
        c.receive_eof();
        assert_eq!(
            events(&mut c),
            vec![closed(1006, "", Initiator::Remote, false)]
        );
    }
}

#[test]
fn eof_after_close_sent_is_1006_initiated_locally() {
    for role in ROLES {
        let mut c = conn(role);
        c.close(CloseCode::NORMAL, "", t0()).unwrap();
        c.receive_eof();
        assert_eq!(
            events(&mut c),
            vec![closed(1006, "", Initiator::Local, false)]
        );
        assert!(c.should_close_transport());
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn closed_is_the_last_event() {
    for role in ROLES {
        let mut c = conn(role);
        feed(&mut c, &to_fin(role, CLOSE, b""));
        c.receive_eof();
        c.handle_timeout(at(1_000_000));
        feed(&mut c, &to_fin(role, TEXT, b"x"));
        assert_eq!(events(&mut c), vec![]);
    }
}

#[test]
fn failure_closes_transport_at_once_for_both_roles() {
    // §7.1.7: on failure, close without waiting for the peer's close.
    for role in ROLES {
        let mut c = conn(role);
        let mask = (role == Role::Server).then_some(PEER_MASK);
        c.receive_data(&header(true, 0, PING, mask, 126, LenForm::Minimal), t0());
        assert_failed(&mut c, 1002, "control frame too long");
        assert_eq!(c.poll_timeout(), None);
    }
}
