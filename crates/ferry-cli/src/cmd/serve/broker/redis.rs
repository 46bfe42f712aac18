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
    BrokerMetrics, CLOSE_POSITION_LOST, History, HistorySettings, Unavailable, new_epoch,
    recoverable, shard::shard_of,
};

/// Time allowed to open a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one command (a publish, a history read).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a subscribe waits for this node's subscription to the topic's channel.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the node publishes a probe to its own channel.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A pub/sub connection that delivered no probe for this long is rebuilt.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two attempts to reach a Redis that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Publishes waiting for a shard's pipeline; a publisher waits for room beyond it.
const PUBLISH_QUEUE: usize = 8192;
/// Most publishes sent to Redis in one pipeline.
const MAX_PIPELINE: usize = 512;
/// Channels named in one SUBSCRIBE when a connection is rebuilt.
const RESUBSCRIBE_BATCH: usize = 256;

/// Numbers, keeps and publishes one message. Its keys and channel share the `{topic}` hash
/// tag, so a Redis Cluster keeps them in one slot.
static PUBLISH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the log (a stream), KEYS[2] the meta hash (e: epoch, t: top offset)
-- ARGV: 1 epoch if the topic has none, 2 history size, 3 ttl ms, 4 channel, 5 kind, 6 data
if redis.call('hsetnx', KEYS[2], 'e', ARGV[1]) == 1 then
  -- A new epoch: a log left without its meta belongs to a lost one.
  redis.call('del', KEYS[1])
end
local epoch = redis.call('hget', KEYS[2], 'e')
local top = redis.call('hincrby', KEYS[2], 't', 1)
if tonumber(ARGV[2]) > 0 then
  redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], top .. '-0', 'k', ARGV[5], 'd', ARGV[6])
  redis.call('pexpire', KEYS[1], ARGV[3])
end
redis.call('pexpire', KEYS[2], ARGV[3])
redis.call('publish', ARGV[4], top .. ' ' .. epoch .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
return {top, epoch}
",
    )
});

/// Reads a topic's epoch and top offset, and up to `count` messages from an offset on,
/// atomically. A topic without an epoch gets one, so every answer names an epoch.
static HISTORY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the log, KEYS[2] the meta hash
-- ARGV: 1 epoch if the topic has none, 2 ttl ms, 3 first offset wanted, 4 count (0: none)
if redis.call('hsetnx', KEYS[2], 'e', ARGV[1]) == 1 then
  redis.call('pexpire', KEYS[2], ARGV[2])
  redis.call('del', KEYS[1])
end
local meta = redis.call('hmget', KEYS[2], 'e', 't')
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('xrange', KEYS[1], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])
end
return {tonumber(meta[2] or 0), meta[1], entries}
",
    )
});

fn log_key(topic: &str) -> String {
    format!("ferry:{{{topic}}}:log")
}

fn meta_key(topic: &str) -> String {
    format!("ferry:{{{topic}}}:meta")
}

fn channel(topic: &str) -> String {
    format!("ferry:{{{topic}}}:ch")
}

fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("ferry:{")?.strip_suffix("}:ch")
}

fn commands_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(MAX_BACKOFF)
}

/// One Redis of the broker: `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
#[derive(Clone, Debug)]
pub struct ShardUrl {
    url: String,
    /// The URL with its password replaced, for logs and errors.
    shown: String,
}

impl ShardUrl {
    pub fn parse(url: &str) -> Result<ShardUrl, String> {
        let shown = redact(url);
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "broker.urls (--broker) {shown:?}: not a broker; use memory, or redis://[user:password@]host:port[/db] (rediss:// for TLS)"
            ));
        }
        redis::Client::open(url).map_err(|e| {
            format!(
                "broker.urls (--broker) {shown}: {e}; use redis://[user:password@]host:port[/db]"
            )
        })?;
        Ok(ShardUrl {
            url: url.to_owned(),
            shown,
        })
    }
}

