//! Pub/sub: named topics whose messages go to every subscriber.
//!
//! [`Broker`] is the seam: [`LocalBroker`] delivers within this process; a broker that spans
//! machines (Redis) implements the same trait. A slow subscriber never slows the publisher or
//! the other subscribers: delivery is a non-blocking [`Sender::try_send`] into each
//! subscriber's own byte-budgeted queue, and a subscriber whose queue is full is handled by the
//! [`SlowSubscriber`] policy and counted.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_proto::{CloseCode, Message};

use crate::error::TrySendError;
use crate::socket::Sender;

/// Identifies one subscription, for [`Broker::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// Delivers published messages to a topic's subscribers.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `message` to every subscriber of `topic`; returns how many took it.
    fn publish(&self, topic: &str, message: Message) -> usize;
    /// Adds `sender` as a subscriber of `topic`.
    fn subscribe(&self, topic: &str, sender: Sender) -> SubscriptionId;
    /// Removes a subscription; unknown ids are ignored.
    fn unsubscribe(&self, topic: &str, id: SubscriptionId);
}

/// What to do with a subscriber whose send queue is full (`Limits::send_queue_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowSubscriber {
    /// Close it with 1013 (try again later): it reconnects when it can keep up, and every
    /// message it did get was whole and in order. 1013 rather than 1008: nothing the client
    /// did violated a policy; the server is shedding load.
    #[default]
    Close,
}

/// Counters of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Current subscribers.
    pub subscribers: usize,
    /// Messages published.
    pub published: u64,
    /// Deliveries made (one per subscriber per message).
    pub delivered: u64,
    /// Deliveries refused because a subscriber was too slow.
    pub dropped: u64,
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<(SubscriptionId, Sender)>,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

/// An in-process broker.
///
/// ```
/// use ferry::pubsub::{Broker, LocalBroker};
/// let broker = LocalBroker::default();
/// assert_eq!(broker.publish("news", ferry::Message::text("nobody listens")), 0);
/// assert!(broker.stats().is_empty());
/// ```
#[derive(Default)]
pub struct LocalBroker {
    topics: RwLock<HashMap<String, Topic>>,
    next_id: AtomicU64,
    policy: SlowSubscriber,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("topics", &self.stats().len())
            .finish()
    }
}

impl LocalBroker {
    /// A broker with a slow-subscriber policy.
    pub fn new(policy: SlowSubscriber) -> Self {
        LocalBroker {
            policy,
            ..LocalBroker::default()
        }
    }

    /// Counters of every topic that has subscribers.
    pub fn stats(&self) -> Vec<TopicStats> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<TopicStats> = topics
            .iter()
            .map(|(name, t)| TopicStats {
                name: name.clone(),
                subscribers: t.subscribers.len(),
                published: t.published.load(Ordering::Relaxed),
                delivered: t.delivered.load(Ordering::Relaxed),
                dropped: t.dropped.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: &str, message: Message) -> usize {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = topics.get(topic) else {
            return 0;
        };
        topic.published.fetch_add(1, Ordering::Relaxed);
        let mut delivered = 0;
        for (_, sender) in &topic.subscribers {
            // The payload is shared `Bytes`: a clone per subscriber copies no data.
            match sender.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => {
                    topic.dropped.fetch_add(1, Ordering::Relaxed);
                    match self.policy {
                        SlowSubscriber::Close => {
                            sender.start_close(CloseCode::TRY_AGAIN_LATER, "subscriber too slow");
                        }
                    }
                }
                // Closing already; its handler unsubscribes it.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        topic
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    fn subscribe(&self, topic: &str, sender: Sender) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(topic.to_owned())
            .or_default()
            .subscribers
            .push((id, sender));
        id
    }

    fn unsubscribe(&self, topic: &str, id: SubscriptionId) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = topics.get_mut(topic) {
            entry.subscribers.retain(|(sub, _)| *sub != id);
            if entry.subscribers.is_empty() {
                topics.remove(topic);
            }
        }
    }
}
