//! Pub/sub: named topics whose messages go to every subscriber.
//!
//! [`Broker`] is the seam: [`LocalBroker`] delivers within this process; a broker that spans
//! machines (Redis) implements the same trait.
//!
//! - **Encoded once.** A published message becomes one [`PreparedMessage`]: it is framed (and,
//!   with permessage-deflate, compressed) once per group of subscribers whose connections encode
//!   identically ([`Sender::frame_encoding`]), and every subscriber of the group shares those
//!   bytes. Only connections with compression context takeover compress for themselves;
//!   [`BrokerStats::per_socket_compressions`] counts those deliveries.
//! - **A slow subscriber never slows the others.** Delivery is a non-blocking
//!   [`Sender::try_send_prepared`] into each subscriber's own byte-budgeted queue; what happens
//!   when that queue is full is the [`SlowSubscriber`] policy, and every message not delivered
//!   is counted per topic.
//! - **Counters only grow.** A topic's totals outlive its last subscriber; the broker forgets
//!   empty topics only beyond [`BrokerConfig::retained_topics`], and its broker-wide totals
//!   ([`LocalBroker::totals`]) never go back.
//! - **Positions and joining.** A message may carry its [`Position`] in the topic's history
//!   ([`LocalBroker::publish_at`]); envelopes see it. A subscriber that must first receive
//!   messages from history joins *held* ([`LocalBroker::subscribe_held`]): live messages wait in
//!   a bounded buffer until [`LocalBroker::release_held`] sends those past the history it was
//!   given, so nothing is delivered twice or out of order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ferry_proto::{CloseCode, Message, PreparedMessage};

use crate::error::TrySendError;
use crate::socket::{Overflow, Sender};

/// Where a message stands in its topic's history: the topic's `epoch` (which changes whenever
/// the history is lost, so offsets of two epochs are never compared) and the message's
/// `offset` in it (1, 2, 3, ... with no gaps within an epoch).
///
/// ```
/// use ferry::pubsub::Position;
/// let p = Position::new(41, "e1");
/// assert_eq!((p.offset, &*p.epoch), (41, "e1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The message's offset in its epoch, from 1.
    pub offset: u64,
    /// The history's incarnation.
    pub epoch: Arc<str>,
}

impl Position {
    /// A position from its parts.
    pub fn new(offset: u64, epoch: impl Into<Arc<str>>) -> Self {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }
}

/// A held subscriber's buffer overflowed before [`LocalBroker::release_held`]: it missed live
/// messages and must not be released as if it had not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldOverflow;

impl std::fmt::Display for HeldOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("live messages overflowed the buffer of a joining subscriber")
    }
}

impl std::error::Error for HeldOverflow {}

/// Identifies one subscription, for [`Broker::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// Delivers published messages to a topic's subscribers.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `message` to every subscriber of `topic`; returns how many took it.
    fn publish(&self, topic: &str, message: Message) -> usize;
    /// Adds a subscriber to `topic`.
    fn subscribe(&self, topic: &str, subscriber: Subscriber) -> SubscriptionId;
    /// Removes a subscription; unknown ids are ignored.
    fn unsubscribe(&self, topic: &str, id: SubscriptionId);
}

/// Wraps a topic's messages for subscribers that take many topics on one connection (a JSON
/// envelope naming the topic, say). Subscribers sharing one `Arc<dyn Envelope>` share each
/// wrapped message's encoding too.
pub trait Envelope: Send + Sync + 'static {
    /// The message a subscriber of `topic` receives for `message`, which stands at `position`
    /// in the topic's history when the broker keeps one.
    fn wrap(&self, topic: &str, position: Option<&Position>, message: &Message) -> Message;
}

/// A subscription's connection, and how it wants the messages.
#[derive(Clone)]
pub struct Subscriber {
    sender: Sender,
    envelope: Option<Arc<dyn Envelope>>,
}

impl Subscriber {
    /// Receives each message as it was published.
    pub fn new(sender: Sender) -> Self {
        Subscriber {
            sender,
            envelope: None,
        }
    }

