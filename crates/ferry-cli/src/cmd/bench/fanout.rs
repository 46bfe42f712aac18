//! `ferry bench fanout`: one publisher, N subscribers on one pub/sub topic.
//!
//! Every message starts with its sequence number as [`SEQ_LEN`] hex digits; the rest is the
//! run's fixed payload. Every receiver checks every byte of every message, in order, with the
//! streaming verifier of the echo modes ([`super::Rx`]).
//!
//! **Flow control.** The publisher keeps at most `window` messages in flight, where a message is
//! in flight from its write until *every* receiver has it: all subscribers, and the publisher
//! itself, since `ferry serve` delivers a topic message to its publisher too. So no connection's
//! send queue on the server ever holds more than `window` messages, and with `window × size`
//! under the server's `--send-queue` the slow-subscriber policy (close with 1013, or drop the
//! oldest) is never triggered by the generator: what is measured is delivery, not shedding.
//!
//! Completion is counted in two levels, so a message costs one atomic operation per load
//! thread rather than one per receiver: each thread counts its own receivers in a plain array
//! ([`Tally`]), and the last of them to get a message decrements the message's shared count of
//! threads; the thread that brings it to zero counts the message complete and wakes the
//! publisher. Since every connection gets the messages in order, messages complete in order,
//! and `published - completed` is the number in flight.
//!
//! **Start.** A subscriber is subscribed only some time after its handshake, when the server
//! gets to it. Before the first numbered message the publisher sends empty "sync" messages
//! every [`SYNC_EVERY`] until every receiver has seen one: from then on, every receiver is
//! subscribed and will get every numbered message.
//!
//! **Several nodes.** With several `--url`s the subscribers are spread over them in turn and
//! the publisher is on the first ([`super::Plan::target`]); nothing here changes, since a node
//! delivers what another node's publisher sent (through the broker) like its own, in order.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ferry::proto::mask::apply_mask;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::{Conn, write_zero};
use super::hub::{Hub, Tally};
use super::plan::Plan;
use super::sequence::{SEQ_LEN, seq_prefix};
use super::shared::{Event, MEASURE, WARMUP, Worker};

/// How often the publisher sends a sync message until every receiver has seen one.
const SYNC_EVERY: Duration = Duration::from_millis(20);

/// How often waiting code looks again at state that other threads change without a wake-up
/// (the phase, the sync count, the end of the run).
const RECHECK: Duration = Duration::from_millis(1);

/// What a fan-out connection's poll needs besides the connection.
pub(super) struct Ctx<'a> {
    pub(super) worker: &'a Worker<'a>,
    pub(super) hub: &'a Hub,
    pub(super) tally: &'a Tally,
    pub(super) events: &'a mpsc::Sender<Event>,
}

impl Ctx<'_> {
    /// `done` messages from `first` on arrived whole at one receiver.
    fn delivered(&self, first: u64, done: u64, publisher: bool) {
        let hub = self.hub;
        let worker = self.worker;
        if publisher {
            worker.counters.copies.fetch_add(done, Ordering::Relaxed);
        } else {
            if worker.measuring() {
                let now = hub.now_ns();
                let mut hist = worker.hist.borrow_mut();
                for seq in first..first + done {
                    let sent = hub.sent_at[hub.slot(seq)].load(Ordering::Acquire);
                    hist.record(Duration::from_nanos(now.saturating_sub(sent)));
                }
            }
            worker.count(done);
        }
        self.tally.received.set(self.tally.received.get() + done);
        let mut got = self.tally.got.borrow_mut();
        for seq in first..first + done {
            let slot = hub.slot(seq);
            let Some(count) = got.get_mut(slot) else {
                continue;
            };
            *count += 1;
            if *count < self.tally.receivers {
                continue;
            }
            *count = 0;
            if hub.remaining[slot].fetch_sub(1, Ordering::AcqRel) == 1 {
                hub.completed.fetch_add(1, Ordering::AcqRel);
                hub.publisher.wake();
            }
        }
    }
}

