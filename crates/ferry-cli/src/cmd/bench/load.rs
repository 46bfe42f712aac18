//! Load threads: each opens its share of the connections and drives them on one task.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::args::Mode;
use super::conn::{Conn, Rx, open};
use super::histogram::Histogram;
use super::hub::Tally;
use super::plan::Plan;
use super::shared::{ABORT, Counters, Event, Shared, Worker, watch};

/// Connections opened at once per thread while connecting (the server's accept backlog is finite).
const CONNECT_CONCURRENCY: usize = 256;

/// Opens the connections `ids`, a bounded number at a time; in idle mode each also echoes once
/// unless --silent.
pub(super) async fn open_all(
    plan: &Plan,
    shared: &Shared,
    counters: &Counters,
    ids: Range<usize>,
) -> Result<Vec<Conn>> {
    let mut ids = ids;
    let mut conns = Vec::with_capacity(ids.len());
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < CONNECT_CONCURRENCY {
            let Some(id) = ids.next() else { break };
            pending.push(async move {
                let mut conn = open(plan, id, id, Rx::new(plan.read_buf)).await?;
                if plan.mode == Mode::Idle && !plan.silent {
                    match tokio::time::timeout(plan.timeout, conn.echo_once(plan)).await {
                        Ok(result) => result?,
                        Err(_) => bail!("no echo within --timeout {:?}", plan.timeout),
                    }
                }
                if plan.mode == Mode::Idle {
                    // Held connections keep no read buffer on this side.
                    conn.rx = Rx::new(0);
                }
                Ok(conn)
            });
        }
        match pending.next().await {
            None => return Ok(conns),
            Some(Ok(conn)) => {
                conns.push(conn);
                counters.connected.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => return Err(e),
        }
        if shared.phase() == ABORT {
            bail!("aborted");
        }
    }
}

