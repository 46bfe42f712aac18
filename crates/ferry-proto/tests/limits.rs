//! Resource limits (RFC 6455 §10.4, §7.4.1 code 1009): frame size, message size and fragment
//! count, each decided as early as possible so a peer cannot make a connection buffer more.

mod common;

use common::*;
use ferry_proto::{Limits, Role, State};

fn limited(role: Role, limits: Limits) -> ferry_proto::Connection {
    conn_with(role, config_with_limits(limits))
}

fn mask_for(role: Role) -> Option<[u8; 4]> {
    (role == Role::Server).then_some(PEER_MASK)
}

#[test]
fn frame_over_max_frame_size_1009() {
    // Decided from the header alone: not one payload byte is needed, or buffered.
    for role in ROLES {
        let limits = Limits {
            max_frame_size: 1000,
            ..Limits::default()
        };
        for (len, form) in [
            (1001, LenForm::Minimal),
            (65536, LenForm::Minimal),
            (1 << 62, LenForm::Bits64),
        ] {
            for opcode in [TEXT, BINARY] {
                let wire = header(true, 0, opcode, mask_for(role), len, form);
                let mut c = limited(role, limits.clone());
                // Byte by byte: nothing until the header is complete, then 1009.
                for byte in &wire[..wire.len() - 1] {
                    assert_eq!(feed(&mut c, &[*byte]), vec![]);
                }
                c.receive_data(&wire[wire.len() - 1..], t0());
                assert_failed(&mut c, 1009, "frame too large");
            }
        }
    }
}

#[test]
fn frame_of_exactly_max_frame_size_is_accepted() {
    for role in ROLES {
        let limits = Limits {
            max_frame_size: 1000,
            ..Limits::default()
        };
        let mut c = limited(role, limits);
        let payload = pattern(1000);
        assert_eq!(
            feed(&mut c, &to_fin(role, BINARY, &payload)),
            vec![binary(&payload)]
        );
    }
}

#[test]
fn continuation_over_max_frame_size_1009() {
    for role in ROLES {
        let limits = Limits {
            max_frame_size: 100,
            ..Limits::default()
        };
        let mut c = limited(role, limits);
        assert_eq!(feed(&mut c, &to(role, false, BINARY, &[1; 100])), vec![]);
        c.receive_data(
            &header(true, 0, CONT, mask_for(role), 101, LenForm::Minimal),
            t0(),
        );
        assert_failed(&mut c, 1009, "frame too large");
    }
}

#[test]
fn message_over_max_message_size_1009() {
    for role in ROLES {
        let limits = Limits {
            max_message_size: 1000,
            ..Limits::default()
        };
        // Unfragmented: one frame over the message limit (under the frame limit).
        let mut c = limited(role, limits.clone());
        c.receive_data(
            &header(true, 0, TEXT, mask_for(role), 1001, LenForm::Minimal),
            t0(),
        );
        assert_failed(&mut c, 1009, "message too large");

        // Fragmented: the fragment that would take the total over fails at its header.
        let mut c = limited(role, limits.clone());
        let first = to(role, false, BINARY, &[0; 600]);
        let second = to(role, false, CONT, &[0; 400]); // total 1000: fine
        assert_eq!(feed(&mut c, &cat(&[&first, &second])), vec![]);
        let third = header(true, 0, CONT, mask_for(role), 1, LenForm::Minimal);
        for byte in &third[..third.len() - 1] {
            assert_eq!(feed(&mut c, &[*byte]), vec![]);
        }
        c.receive_data(&third[third.len() - 1..], t0());
        assert_failed(&mut c, 1009, "message too large");
    }
}

#[test]
fn message_of_exactly_max_message_size_is_accepted_and_the_count_resets() {
    for role in ROLES {
        let limits = Limits {
            max_message_size: 1000,
            ..Limits::default()
        };
        let mut c = limited(role, limits);
        let message = cat(&[
            &to(role, false, BINARY, &[1; 999]),
            &to(role, true, CONT, &[2]),
        ]);
        let mut expected = vec![1; 999];
        expected.push(2);
        for _ in 0..3 {
            assert_eq!(feed(&mut c, &message), vec![binary(&expected)]);
        }
        assert_eq!(
            feed(&mut c, &to_fin(role, TEXT, &[b'a'; 1000])),
            vec![text(&"a".repeat(1000))]
        );
        assert_eq!(c.state(), State::Open);
    }
}

#[test]
fn control_frames_do_not_count_toward_the_message() {
    for role in ROLES {
        let limits = Limits {
            max_message_size: 10,
            max_fragments: 2,
            ..Limits::default()
        };
        let mut c = limited(role, limits);
        let wire = cat(&[
            &to(role, false, TEXT, b"01234"),
            &to_fin(role, PING, &[0; 100]),
            &to_fin(role, PONG, &[0; 100]),
            &to(role, true, CONT, b"56789"),
        ]);
        let got = feed(&mut c, &wire);
        assert_eq!(got.last(), Some(&text("0123456789")));
        assert_eq!(got.len(), 3);
        assert_eq!(c.state(), State::Open);
    }
}

#[test]
fn too_many_fragments_1009() {
    // Every frame counts, EMPTY ONES TOO: otherwise a peer could stream empty continuations
    // forever at no cost to itself.
    for role in ROLES {
        for payload in [&b""[..], b"x"] {
            let limits = Limits {
                max_fragments: 4,
                ..Limits::default()
            };
            let mut c = limited(role, limits);
            let first = to(role, false, TEXT, payload);
            let more = to(role, false, CONT, payload);
            assert_eq!(feed(&mut c, &cat(&[&first, &more, &more, &more])), vec![]);
            // The fifth frame fails at its header, whatever it carries.
            let fifth = to(role, true, CONT, payload);
            let head = if role == Role::Server { 6 } else { 2 };
            c.receive_data(&fifth[..head], t0());
            assert_failed(&mut c, 1009, "too many fragments");
        }
    }
}

#[test]
fn exactly_max_fragments_is_accepted_and_the_count_resets() {
    for role in ROLES {
        let limits = Limits {
            max_fragments: 4,
            ..Limits::default()
        };
        let mut c = limited(role, limits);
        let message = cat(&[
            &to(role, false, BINARY, b""),
            &to(role, false, CONT, b"a"),
            &to(role, false, CONT, b""),
            &to(role, true, CONT, b"b"),
        ]);
        for _ in 0..3 {
            assert_eq!(feed(&mut c, &message), vec![binary(b"ab")]);
        }
        assert_eq!(c.state(), State::Open);
    }
}

#[test]
fn default_limits_are_documented_values() {
    let limits = Limits::default();
    assert_eq!(limits.max_message_size, 1 << 20);
    assert_eq!(limits.max_frame_size, 1 << 20);
    assert_eq!(limits.max_fragments, 1024);
    // So a default connection refuses a frame of 1 MiB + 1 at its header.
    for role in ROLES {
        let mut c = conn(role);
        c.receive_data(
            &header(
                true,
                0,
                BINARY,
                mask_for(role),
                (1 << 20) + 1,
                LenForm::Minimal,
            ),
            t0(),
        );
        assert_failed(&mut c, 1009, "frame too large");
    }
}
