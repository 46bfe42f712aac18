//! Where published messages go and where their history is kept: in this process (`memory`,
//! the default) or in Redis, shared by every node that uses the same Redis (docs/cluster.md).
//!
//! Both give every message of a topic a [`Position`]: an offset (1, 2, 3, ... without gaps)
//! within an epoch (a name for one incarnation of the topic's history, new whenever that
//! history is lost). A subscriber that saw offset N can ask for what followed; it gets all of
//! it, in order, or a plain "cannot", never part of it.

mod memory;
mod redis;
mod shard;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ferry::Message;
use ferry::pubsub::{HeldOverflow, LocalBroker, Position, Subscriber, SubscriptionId};

pub use self::memory::MemoryBroker;
pub use self::redis::{RedisBroker, Timeouts, redact};

/// How much history is kept, and how much of it one subscribe may replay.
#[derive(Clone, Debug)]
pub struct HistorySettings {
    /// Messages kept per topic (0: none; offsets are still given).
    pub size: usize,
    /// How long a topic's history outlives its last publish.
    pub ttl: Duration,
    /// Most messages one subscribe replays; more missed than this is "cannot recover".
    pub recovery_max: usize,
    /// The memory broker's bound on all topics' history together, in bytes.
    pub memory: usize,
    /// Topics with history settings of their own (`[[topics.rule]]`); the first rule whose
    /// pattern matches a topic decides, its unset fields taken from the defaults above.
    pub rules: Arc<[HistoryRule]>,
}

/// A `[[topics.rule]]`'s history settings.
#[derive(Clone, Debug)]
pub struct HistoryRule {
    pub pattern: super::auth::Pattern,
    pub size: Option<usize>,
    pub ttl: Option<Duration>,
}

impl HistorySettings {
    /// (messages kept, TTL) for `topic`.
    pub fn for_topic(&self, topic: &str) -> (usize, Duration) {
        match self.rules.iter().find(|r| r.pattern.matches(topic)) {
            Some(rule) => (rule.size.unwrap_or(self.size), rule.ttl.unwrap_or(self.ttl)),
            None => (self.size, self.ttl),
        }
    }
}

/// The broker cannot do what was asked now (Redis unreachable or too slow): the caller gets
/// `broker_unavailable`, never a silent loss.
#[derive(Clone, Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A published message's place, and (memory broker) how many subscribers on this node took it.
pub struct Published {
    pub position: Position,
    pub delivered: Option<usize>,
}

/// Why [`Broker::try_submit`] did not take a message.
pub enum TrySubmit {
    /// The broker's queue has no room: the message, to submit with [`Broker::submit`].
    Full(Message),
    Unavailable(Unavailable),
}

/// A publish under way ([`Broker::submit`]).
pub enum Publishing {
    Done(Published),
    Sent(Answer),
}

/// The answer to a publish sent to Redis: the message's place, or why it was not published.
/// A named future, so a connection can keep a window of them in a queue rather than one boxed
/// future each.
pub struct Answer(tokio::sync::oneshot::Receiver<Result<Position, Unavailable>>);

impl Future for Answer {
    type Output = Result<Published, Unavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(Pin::new(&mut self.0).poll(cx)) {
            Ok(Ok(position)) => Ok(Published {
                position,
                delivered: None,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Unavailable("the broker stopped".into())),
        })
    }
}

impl Publishing {
    /// The message's place, or why it was not published.
    pub async fn outcome(self) -> Result<Published, Unavailable> {
        match self {
            Publishing::Done(published) => Ok(published),
            Publishing::Sent(answer) => answer.await,
        }
    }
}

/// A topic's top position (the last message's, offset 0 before the first) and, when a
/// `since` was asked for, every message after it, or `None` when they cannot all be given.
pub struct History {
    pub top: Position,
    pub messages: Option<Vec<(Position, Message)>>,
}

/// A subscriber that joined held ([`Broker::join`]), with where its topic stood.
pub struct Joined {
    pub id: SubscriptionId,
    pub history: History,
}

/// The broker `ferry serve` runs with.
pub enum Broker {
    Memory(MemoryBroker),
    Redis(RedisBroker),
}

