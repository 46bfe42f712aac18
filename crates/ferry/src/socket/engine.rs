//! What a connection does the same whoever holds it: the single-task
//! [`WebSocket`](super::WebSocket) and the driver behind the [`Sender`](super::Sender) and
//! [`Receiver`](super::Receiver) handles run one engine and differ only in where messages come
//! from and go to.
//!
//! - [`Transport::round`]: one round of work (write, read, timers) and the moment the
//!   transport is to be finished;
//! - [`Transport::start_close`]: how a close starts, including an unsendable code;
//! - [`fits`]: the send-budget rule;
//! - [`Ending`]: the ends of a connection that no close frame describes (code 1006).
//!
//! Each owner decides, before a round, whether there is room to read (the driver stops while
//! its receiver is over budget; both hold a violation back until the messages before it have
//! been taken), and handles the events the round leaves in the protocol.

use std::task::Context;
use std::time::Instant;

use ferry_proto::{CloseCode, CloseInfo, Initiator, State, Utf8Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use super::transport::{Read, Transport};

/// What one [`Transport::round`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// The transport failed, or the protocol is done with it (§7.1.1): nothing more is read,
    /// and the owner finishes the transport (`Transport::poll_finish`).
    Finish,
    /// The connection goes on.
    Ran {
        /// Bytes were written.
        wrote: bool,
        /// What the read did; `None` if the owner had no room to read.
        read: Option<Read>,
        /// The deadline that fired, if one did (see `Transport::poll_timer`).
        fired: Option<Instant>,
    },
}

impl Round {
    /// Whether anything happened that may need another round: bytes moved, the protocol took
    /// input, or a timer fired (the protocol may have queued a ping or events).
    pub(crate) fn progress(self) -> bool {
        match self {
            Round::Finish => true,
            Round::Ran { wrote, read, fired } => {
                wrote || matches!(read, Some(Read::Data | Read::Ended)) || fired.is_some()
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// One round of a connection's work: write what the protocol has ready; stop there if the
    /// transport failed or the protocol is done with it; otherwise read once if `may_read`, and
    /// run the timers. `deadline` learns what the read did and returns the owner's own
    /// deadline, which the timer then covers beside the protocol's. Wakers are registered for
    /// whatever did not complete. Events the read or a timer produced stay in the protocol for
    /// the owner to take.
    pub(crate) fn round(
        &mut self,
        cx: &mut Context<'_>,
        may_read: bool,
        deadline: impl FnOnce(Option<Read>) -> Option<Instant>,
    ) -> Round {
        let wrote = self.write(cx);
        if self.failed() || self.conn.should_close_transport() {
            return Round::Finish;
        }
        let read = (may_read && !self.read_closed()).then(|| self.read(cx));
        let fired = self.poll_timer(cx, deadline(read));
        Round::Ran { wrote, read, fired }
    }

    /// Starts the closing handshake (§5.5.1, §7.1.2) if the connection is still open. A code
    /// that may not be sent (§7.4.1 reserves 1005, 1006 and 1015; others are out of range)
    /// closes with 1000 instead, so the application's close never turns into no close at all.
    pub(crate) fn start_close(&mut self, code: CloseCode, reason: &str) {
        if self.conn.state() == State::Open
            && self.conn.close(code, reason, Instant::now()).is_err()
            && self.conn.state() == State::Open
        {
            let _ = self.conn.close(CloseCode::NORMAL, reason, Instant::now());
        }
    }
}

/// The send-budget rule, for every way of sending: a message of `len` bytes may join `waiting`
/// bytes already queued if together they stay within `budget`, or if nothing is queued (so a
/// message larger than the whole budget still goes, alone).
pub(crate) fn fits(waiting: usize, len: usize, budget: usize) -> bool {
    waiting == 0 || waiting.saturating_add(len) <= budget
}

/// The ends of a connection that no close frame describes: each is reported with code 1006
/// (§7.1.5, "the WebSocket connection is closed" without a close frame) and `clean: false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The closing handshake did not complete within `Limits::close_timeout`; the transport
    /// was dropped.
    CloseTimeout,
    /// The task running the connection ended first (its runtime shut down, or the driver was
    /// dropped unpolled).
    TaskEnded,
    /// The transport ended without the protocol reporting a close.
    TransportClosed,
    /// Asked of a connection that had already ended and reported its close.
    AlreadyClosed,
}

impl Ending {
    /// The close to report.
    pub(crate) fn info(self) -> CloseInfo {
        let (reason, initiator) = match self {
            Ending::CloseTimeout => ("close timeout", Initiator::Local),
            Ending::TaskEnded => ("connection task ended", Initiator::Local),
            Ending::TransportClosed => ("transport closed", Initiator::Remote),
            Ending::AlreadyClosed => ("connection already closed", Initiator::Local),
        };
        CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: Utf8Bytes::from_static(reason),
            initiator,
            clean: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_budget_takes_a_large_message_only_alone() {
        assert!(fits(0, 10, 4), "an empty queue takes anything");
        assert!(fits(2, 2, 4));
        assert!(!fits(3, 2, 4));
        assert!(!fits(1, usize::MAX, 4), "no overflow");
    }

    #[test]
    fn every_ending_is_abnormal_and_says_why() {
        for ending in [
            Ending::CloseTimeout,
            Ending::TaskEnded,
            Ending::TransportClosed,
            Ending::AlreadyClosed,
        ] {
            let info = ending.info();
            assert_eq!(info.code, CloseCode::ABNORMAL);
            assert!(!info.clean);
            assert!(!info.reason.is_empty());
        }
    }
}
