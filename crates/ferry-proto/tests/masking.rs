//! RFC 6455 §5.1 and §5.3: a client masks every frame it sends, a server masks none, and each
//! end fails the connection on a frame masked the wrong way.

mod common;

use bytes::Bytes;
use common::*;
use ferry_proto::{CloseCode, Config, Connection, Event, Message, Role};

#[test]
fn server_fails_on_unmasked_frame_with_1002() {
    // "The server MUST close the connection upon receiving a frame that is not masked ...
    // a server MAY send a Close frame with a status code of 1002."
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        let wire = frame(true, 0, opcode, None, b"");
        assert_rejects(Role::Server, &wire, 1002, "client frame not masked");
    }
    // Decided from the header: the payload of the unmasked frame never matters.
    let wire = frame(true, 0, TEXT, None, b"hello");
    assert_rejects(Role::Server, &wire[..2], 1002, "client frame not masked");
}

#[test]
fn server_fails_on_unmasked_continuation_with_1002() {
    let mut server = conn(Role::Server);
    assert_eq!(
        feed(&mut server, &to(Role::Server, false, TEXT, b"a")),
        vec![]
    );
    server.receive_data(&frame(true, 0, CONT, None, b"b"), t0());
    assert_failed(&mut server, 1002, "client frame not masked");
}

#[test]
fn client_fails_on_masked_frame_with_1002() {
    // "A client MUST close a connection if it detects a masked frame."
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        let wire = frame(true, 0, opcode, Some(PEER_MASK), b"");
        assert_rejects(Role::Client, &wire, 1002, "server frame masked");
    }
}

#[test]
fn client_masks_every_frame_it_sends() {
    let mut client = conn(Role::Client);
    client.send(Message::text("text")).unwrap();
    client.send(Message::binary(vec![0, 1, 2, 3, 4])).unwrap();
    client.send_ping(Bytes::from_static(b"ping")).unwrap();
    client.send_pong(Bytes::from_static(b"pong")).unwrap();
    client.close(CloseCode::NORMAL, "bye", t0()).unwrap();
    // Control frames lead (nothing was written yet); the close this end started follows the
    // data queued before it.
    let expected = cat(&[
        &frame(true, 0, PING, Some(MASK), b"ping"),
        &frame(true, 0, PONG, Some(MASK), b"pong"),
        &frame(true, 0, TEXT, Some(MASK), b"text"),
        &frame(true, 0, BINARY, Some(MASK), &[0, 1, 2, 3, 4]),
        &frame(true, 0, CLOSE, Some(MASK), &close_payload(1000, b"bye")),
    ]);
    assert_eq!(sent(&mut client), expected);
}

#[test]
fn client_masks_replies_it_owes() {
    // The pong to a ping and the echo of a close are masked too.
    let mut client = conn(Role::Client);
    let wire = cat(&[
        &to_fin(Role::Client, PING, b"are you there"),
        &to_fin(Role::Client, CLOSE, &close_payload(1001, b"")),
    ]);
    feed(&mut client, &wire);
    assert_eq!(
        sent(&mut client),
        cat(&[
            &frame(true, 0, PONG, Some(MASK), b"are you there"),
            &frame(true, 0, CLOSE, Some(MASK), &close_payload(1001, b"")),
        ])
    );
}

#[test]
fn client_masks_large_and_fragmented_payloads() {
    let mut client = conn(Role::Client);
    let payload = pattern(3000);
    client
        .send_fragmented(Message::binary(payload.clone()), 1024)
        .unwrap();
    assert_eq!(
        sent(&mut client),
        cat(&[
            &frame(false, 0, BINARY, Some(MASK), &payload[..1024]),
            &frame(false, 0, CONT, Some(MASK), &payload[1024..2048]),
            &frame(true, 0, CONT, Some(MASK), &payload[2048..]),
        ])
    );
}

/// A client masks a large payload a window at a time as the transport takes it (the
/// `Transmit` docs), not when it is queued. The bytes on the wire must be exactly those of
/// masking it whole, however the writes cut them: one chunk at a time or vectored, in steps
/// that fall inside, across and exactly on the 64 KiB windows, with a small message queued
/// behind it that must not overtake it.
#[test]
fn client_masks_a_large_payload_as_it_goes_out_exactly_as_whole() {
    use bytes::Buf;

    let payload = pattern((1 << 20) + 12_345);
    let expected = cat(&[
        &frame(true, 0, BINARY, Some(MASK), &payload),
        &frame(true, 0, TEXT, Some(MASK), b"after"),
    ]);
    for step in [1, 4093, 65_536, 65_537, 300_000, usize::MAX] {
        for vectored in [false, true] {
            let mut client = conn(Role::Client);
            client.send(Message::binary(payload.clone())).unwrap();
            client.send(Message::text("after")).unwrap();
            let mut wire = Vec::new();
            while client.transmit().has_remaining() {
                let taken = write_some(&mut client, step, vectored, &mut wire);
                assert!(
                    taken > 0,
                    "step {step}, vectored {vectored}: nothing offered"
                );
            }
            assert!(
                wire == expected,
                "step {step}, vectored {vectored}: the wire differs from masking whole"
            );
        }
    }
}

