//! The Redis broker: topics shared by every `ferry serve` node that uses the same Redis.
//!
//! Per topic Redis holds a stream of its last `history.size` messages (`ferry:{T}:log`, entry
//! ids are the offsets), a hash with its epoch and top offset (`ferry:{T}:meta`), and a pub/sub
//! channel (`ferry:{T}:ch`). One Lua script per publish numbers the message, appends it and
//! publishes it, atomically: every node sees a topic's messages in offset order, and Redis does
//! the same work per publish however many subscribers there are. A node subscribes to a
//! topic's channel once, however many of its clients do.
//!
//! Each shard has one task that owns the pub/sub connection and checks every message's offset
//! against the last one delivered on this node: a duplicate is skipped, a gap is filled from
//! the history before anything later is delivered, and a gap the history cannot fill (or a new
//! epoch: the history was lost) closes that topic's subscribers with 4010 so their clients
//! recover by subscribing again with `since`. A probe published to this node's own channel
//! every second finds a pub/sub connection that went silent; it is then rebuilt, and every
//! topic re-checked against its history.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry::pubsub::{LocalBroker, Position};
use ferry::{CloseCode, Message};
use futures_util::StreamExt;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::{
    BrokerMetrics, CLOSE_POSITION_LOST, History, HistorySettings, TrySubmit, Unavailable,
    new_epoch, recoverable, shard::shard_of,
};

/// How long the broker waits on Redis, and how often it checks that pub/sub still delivers
/// (`--broker-timeout`, `--broker-probe`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To open a connection, and for one command (a publish pipeline, a history read).
    pub command: Duration,
    /// How often the node publishes a probe to its own channel; a pub/sub connection that
    /// delivered none for three of these is rebuilt.
    pub probe: Duration,
}

impl Timeouts {
    fn silence(&self) -> Duration {
        self.probe * 3
    }

    /// A subscribe waits for this node's subscription to the topic's channel.
    fn subscribe(&self) -> Duration {
        self.command + Duration::from_secs(1)
    }
}
/// Longest wait between two attempts to reach a Redis that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Publishes waiting for a shard's pipeline; a publisher waits for room beyond it.
const PUBLISH_QUEUE: usize = 8192;
/// Most publishes sent to Redis in one pipeline.
const MAX_PIPELINE: usize = 512;
/// Channels named in one SUBSCRIBE when a connection is rebuilt.
const RESUBSCRIBE_BATCH: usize = 256;

mod listener;
mod publisher;
mod url;
mod wire;

use self::listener::Listener;
use self::publisher::{PublishJob, publisher};
pub use self::url::{ShardUrl, redact};
use self::wire::read_history;

fn commands_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.command))
        .set_response_timeout(Some(timeouts.command))
        .set_number_of_retries(1)
        .set_max_delay(MAX_BACKOFF)
}

#[derive(Default)]
struct Counters {
    errors: AtomicU64,
    reconnects: AtomicU64,
    repaired: AtomicU64,
    duplicates: AtomicU64,
    lost: AtomicU64,
}

/// A topic this node receives from a shard.
struct Held {
    /// Subscriptions on this node that need it.
    holders: usize,
    /// Whether the pub/sub connection is subscribed to its channel and its position is known.
    subscribed: bool,
}

enum Order {
    Subscribe(String, oneshot::Sender<Result<(), Unavailable>>),
    Unsubscribe(String),
}

struct Shard {
    url: ShardUrl,
    timeouts: Timeouts,
    client: redis::Client,
    /// Publishes and history reads; replaced whenever the pub/sub connection is rebuilt, since
    /// a connection gone silent returns no error to reconnect on, only timeouts.
    commands: Mutex<ConnectionManager>,
    up: AtomicBool,
    down_because: Mutex<String>,
    topics: Mutex<HashMap<String, Held>>,
    orders: mpsc::UnboundedSender<Order>,
    publishes: mpsc::Sender<PublishJob>,
}