    /// Receives each message wrapped by `envelope`.
    pub fn with_envelope(sender: Sender, envelope: Arc<dyn Envelope>) -> Self {
        Subscriber {
            sender,
            envelope: Some(envelope),
        }
    }
}

impl From<Sender> for Subscriber {
    fn from(sender: Sender) -> Self {
        Subscriber::new(sender)
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("enveloped", &self.envelope.is_some())
            .finish_non_exhaustive()
    }
}

/// What to do with a subscriber whose send queue is full (`Limits::send_queue_bytes`).
/// Control frames never wait in that queue, so neither policy ever drops one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowSubscriber {
    /// Close it with 1013 (try again later): it reconnects when it can keep up, and every
    /// message it did get was whole and in order. 1013 rather than 1008: nothing the client
    /// did violated a policy; the server is shedding load.
    #[default]
    Close,
    /// Keep it, and drop the oldest published messages in its queue that have not started on
    /// the wire yet, until the new one fits: it sees the latest messages, with gaps. Messages
    /// the server queued otherwise (replies, acks) are never dropped; when those alone fill the
    /// queue, the new message is the one dropped.
    DropOldest,
}

/// Settings of a [`LocalBroker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// What happens to a subscriber that cannot keep up.
    pub slow_subscriber: SlowSubscriber,
    /// Topics without subscribers whose counters are kept (1,024 by default). Beyond that the
    /// longest-empty topic is forgotten: topic names come from clients, so keeping all of them
    /// would let clients grow the server's memory without bound. Its counts stay in
    /// [`LocalBroker::totals`].
    pub retained_topics: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            slow_subscriber: SlowSubscriber::Close,
            retained_topics: 1024,
        }
    }
}

/// Counters of one topic. They only grow, also across times the topic has no subscribers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Current subscribers.
    pub subscribers: usize,
    /// Messages published.
    pub published: u64,
    /// Messages queued for a subscriber (one per subscriber per message). Under
    /// [`SlowSubscriber::DropOldest`] a queued message may still be dropped later, and is then
    /// counted in `dropped` as well.
    pub delivered: u64,
    /// Messages a subscriber did not get because it was too slow: refused, or dropped from
    /// its queue under [`SlowSubscriber::DropOldest`].
    pub dropped: u64,
    /// Distinct encoding groups among the current subscribers (plain, each set of deflate
    /// settings): a published message is encoded once per group.
    pub encoding_groups: usize,
    /// Current subscribers in no group, which encode (and compress) each message themselves.
    pub self_encoding: usize,
}

/// Broker-wide counters, never reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages published, to topics with or without subscribers.
    pub published: u64,
    /// Messages queued for subscribers (see [`TopicStats::delivered`]).
    pub delivered: u64,
    /// Messages not delivered to slow subscribers.
    pub dropped: u64,
    /// Frames encoded for a group of subscribers and shared by all of it.
    pub shared_encodings: u64,
    /// Of those, the ones compressed: one compression served the whole group.
    pub shared_compressions: u64,
    /// Deliveries to connections that compress each message themselves (compression with
    /// context takeover): the per-socket compressions that were still needed.
    pub per_socket_compressions: u64,
    /// Empty topics forgotten beyond [`BrokerConfig::retained_topics`].
    pub topics_forgotten: u64,
}

/// One subscription of a topic.
struct Member {
    id: SubscriptionId,
    subscriber: Subscriber,
    /// Set while the subscriber is held (joining): live messages wait here.
    held: Option<Box<std::sync::Mutex<Held>>>,
}

