//! `--idle-timeout`: a connection closes with 1001 once no message came from its client for
//! this long.
//!
//! One timer per connection, set once and moved only when it fires: a message just records
//! when it came, so a busy connection costs no timer update per message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's idle timer.
pub struct IdleTimer {
    timer: Pin<Box<Sleep>>,
    after: Duration,
    /// When a message last came. The timer, once it fires, moves to this plus `after` instead
    /// of being reset on every message.
    last_message: Instant,
}

impl IdleTimer {
    /// The timer for `after` of silence; `None` for 0 (no idle timeout).
    pub fn new(after: Duration) -> Option<IdleTimer> {
        (!after.is_zero()).then(|| IdleTimer {
            timer: Box::pin(tokio::time::sleep(after)),
            after,
            last_message: Instant::now(),
        })
    }

    /// A message came.
    pub fn touch(&mut self) {
        self.last_message = Instant::now();
    }

    /// Ready once no message came for the whole timeout; registers `cx` for the timer if not.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let due = self.last_message + self.after;
            if due <= Instant::now() {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_timer() {
        assert!(IdleTimer::new(Duration::ZERO).is_none());
    }

    /// A message moves the expiry to a full timeout after it: the timer, set before the
    /// message, does not expire the connection early.
    #[tokio::test]
    async fn expires_no_sooner_than_a_full_timeout_after_the_last_message() {
        let after = Duration::from_millis(200);
        let mut idle = IdleTimer::new(after).unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        idle.touch();
        let touched = Instant::now();
        std::future::poll_fn(|cx| idle.poll_expired(cx)).await;
        assert!(
            touched.elapsed() >= after,
            "expired {:?} after the message",
            touched.elapsed()
        );
    }
}