impl Shard {
    fn commands(&self) -> ConnectionManager {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn renew_commands(&self) -> Result<(), redis::RedisError> {
        let fresh = self
            .client
            .get_connection_manager_lazy(commands_config(self.timeouts))?;
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unavailable(&self) -> Unavailable {
        let why = self
            .down_because
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Unavailable(format!("Redis {} is unavailable: {why}", self.url))
    }
}

/// Waits for one of a shard's tasks, which run as long as the node. One that panicked (a bug)
/// would leave the shard waiting for Redis forever, saying only "not connected yet": mark it
/// down with the reason instead, for `/readyz`, every refused publish and the log.
async fn watch(shard: Arc<Shard>, task: &'static str, running: tokio::task::JoinHandle<()>) {
    let Err(err) = running.await else {
        return;
    };
    if !err.is_panic() {
        // Cancelled: the runtime is shutting down.
        return;
    }
    let why = format!("ferry's Redis {task} task failed (a bug; the log has its panic)");
    shard.up.store(false, Ordering::Release);
    *shard.down_because.lock().unwrap_or_else(|e| e.into_inner()) = why.clone();
    tracing::error!(redis = %shard.url, task, "{why}; this shard stays unavailable until restart");
}

/// The answer to a submitted publish: the message's position, or why it was not published.
type PositionReceiver = oneshot::Receiver<Result<Position, Unavailable>>;

/// Topics, history and fan-out on one or more Redis servers (see the module docs).
pub struct RedisBroker {
    hub: Arc<LocalBroker>,
    settings: HistorySettings,
    shards: Vec<Arc<Shard>>,
    counters: Arc<Counters>,
}

impl RedisBroker {
    /// Starts one task per shard, which keeps trying to reach its Redis (and logs why it
    /// cannot); the node serves meanwhile, refusing what needs the broker. Must run inside a
    /// tokio runtime.
    pub fn start(
        urls: &[ShardUrl],
        hub: Arc<LocalBroker>,
        settings: HistorySettings,
        timeouts: Timeouts,
    ) -> Result<RedisBroker, String> {
        let node = new_epoch();
        let counters = Arc::new(Counters::default());
        let mut shards = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.url.as_str())
                .map_err(|e| format!("broker.urls (--broker) {url}: {e}"))?;
            let commands = client
                .get_connection_manager_lazy(commands_config(timeouts))
                .map_err(|e| format!("broker.urls (--broker) {url}: {e}"))?;
            let (orders, orders_rx) = mpsc::unbounded_channel();
            let (publishes, publishes_rx) = mpsc::channel(PUBLISH_QUEUE);
            let shard = Arc::new(Shard {
                url: url.clone(),
                timeouts,
                client,
                commands: Mutex::new(commands),
                up: AtomicBool::new(false),
                down_because: Mutex::new("not connected yet".into()),
                topics: Mutex::new(HashMap::new()),
                orders,
                publishes,
            });
            let publishing = tokio::spawn(publisher(
                shard.clone(),
                settings.clone(),
                counters.clone(),
                publishes_rx,
            ));
            tokio::spawn(watch(shard.clone(), "publisher", publishing));
            let listener = Listener {
                shard: shard.clone(),
                hub: hub.clone(),
                settings: settings.clone(),
                counters: counters.clone(),
                probe_channel: format!("ferry:probe:{node}"),
                positions: HashMap::new(),
                last_probe: Instant::now(),
            };
            let listening = tokio::spawn(listener.run(orders_rx));
            tokio::spawn(watch(shard.clone(), "pub/sub listener", listening));
            shards.push(shard);
        }
        Ok(RedisBroker {
            hub,
            settings,
            shards,
            counters,
        })
    }

    pub fn hub(&self) -> &LocalBroker {
        &self.hub
    }

    fn shard(&self, topic: &str) -> &Arc<Shard> {
        &self.shards[shard_of(topic, self.shards.len())]
    }

    fn failed(&self, shard: &Shard, what: &str, err: impl fmt::Display) -> Unavailable {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(redis = %shard.url, error = %err, "{what} failed");
        Unavailable(format!("Redis {}: {what} failed: {err}", shard.url))
    }

