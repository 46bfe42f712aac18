//! The timers a WebSocket route's task may have: a token's expiry and `--idle-timeout`. They
//! live in one box, made only when one of them is configured, because the task that holds
//! them lives as long as its connection: an idle connection on the default settings carries
//! neither (docs/memory.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry::CloseCode;
use tokio::time::Sleep;

use super::auth::CLOSE_TOKEN_EXPIRED;
use super::idle::IdleTimer;

/// A connection's timers.
pub struct Timers {
    /// The token's expiry, if a token opened the connection: the connection closes with 4001.
    expiry: Option<Pin<Box<Sleep>>>,
    /// `--idle-timeout`: the connection closes with 1001 once no message came for this long.
    idle: Option<IdleTimer>,
}

impl Timers {
    /// The timers for a token with `expires_in` left (if any) and an idle timeout (0: none);
    /// `None` when there are neither.
    pub fn new(expires_in: Option<Duration>, idle: Duration) -> Option<Box<Timers>> {
        if expires_in.is_none() && idle.is_zero() {
            return None;
        }
        Some(Box::new(Timers {
            expiry: expires_in.map(|d| Box::pin(tokio::time::sleep(d))),
            idle: IdleTimer::new(idle),
        }))
    }

    /// A message came from the client: the idle timeout counts from now.
    pub fn touch(&mut self) {
        if let Some(idle) = self.idle.as_mut() {
            idle.touch();
        }
    }

    /// The close a timer calls for, once one fires; registers `cx` for their firing if none
    /// has. A timer fires once: the close it asked for is under way.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<(CloseCode, &'static str)> {
        if let Some(expiry) = self.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            self.expiry = None;
            return Poll::Ready((CloseCode::from(CLOSE_TOKEN_EXPIRED), "token expired"));
        }
        if let Some(idle) = self.idle.as_mut()
            && idle.poll_expired(cx).is_ready()
        {
            self.idle = None;
            return Poll::Ready((CloseCode::GOING_AWAY, "idle timeout"));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_box_without_a_timer() {
        assert!(Timers::new(None, Duration::ZERO).is_none());
        assert!(Timers::new(None, Duration::from_secs(1)).is_some());
    }

    /// Each timer fires once, with its own close; polled again, the timers wait.
    #[tokio::test]
    async fn each_timer_fires_once_with_its_close() {
        let mut timers = Timers::new(Some(Duration::from_millis(10)), Duration::from_millis(40))
            .expect("two timers");
        let first = std::future::poll_fn(|cx| timers.poll(cx)).await;
        assert_eq!(first.0, CloseCode::from(CLOSE_TOKEN_EXPIRED));
        let second = std::future::poll_fn(|cx| timers.poll(cx)).await;
        assert_eq!(second, (CloseCode::GOING_AWAY, "idle timeout"));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(timers.poll(&mut cx).is_pending());
    }
}
