//! What a connection reports: events, in order, and how it ended.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::close::CloseCode;
use crate::message::{Message, Utf8Bytes};

/// Where the closing handshake stands (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This end sent a close frame and waits for the peer's. Received messages are still
    /// delivered; nothing more is sent.
    Closing,
    /// Both close frames were exchanged, or the connection failed. Nothing more is received or
    /// sent, except what is already in [`Connection::transmit`](super::Connection::transmit).
    Closed,
}

/// Who started the closing of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end: the application closed, or this end failed the connection.
    Local,
    /// The peer: it sent a close frame first, or the transport ended.
    Remote,
}

/// How a connection ended; the last event of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code: the one in the peer's close frame after a clean closing handshake;
    /// [`CloseCode::NO_STATUS`] if that frame had none; the code this end sent when it failed
    /// the connection; [`CloseCode::ABNORMAL`] when the transport ended without a close frame.
    pub code: CloseCode,
    /// The reason that went with the code (may be empty).
    pub reason: Utf8Bytes,
    /// Who started closing.
    pub initiator: Initiator,
    /// Whether both close frames were exchanged.
    pub clean: bool,
}

/// What a connection reports, in order, from [`Connection::poll_event`](super::Connection::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole message.
    Message(Message),
    /// A ping arrived; the pong has already been queued.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The connection is closed; always the last event.
    Closed(CloseInfo),
}

/// Events in order. The first waits inline: a read usually completes one message, so the
/// common case allocates nothing, and an idle connection holds no event slots (a `VecDeque`
/// alone would keep its slots, about 200 bytes, or allocate for every message).
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    head: Option<Event>,
    /// Events after `head`; used only when one read completes several (pipelined messages).
    rest: VecDeque<Event>,
}

impl EventQueue {
    pub(super) fn push(&mut self, event: Event) {
        if self.head.is_none() && self.rest.is_empty() {
            self.head = Some(event);
        } else {
            self.rest.push_back(event);
        }
    }

    pub(super) fn pop(&mut self) -> Option<Event> {
        self.head.take().or_else(|| self.rest.pop_front())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none() && self.rest.is_empty()
    }

    pub(super) fn last(&self) -> Option<&Event> {
        self.rest.back().or(self.head.as_ref())
    }

    /// Frees the overflow's slots once it is empty.
    pub(super) fn release_idle(&mut self) {
        if self.rest.is_empty() && self.rest.capacity() != 0 {
            self.rest = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u8) -> Event {
        Event::Message(Message::binary(vec![n]))
    }

    #[test]
    fn event_queue_keeps_order_when_pushed_between_pops_and_frees_its_overflow() {
        let mut queue = EventQueue::default();
        for n in 0..3 {
            queue.push(message(n));
        }
        assert_eq!(queue.pop(), Some(message(0)));
        // The inline slot is free but two wait behind it: a new event goes after them.
        queue.push(message(3));
        assert_eq!(queue.last(), Some(&message(3)));
        let rest: Vec<Event> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(rest, [message(1), message(2), message(3)]);
        assert!(queue.is_empty());
        queue.release_idle();
        assert_eq!(queue.rest.capacity(), 0, "an idle queue holds no slots");
        queue.push(message(4));
        assert_eq!(queue.rest.capacity(), 0, "one event waits inline");
        assert_eq!(queue.pop(), Some(message(4)));
    }
}
