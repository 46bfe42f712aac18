//! Time: keepalive pings, the pong deadline and the close timeout.

use std::time::Instant;

use super::send::Lane;
use super::{CloseInfo, Connection, Initiator, State};
use crate::close::{CloseCode, CloseFrame};
use crate::frame::OpCode;
use crate::message::Utf8Bytes;

/// The state of keepalive pings (see [`Keepalive`]).
#[derive(Debug)]
pub(super) struct KeepaliveTimers {
    /// When the next ping goes out.
    pub(super) next_ping: Instant,
    /// When the connection fails unless a pong (any pong, §5.5.3) has come.
    pub(super) pong_deadline: Option<Instant>,
    /// Pings sent so far: each ping's payload, so the peer's pongs can be told apart.
    pub(super) pings_sent: u64,
}

impl Connection {
    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (next_ping, pong_deadline) = match &self.keepalive {
            Some(k) => (Some(k.next_ping), k.pong_deadline),
            None => (None, None),
        };
        [self.close_deadline, next_ping, pong_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires the timers due at `now`: keepalive pings, the pong deadline, the close timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline = None;
            self.transport_done = true;
            if self.state == State::Closing {
                // §7.1.1: the peer never answered our close.
                self.enter_closed(CloseInfo {
                    code: CloseCode::ABNORMAL,
                    reason: Utf8Bytes::from_static("close timeout"),
                    initiator: Initiator::Local,
                    clean: false,
                });
            }
        }
        if self.state != State::Open {
            return;
        }
        let Some(k) = self.keepalive.as_mut() else {
            return;
        };
        if k.pong_deadline.is_some_and(|d| d <= now) {
            self.keepalive = None;
            let reason = Utf8Bytes::from_static("keepalive ping timeout");
            self.write_close(&CloseFrame::new(CloseCode::INTERNAL_ERROR, reason.clone()));
            self.transport_done = true;
            self.peer_unresponsive = true;
            self.enter_closed(CloseInfo {
                code: CloseCode::INTERNAL_ERROR,
                reason,
                initiator: Initiator::Local,
                clean: false,
            });
            return;
        }
        if let Some(keepalive) = self.config.keepalive
            && k.next_ping <= now
        {
            k.pings_sent += 1;
            let payload = k.pings_sent.to_be_bytes();
            k.pong_deadline.get_or_insert(now + keepalive.timeout);
            k.next_ping = now + keepalive.interval;
            self.write_frame(Lane::Control, OpCode::Ping, true, 0, &payload);
        }
    }
}