impl Broker {
    /// Where `URL`s point: `memory`, or one `redis://` / `rediss://` URL per shard.
    pub fn parse_urls(urls: &[String]) -> Result<BrokerKind, String> {
        match urls {
            [] => Ok(BrokerKind::Memory),
            [one] if one == "memory" => Ok(BrokerKind::Memory),
            many => {
                let mut shards = Vec::new();
                for url in many {
                    if url == "memory" {
                        return Err(
                            "broker.urls (--broker): `memory` cannot be mixed with Redis URLs; give either memory or redis:// URLs".into(),
                        );
                    }
                    shards.push(redis::ShardUrl::parse(url)?);
                }
                let mut seen = std::collections::HashSet::new();
                for shard in &shards {
                    if !seen.insert(shard.to_string()) {
                        return Err(format!(
                            "broker.urls (--broker): {shard} is given twice; each shard is a different Redis"
                        ));
                    }
                }
                Ok(BrokerKind::Redis(shards))
            }
        }
    }

    /// Node-local delivery: the subscribers of this process.
    pub fn hub(&self) -> &LocalBroker {
        match self {
            Broker::Memory(b) => b.hub(),
            Broker::Redis(b) => b.hub(),
        }
    }

    /// Numbers `message` in its topic and delivers it to every subscriber (on every node).
    pub async fn publish(&self, topic: &str, message: Message) -> Result<Published, Unavailable> {
        self.submit(topic, message).await?.outcome().await
    }

    /// Starts a publish: once this returns, the message's place in its topic is fixed after
    /// every message submitted before it, so a connection may submit several before their
    /// outcomes arrive (Redis then carries many in one round trip). Waits only for room in
    /// the broker's queue.
    pub async fn submit(&self, topic: &str, message: Message) -> Result<Publishing, Unavailable> {
        match self {
            Broker::Memory(b) => Ok(Publishing::Done(b.publish(topic, message))),
            Broker::Redis(b) => Ok(Publishing::Sent(Answer(b.submit(topic, message).await?))),
        }
    }

    /// Like [`submit`](Self::submit), without waiting: `Full` hands the message back when
    /// the broker's queue has no room. A connection's task that submits for every message
    /// calls this, and awaits `submit` (boxed) only then: `submit`'s future (456 bytes, most of
    /// it the wait for room in Redis's queue) would otherwise be part of the task for the
    /// connection's whole life.
    pub fn try_submit(&self, topic: &str, message: Message) -> Result<Publishing, TrySubmit> {
        match self {
            Broker::Memory(b) => Ok(Publishing::Done(b.publish(topic, message))),
            Broker::Redis(b) => Ok(Publishing::Sent(Answer(b.try_submit(topic, message)?))),
        }
    }

    /// The topic's top position and the messages after `since` (see [`History`]).
    pub async fn history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<History, Unavailable> {
        match self {
            Broker::Memory(b) => Ok(b.history(topic, since, limit)),
            Broker::Redis(b) => b.history(topic, since, limit).await,
        }
    }

    /// Subscribes without history: live messages from now on.
    pub async fn subscribe(
        &self,
        topic: &str,
        subscriber: Subscriber,
    ) -> Result<SubscriptionId, Unavailable> {
        if let Broker::Redis(b) = self {
            b.hold(topic).await?;
        }
        Ok(ferry::pubsub::Broker::subscribe(
            self.hub(),
            topic,
            subscriber,
        ))
    }

    /// Subscribes held: this node receives the topic, the subscriber's live messages wait, and
    /// the topic's position (with what followed `since`, up to `recovery_max`) is read. The
    /// caller sends the ack and the recovered messages, then [`Broker::release`].
    pub async fn join(
        &self,
        topic: &str,
        subscriber: Subscriber,
        since: Option<&Position>,
        recovery_max: usize,
        buffer_bytes: usize,
    ) -> Result<Joined, Unavailable> {
        if let Broker::Redis(b) = self {
            b.hold(topic).await?;
        }
        let id = self.hub().subscribe_held(topic, subscriber, buffer_bytes);
        match self.history(topic, since, recovery_max).await {
            Ok(history) => Ok(Joined { id, history }),
            Err(err) => {
                self.unsubscribe(topic, id);
                Err(err)
            }
        }
    }

    /// Lets a joined subscriber's held live messages after `top` go, and the rest follow.
    pub fn release(&self, topic: &str, id: SubscriptionId, top: u64) -> Result<(), HeldOverflow> {
        self.hub().release_held(topic, id, Some(top)).map(|_| ())
    }

    pub fn unsubscribe(&self, topic: &str, id: SubscriptionId) {
        ferry::pubsub::Broker::unsubscribe(self.hub(), topic, id);
        if let Broker::Redis(b) = self {
            b.let_go(topic);
        }
    }

