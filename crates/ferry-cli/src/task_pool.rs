//! Many connections polled from a few long-lived tasks, instead of a tokio task each.
//!
//! tokio allocates every task's cell 128-byte aligned (against false sharing between worker
//! threads), and glibc pads such blocks one by one: an idle connection pays that padding on
//! top of its future. A pool task keeps its connections' futures in a
//! [`FuturesUnordered`], each in an ordinary allocation, and polls only those that were woken,
//! so an idle connection costs its future and little more (about 0.2 KiB less per idle
//! `ferry echo` connection, docs/memory.md).
//!
//! What a task per connection gives, the pool keeps:
//! - a panic in one connection's future ends that connection alone: each future runs under
//!   its own `catch_unwind`, and the panic is logged;
//! - the connections spread over the runtime's worker threads: there is one pool task per
//!   worker thread, and connections are handed to them in turn. A pool task moves between
//!   threads as a whole, so uneven load balances by pool, not by connection.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

/// Pool tasks, each polling the connections handed to it.
pub struct TaskPool<F> {
    pools: Vec<mpsc::UnboundedSender<F>>,
    next: AtomicUsize,
}

impl<F> TaskPool<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    /// Starts `tasks` pool tasks (at least one) on the current runtime.
    pub fn start(tasks: usize) -> TaskPool<F> {
        let pools = (0..tasks.max(1))
            .map(|_| {
                let (sender, receiver) = mpsc::unbounded_channel();
                tokio::spawn(run(receiver));
                sender
            })
            .collect();
        TaskPool {
            pools,
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `future` in the next pool task, in turn.
    pub fn spawn(&self, future: F) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.pools.len();
        // A pool task ends only when its sender is dropped, with this `TaskPool`.
        let _ = self.pools[turn].send(future);
    }
}

/// A pool task: takes new futures from `incoming` and polls every woken one, until the
/// `TaskPool` is dropped and every future has finished.
async fn run<F>(mut incoming: mpsc::UnboundedReceiver<F>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut running: FuturesUnordered<CatchUnwind<AssertUnwindSafe<F>>> = FuturesUnordered::new();
    let mut open = true;
    poll_fn(|cx| poll_pool(cx, &mut incoming, &mut open, &mut running)).await;
}

fn poll_pool<F>(
    cx: &mut Context<'_>,
    incoming: &mut mpsc::UnboundedReceiver<F>,
    open: &mut bool,
    running: &mut FuturesUnordered<CatchUnwind<AssertUnwindSafe<F>>>,
) -> Poll<()>
where
    F: Future<Output = ()>,
{
    while *open {
        match incoming.poll_recv(cx) {
            // A panic leaves nothing shared behind it: the future is dropped whole, as tokio
            // drops a panicked task's.
            Poll::Ready(Some(future)) => running.push(AssertUnwindSafe(future).catch_unwind()),
            Poll::Ready(None) => *open = false,
            Poll::Pending => break,
        }
    }
    // `FuturesUnordered` polls only the woken futures, and yields back to the runtime once it
    // has polled as many as it holds, so one busy connection cannot hold the others up.
    loop {
        match running.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(()))) => {}
            Poll::Ready(Some(Err(panic))) => {
                tracing::error!(
                    panic = panic_message(&*panic),
                    "a connection panicked; it alone was closed"
                );
            }
            Poll::Ready(None) if *open => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    type Boxed = Pin<Box<dyn Future<Output = ()> + Send>>;

    /// A future that panics ends alone: the pool keeps polling the others, in the same task.
    #[tokio::test]
    async fn a_panic_ends_only_its_own_future() {
        let pool: TaskPool<Boxed> = TaskPool::start(1);
        let (wake, woken) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel();
        // Waits across the panic below, so it is in the pool when the panic happens.
        pool.spawn(Box::pin(async move {
            let _ = woken.await;
            let _ = done.send("finished");
        }));
        pool.spawn(Box::pin(async { panic!("one connection's bug") }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        wake.send(()).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), finished).await;
        assert_eq!(outcome.unwrap().unwrap(), "finished");
    }

    /// Futures are handed to the pool tasks in turn, and each runs to its end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_future_runs_in_some_pool_task() {
        let pool: TaskPool<Boxed> = TaskPool::start(2);
        let mut finished = Vec::new();
        for i in 0..50u32 {
            let (done, rx) = oneshot::channel();
            pool.spawn(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(i % 5))).await;
                let _ = done.send(i);
            }));
            finished.push(rx);
        }
        for (i, rx) in finished.into_iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(5), rx).await;
            assert_eq!(got.unwrap().unwrap(), i as u32);
        }
    }

    /// With the pool dropped, a pool task ends once its futures have.
    #[tokio::test]
    async fn a_pool_task_ends_after_its_last_future() {
        let (sender, receiver) = mpsc::unbounded_channel::<Boxed>();
        let (release, released) = oneshot::channel::<()>();
        sender
            .send(Box::pin(async move {
                let _ = released.await;
            }))
            .unwrap();
        let task = tokio::spawn(run(receiver));
        drop(sender);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "ended while a future still ran");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the pool task ended")
            .unwrap();
    }
}