/// Echo and bulk: every connection keeps `pipeline` messages in flight until the run stops.
pub(super) async fn run_echo(
    worker: &Worker<'_>,
    conns: Vec<Conn>,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<String>> {
    let plan = worker.plan;
    let exchange = async {
        let mut running: FuturesUnordered<_> = conns
            .into_iter()
            .map(|mut conn| async move {
                conn.unsent = worker.grant(plan.pipeline as u64);
                poll_fn(|cx| conn.poll_exchange(cx, plan, Some(worker)))
                    .await
                    .with_context(|| format!("connection {}", conn.id))?;
                Ok::<_, anyhow::Error>(conn)
            })
            .collect();
        let mut drained = Vec::new();
        while let Some(result) = running.next().await {
            drained.push(result?);
        }
        Ok::<_, anyhow::Error>(drained)
    };
    let drained = tokio::select! {
        biased;
        result = exchange => result?,
        err = watch(worker.shared, plan.timeout, "the last echoes did not arrive") => return Err(err),
    };
    let _ = events.send(Event::Drained);
    Ok(close_all(plan, drained).await)
}

/// Fanout: the subscribers `conns` of this thread and, on thread 0, the publisher.
pub(super) async fn run_fanout(
    worker: &Worker<'_>,
    conns: Vec<Conn>,
    publisher: Option<Conn>,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<String>> {
    let plan = worker.plan;
    let hub = worker
        .shared
        .hub
        .as_ref()
        .ok_or_else(|| anyhow!("internal: fanout without a hub"))?;
    let tally = Tally::new(hub, conns.len() + usize::from(publisher.is_some()));
    let ctx = super::fanout::Ctx {
        worker,
        hub,
        tally: &tally,
        events,
    };
    let publisher = publisher.map(|conn| super::fanout::Publisher::new(conn, plan));
    let (mut conns, publisher) = super::fanout::run(&ctx, conns, publisher).await?;
    let _ = events.send(Event::Drained);
    conns.extend(publisher.map(super::fanout::Publisher::into_conn));
    Ok(close_all(plan, conns).await)
}

/// Closes every connection; an unclean close is a warning, not a failed measurement.
pub(super) async fn close_all(plan: &Plan, drained: Vec<Conn>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut closing: FuturesUnordered<_> = drained
        .into_iter()
        .map(|mut conn| async move {
            match tokio::time::timeout(plan.timeout, conn.close(plan)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("connection {}: close: {e:#}", conn.id)),
                Err(_) => Err(format!(
                    "connection {}: close: no reply within --timeout",
                    conn.id
                )),
            }
        })
        .collect();
    while let Some(result) = closing.next().await {
        if let Err(warning) = result {
            warnings.push(warning);
        }
    }
    warnings
}

/// Handshakes: each slot connects, upgrades, echoes once and closes, over and over.
pub(super) async fn run_handshakes(
    worker: &Worker<'_>,
    slots: Range<usize>,
) -> Result<Vec<String>> {
    let plan = worker.plan;
    let total_slots = slots.len().max(1);
    let all = async {
        let mut running: FuturesUnordered<_> = slots
            .map(|slot| async move {
                let mut rx = Some(Rx::new(plan.read_buf));
                let mut cycle = 0usize;
                while worker.grant(1) == 1 {
                    let started = Instant::now();
                    let mut buf = rx.take().unwrap_or_else(|| Rx::new(plan.read_buf));
                    buf.reset();
                    let mut conn = open(plan, slot, slot + cycle * total_slots, buf)
                        .await
                        .with_context(|| format!("slot {slot}"))?;
                    let rest = async {
                        conn.echo_once(plan).await?;
                        conn.close(plan).await
                    };
                    match tokio::time::timeout(plan.timeout, rest).await {
                        Ok(result) => result.with_context(|| format!("slot {slot}"))?,
                        Err(_) => bail!("slot {slot}: echo and close took longer than --timeout"),
                    }
                    if worker.measuring() {
                        worker.hist.borrow_mut().record(started.elapsed());
                    }
                    worker.count(1);
                    rx = Some(conn.rx);
                    cycle += 1;
                }
                Ok::<_, anyhow::Error>(())
            })
            .collect();
        while let Some(result) = running.next().await {
            result?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        biased;
        result = all => result?,
        err = watch(worker.shared, plan.timeout, "the last handshakes did not finish") => return Err(err),
    }
    Ok(Vec::new())
}

pub(super) fn load_thread(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    index: usize,
    ids: Range<usize>,
    budget: Option<u64>,
    go: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = events.send(Event::Ready(Err(anyhow!("cannot start a runtime: {e}"))));
            return;
        }
    };
    let counters = &shared.counters[index];
    let conns = match plan.mode {
        Mode::Handshakes => Vec::new(),
        _ => match runtime.block_on(open_all(&plan, &shared, counters, ids.clone())) {
            Ok(conns) => conns,
            Err(e) => {
                let _ = events.send(Event::Ready(Err(e)));
                return;
            }
        },
    };
    // fanout: thread 0 also publishes, on a connection of its own (id N, after the subscribers).
    let publisher = if plan.mode == Mode::Fanout && index == 0 {
        let id = plan.connections;
        match runtime.block_on(open(&plan, id, id, Rx::new(plan.read_buf))) {
            Ok(conn) => Some(conn),
            Err(e) => {
                let _ = events.send(Event::Ready(Err(e.context("the publisher"))));
                return;
            }
        }
    } else {
        None
    };
    let _ = events.send(Event::Ready(Ok(())));
    if go.recv().is_err() || shared.phase() == ABORT {
        runtime.block_on(async move { drop((conns, publisher)) });
        return;
    }
    let worker = Worker {
        plan: &plan,
        shared: &shared,
        counters,
        budget: Cell::new(budget),
        hist: RefCell::new(Histogram::new()),
    };
    let result = match plan.mode {
        Mode::Echo | Mode::Bulk => runtime.block_on(run_echo(&worker, conns, &events)),
        Mode::Fanout => runtime.block_on(run_fanout(&worker, conns, publisher, &events)),
        Mode::Handshakes => runtime.block_on(run_handshakes(&worker, ids)),
        Mode::Idle => {
            // The main thread has read the server's RSS; let the connections go.
            runtime.block_on(async move { drop(conns) });
            Ok(Vec::new())
        }
    };
    if matches!(plan.mode, Mode::Handshakes) {
        let _ = events.send(Event::Drained);
    }
    let _ = events.send(Event::Done(
        result.map(|warnings| (worker.hist.into_inner(), warnings)),
    ));
}
