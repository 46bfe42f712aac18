//! A connection lends out its I/O buffers while idle (`take_idle_buffers`) and takes them back
//! (`recv_buf`, `provide_transmit_buf`), so a driver can pool them instead of allocating per
//! message; nothing in flight is ever handed out.

mod common;

use bytes::BytesMut;
use common::*;
use ferry_proto::{Message, Role};

/// Receives `bytes` the way a driver does: read into a buffer with room to spare.
fn read(conn: &mut ferry_proto::Connection, bytes: &[u8]) -> usize {
    let buf = conn.recv_buf();
    if buf.capacity() == 0 {
        buf.reserve(4096);
    }
    buf.extend_from_slice(bytes);
    conn.handle_received(t0());
    std::iter::from_fn(|| conn.poll_event()).count()
}

fn take(conn: &mut ferry_proto::Connection) -> Vec<BytesMut> {
    let mut out = Vec::new();
    conn.take_idle_buffers(|buf| out.push(buf));
    out
}

#[test]
fn idle_connection_hands_out_its_buffers_and_reuses_provided_ones() {
    let mut server = conn(Role::Server);
    assert_eq!(
        read(&mut server, &to_fin(Role::Server, BINARY, b"ping me")),
        1
    );
    server.send(Message::binary(&b"reply"[..])).unwrap();
    // Bytes wait in the transmit queue: only the (empty) receive buffer may go.
    let lent = take(&mut server);
    assert_eq!(lent.len(), 1);
    assert!(lent[0].is_empty() && lent[0].capacity() > 0);
    assert!(!server.wants_transmit_buf());
    assert_eq!(
        sent(&mut server),
        sent_by(Role::Server, true, BINARY, b"reply")
    );
    // Now idle on both sides: the transmit buffer goes too, and is wanted back.
    let lent = take(&mut server);
    assert!(lent.iter().all(|b| b.is_empty()));
    assert!(server.wants_transmit_buf());
    assert!(take(&mut server).is_empty(), "nothing left to hand out");

    // A provided buffer is where the next small frame is encoded.
    let mut pooled = BytesMut::with_capacity(4096);
    pooled.extend_from_slice(b"stale");
    let ptr = pooled.as_ptr();
    server.provide_transmit_buf(pooled);
    assert!(!server.wants_transmit_buf());
    server.send(Message::binary(&b"again"[..])).unwrap();
    let out = server.transmit();
    let chunk = bytes::Buf::chunk(out);
    assert_eq!(chunk.as_ptr(), ptr, "encoded into the provided buffer");
    assert_eq!(chunk, &sent_by(Role::Server, true, BINARY, b"again")[..]);
}

#[test]
fn a_frame_in_flight_keeps_the_receive_buffer() {
    let mut server = conn(Role::Server);
    let frame = to_fin(Role::Server, BINARY, &[7u8; 300]);
    assert_eq!(read(&mut server, &frame[..100]), 0);
    assert!(take(&mut server).is_empty(), "a partial frame is not idle");
    assert_eq!(read(&mut server, &frame[100..]), 1);
    assert_eq!(take(&mut server).len(), 1);
}
