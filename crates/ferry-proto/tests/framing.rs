//! RFC 6455 §5.2 (base framing) and §5.7 (the RFC's own examples): header bits, opcodes,
//! the three payload length forms, and what a receiver must refuse.

mod common;

use bytes::Bytes;
use common::*;
use ferry_proto::{Message, Role, State};

// -------------------------------------------------------------------------------------------
// §5.7: the examples, byte for byte, in both directions

#[test]
fn rfc_5_7_single_frame_unmasked_text() {
    let mut server = conn(Role::Server);
    server.send(Message::text("Hello")).unwrap();
    assert_eq!(
        sent(&mut server),
        [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );

    let mut client = conn(Role::Client);
    assert_eq!(
        feed(&mut client, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        vec![text("Hello")]
    );
}

#[test]
fn rfc_5_7_single_frame_masked_text() {
    let masked_hello = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut client = conn(Role::Client); // fixed mask 37 fa 21 3d
    client.send(Message::text("Hello")).unwrap();
    assert_eq!(sent(&mut client), masked_hello);

    let mut server = conn(Role::Server);
    assert_eq!(feed(&mut server, &masked_hello), vec![text("Hello")]);
}

#[test]
fn rfc_5_7_fragmented_unmasked_text() {
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut server = conn(Role::Server);
    server.send_fragmented(Message::text("Hello"), 3).unwrap();
    assert_eq!(sent(&mut server), wire);

    let mut client = conn(Role::Client);
    assert_eq!(feed(&mut client, &wire[..5]), vec![]);
    assert_eq!(feed(&mut client, &wire[5..]), vec![text("Hello")]);
}

#[test]
fn rfc_5_7_unmasked_ping_and_masked_pong() {
    // The client answers the server's unmasked ping "Hello" with the masked pong of the RFC.
    let mut client = conn(Role::Client);
    assert_eq!(
        feed(&mut client, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        vec![ferry_proto::Event::Ping(Bytes::from_static(b"Hello"))]
    );
    assert_eq!(
        sent(&mut client),
        [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn rfc_5_7_256_bytes_binary_in_one_unmasked_frame() {
    let payload = pattern(256);
    let mut server = conn(Role::Server);
    server.send(Message::binary(payload.clone())).unwrap();
    let wire = sent(&mut server);
    assert_eq!(wire[..4], [0x82, 0x7e, 0x01, 0x00]);
    assert_eq!(wire[4..], payload[..]);

    let mut client = conn(Role::Client);
    assert_eq!(feed(&mut client, &wire), vec![binary(&payload)]);
}

#[test]
fn rfc_5_7_64_kib_binary_in_one_unmasked_frame() {
    let payload = pattern(65536);
    let mut server = conn(Role::Server);
    server.send(Message::binary(payload.clone())).unwrap();
    let wire = sent(&mut server);
    assert_eq!(
        wire[..10],
        [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(wire[10..], payload[..]);

    let mut client = conn(Role::Client);
    assert_eq!(feed(&mut client, &wire), vec![binary(&payload)]);
}

// -------------------------------------------------------------------------------------------
// §5.2: payload length forms

#[test]
fn length_forms_are_minimal_at_every_boundary_both_roles() {
    // "The minimal number of bytes MUST be used to encode the length."
    for role in ROLES {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = pattern(len);
            let mut c = conn(role);
            c.send(Message::binary(payload.clone())).unwrap();
            assert_eq!(
                sent(&mut c),
                sent_by(role, true, BINARY, &payload),
                "{role:?} {len}"
            );
        }
    }
}

#[test]
fn every_length_form_is_received_at_every_boundary_both_roles() {
    for role in ROLES {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = pattern(len);
            assert_accepts_chunked(role, &to_fin(role, BINARY, &payload), &[binary(&payload)]);
        }
    }
}

/// Like `assert_accepts` but in 1000-byte reads, since one byte at a time is slow for 64 KiB.
fn assert_accepts_chunked(role: Role, input: &[u8], expected: &[ferry_proto::Event]) {
    let mut c = conn(role);
    assert_eq!(feed(&mut c, input), expected);
    let mut c = conn(role);
    let mut got = Vec::new();
    for chunk in input.chunks(1000) {
        got.extend(feed(&mut c, chunk));
    }
    assert_eq!(got, expected);
    assert_eq!(sent(&mut c), Vec::<u8>::new());
}

#[test]
fn sixty_four_bit_length_form_is_received() {
    for role in ROLES {
        let payload = pattern(65536 + 3);
        let mask = (role == Role::Server).then_some(PEER_MASK);
        let wire = frame_with_form(true, 0, BINARY, mask, &payload, LenForm::Bits64);
        assert_eq!(wire[1] & 0x7f, 127);
        assert_accepts_chunked(role, &wire, &[binary(&payload)]);
    }
}

#[test]
fn non_minimal_length_forms_are_tolerated() {
    // §5.2 puts the minimal-length rule on the sender; a receiver that decodes the value
    // correctly loses nothing by accepting the longer forms.
    for role in ROLES {
        let mask = (role == Role::Server).then_some(PEER_MASK);
        for form in [LenForm::Bits16, LenForm::Bits64] {
            let wire = frame_with_form(true, 0, TEXT, mask, b"short", form);
            assert_accepts(role, &wire, &[text("short")], &[]);
        }
    }
}

#[test]
fn sixty_four_bit_length_with_most_significant_bit_set_1002() {
    // §5.2: "the most significant bit MUST be 0".
    for role in ROLES {
        let mask = (role == Role::Server).then_some(PEER_MASK);
        let mut wire = header(true, 0, BINARY, mask, 1 << 63, LenForm::Bits64);
        wire.truncate(10); // the error is known before the masking key arrives
        assert_rejects(role, &wire, 1002, "invalid payload length");
    }
}

// -------------------------------------------------------------------------------------------
// §5.2: opcodes and reserved bits

#[test]
fn reserved_opcode_1002() {
    // "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    // Connection_." Decided from the first byte pair, before the payload.
    for role in ROLES {
        for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            for fin in [true, false] {
                let wire = to(role, fin, opcode, b"payload");
                assert_rejects(role, &wire[..2], 1002, "reserved opcode");
            }
        }
    }
}

#[test]
fn reserved_opcode_after_valid_message_1002() {
    for role in ROLES {
        let wire = cat(&[&to_fin(role, TEXT, b"ok"), &to_fin(role, 0x3, b"")]);
        let mut c = conn(role);
        c.receive_data(&wire, t0());
        // The message comes out first; the failure waits for the next call (deferred.rs).
        assert_eq!(c.poll_event(), Some(text("ok")));
        assert!(c.is_stalled());
        c.handle_received(t0());
        assert_failed(&mut c, 1002, "reserved opcode");
    }
}

#[test]
fn rsv_bits_without_extension_1002() {
    // "MUST be 0 unless an extension is negotiated that defines meanings for non-zero values.
    // If a nonzero value is received and none of the negotiated extensions defines the meaning
    // of such a nonzero value, the receiving endpoint MUST _Fail the WebSocket Connection_."
    for role in ROLES {
        let mask = (role == Role::Server).then_some(PEER_MASK);
        for rsv in 1..=7u8 {
            for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
                let wire = frame(true, rsv, opcode, mask, b"");
                assert_rejects(role, &wire, 1002, "reserved bits set");
            }
        }
    }
}

#[test]
fn rsv_bits_on_continuation_1002() {
    for role in ROLES {
        let mask = (role == Role::Server).then_some(PEER_MASK);
        let mut c = conn(role);
        assert_eq!(feed(&mut c, &to(role, false, TEXT, b"a")), vec![]);
        c.receive_data(&frame(true, 0b100, CONT, mask, b"b"), t0());
        assert_failed(&mut c, 1002, "reserved bits set");
    }
}

// -------------------------------------------------------------------------------------------
// Streams of frames

#[test]
fn empty_messages_are_delivered() {
    for role in ROLES {
        let wire = cat(&[&to_fin(role, TEXT, b""), &to_fin(role, BINARY, b"")]);
        assert_accepts(role, &wire, &[text(""), binary(b"")], &[]);
    }
}

#[test]
fn empty_messages_are_sent_as_one_empty_frame() {
    for role in ROLES {
        let mut c = conn(role);
        c.send(Message::text("")).unwrap();
        c.send(Message::binary(Vec::new())).unwrap();
        assert_eq!(
            sent(&mut c),
            cat(&[
                &sent_by(role, true, TEXT, b""),
                &sent_by(role, true, BINARY, b"")
            ])
        );
    }
}

#[test]
fn many_frames_in_one_read_arrive_in_order() {
    for role in ROLES {
        let wire = cat(&[
            &to_fin(role, TEXT, b"one"),
            &to_fin(role, BINARY, &[2; 200]),
            &to_fin(role, PONG, b"p"),
            &to_fin(role, TEXT, "drei €".as_bytes()),
        ]);
        assert_accepts(
            role,
            &wire,
            &[
                text("one"),
                binary(&[2; 200]),
                ferry_proto::Event::Pong(Bytes::from_static(b"p")),
                text("drei €"),
            ],
            &[],
        );
    }
}

#[test]
fn frame_split_across_reads_at_every_point() {
    for role in ROLES {
        let wire = cat(&[
            &to_fin(role, TEXT, "héllo wörld".as_bytes()),
            &to_fin(role, BINARY, &[7; 130]),
        ]);
        for cut in 1..wire.len() {
            let mut c = conn(role);
            let mut got = feed(&mut c, &wire[..cut]);
            got.extend(feed(&mut c, &wire[cut..]));
            assert_eq!(
                got,
                vec![text("héllo wörld"), binary(&[7; 130])],
                "{role:?} cut {cut}"
            );
            assert_eq!(c.state(), State::Open);
        }
    }
}

#[test]
fn bytes_wanted_reports_the_rest_of_the_frame() {
    let mut c = conn(Role::Client);
    assert_eq!(c.bytes_wanted(), None);
    let wire = to_fin(Role::Client, BINARY, &[1; 300]);
    c.receive_data(&wire[..4 + 100], t0());
    assert_eq!(c.bytes_wanted(), Some(200));
    c.receive_data(&wire[104..], t0());
    assert_eq!(c.bytes_wanted(), None);
    assert_eq!(events(&mut c), vec![binary(&[1; 300])]);
}

#[test]
fn recv_buf_and_handle_received_work_like_receive_data() {
    let mut c = conn(Role::Server);
    let wire = to_fin(Role::Server, TEXT, b"zero copy");
    c.recv_buf().extend_from_slice(&wire[..5]);
    c.handle_received(t0());
    assert_eq!(events(&mut c), vec![]);
    c.recv_buf().extend_from_slice(&wire[5..]);
    c.handle_received(t0());
    assert_eq!(events(&mut c), vec![text("zero copy")]);
}

#[test]
fn server_shares_large_payloads_but_sends_the_same_bytes() {
    // Large server payloads are queued by reference: the wire must not change.
    let mut c = conn(Role::Server);
    c.send(Message::text("a")).unwrap();
    c.send(Message::binary(pattern(5000))).unwrap();
    c.send(Message::text("b")).unwrap();
    assert_eq!(c.transmit().len(), 3 + 4 + 5000 + 3);
    assert_eq!(
        sent(&mut c),
        cat(&[
            &sent_by(Role::Server, true, TEXT, b"a"),
            &sent_by(Role::Server, true, BINARY, &pattern(5000)),
            &sent_by(Role::Server, true, TEXT, b"b"),
        ])
    );
    assert!(c.transmit().is_empty());
}