/// The same for a large message in short fragments: each fragment is masked as it goes out
/// (the message, not the frame, decides), byte-exact against masking each whole.
#[test]
fn client_masks_a_finely_fragmented_large_message_as_it_goes_out() {
    use bytes::Buf;

    let payload = pattern(300_000);
    let fragments: Vec<Vec<u8>> = payload
        .chunks(4096)
        .enumerate()
        .map(|(i, piece)| {
            let opcode = if i == 0 { BINARY } else { CONT };
            let fin = (i + 1) * 4096 >= payload.len();
            frame(fin, 0, opcode, Some(MASK), piece)
        })
        .collect();
    let expected: Vec<u8> = fragments.concat();
    for vectored in [false, true] {
        let mut client = conn(Role::Client);
        client
            .send_fragmented(Message::binary(payload.clone()), 4096)
            .unwrap();
        let mut wire = Vec::new();
        while client.transmit().has_remaining() {
            assert!(write_some(&mut client, 10_000, vectored, &mut wire) > 0);
        }
        assert!(wire == expected, "vectored {vectored}: the wire differs");
    }
}

#[test]
fn server_never_masks() {
    let mut server = conn(Role::Server);
    server.send(Message::text("text")).unwrap();
    server.send(Message::binary(pattern(2000))).unwrap();
    server.send_ping(Bytes::from_static(b"ping")).unwrap();
    server.send_pong(Bytes::from_static(b"pong")).unwrap();
    server.close(CloseCode::NORMAL, "", t0()).unwrap();
    let frames = parse_frames(&sent(&mut server)).unwrap();
    assert_eq!(frames.len(), 5);
    assert!(frames.iter().all(|f| f.mask.is_none()), "{frames:?}");
}

#[test]
fn client_picks_a_fresh_mask_for_each_frame() {
    // §5.3: "The masking key is a 32-bit value chosen at random by the client ... MUST pick a
    // fresh masking key from the set of allowed 32-bit values" for each frame. Without
    // `fixed_mask` the keys of eight frames are not all equal (odds 2^-224 if random).
    let mut client = Connection::new(Role::Client, Config::default(), t0());
    for i in 0..8u8 {
        client.send(Message::binary(vec![i; 8])).unwrap();
    }
    let frames = parse_frames(&sent(&mut client)).unwrap();
    let keys: Vec<[u8; 4]> = frames.iter().map(|f| f.mask.expect("masked")).collect();
    assert!(keys.iter().any(|k| *k != keys[0]), "{keys:02x?}");
    // And each payload unmasks to what was sent.
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.payload, vec![i as u8; 8]);
    }
}

#[test]
fn server_unmasks_at_every_key_offset_across_reads() {
    // A payload arriving in pieces is unmasked with the key rotated to each piece's offset.
    let payload = pattern(37);
    let wire = frame(true, 0, BINARY, Some([0xde, 0xad, 0xbe, 0xef]), &payload);
    for first in 1..wire.len() {
        for second in first..wire.len() {
            let mut server = conn(Role::Server);
            let mut got = feed(&mut server, &wire[..first]);
            got.extend(feed(&mut server, &wire[first..second]));
            got.extend(feed(&mut server, &wire[second..]));
            assert_eq!(got, vec![binary(&payload)], "cuts {first} {second}");
        }
    }
}

#[test]
fn all_zero_mask_is_still_a_mask() {
    let wire = frame(true, 0, TEXT, Some([0; 4]), b"plain");
    assert_eq!(wire[1], 0x85);
    assert_accepts(Role::Server, &wire, &[text("plain")], &[]);
}

#[test]
fn masked_control_frames_are_unmasked_before_use() {
    let wire = cat(&[
        &frame(true, 0, PING, Some(PEER_MASK), b"ping body"),
        &frame(
            true,
            0,
            CLOSE,
            Some(PEER_MASK),
            &close_payload(4000, b"app reason"),
        ),
    ]);
    let mut server = conn(Role::Server);
    assert_eq!(
        feed(&mut server, &wire),
        vec![
            Event::Ping(Bytes::from_static(b"ping body")),
            closed(4000, "app reason", ferry_proto::Initiator::Remote, true),
        ]
    );
    assert_eq!(
        sent(&mut server),
        cat(&[
            &frame(true, 0, PONG, None, b"ping body"),
            &frame(true, 0, CLOSE, None, &close_payload(4000, b"")),
        ])
    );
}