/// Live messages kept for a held subscriber, up to a byte budget.
struct Held {
    messages: Vec<(Option<Position>, Message)>,
    bytes: usize,
    limit: usize,
    overflowed: bool,
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<Member>,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Topics {
    by_name: HashMap<String, Topic>,
    /// Topics that became empty, longest-empty first (some may have subscribers again).
    emptied: VecDeque<String>,
}

#[derive(Default)]
struct Totals {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    shared_encodings: AtomicU64,
    shared_compressions: AtomicU64,
    per_socket_compressions: AtomicU64,
    topics_forgotten: AtomicU64,
}

/// An in-process broker.
///
/// ```
/// use ferry::pubsub::{Broker, LocalBroker};
/// let broker = LocalBroker::default();
/// assert_eq!(broker.publish("news", ferry::Message::text("nobody listens")), 0);
/// assert_eq!(broker.totals().published, 1);
/// ```
#[derive(Default)]
pub struct LocalBroker {
    topics: RwLock<Topics>,
    next_id: AtomicU64,
    config: BrokerConfig,
    totals: Totals,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("config", &self.config)
            .field("topics", &self.stats().len())
            .finish()
    }
}

impl LocalBroker {
    /// A broker with a slow-subscriber policy and the other settings' defaults.
    pub fn new(policy: SlowSubscriber) -> Self {
        LocalBroker::with_config(BrokerConfig {
            slow_subscriber: policy,
            ..BrokerConfig::default()
        })
    }

    /// A broker with these settings.
    pub fn with_config(config: BrokerConfig) -> Self {
        LocalBroker {
            config,
            ..LocalBroker::default()
        }
    }