    /// Whether the broker can serve now, and why not.
    pub fn readiness(&self) -> Result<(), String> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(b) => b.readiness(),
        }
    }

    /// Counters for /metrics.
    pub fn stats(&self) -> BrokerMetrics {
        match self {
            Broker::Memory(b) => {
                let (topics, bytes) = b.usage();
                BrokerMetrics {
                    kind: "memory",
                    history_topics: topics,
                    history_bytes: bytes,
                    ..BrokerMetrics::default()
                }
            }
            Broker::Redis(b) => b.stats(),
        }
    }
}

/// What `--broker` asked for.
#[derive(Debug)]
pub enum BrokerKind {
    Memory,
    Redis(Vec<redis::ShardUrl>),
}

/// Broker counters shown in /metrics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    pub kind: &'static str,
    /// Memory broker: topics with a history log, and the bytes they hold.
    pub history_topics: usize,
    pub history_bytes: usize,
    /// Redis: shards reachable now, out of all.
    pub shards_up: usize,
    pub shards: usize,
    /// Redis: commands or subscriptions that failed.
    pub errors: u64,
    /// Redis: pub/sub connections rebuilt (lost, or silent past the probe timeout).
    pub reconnects: u64,
    /// Redis: offsets this node missed on the pub/sub stream and read back from history.
    pub repaired: u64,
    /// Redis: messages that reached this node twice (skipped).
    pub duplicates: u64,
    /// Topics whose stream this node could not repair: their subscribers were closed (4010).
    pub lost: u64,
}

/// Whether the messages after `since` can all be given from a history whose top is `top` and
/// whose oldest kept offset is `first` (`top + 1` when empty), at most `limit` of them.
/// Returns the first offset to give.
pub fn recoverable(since: &Position, top: &Position, first: u64, limit: usize) -> Option<u64> {
    if since.epoch != top.epoch || since.offset > top.offset {
        return None;
    }
    let missed = top.offset - since.offset;
    if missed > limit as u64 {
        return None;
    }
    let from = since.offset + 1;
    (missed == 0 || from >= first).then_some(from)
}

/// A new epoch: 12 hex digits from the process's random hasher keys, the clock and a counter,
/// so two incarnations of a topic's history never share one.
pub fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    hasher.write_u64(nanos);
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff).into()
}

/// The close code a subscriber gets when its topic's stream broke on this node (history lost,
/// or a gap history could not fill): reconnect and subscribe with `since` to learn what can
/// be recovered. In the range RFC 6455 §7.4.2 leaves to applications.
pub const CLOSE_POSITION_LOST: u16 = 4010;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_all_or_nothing() {
        let top = Position::new(10, "e");
        let at = |o| Position::new(o, "e");
        assert_eq!(recoverable(&at(7), &top, 1, 100), Some(8));
        assert_eq!(
            recoverable(&at(10), &top, 11, 100),
            Some(11),
            "nothing missed"
        );
        assert_eq!(recoverable(&at(7), &top, 9, 100), None, "8 was trimmed");
        assert_eq!(recoverable(&at(7), &top, 8, 100), Some(8));
        assert_eq!(recoverable(&at(7), &top, 1, 2), None, "over the limit");
        assert_eq!(recoverable(&at(11), &top, 1, 100), None, "from the future");
        assert_eq!(recoverable(&Position::new(7, "x"), &top, 1, 100), None);
    }

    #[test]
    fn epochs_differ() {
        let a = new_epoch();
        let b = new_epoch();
        assert_ne!(a, b);
        assert_eq!(a.len(), 12);
    }

    #[test]
    fn urls() {
        assert!(matches!(Broker::parse_urls(&[]), Ok(BrokerKind::Memory)));
        assert!(matches!(
            Broker::parse_urls(&["memory".into()]),
            Ok(BrokerKind::Memory)
        ));
        let two = Broker::parse_urls(&["redis://127.0.0.1:1".into(), "redis://h:2/3".into()]);
        assert!(matches!(two, Ok(BrokerKind::Redis(s)) if s.len() == 2));
        for bad in [
            vec!["memory".to_owned(), "redis://h:1".to_owned()],
            vec!["redis://h:1".to_owned(), "redis://h:1".to_owned()],
            vec!["http://h:1".to_owned()],
        ] {
            let err = Broker::parse_urls(&bad).unwrap_err();
            assert!(err.contains("--broker"), "{err}");
        }
    }
}
