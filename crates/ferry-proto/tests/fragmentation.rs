//! RFC 6455 §5.4: fragmentation. Receiving (reassembly and the sequence rules) and sending
//! (`send_fragmented` and `Config::fragment_size`).

mod common;

use common::*;
use ferry_proto::{Config, Message, Role, State};

// -------------------------------------------------------------------------------------------
// Receiving

#[test]
fn fragmented_message_is_reassembled() {
    for role in ROLES {
        for (opcode, expected) in [
            (TEXT, text("Hello, world")),
            (BINARY, binary(b"Hello, world")),
        ] {
            let wire = cat(&[
                &to(role, false, opcode, b"Hello"),
                &to(role, false, CONT, b", "),
                &to(role, true, CONT, b"world"),
            ]);
            assert_accepts(role, &wire, &[expected], &[]);
        }
    }
}

#[test]
fn empty_fragments_are_allowed() {
    // §5.4 allows empty fragments anywhere, including an empty first and last one.
    for role in ROLES {
        let wire = cat(&[
            &to(role, false, TEXT, b""),
            &to(role, false, CONT, b"a"),
            &to(role, false, CONT, b""),
            &to(role, true, CONT, b""),
        ]);
        assert_accepts(role, &wire, &[text("a")], &[]);
    }
}

#[test]
fn continuation_without_start_1002() {
    // §5.4: a continuation frame belongs to a message in progress. Decided from the header.
    for role in ROLES {
        for fin in [true, false] {
            assert_rejects(
                role,
                &to(role, fin, CONT, b""),
                1002,
                "unexpected continuation frame",
            );
        }
    }
}

#[test]
fn continuation_after_finished_message_1002() {
    for role in ROLES {
        let mut c = conn(role);
        let wire = cat(&[&to(role, false, TEXT, b"a"), &to(role, true, CONT, b"b")]);
        assert_eq!(feed(&mut c, &wire), vec![text("ab")]);
        c.receive_data(&to(role, true, CONT, b"c"), t0());
        assert_failed(&mut c, 1002, "unexpected continuation frame");
    }
}

#[test]
fn new_message_during_fragmented_1002() {
    // §5.4: "the fragments of one message MUST NOT be interleaved between the fragments of
    // another message"; a text or binary frame while one is in progress is an error.
    for role in ROLES {
        for first in [TEXT, BINARY] {
            for second in [TEXT, BINARY] {
                for fin in [true, false] {
                    let mut c = conn(role);
                    assert_eq!(feed(&mut c, &to(role, false, first, b"start")), vec![]);
                    let wire = to(role, fin, second, b"other");
                    // Decided from the header: the other frame's payload is never needed.
                    let head = if role == Role::Server { 6 } else { 2 };
                    for byte in &wire[..head - 1] {
                        assert_eq!(feed(&mut c, &[*byte]), vec![]);
                    }
                    c.receive_data(&wire[head - 1..head], t0());
                    assert_failed(&mut c, 1002, "expected continuation frame");
                }
            }
        }
    }
}

#[test]
fn messages_before_a_sequence_error_are_delivered() {
    for role in ROLES {
        let wire = cat(&[&to_fin(role, TEXT, b"fine"), &to(role, true, CONT, b"bad")]);
        let mut c = conn(role);
        c.receive_data(&wire, t0());
        assert_eq!(c.poll_event(), Some(text("fine")));
        assert!(c.is_stalled());
        c.handle_received(t0());
        assert_failed(&mut c, 1002, "unexpected continuation frame");
    }
}

#[test]
fn consecutive_fragmented_messages_do_not_mix() {
    for role in ROLES {
        let wire = cat(&[
            &to(role, false, BINARY, &[1]),
            &to(role, true, CONT, &[2]),
            &to(role, false, TEXT, b"x"),
            &to(role, true, CONT, b"y"),
            &to_fin(role, BINARY, &[3]),
        ]);
        assert_accepts(
            role,
            &wire,
            &[binary(&[1, 2]), text("xy"), binary(&[3])],
            &[],
        );
    }
}

