//! RFC 6455 §8.1 and §5.6: text messages must be valid UTF-8, or the connection fails with
//! 1007, and it fails as soon as the invalid byte arrives (Autobahn 6.4.*), whether that is in
//! the middle of a frame, of a read, or across fragments.

mod common;

use bytes::Bytes;
use common::*;
use ferry_proto::{Event, Role, State};

const INVALID: [&[u8]; 7] = [
    b"\xff",             // never valid
    b"\xc0\xaf",         // overlong "/"
    b"\xe0\x80\xaf",     // overlong, 3 bytes
    b"\xed\xa0\x80",     // UTF-16 surrogate U+D800
    b"\xf4\x90\x80\x80", // above U+10FFFF
    b"\x80",             // lone continuation byte
    b"\xe2\x28\xa1",     // broken 3-byte sequence
];

#[test]
fn invalid_utf8_text_1007() {
    for role in ROLES {
        for bad in INVALID {
            let payload = cat(&[b"ok ", bad, b" tail"]);
            let mut c = conn(role);
            c.receive_data(&to_fin(role, TEXT, &payload), t0());
            assert_failed(&mut c, 1007, "invalid UTF-8 in text");
        }
    }
}

#[test]
fn invalid_utf8_in_binary_is_fine() {
    for role in ROLES {
        for bad in INVALID {
            assert_accepts(role, &to_fin(role, BINARY, bad), &[binary(bad)], &[]);
        }
    }
}

#[test]
fn truncated_character_at_end_of_message_1007() {
    for role in ROLES {
        for truncated in [&b"\xe2\x82"[..], b"\xf0\x9f\x98", b"a\xc3"] {
            // Unfragmented, and as the last fragment.
            let mut c = conn(role);
            c.receive_data(&to_fin(role, TEXT, truncated), t0());
            assert_failed(&mut c, 1007, "invalid UTF-8 in text");

            let mut c = conn(role);
            assert_eq!(feed(&mut c, &to(role, false, TEXT, b"start ")), vec![]);
            c.receive_data(&to(role, true, CONT, truncated), t0());
            assert_failed(&mut c, 1007, "invalid UTF-8 in text");
        }
    }
}

#[test]
fn character_split_across_fragments_is_valid() {
    for role in ROLES {
        let smiley = "😀".as_bytes(); // f0 9f 98 80
        for cut in 1..4 {
            let wire = cat(&[
                &to(role, false, TEXT, &smiley[..cut]),
                &to(role, true, CONT, &smiley[cut..]),
            ]);
            assert_accepts(role, &wire, &[text("😀")], &[]);
        }
        // One byte per fragment, with a ping in the middle of the character.
        let wire = cat(&[
            &to(role, false, TEXT, &smiley[..1]),
            &to(role, false, CONT, &smiley[1..2]),
            &to_fin(role, PING, b""),
            &to(role, false, CONT, &smiley[2..3]),
            &to(role, true, CONT, &smiley[3..]),
        ]);
        assert_accepts(
            role,
            &wire,
            &[Event::Ping(Bytes::new()), text("😀")],
            &sent_by(role, true, PONG, b""),
        );
    }
}

#[test]
fn invalid_utf8_across_fragment_boundary_1007() {
    // The first fragment ends in a valid prefix (f4); the byte that makes it invalid (90: above
    // U+10FFFF) is the first of the next fragment. The connection fails on that byte, without
    // waiting for the rest of the fragment.
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(feed(&mut c, &to(role, false, TEXT, b"abc\xf4")), vec![]);
        let next = to(role, true, CONT, b"\x90\x80\x80 and more text");
        let header_len = if role == Role::Server { 6 } else { 2 };
        for byte in &next[..header_len] {
            assert_eq!(feed(&mut c, &[*byte]), vec![]);
        }
        c.receive_data(&next[header_len..header_len + 1], t0());
        assert_failed(&mut c, 1007, "invalid UTF-8 in text");
    }
}

#[test]
fn invalid_utf8_fails_before_frame_completes() {
    // A long text frame arriving in chunks: the connection fails in the read that brings the
    // invalid byte, long before the frame's last byte.
    for role in ROLES {
        let mut payload = b"valid ascii text, ".repeat(50);
        let bad_at = payload.len();
        payload.extend_from_slice(b"\xed\xa0\x80"); // surrogate: invalid from its second byte
        payload.extend_from_slice(&b"x".repeat(1000));
        let wire = to_fin(role, TEXT, &payload);
        let header_len = wire.len() - payload.len();
        let fails_at = header_len + bad_at + 1; // index of a0

        for chunk in [1usize, 7, 64] {
            let mut c = conn(role);
            let mut fed = 0;
            while c.state() == State::Open {
                let end = (fed + chunk).min(wire.len());
                c.receive_data(&wire[fed..end], t0());
                fed = end;
            }
            assert!(
                fed > fails_at,
                "{role:?} chunk {chunk}: failed at {fed}, early"
            );
            assert!(
                fed <= fails_at + chunk,
                "{role:?} chunk {chunk}: failed at {fed}, late"
            );
            assert!(fed < wire.len());
            assert_failed(&mut c, 1007, "invalid UTF-8 in text");
        }
    }
}

#[test]
fn invalid_utf8_in_continuation_fails_mid_frame() {
    for role in ROLES {
        let mut c = conn(role);
        assert_eq!(
            feed(&mut c, &to(role, false, TEXT, "κόσμε".as_bytes())),
            vec![]
        );
        let next = to(role, true, CONT, b"still fine \xff but not this");
        let bad = next.len() - b"\xff but not this".len();
        for byte in &next[..bad] {
            assert_eq!(feed(&mut c, &[*byte]), vec![]);
        }
        c.receive_data(&next[bad..bad + 1], t0());
        assert_failed(&mut c, 1007, "invalid UTF-8 in text");
    }
}

#[test]
fn pong_sent_before_the_utf8_failure_stays_queued() {
    for role in ROLES {
        let wire = cat(&[
            &to(role, false, TEXT, b"a\xe2"),
            &to_fin(role, PING, b"p"),
            &to(role, true, CONT, b"\x28"), // e2 28: invalid
        ]);
        let mut c = conn(role);
        c.receive_data(&wire, t0());
        assert_eq!(c.poll_event(), Some(Event::Ping(Bytes::from_static(b"p"))));
        let pong = sent_by(role, true, PONG, b"p");
        let all = sent(&mut c);
        assert_eq!(all[..pong.len()], pong[..]);
        assert_eq!(
            all[pong.len()..],
            close_sent_by(role, 1007, "invalid UTF-8 in text")[..]
        );
        assert_eq!(
            events(&mut c),
            vec![closed(
                1007,
                "invalid UTF-8 in text",
                ferry_proto::Initiator::Local,
                false
            )]
        );
    }
}

#[test]
fn valid_multilingual_text_in_any_chunking() {
    let message = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 😀 ∮ E⋅da = Q";
    for role in ROLES {
        assert_accepts(
            role,
            &to_fin(role, TEXT, message.as_bytes()),
            &[text(message)],
            &[],
        );
    }
}