impl fmt::Display for ShardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `redis://user:secret@host` shown as `redis://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
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

/// A publish waiting for its shard's next pipeline.
struct PublishJob {
    topic: String,
    message: Message,
    reply: oneshot::Sender<Result<Position, Unavailable>>,
}

enum Order {
    Subscribe(String, oneshot::Sender<Result<(), Unavailable>>),
    Unsubscribe(String),
}

struct Shard {
    url: ShardUrl,
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
        let fresh = self.client.get_connection_manager_lazy(commands_config())?;
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
    ) -> Result<RedisBroker, String> {
        let node = new_epoch();
        let counters = Arc::new(Counters::default());
        let mut shards = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.url.as_str())
                .map_err(|e| format!("broker.urls (--broker) {url}: {e}"))?;
            let commands = client
                .get_connection_manager_lazy(commands_config())
                .map_err(|e| format!("broker.urls (--broker) {url}: {e}"))?;
            let (orders, orders_rx) = mpsc::unbounded_channel();
            let (publishes, publishes_rx) = mpsc::channel(PUBLISH_QUEUE);
            let shard = Arc::new(Shard {
                url: url.clone(),
                client,
                commands: Mutex::new(commands),
                up: AtomicBool::new(false),
                down_because: Mutex::new("not connected yet".into()),
                topics: Mutex::new(HashMap::new()),
                orders,
                publishes,
            });
            tokio::spawn(publisher(
                shard.clone(),
                settings.clone(),
                counters.clone(),
                publishes_rx,
            ));
            let listener = Listener {
                shard: shard.clone(),
                hub: hub.clone(),
                settings: settings.clone(),
                counters: counters.clone(),
                probe_channel: format!("ferry:probe:{node}"),
                positions: HashMap::new(),
                last_probe: Instant::now(),
            };
            tokio::spawn(listener.run(orders_rx));
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
    ) -> Result<oneshot::Receiver<Result<Position, Unavailable>>, Unavailable> {
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
        match shard.publishes.send(job).await {
            Ok(()) => Ok(answer),
            Err(_) => Err(shard.unavailable()),
        }
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
        read_history(&shard.commands(), &self.settings, topic, since, limit)
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
        let outcome = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, answer).await {
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

/// Sends a shard's publishes to Redis: whatever is queued goes in one pipeline of [`PUBLISH`]
/// calls, in queue order, and the next pipeline waits for its answers. Under load the
/// pipelines grow, so one round trip carries many messages; alone, a publish costs one.
async fn publisher(
    shard: Arc<Shard>,
    settings: HistorySettings,
    counters: Arc<Counters>,
    mut jobs: mpsc::Receiver<PublishJob>,
) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    while jobs.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let outcome = if shard.up.load(Ordering::Acquire) {
            publish_batch(&shard, &settings, &batch).await
        } else {
            Err(shard.unavailable())
        };
        match outcome {
            Ok(positions) => {
                for (job, position) in batch.drain(..).zip(positions) {
                    let _ = job.reply.send(Ok(position));
                }
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %shard.url, error = %err, messages = batch.len(), "publish failed; nothing acknowledged");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// One pipeline of publishes; when Redis lost the script (a restart), it is loaded and the
/// pipeline sent again: none of it ran, since every call was refused alike.
async fn publish_batch(
    shard: &Shard,
    settings: &HistorySettings,
    batch: &[PublishJob],
) -> Result<Vec<Position>, Unavailable> {
    let mut pipe = redis::pipe();
    for job in batch {
        let kind = if job.message.is_text() { "t" } else { "b" };
        let (size, ttl) = settings.for_topic(&job.topic);
        pipe.cmd("EVALSHA")
            .arg(PUBLISH.get_hash())
            .arg(2)
            .arg(log_key(&job.topic))
            .arg(meta_key(&job.topic))
            .arg(&*new_epoch())
            .arg(size)
            .arg(ttl.as_millis() as u64)
            .arg(channel(&job.topic))
            .arg(kind)
            .arg(job.message.as_bytes());
    }
    let failed =
        |err: &dyn fmt::Display| Unavailable(format!("Redis {}: publish failed: {err}", shard.url));
    for attempt in 0..2 {
        let mut commands = shard.commands();
        let call = pipe.query_async::<Vec<(u64, String)>>(&mut commands);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(answers)) if answers.len() == batch.len() => {
                return Ok(answers
                    .into_iter()
                    .map(|(offset, epoch)| Position::new(offset, epoch))
                    .collect());
            }
            Ok(Ok(answers)) => {
                return Err(failed(&format!(
                    "{} answers to {} publishes",
                    answers.len(),
                    batch.len()
                )));
            }
            Ok(Err(err))
                if attempt == 0
                    && err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let mut commands = shard.commands();
                let load = PUBLISH.load_async(&mut commands);
                match tokio::time::timeout(COMMAND_TIMEOUT, load).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(err)) => return Err(failed(&err)),
                    Err(_) => return Err(failed(&"loading the script timed out")),
                }
            }
            Ok(Err(err)) => return Err(failed(&err)),
            Err(_) => return Err(failed(&"timed out")),
        }
    }
    Err(failed(&"the script could not be loaded"))
}

/// What [`HISTORY`] answered, checked: the top, and the messages after `since` when they are
/// all there.
async fn read_history(
    commands: &ConnectionManager,
    settings: &HistorySettings,
    topic: &str,
    since: Option<&Position>,
    limit: usize,
) -> Result<History, String> {
    let (from, count) = match since {
        Some(since) => (since.offset.saturating_add(1), limit),
        None => (1, 0),
    };
    let mut invocation = HISTORY.prepare_invoke();
    invocation
        .key(log_key(topic))
        .key(meta_key(topic))
        .arg(&*new_epoch())
        .arg(settings.for_topic(topic).1.as_millis() as u64)
        .arg(from)
        .arg(count);
    let mut commands = commands.clone();
    let call = invocation.invoke_async::<Value>(&mut commands);
    let answer = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err("timed out".into()),
    };
    let (top, entries) = parse_history(answer).ok_or("an answer of an unexpected shape")?;
    let messages = since.and_then(|since| {
        let first = entries
            .first()
            .map_or(top.offset + 1, |(offset, _)| *offset);
        let from = recoverable(since, &top, first, limit)?;
        let wanted = (top.offset + 1 - from) as usize;
        let contiguous = entries.len() >= wanted
            && entries
                .iter()
                .take(wanted)
                .zip(from..)
                .all(|((offset, _), expected)| *offset == expected);
        contiguous.then(|| {
            entries
                .into_iter()
                .take(wanted)
                .map(|(offset, message)| (Position::new(offset, top.epoch.clone()), message))
                .collect()
        })
    });
    Ok(History { top, messages })
}

/// `{top, epoch, {{"N-0", {"k", kind, "d", data}}, ...}}`.
fn parse_history(answer: Value) -> Option<(Position, Vec<(u64, Message)>)> {
    let Value::Array(mut parts) = answer else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let entries = parts.pop()?;
    let epoch = match parts.pop()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text,
        _ => return None,
    };
    let top = match parts.pop()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut entry) = entry else {
            return None;
        };
        let fields = entry.pop()?;
        let id = match entry.pop()? {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
            Value::SimpleString(text) => text,
            _ => return None,
        };
        let offset: u64 = id.strip_suffix("-0")?.parse().ok()?;
        let Value::Array(fields) = fields else {
            return None;
        };
        let mut kind = None;
        let mut data = None;
        let mut fields = fields.into_iter();
        while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
            (fields.next(), fields.next())
        {
            match name.as_slice() {
                b"k" => kind = Some(value),
                b"d" => data = Some(value),
                _ => {}
            }
        }
        messages.push((offset, message_of(&kind?, data?)?));
    }
    Some((Position::new(top, epoch), messages))
}

fn message_of(kind: &[u8], data: Vec<u8>) -> Option<Message> {
    match kind {
        b"t" => String::from_utf8(data).ok().map(Message::text),
        b"b" => Some(Message::binary(Bytes::from(data))),
        _ => None,
    }
}

/// `OFFSET EPOCH KIND DATA`, as [`PUBLISH`] sends it.
fn parse_published(payload: &[u8]) -> Option<(Position, Message)> {
    let mut parts = payload.splitn(4, |&b| b == b' ');
    let offset: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let kind = parts.next()?;
    let data = parts.next()?.to_vec();
    Some((Position::new(offset, epoch), message_of(kind, data)?))
}

/// Why a pub/sub connection ended.
struct Lost(String);

impl<E: fmt::Display> From<E> for Lost {
    fn from(err: E) -> Self {
        Lost(err.to_string())
    }
}

/// The task that owns one shard's pub/sub connection and this node's place in its topics.
struct Listener {
    shard: Arc<Shard>,
    hub: Arc<LocalBroker>,
    settings: HistorySettings,
    counters: Arc<Counters>,
    probe_channel: String,
    /// The last position delivered on this node, per topic held.
    positions: HashMap<String, Position>,
    last_probe: Instant,
}

impl Listener {
    async fn run(mut self, mut orders: mpsc::UnboundedReceiver<Order>) {
        let mut backoff = Duration::from_millis(100);
        let mut episode_logged = false;
        loop {
            let started = Instant::now();
            let Lost(why) = self.serve(&mut orders).await;
            let was_up = self.shard.up.swap(false, Ordering::AcqRel);
            *self
                .shard
                .down_because
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = why.clone();
            for held in self.shard.topics().values_mut() {
                held.subscribed = false;
            }
            if was_up {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::error!(redis = %self.shard.url, reason = %why, "lost the Redis pub/sub connection; publishes and subscribes fail until it is back");
                episode_logged = true;
                backoff = Duration::from_millis(100);
            } else if !episode_logged {
                tracing::error!(redis = %self.shard.url, reason = %why, "cannot reach Redis; serving anyway, publishes and subscribes fail until it is reachable (/readyz answers 503)");
                episode_logged = true;
            } else {
                tracing::debug!(redis = %self.shard.url, reason = %why, "Redis still unreachable");
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            // Whoever asks meanwhile hears at once that Redis is down.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    order = orders.recv() => match order {
                        Some(order) => self.refuse(order),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn refuse(&mut self, order: Order) {
        match order {
            Order::Subscribe(_, reply) => {
                let _ = reply.send(Err(self.shard.unavailable()));
            }
            Order::Unsubscribe(topic) => {
                self.forget_if_unheld(&topic);
            }
        }
    }

    /// Drops `topic` if no holder came back meanwhile; true if it did.
    fn forget_if_unheld(&mut self, topic: &str) -> bool {
        let mut topics = self.shard.topics();
        if topics.get(topic).is_some_and(|h| h.holders == 0) {
            topics.remove(topic);
            self.positions.remove(topic);
            return true;
        }
        false
    }

    /// One pub/sub connection's life: connect, resubscribe and re-check every topic held,
    /// then deliver until the connection fails or goes silent.
    async fn serve(&mut self, orders: &mut mpsc::UnboundedReceiver<Order>) -> Lost {
        match self.serve_inner(orders).await {
            Ok(never) => match never {},
            Err(lost) => lost,
        }
    }

    async fn serve_inner(
        &mut self,
        orders: &mut mpsc::UnboundedReceiver<Order>,
    ) -> Result<std::convert::Infallible, Lost> {
        self.shard.renew_commands()?;
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.shard.client.get_async_pubsub())
            .await
            .map_err(|_| Lost("connect timed out".into()))??;
        let (mut sink, mut stream) = pubsub.split();
        within(sink.subscribe(&self.probe_channel)).await?;
        let held: Vec<String> = self
            .shard
            .topics()
            .iter()
            .filter(|(_, h)| h.holders > 0)
            .map(|(t, _)| t.clone())
            .collect();
        for batch in held.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|t| channel(t)).collect();
            within(sink.subscribe(&channels)).await?;
        }
        for topic in &held {
            self.resync(topic).await?;
        }
        self.last_probe = Instant::now();
        self.shard.up.store(true, Ordering::Release);
        tracing::info!(redis = %self.shard.url, topics = held.len(), "Redis pub/sub connected");
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(Lost("the connection closed".into()));
                    };
                    if message.get_channel_name() == self.probe_channel {
                        self.last_probe = Instant::now();
                        continue;
                    }
                    let Some(topic) = topic_of_channel(message.get_channel_name()) else {
                        continue;
                    };
                    let topic = topic.to_owned();
                    match parse_published(message.get_payload_bytes()) {
                        Some((position, message)) => self.sequence(&topic, position, message).await?,
                        None => tracing::warn!(topic = %topic, "a message on the topic's channel not in ferry's form; skipped"),
                    }
                }
                order = orders.recv() => match order {
                    Some(Order::Subscribe(topic, reply)) => {
                        let subscribed = self.shard.topics().get(&topic).is_some_and(|h| h.subscribed);
                        if !subscribed {
                            within(sink.subscribe(channel(&topic))).await?;
                            self.resync(&topic).await?;
                            if let Some(held) = self.shard.topics().get_mut(&topic) {
                                held.subscribed = true;
                            }
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Some(Order::Unsubscribe(topic)) => {
                        if self.forget_if_unheld(&topic) {
                            within(sink.unsubscribe(channel(&topic))).await?;
                        }
                    }
                    None => return Err(Lost("shutting down".into())),
                },
                _ = probe.tick() => {
                    if self.last_probe.elapsed() > PROBE_TIMEOUT {
                        return Err(Lost(format!(
                            "no probe came back on the pub/sub connection for {} s",
                            PROBE_TIMEOUT.as_secs()
                        )));
                    }
                    let mut commands = self.shard.commands();
                    let probe_channel = self.probe_channel.clone();
                    tokio::spawn(async move {
                        let mut publish = redis::cmd("PUBLISH");
                        publish.arg(probe_channel).arg("probe");
                        let _ = tokio::time::timeout(COMMAND_TIMEOUT, publish.exec_async(&mut commands)).await;
                    });
                }
            }
        }
    }

    /// Brings `topic`'s position on this node up to the history's top: what this node missed
    /// is delivered from history; what it cannot get means its subscribers lost their place.
    async fn resync(&mut self, topic: &str) -> Result<(), Lost> {
        let known = self.positions.get(topic).cloned();
        let limit = self
            .settings
            .for_topic(topic)
            .0
            .max(self.settings.recovery_max);
        let history = read_history(
            &self.shard.commands(),
            &self.settings,
            topic,
            known.as_ref(),
            limit,
        )
        .await
        .map_err(Lost)?;
        if let Some(known) = known {
            match history.messages {
                Some(missed) => {
                    self.counters
                        .repaired
                        .fetch_add(missed.len() as u64, Ordering::Relaxed);
                    for (position, message) in missed {
                        self.hub.publish_at(topic, message, Some(&position));
                    }
                }
                None => self.lose(topic, &known, &history.top),
            }
        }
        self.positions.insert(topic.to_owned(), history.top);
        Ok(())
    }

    /// Delivers a message from the topic's channel in offset order: skips what was already
    /// delivered, fills a gap from history first.
    async fn sequence(
        &mut self,
        topic: &str,
        position: Position,
        message: Message,
    ) -> Result<(), Lost> {
        let Some(known) = self.positions.get(topic).cloned() else {
            // Not held (any more): nobody here wants it.
            return Ok(());
        };
        if position.epoch == known.epoch && position.offset <= known.offset {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if position.epoch == known.epoch && position.offset > known.offset + 1 {
            let missing = (position.offset - known.offset - 1) as usize;
            match read_history(
                &self.shard.commands(),
                &self.settings,
                topic,
                Some(&known),
                missing.max(self.settings.recovery_max),
            )
            .await
            {
                Ok(History {
                    messages: Some(missed),
                    ..
                }) => {
                    tracing::info!(
                        topic,
                        missing,
                        "filled a gap in the topic's stream from its history"
                    );
                    for (p, m) in missed
                        .into_iter()
                        .filter(|(p, _)| p.offset < position.offset)
                    {
                        self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                        self.hub.publish_at(topic, m, Some(&p));
                    }
                }
                Ok(History { top, .. }) => self.lose(topic, &known, &top),
                Err(err) => {
                    // Cannot tell what was missed: rebuild the connection and re-check.
                    return Err(Lost(format!("reading history to fill a gap: {err}")));
                }
            }
        } else if position.epoch != known.epoch {
            self.lose(topic, &known, &position);
        }
        self.hub.publish_at(topic, message, Some(&position));
        self.positions.insert(topic.to_owned(), position);
        Ok(())
    }

    /// This node cannot give `topic`'s subscribers what followed `known`: close them so their
    /// clients come back with `since` and learn what can be recovered.
    fn lose(&self, topic: &str, known: &Position, now: &Position) {
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
        let closed = self.hub.close_subscribers(
            topic,
            CloseCode::from(CLOSE_POSITION_LOST),
            "topic position lost; subscribe again with since",
        );
        tracing::warn!(
            topic,
            known_epoch = %known.epoch,
            known_offset = known.offset,
            epoch = %now.epoch,
            offset = now.offset,
            closed,
            "the topic's history cannot fill what this node missed; its subscribers were closed (4010)"
        );
    }
}

/// A subscribe or unsubscribe on the pub/sub connection, within the command timeout.
async fn within<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Lost> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(result) => result.map_err(Lost::from),
        Err(_) => Err(Lost("a pub/sub command timed out".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        let url = ShardUrl::parse("redis://app:s3cret@127.0.0.1:6379/2").unwrap();
        assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/2");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let err = ShardUrl::parse("http://u:pw@h:1").unwrap_err();
        assert!(err.contains("--broker") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn published_payloads_and_channels() {
        let (p, m) = parse_published(b"42 abc t hello world").unwrap();
        assert_eq!((p.offset, &*p.epoch), (42, "abc"));
        assert_eq!(m.as_text(), Some("hello world"));
        let (_, m) = parse_published(b"1 e b \x00 \xff").unwrap();
        assert_eq!(m.as_bytes(), b"\x00 \xff");
        assert!(
            parse_published(b"1 e t \xff").is_none(),
            "text must be UTF-8"
        );
        assert!(parse_published(b"x e t a").is_none());
        assert_eq!(
            topic_of_channel(&channel("chat.room-1")),
            Some("chat.room-1")
        );
        assert_eq!(topic_of_channel("ferry:probe:x"), None);
    }
}