    /// Queues `message` for its shard's next pipeline of publishes, waiting for room in the
    /// queue. Messages submitted one after another reach Redis in that order; the returned
    /// receiver gets the message's position (or why it was not published).
    pub async fn submit(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<PositionReceiver, Unavailable> {
        let (shard, job, answer) = self.publish_job(topic, message)?;
        match shard.publishes.send(job).await {
            Ok(()) => Ok(answer),
            Err(_) => Err(shard.unavailable()),
        }
    }

    /// Like [`submit`](Self::submit), without waiting: `Full` hands the message back when the
    /// shard's publish queue has no room, for the caller to wait with `submit`.
    pub fn try_submit(&self, topic: &str, message: Message) -> Result<PositionReceiver, TrySubmit> {
        let (shard, job, answer) = self
            .publish_job(topic, message)
            .map_err(TrySubmit::Unavailable)?;
        match shard.publishes.try_send(job) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(job)) => Err(TrySubmit::Full(job.message)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(TrySubmit::Unavailable(shard.unavailable()))
            }
        }
    }

    /// The shard that publishes to `topic`, if it is up, and the job for it with the receiver
    /// of its answer.
    fn publish_job(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<(&Arc<Shard>, PublishJob, PositionReceiver), Unavailable> {
        let shard = self.shard(topic);
        if !shard.up.load(Ordering::Acquire) {
            return Err(shard.unavailable());
        }
        let (reply, answer) = oneshot::channel();
        let job = PublishJob {
            topic: topic.to_owned(),
            message,
            reply,
        };
        Ok((shard, job, answer))
    }

    pub async fn history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<History, Unavailable> {
        let shard = self.shard(topic);
        if !shard.up.load(Ordering::Acquire) {
            return Err(shard.unavailable());
        }
        read_history(
            &shard.commands(),
            &self.settings,
            shard.timeouts.command,
            topic,
            since,
            limit,
        )
        .await
        .map_err(|err| self.failed(shard, "history read", err))
    }

    /// Makes this node receive `topic` (subscribing its channel on the first holder) and
    /// waits until it does.
    pub async fn hold(&self, topic: &str) -> Result<(), Unavailable> {
        let shard = self.shard(topic);
        if !shard.up.load(Ordering::Acquire) {
            return Err(shard.unavailable());
        }
        {
            let mut topics = shard.topics();
            let held = topics.entry(topic.to_owned()).or_insert(Held {
                holders: 0,
                subscribed: false,
            });
            held.holders += 1;
            if held.subscribed {
                return Ok(());
            }
        }
        let (reply, answer) = oneshot::channel();
        let sent = shard
            .orders
            .send(Order::Subscribe(topic.to_owned(), reply))
            .is_ok();
        let outcome = match tokio::time::timeout(shard.timeouts.subscribe(), answer).await {
            Ok(Ok(outcome)) if sent => outcome,
            Ok(_) => Err(shard.unavailable()),
            Err(_) => Err(self.failed(shard, "subscribe", "timed out")),
        };
        if outcome.is_err() {
            self.let_go(topic);
        }
        outcome
    }

    /// One holder of `topic` is gone; the last one unsubscribes the node.
    pub fn let_go(&self, topic: &str) {
        let shard = self.shard(topic);
        let mut topics = shard.topics();
        if let Some(held) = topics.get_mut(topic) {
            held.holders = held.holders.saturating_sub(1);
            if held.holders == 0 {
                let _ = shard.orders.send(Order::Unsubscribe(topic.to_owned()));
            }
        }
    }

    pub fn readiness(&self) -> Result<(), String> {
        let down: Vec<String> = self
            .shards
            .iter()
            .filter(|s| !s.up.load(Ordering::Acquire))
            .map(|s| s.unavailable().0)
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(down.join("; "))
        }
    }

    pub fn stats(&self) -> BrokerMetrics {
        let c = &self.counters;
        BrokerMetrics {
            kind: "redis",
            shards: self.shards.len(),
            shards_up: self
                .shards
                .iter()
                .filter(|s| s.up.load(Ordering::Acquire))
                .count(),
            errors: c.errors.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            repaired: c.repaired.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            ..BrokerMetrics::default()
        }
    }
}