// -------------------------------------------------------------------------------------------
// Sending

#[test]
fn send_fragmented_produces_opcode_then_continuations_fin_on_last() {
    for role in ROLES {
        let mut c = conn(role);
        c.send_fragmented(Message::binary(b"abcdefghij".to_vec()), 4)
            .unwrap();
        c.send_fragmented(Message::text("klmnop"), 3).unwrap();
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, false, BINARY, b"abcd"),
                &sent_by(role, false, CONT, b"efgh"),
                &sent_by(role, true, CONT, b"ij"),
                &sent_by(role, false, TEXT, b"klm"),
                &sent_by(role, true, CONT, b"nop"),
            ])
        );
    }
}

#[test]
fn send_fragmented_does_not_split_what_fits() {
    for role in ROLES {
        let mut c = conn(role);
        c.send_fragmented(Message::text("four"), 4).unwrap();
        c.send_fragmented(Message::text("four"), 100).unwrap();
        c.send_fragmented(Message::text(""), 1).unwrap();
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, TEXT, b"four"),
                &sent_by(role, true, TEXT, b"four"),
                &sent_by(role, true, TEXT, b""),
            ])
        );
    }
}

#[test]
fn send_fragmented_with_size_zero_uses_one_byte_frames() {
    let mut c = conn(Role::Server);
    c.send_fragmented(Message::binary(vec![7, 8, 9]), 0)
        .unwrap();
    assert_eq!(
        sent(&mut c),
        cat(&[
            &sent_by(Role::Server, false, BINARY, &[7]),
            &sent_by(Role::Server, false, CONT, &[8]),
            &sent_by(Role::Server, true, CONT, &[9]),
        ])
    );
}

#[test]
fn send_fragmented_may_split_a_character() {
    // Fragment boundaries are byte positions; UTF-8 is checked on the whole message (§5.6).
    let mut c = conn(Role::Client);
    c.send_fragmented(Message::text("€"), 1).unwrap();
    let wire = sent(&mut c);
    assert_eq!(
        wire,
        cat(&[
            &sent_by(Role::Client, false, TEXT, &[0xe2]),
            &sent_by(Role::Client, false, CONT, &[0x82]),
            &sent_by(Role::Client, true, CONT, &[0xac]),
        ])
    );
    let mut server = conn(Role::Server);
    assert_eq!(feed(&mut server, &wire), vec![text("€")]);
}

#[test]
fn auto_fragmentation_via_config_fragment_size() {
    for role in ROLES {
        let config = Config {
            fragment_size: Some(4),
            ..config()
        };
        let mut c = conn_with(role, config);
        c.send(Message::text("0123456789")).unwrap();
        c.send(Message::binary(b"wxyz".to_vec())).unwrap();
        c.send(Message::binary(Vec::new())).unwrap();
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, false, TEXT, b"0123"),
                &sent_by(role, false, CONT, b"4567"),
                &sent_by(role, true, CONT, b"89"),
                &sent_by(role, true, BINARY, b"wxyz"),
                &sent_by(role, true, BINARY, b""),
            ])
        );
    }
}

#[test]
fn auto_fragmented_messages_reach_the_peer_whole() {
    let config = Config {
        fragment_size: Some(1000),
        ..config()
    };
    let mut client = conn_with(Role::Client, config);
    let mut server = conn(Role::Server);
    let long = mixed_text(10_000, 7);
    client.send(Message::text(long.as_str())).unwrap();
    let wire = sent(&mut client);
    let frames = parse_frames(&wire).unwrap();
    assert_eq!(frames.len(), 10);
    assert!(frames.iter().all(|f| f.payload.len() == 1000));
    assert_eq!(feed(&mut server, &wire), vec![text(&long)]);
    assert_eq!(server.state(), State::Open);
}
