//! Keepalive: a ping every `interval`, and failure with 1011 when no pong arrives within
//! `timeout` of one. Time is passed in explicitly, so nothing here sleeps.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferry_proto::{CloseCode, Config, Connection, Event, Initiator, Keepalive, Role, State};

const INTERVAL_MS: u64 = 20_000;
const TIMEOUT_MS: u64 = 10_000;

fn with_keepalive(role: Role) -> Connection {
    let config = Config {
        keepalive: Some(Keepalive {
            interval: Duration::from_millis(INTERVAL_MS),
            timeout: Duration::from_millis(TIMEOUT_MS),
        }),
        ..config()
    };
    conn_with(role, config)
}

/// The payload of the n-th keepalive ping: a 64-bit big-endian counter from 1.
fn nth(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

#[test]
fn no_timer_without_keepalive() {
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(at(1_000_000));
        assert!(c.transmit().is_empty());
        assert_eq!(events(&mut c), vec![]);
    }
}

#[test]
fn keepalive_ping_sent_at_interval() {
    for role in ROLES {
        let mut c = with_keepalive(role);
        assert_eq!(c.poll_timeout(), Some(at(INTERVAL_MS)));
        c.handle_timeout(at(INTERVAL_MS - 1));
        assert!(c.transmit().is_empty(), "pinged early");
        c.handle_timeout(at(INTERVAL_MS));
        assert_eq!(sent(&mut c), sent_by(role, true, PING, &nth(1)));
        // Next: the pong deadline, before the next ping.
        assert_eq!(c.poll_timeout(), Some(at(INTERVAL_MS + TIMEOUT_MS)));
        assert_eq!(events(&mut c), vec![]);
    }
}

#[test]
fn pong_clears_the_deadline_and_pings_continue() {
    for role in ROLES {
        let mut c = with_keepalive(role);
        c.handle_timeout(at(INTERVAL_MS));
        sent(&mut c);
        c.receive_data(&to_fin(role, PONG, &nth(1)), at(INTERVAL_MS + 5));
        assert_eq!(
            events(&mut c),
            vec![Event::Pong(Bytes::copy_from_slice(&nth(1)))]
        );
        assert_eq!(c.poll_timeout(), Some(at(2 * INTERVAL_MS)));
        // Past the old pong deadline: nothing happens.
        c.handle_timeout(at(INTERVAL_MS + TIMEOUT_MS));
        assert!(c.transmit().is_empty());
        assert_eq!(c.state(), State::Open);
        c.handle_timeout(at(2 * INTERVAL_MS));
        assert_eq!(sent(&mut c), sent_by(role, true, PING, &nth(2)));
    }
}

#[test]
fn any_pong_counts_as_an_answer() {
    // §5.5.3: an unsolicited pong, or one with another payload, still shows the peer alive.
    let mut c = with_keepalive(Role::Server);
    c.handle_timeout(at(INTERVAL_MS));
    sent(&mut c);
    feed(&mut c, &to_fin(Role::Server, PONG, b"other"));
    c.handle_timeout(at(INTERVAL_MS + TIMEOUT_MS));
    assert_eq!(c.state(), State::Open);
}

#[test]
fn keepalive_pong_timeout_1011() {
    for role in ROLES {
        let mut c = with_keepalive(role);
        c.handle_timeout(at(INTERVAL_MS));
        sent(&mut c);
        c.handle_timeout(at(INTERVAL_MS + TIMEOUT_MS - 1));
        assert_eq!(c.state(), State::Open);
        c.handle_timeout(at(INTERVAL_MS + TIMEOUT_MS));
        assert_eq!(
            sent(&mut c),
            close_sent_by(role, 1011, "keepalive ping timeout")
        );
        assert_eq!(
            events(&mut c),
            vec![closed(
                1011,
                "keepalive ping timeout",
                Initiator::Local,
                false
            )]
        );
        assert!(c.should_close_transport());
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn late_timer_call_fails_on_the_overdue_pong_not_a_new_ping() {
    let mut c = with_keepalive(Role::Client);
    c.handle_timeout(at(INTERVAL_MS));
    sent(&mut c);
    // Called long after both the pong deadline and the next ping time.
    c.handle_timeout(at(10 * INTERVAL_MS));
    assert_eq!(
        sent(&mut c),
        close_sent_by(Role::Client, 1011, "keepalive ping timeout")
    );
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn keepalive_stops_once_closing() {
    for role in ROLES {
        let mut c = with_keepalive(role);
        c.close(CloseCode::NORMAL, "", at(1)).unwrap();
        sent(&mut c);
        // Only the close timeout remains.
        assert_eq!(c.poll_timeout(), Some(at(1 + 5000)));
        c.handle_timeout(at(INTERVAL_MS + TIMEOUT_MS));
        assert!(c.transmit().is_empty(), "pinged while closing");
        assert_eq!(
            events(&mut c),
            vec![closed(1006, "close timeout", Initiator::Local, false)]
        );
    }
}

#[test]
fn keepalive_stops_once_closed() {
    for role in ROLES {
        let mut c = with_keepalive(role);
        c.receive_eof();
        events(&mut c);
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(at(100 * INTERVAL_MS));
        assert!(c.transmit().is_empty());
    }
}