    /// Counters of every topic known: those with subscribers and the retained empty ones.
    pub fn stats(&self) -> Vec<TopicStats> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<TopicStats> = topics
            .by_name
            .iter()
            .map(|(name, t)| {
                let mut groups = Vec::new();
                let mut self_encoding = 0;
                for member in &t.subscribers {
                    match member.subscriber.sender.frame_encoding() {
                        Some(encoding) if !groups.contains(&encoding) => groups.push(encoding),
                        Some(_) => {}
                        None => self_encoding += 1,
                    }
                }
                TopicStats {
                    name: name.clone(),
                    subscribers: t.subscribers.len(),
                    published: t.published.load(Ordering::Relaxed),
                    delivered: t.delivered.load(Ordering::Relaxed),
                    dropped: t.dropped.load(Ordering::Relaxed),
                    encoding_groups: groups.len(),
                    self_encoding,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Broker-wide counters.
    pub fn totals(&self) -> BrokerStats {
        let t = &self.totals;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerStats {
            published: load(&t.published),
            delivered: load(&t.delivered),
            dropped: load(&t.dropped),
            shared_encodings: load(&t.shared_encodings),
            shared_compressions: load(&t.shared_compressions),
            per_socket_compressions: load(&t.per_socket_compressions),
            topics_forgotten: load(&t.topics_forgotten),
        }
    }
}

impl LocalBroker {
    /// Publishes `message`, which stands at `position` in its topic's history, to every
    /// subscriber of `topic`; returns how many took it. Enveloped subscribers see the
    /// position. The caller keeps the order: messages of one topic must be published here in
    /// offset order (a history-keeping broker does it under its topic's lock).
    pub fn publish_at(&self, name: &str, message: Message, position: Option<&Position>) -> usize {
        self.totals.published.fetch_add(1, Ordering::Relaxed);
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = topics.by_name.get(name) else {
            return 0;
        };
        topic.published.fetch_add(1, Ordering::Relaxed);
        let mut plain = PreparedMessage::new(message);
        // One wrapped message per envelope, itself encoded once per group.
        let mut wrapped: Vec<(Arc<dyn Envelope>, PreparedMessage)> = Vec::new();
        let mut counts = Counts::default();
        for member in &topic.subscribers {
            if let Some(held) = &member.held {
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                // Kept for it, to go out after its history: delivered, as far as a publisher
                // can tell.
                if held.keep(position, plain.message()) {
                    counts.delivered += 1;
                }
                continue;
            }
            let subscriber = &member.subscriber;
            let prepared = match &subscriber.envelope {
                None => &mut plain,
                Some(envelope) => {
                    let index = match wrapped.iter().position(|(e, _)| Arc::ptr_eq(e, envelope)) {
                        Some(index) => index,
                        None => {
                            let message = envelope.wrap(name, position, plain.message());
                            wrapped.push((envelope.clone(), PreparedMessage::new(message)));
                            wrapped.len() - 1
                        }
                    };
                    match wrapped.get_mut(index) {
                        Some((_, prepared)) => prepared,
                        None => continue,
                    }
                }
            };
            self.deliver(&subscriber.sender, prepared, &mut counts);
        }
        let (encodings, compressions) = std::iter::once(&plain)
            .chain(wrapped.iter().map(|(_, p)| p))
            .fold((0, 0), |(e, c), p| {
                (e + p.encodings() as u64, c + p.compressions() as u64)
            });
        self.totals
            .shared_encodings
            .fetch_add(encodings, Ordering::Relaxed);
        self.totals
            .shared_compressions
            .fetch_add(compressions, Ordering::Relaxed);
        self.count(topic, &counts);
        counts.delivered as usize
    }

    /// Queues one prepared message for one subscriber under the slow-subscriber policy.
    fn deliver(&self, sender: &Sender, prepared: &mut PreparedMessage, counts: &mut Counts) {
        let overflow = match self.config.slow_subscriber {
            SlowSubscriber::Close => Overflow::Refuse,
            SlowSubscriber::DropOldest => Overflow::DropOldest,
        };
        let encoding = sender.frame_encoding();
        if encoding.is_none() && sender.deflate().is_some() {
            counts.per_socket += 1;
        }
        match sender.try_send_prepared(prepared.frame(encoding), overflow) {
            Ok(evicted) => {
                counts.delivered += 1;
                counts.dropped += evicted as u64;
            }
            Err(TrySendError::Full(_)) => {
                counts.dropped += 1;
                if self.config.slow_subscriber == SlowSubscriber::Close {
                    sender.start_close(CloseCode::TRY_AGAIN_LATER, "subscriber too slow");
                }
            }
            // Closing already; its handler unsubscribes it.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn count(&self, topic: &Topic, counts: &Counts) {
        let t = &self.totals;
        t.delivered.fetch_add(counts.delivered, Ordering::Relaxed);
        t.dropped.fetch_add(counts.dropped, Ordering::Relaxed);
        t.per_socket_compressions
            .fetch_add(counts.per_socket, Ordering::Relaxed);
        topic
            .delivered
            .fetch_add(counts.delivered, Ordering::Relaxed);
        topic.dropped.fetch_add(counts.dropped, Ordering::Relaxed);
    }

    /// Adds a subscriber that is *held*: the messages published to `topic` from now on wait in
    /// a buffer of up to `buffer_bytes` (message payload bytes) instead of being sent, until
    /// [`release_held`](Self::release_held). Meanwhile the caller sends the subscriber what it
    /// missed from history. Remove it with [`Broker::unsubscribe`] as any other.
    pub fn subscribe_held(
        &self,
        topic: &str,
        subscriber: Subscriber,
        buffer_bytes: usize,
    ) -> SubscriptionId {
        let held = Held {
            messages: Vec::new(),
            bytes: 0,
            limit: buffer_bytes,
            overflowed: false,
        };
        self.add(
            topic,
            subscriber,
            Some(Box::new(std::sync::Mutex::new(held))),
        )
    }

    /// Sends a held subscriber the buffered messages that stand after offset `after` (all of
    /// them when they carry no position, or when `after` is `None`), in the order they were
    /// published, and makes it an ordinary subscriber. No message is published to the topic
    /// meanwhile, so none is lost or reordered. Returns how many were sent; fails when the
    /// buffer overflowed (the subscriber missed messages; it stays held and gets nothing more,
    /// so the caller should close it). Unknown or already released subscriptions: `Ok(0)`.
    pub fn release_held(
        &self,
        name: &str,
        id: SubscriptionId,
        after: Option<u64>,
    ) -> Result<usize, HeldOverflow> {
        // The write lock keeps publishers out until the buffer is drained into the queue.
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = topics.by_name.get_mut(name) else {
            return Ok(0);
        };
        let Some(member) = topic.subscribers.iter_mut().find(|m| m.id == id) else {
            return Ok(0);
        };
        let Some(held) = member.held.take() else {
            return Ok(0);
        };
        let held = held.into_inner().unwrap_or_else(|e| e.into_inner());
        if held.overflowed {
            // Keep it held with an empty, overflowed buffer: it must never look live.
            member.held = Some(Box::new(std::sync::Mutex::new(Held {
                messages: Vec::new(),
                ..held
            })));
            return Err(HeldOverflow);
        }
        let subscriber = member.subscriber.clone();
        let mut counts = Counts::default();
        let mut sent = 0;
        for (position, message) in held.messages {
            if let (Some(after), Some(position)) = (after, &position)
                && position.offset <= after
            {
                continue;
            }
            let message = match &subscriber.envelope {
                Some(envelope) => envelope.wrap(name, position.as_ref(), &message),
                None => message,
            };
            self.deliver(
                &subscriber.sender,
                &mut PreparedMessage::new(message),
                &mut counts,
            );
            sent += 1;
        }
        self.count(topic, &counts);
        Ok(sent)
    }

    /// Starts the closing handshake of every subscriber of `topic` with `code` and `reason`
    /// (when the topic's stream broke and they must recover); their handlers unsubscribe them.
    /// Returns how many were told.
    pub fn close_subscribers(&self, topic: &str, code: CloseCode, reason: &str) -> usize {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = topics.by_name.get(topic) else {
            return 0;
        };
        topic
            .subscribers
            .iter()
            .filter(|m| m.subscriber.sender.start_close(code, reason))
            .count()
    }

    /// Names of the topics that have subscribers now.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .by_name
            .iter()
            .filter(|(_, t)| !t.subscribers.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn add(
        &self,
        topic: &str,
        subscriber: Subscriber,
        held: Option<Box<std::sync::Mutex<Held>>>,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        topics
            .by_name
            .entry(topic.to_owned())
            .or_default()
            .subscribers
            .push(Member {
                id,
                subscriber,
                held,
            });
        id
    }
}

/// What one round of deliveries did, added to the counters once.
#[derive(Default)]
struct Counts {
    delivered: u64,
    dropped: u64,
    per_socket: u64,
}

impl Held {
    /// Keeps a live message until release; false once the buffer has overflowed (the
    /// subscriber is then closed at release, having missed messages).
    fn keep(&mut self, position: Option<&Position>, message: &Message) -> bool {
        if self.overflowed {
            return false;
        }
        self.bytes += message.len();
        if self.bytes > self.limit {
            self.overflowed = true;
            self.messages = Vec::new();
            return false;
        }
        self.messages.push((position.cloned(), message.clone()));
        true
    }
}

impl Broker for LocalBroker {
    fn publish(&self, name: &str, message: Message) -> usize {
        self.publish_at(name, message, None)
    }

    fn subscribe(&self, topic: &str, subscriber: Subscriber) -> SubscriptionId {
        self.add(topic, subscriber, None)
    }

    fn unsubscribe(&self, topic: &str, id: SubscriptionId) {
        let mut guard = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let topics = &mut *guard;
        let Some(entry) = topics.by_name.get_mut(topic) else {
            return;
        };
        let before = entry.subscribers.len();
        entry.subscribers.retain(|m| m.id != id);
        if before == 0 || !entry.subscribers.is_empty() {
            return;
        }
        // Keep the emptied topic's counters; forget the longest-empty ones beyond the limit.
        topics.emptied.retain(|name| name != topic);
        topics.emptied.push_back(topic.to_owned());
        while topics.emptied.len() > self.config.retained_topics {
            let Some(oldest) = topics.emptied.pop_front() else {
                break;
            };
            if topics
                .by_name
                .get(&oldest)
                .is_some_and(|t| t.subscribers.is_empty())
            {
                topics.by_name.remove(&oldest);
                self.totals.topics_forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
