//! The open WebSocket connections, so shutdown can close each with 1001 and wait for them.
//!
//! A connection is held one of two ways: by its handles (`Sender`), when its route sends from
//! more than one place (control, topics, bridges), or by its own task, when the route only
//! answers what it receives (echo) and runs on a single-task `WebSocket`. Shutdown closes the
//! first kind through the handle and asks the second kind's task to close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

use ferry::{CloseCode, Sender};
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// Open WebSocket connections.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
    /// Shutdown has begun: a connection registered from now on is asked to close at once.
    closing: AtomicBool,
    /// Task-held connections registered and not yet removed: shutdown waits for 0 (a count,
    /// so that waiting costs no scan of every open connection per departure).
    tasks: AtomicUsize,
    /// Signalled when the last task-held connection leaves.
    task_left: Notify,
}

#[derive(Clone)]
enum Open {
    Handles(Sender),
    Task(Arc<Stop>),
}

/// Shutdown's request to a connection driven by its own task.
///
/// The task checks [`asked`](Self::asked) between messages (one atomic load) and polls
/// [`poll_asked`](Self::poll_asked) only while it has nothing else to do, so the request costs
/// nothing per message.
pub struct Stop {
    /// The connection's key in the registry, kept here rather than beside the `Arc` in the
    /// task, whose every byte is paid by each idle connection (docs/memory.md).
    id: u64,
    asked: AtomicBool,
    waker: AtomicWaker,
}

impl Stop {
    /// Whether shutdown asked this connection to close.
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// Whether shutdown asked this connection to close; if not, `cx` is woken when it does.
    pub fn poll_asked(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.asked()
    }

    fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl Registry {
    /// Registers a connection held by its handles; shutdown closes it through `sender`.
    pub fn add(&self, sender: Sender) -> u64 {
        self.insert(Open::Handles(sender))
    }

    /// Registers a connection its own task drives; that task watches the returned [`Stop`],
    /// and gives it to [`remove_task`](Self::remove_task) when the connection ends.
    pub fn add_task(&self) -> Arc<Stop> {
        let stop = Arc::new(Stop {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            asked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.tasks.fetch_add(1, Ordering::AcqRel);
        self.lock().insert(stop.id, Open::Task(stop.clone()));
        if self.closing.load(Ordering::Acquire) {
            // Registered after shutdown took its list: it would otherwise never be asked.
            stop.ask();
        }
        stop
    }

    fn insert(&self, open: Open) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, open);
        id
    }

    /// The task-held connection of `stop` has ended.
    pub fn remove_task(&self, stop: &Stop) {
        self.remove(stop.id);
    }

    /// The connection has ended.
    pub fn remove(&self, id: u64) {
        let removed = self.lock().remove(&id);
        if let Some(Open::Task(_)) = removed
            && self.tasks.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.task_left.notify_waiters();
        }
    }

    /// Closes every connection with 1001 (after what each has queued) and waits until each
    /// has closed; returns how many there were.
    pub async fn close_all(&self) -> usize {
        self.closing.store(true, Ordering::Release);
        let open: Vec<Open> = self.lock().values().cloned().collect();
        let count = open.len();
        let mut closes = Vec::new();
        for open in open {
            match open {
                Open::Task(stop) => stop.ask(),
                Open::Handles(sender) => closes.push(tokio::spawn(async move {
                    sender
                        .close(CloseCode::GOING_AWAY, "server shutting down")
                        .await;
                })),
            }
        }
        for close in closes {
            let _ = close.await;
        }
        self.tasks_ended().await;
        count
    }

    /// Waits until no task-held connection remains.
    async fn tasks_ended(&self) {
        loop {
            let left = self.task_left.notified();
            tokio::pin!(left);
            // Registered before looking, so a departure between the look and the wait is seen.
            left.as_mut().enable();
            if self.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            left.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn shutdown_asks_each_task_and_waits_for_it_to_leave() {
        let registry = Arc::new(Registry::default());
        let stop = registry.add_task();
        assert!(!stop.asked());
        let left = Arc::new(AtomicBool::new(false));
        let task = {
            let (registry, left) = (registry.clone(), left.clone());
            tokio::spawn(async move {
                poll_fn(|cx| {
                    if stop.poll_asked(cx) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                // The connection's close handshake would run here.
                tokio::time::sleep(Duration::from_millis(20)).await;
                left.store(true, Ordering::SeqCst);
                registry.remove_task(&stop);
            })
        };
        let closed = tokio::time::timeout(Duration::from_secs(5), registry.close_all())
            .await
            .expect("close_all returns once the task has left");
        assert_eq!(closed, 1);
        assert!(
            left.load(Ordering::SeqCst),
            "close_all returned before the task left"
        );
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_task_registered_during_shutdown_is_asked_at_once() {
        let registry = Registry::default();
        assert_eq!(registry.close_all().await, 0);
        let stop = registry.add_task();
        assert!(stop.asked());
    }
}