/// Reads and verifies what the socket holds until it has no more; records every whole
/// message. A subscriber also writes its pongs here; the publisher writes them between its
/// frames. Never `Ready(Ok)`: a receiver runs until the run ends or fails.
fn poll_deliveries(
    conn: &mut Conn,
    cx: &mut TaskContext<'_>,
    ctx: &Ctx<'_>,
    publisher: bool,
) -> Poll<Result<()>> {
    let plan = ctx.worker.plan;
    loop {
        if !publisher && !conn.control.is_empty() {
            match Pin::new(&mut conn.stream).poll_write(cx, &conn.control) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                Poll::Ready(Ok(n)) => {
                    conn.control.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                // Written when the socket has room; reading goes on meanwhile.
                Poll::Pending => {}
            }
        }
        let rx = &mut conn.rx;
        if rx.end == rx.buf.len() {
            return Poll::Ready(Err(anyhow!("internal: read buffer full")));
        }
        let mut buf = ReadBuf::new(&mut rx.buf[rx.end..]);
        match Pin::new(&mut conn.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(anyhow!(
                        "the server closed the TCP connection during the run"
                    )));
                }
                rx.end += n;
                let (first, syncs_before) = match &rx.seq {
                    Some(seq) => (seq.next, seq.syncs),
                    None => return Poll::Ready(Err(anyhow!("internal: no sequence state"))),
                };
                let done = match rx.process(plan, &mut conn.control) {
                    Ok(done) => done,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                if syncs_before == 0 && rx.seq.as_ref().is_some_and(|s| s.syncs > 0) {
                    ctx.hub.synced.fetch_add(1, Ordering::AcqRel);
                }
                if done > 0 {
                    ctx.delivered(first, done, publisher);
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PubState {
    /// Sending sync messages until every receiver has seen one.
    Syncing,
    /// Everyone is subscribed; waiting for the main thread to start the run.
    Waiting,
    Publishing,
    /// Stopped (end of the run, or the --messages budget spent); still reading its copies.
    Done,
}

/// The publishing connection: also a receiver of its own messages.
pub(super) struct Publisher {
    conn: Conn,
    /// Frames to write, and how much of them is written.
    out: Vec<u8>,
    out_off: usize,
    state: PubState,
    timer: Pin<Box<tokio::time::Sleep>>,
    next_sync: Instant,
    /// With --rate: the time between two messages, and when the next is due.
    interval: Option<Duration>,
    next_due: Instant,
}

impl Publisher {
    pub(super) fn new(conn: Conn, plan: &Plan) -> Publisher {
        let now = Instant::now();
        Publisher {
            conn,
            out: Vec::with_capacity(
                super::plan::BATCH_BYTES.min(plan.frame_len * plan.pipeline) + 256,
            ),
            out_off: 0,
            state: PubState::Syncing,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            next_sync: now,
            interval: plan
                .rate
                .map(|rate| Duration::from_secs_f64(1.0 / rate.max(1e-9))),
            next_due: now,
        }
    }

    pub(super) fn into_conn(self) -> Conn {
        self.conn
    }

    /// Queues what is due now into `out` (which is empty): pongs, then sync messages or as many
    /// numbered messages as the window, the rate and the budget allow. Returns when to look
    /// again if nothing else will wake the task.
    fn refill(&mut self, ctx: &Ctx<'_>) -> Option<Instant> {
        let plan = ctx.worker.plan;
        let hub = ctx.hub;
        self.out.clear();
        self.out_off = 0;
        // Pongs go between frames.
        self.out.append(&mut self.conn.control);
        let now = Instant::now();
        match self.state {
            PubState::Syncing => {
                if hub.synced.load(Ordering::Acquire) >= hub.receivers {
                    let _ = ctx.events.send(Event::Synced);
                    self.state = PubState::Waiting;
                    return Some(now + RECHECK);
                }
                if now >= self.next_sync {
                    self.out.extend_from_slice(&plan.sync_frame);
                    self.next_sync = now + SYNC_EVERY;
                }
                Some(self.next_sync.min(now + RECHECK))
            }
            PubState::Waiting => {
                let phase = ctx.worker.shared.phase();
                if phase == WARMUP || phase == MEASURE {
                    self.state = PubState::Publishing;
                    self.next_due = now;
                    return self.refill_messages(ctx, now);
                }
                if phase > MEASURE {
                    self.stop(hub);
                    return None;
                }
                Some(now + RECHECK)
            }
            PubState::Publishing => self.refill_messages(ctx, now),
            PubState::Done => None,
        }
    }

    fn refill_messages(&mut self, ctx: &Ctx<'_>, now: Instant) -> Option<Instant> {
        let plan = ctx.worker.plan;
        let hub = ctx.hub;
        let room = (plan.pipeline as u64).saturating_sub(hub.in_flight());
        let mut want = room.min(plan.batch_frames as u64);
        if let Some(interval) = self.interval {
            if now < self.next_due {
                return Some(self.next_due);
            }
            // Every message due by now: the timer fires late by up to a millisecond, which
            // must not lower the rate. Behind by more than CATCH_UP (a full window, a stall),
            // the schedule restarts from now instead, and the rate achieved is what is reported.
            const CATCH_UP: Duration = Duration::from_millis(10);
            let behind = now.duration_since(self.next_due);
            if behind > CATCH_UP {
                self.next_due = now;
            }
            let due = 1
                + (now.duration_since(self.next_due).as_nanos() / interval.as_nanos().max(1))
                    as u64;
            want = want.min(due);
            self.next_due += interval * want as u32;
        }
        if want == 0 {
            // The window is full: a completion wakes the publisher.
            return None;
        }
        let granted = ctx.worker.grant(want);
        if granted == 0 {
            self.stop(hub);
            return None;
        }
        let mut seq = hub.published.load(Ordering::Relaxed);
        let sent = hub.now_ns();
        let frame = plan.batch.get(..plan.frame_len).unwrap_or_default();
        for _ in 0..granted {
            let slot = hub.slot(seq);
            hub.remaining[slot].store(hub.threads, Ordering::Release);
            hub.sent_at[slot].store(sent, Ordering::Release);
            let start = self.out.len();
            self.out.extend_from_slice(frame);
            let at = start + plan.seq_at;
            if let Some(bytes) = self.out.get_mut(at..at + SEQ_LEN) {
                bytes.copy_from_slice(&seq_prefix(seq));
                apply_mask(bytes, plan.mask, plan.seq_mask_offset);
            }
            seq += 1;
        }
        hub.published.store(seq, Ordering::Release);
        self.interval.map(|_| self.next_due)
    }

    fn stop(&mut self, hub: &Hub) {
        self.state = PubState::Done;
        hub.total
            .store(hub.published.load(Ordering::Acquire), Ordering::Release);
    }

    /// Publishes and reads its own copies; never `Ready(Ok)`.
    fn poll_run(&mut self, cx: &mut TaskContext<'_>, ctx: &Ctx<'_>) -> Poll<Result<()>> {
        loop {
            let mut wake_at = None;
            if self.out_off == self.out.len() {
                wake_at = self.refill(ctx);
            }
            if self.out_off < self.out.len() {
                match Pin::new(&mut self.conn.stream).poll_write(cx, &self.out[self.out_off..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => {
                        self.out_off += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(Err(e)) = poll_deliveries(&mut self.conn, cx, ctx, true) {
                return Poll::Ready(Err(e));
            }
            if self.out_off < self.out.len() {
                // The socket's write readiness wakes us.
                return Poll::Pending;
            }
            if let Some(at) = wake_at {
                self.timer.as_mut().reset(at.into());
                if self.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            if self.state == PubState::Publishing && self.interval.is_none_or(|_| wake_at.is_none())
            {
                // Waiting for room in the window (or for our own copies, which the read wakes).
                ctx.hub.publisher.register(cx.waker());
                if ctx.hub.in_flight() < ctx.worker.plan.pipeline as u64
                    && self.conn.control.is_empty()
                    && wake_at.is_none()
                {
                    continue;
                }
            }
            if !self.conn.control.is_empty() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Resolves when this thread's receivers have every message the publisher sent, once it has
/// stopped.
async fn drained(ctx: &Ctx<'_>) {
    loop {
        let total = ctx.hub.total.load(Ordering::Acquire);
        let wanted = total.saturating_mul(u64::from(ctx.tally.receivers));
        if total != u64::MAX && ctx.tally.received.get() >= wanted {
            return;
        }
        let wait = if total == u64::MAX {
            10 * RECHECK
        } else {
            RECHECK
        };
        tokio::time::sleep(wait).await;
    }
}

/// A load thread's part of a fan-out run: its subscribers, and on thread 0 the publisher.
/// Returns the connections, every message received, for closing.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    mut subscribers: Vec<Conn>,
    mut publisher: Option<Publisher>,
) -> Result<(Vec<Conn>, Option<Publisher>)> {
    let plan = ctx.worker.plan;
    {
        let receiving = async {
            let mut all: FuturesUnordered<_> = subscribers
                .iter_mut()
                .map(|conn| async move {
                    let id = conn.id;
                    poll_fn(|cx| poll_deliveries(conn, cx, ctx, false))
                        .await
                        .with_context(|| format!("subscriber {id}"))
                })
                .collect();
            while let Some(result) = all.next().await {
                result?;
            }
            // Only errors end a receiver; a thread without subscribers waits for the end.
            std::future::pending::<()>().await;
            Ok::<_, anyhow::Error>(())
        };
        let publishing = async {
            match publisher.as_mut() {
                Some(p) => poll_fn(|cx| p.poll_run(cx, ctx)).await.context("publisher"),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            result = receiving => result?,
            result = publishing => result?,
            () = drained(ctx) => {}
            err = super::shared::watch(ctx.worker.shared, plan.timeout, "the last deliveries did not arrive") => return Err(err),
        }
    }
    Ok((subscribers, publisher))
}
