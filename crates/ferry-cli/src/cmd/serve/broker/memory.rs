//! The memory broker: topics, offsets and history inside this process. The default; one node
//! gets the same guarantees as a cluster on Redis (docs/cluster.md).
//!
//! Each topic has a *log*: its epoch, its top offset and its last `history.size` messages.
//! Logs are bounded twice over, because topic names come from clients: a log is dropped once
//! its topic saw no publish for `history.ttl`, and all logs together hold at most
//! `history.memory` bytes (the longest-unpublished log goes first). A dropped log's topic
//! starts a new epoch, so nobody mistakes the new offsets for the old ones.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry::Message;
use ferry::pubsub::{LocalBroker, Position};

use super::{History, HistorySettings, Published, new_epoch};

/// What a log costs beyond its messages: the map entry, the name, the epoch, the queue.
const LOG_OVERHEAD: usize = 256;

pub struct MemoryBroker {
    hub: Arc<LocalBroker>,
    settings: HistorySettings,
    logs: Mutex<Logs>,
}

#[derive(Default)]
struct Logs {
    by_topic: HashMap<String, Log>,
    /// Topics by their last publish (or creation), oldest first: the key is `Log::touched`.
    by_age: BTreeMap<u64, String>,
    next_touch: u64,
    bytes: usize,
}

struct Log {
    /// This topic's history settings (its rule's, or the defaults).
    size: usize,
    ttl: std::time::Duration,
    epoch: Arc<str>,
    top: u64,
    /// The kept messages, offsets `top - entries.len() + 1 ..= top`.
    entries: VecDeque<Message>,
    bytes: usize,
    touched: u64,
    published_at: Instant,
    /// Held while a message of this topic is numbered and delivered, so subscribers see offset
    /// order. Outside `Logs`' lock, so delivering one topic never waits for another.
    turn: Arc<Mutex<()>>,
}

impl Log {
    fn cost(name: &str) -> usize {
        LOG_OVERHEAD + name.len()
    }
}

impl MemoryBroker {
    pub fn new(hub: Arc<LocalBroker>, settings: HistorySettings) -> Self {
        MemoryBroker {
            hub,
            settings,
            logs: Mutex::new(Logs::default()),
        }
    }

    pub fn hub(&self) -> &LocalBroker {
        &self.hub
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, topic: &str, message: Message) -> Published {
        loop {
            let turn = self.logs().log(topic, &self.settings).turn.clone();
            let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
            let Some(position) = self.append(topic, &message, &turn) else {
                // The log was dropped and made anew meanwhile: take the new log's turn.
                continue;
            };
            let delivered = self.hub.publish_at(topic, message, Some(&position));
            return Published {
                position,
                delivered: Some(delivered),
            };
        }
    }

    /// Numbers the message and keeps it, if `turn` is still the topic's log's.
    fn append(&self, topic: &str, message: &Message, turn: &Arc<Mutex<()>>) -> Option<Position> {
        let mut logs = self.logs();
        logs.expire();
        let touch = logs.next_touch;
        logs.next_touch += 1;
        let log = logs.log(topic, &self.settings);
        if !Arc::ptr_eq(&log.turn, turn) {
            return None;
        }
        log.top += 1;
        let position = Position::new(log.top, log.epoch.clone());
        let mut added = 0isize;
        if log.size > 0 {
            added += message.len() as isize;
            log.bytes += message.len();
            log.entries.push_back(detached(message));
            while log.entries.len() > log.size {
                if let Some(old) = log.entries.pop_front() {
                    log.bytes -= old.len();
                    added -= old.len() as isize;
                }
            }
        }
        log.published_at = Instant::now();
        let old_touch = std::mem::replace(&mut log.touched, touch);
        logs.by_age.remove(&old_touch);
        logs.by_age.insert(touch, topic.to_owned());
        logs.bytes = logs.bytes.saturating_add_signed(added);
        logs.shrink(topic, self.settings.memory);
        Some(position)
    }

    /// The topic's top position and, when `since` is given, the messages after it if all of
    /// them are still here (at most `limit`).
    pub fn history(&self, topic: &str, since: Option<&Position>, limit: usize) -> History {
        let mut logs = self.logs();
        logs.expire();
        let log = logs.log(topic, &self.settings);
        let top = Position::new(log.top, log.epoch.clone());
        let first = log.top + 1 - log.entries.len() as u64;
        let messages = since.and_then(|since| {
            let from = super::recoverable(since, &top, first, limit)?;
            let skip = (from - first) as usize;
            Some(
                log.entries
                    .iter()
                    .skip(skip)
                    .zip(from..)
                    .map(|(m, offset)| (Position::new(offset, top.epoch.clone()), m.clone()))
                    .collect(),
            )
        });
        History { top, messages }
    }

    /// (topics with a log, bytes held) for the metrics.
    pub fn usage(&self) -> (usize, usize) {
        let logs = self.logs();
        (logs.by_topic.len(), logs.bytes)
    }
}

/// A copy of `message` in an allocation of its own. A received message is a slice of the
/// connection's read buffer (no copy on the hot path), so keeping it would keep that whole
/// buffer alive: a 64-byte message could hold 96 KiB or more, and the history's byte budget,
/// which counts message bytes, would not bound memory at all.
fn detached(message: &Message) -> Message {
    match message {
        Message::Text(text) => Message::text(text.as_str().to_owned()),
        Message::Binary(data) => Message::binary(bytes::Bytes::copy_from_slice(data)),
    }
}

impl Logs {
    /// The topic's log, created (with a new epoch) when it has none.
    fn log(&mut self, topic: &str, settings: &HistorySettings) -> &mut Log {
        // A log past its own TTL (which the sweep by age may not have reached) is lost history.
        if self
            .by_topic
            .get(topic)
            .is_some_and(|log| log.published_at.elapsed() >= log.ttl)
        {
            if let Some(log) = self.by_topic.get(topic) {
                let touched = log.touched;
                self.by_age.remove(&touched);
            }
            self.drop_log(topic);
        }
        if !self.by_topic.contains_key(topic) {
            let (size, ttl) = settings.for_topic(topic);
            let touch = self.next_touch;
            self.next_touch += 1;
            self.by_age.insert(touch, topic.to_owned());
            self.bytes += Log::cost(topic);
            self.by_topic.insert(
                topic.to_owned(),
                Log {
                    size,
                    ttl,
                    epoch: new_epoch(),
                    top: 0,
                    entries: VecDeque::new(),
                    bytes: 0,
                    touched: touch,
                    published_at: Instant::now(),
                    turn: Arc::new(Mutex::new(())),
                },
            );
            self.shrink(topic, settings.memory);
        }
        // Inserted just above when missing, and `shrink` spares `topic`.
        self.by_topic
            .get_mut(topic)
            .expect("the log was inserted above")
    }

    /// Drops the logs of topics that saw no publish for their history TTL, oldest first (a log
    /// with a shorter TTL of its own behind a live one waits for its next use).
    fn expire(&mut self) {
        while let Some((&touch, name)) = self.by_age.first_key_value() {
            let expired = self
                .by_topic
                .get(name)
                .is_none_or(|log| log.published_at.elapsed() >= log.ttl);
            if !expired {
                break;
            }
            let name = name.clone();
            self.by_age.remove(&touch);
            self.drop_log(&name);
        }
    }

    /// Drops the oldest logs but `keep`'s until everything fits in `budget`; then trims
    /// `keep`'s own oldest messages if it alone is over.
    fn shrink(&mut self, keep: &str, budget: usize) {
        let mut spared = Vec::new();
        while self.bytes > budget {
            let Some((touch, name)) = self.by_age.pop_first() else {
                break;
            };
            if name == keep {
                spared.push((touch, name));
                continue;
            }
            self.drop_log(&name);
        }
        for (touch, name) in spared {
            self.by_age.insert(touch, name);
        }
        if self.bytes > budget
            && let Some(log) = self.by_topic.get_mut(keep)
        {
            while self.bytes > budget {
                let Some(old) = log.entries.pop_front() else {
                    break;
                };
                log.bytes -= old.len();
                self.bytes -= old.len();
            }
        }
    }

    fn drop_log(&mut self, name: &str) {
        if let Some(log) = self.by_topic.remove(name) {
            self.bytes -= log.bytes + Log::cost(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn broker(size: usize, memory: usize, ttl: Duration) -> MemoryBroker {
        MemoryBroker::new(
            Arc::new(LocalBroker::default()),
            HistorySettings {
                size,
                ttl,
                recovery_max: 1000,
                memory,
                rules: Arc::from(Vec::new()),
            },
        )
    }

    #[test]
    fn offsets_count_from_one_and_history_keeps_the_last_size() {
        let b = broker(3, 1 << 20, Duration::from_secs(60));
        let epoch = b.history("t", None, 0).top.epoch;
        for i in 1..=5u64 {
            let p = b.publish("t", Message::text(format!("m{i}"))).position;
            assert_eq!((p.offset, &p.epoch), (i, &epoch));
        }
        let since = Position::new(2, epoch.clone());
        let h = b.history("t", Some(&since), 100);
        let got: Vec<_> = h
            .messages
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.offset)
            .collect();
        assert_eq!(got, [3, 4, 5]);
        // Offset 2 is gone: recovering from 1 would skip it.
        assert!(
            b.history("t", Some(&Position::new(1, epoch.clone())), 100)
                .messages
                .is_none()
        );
        assert!(
            b.history("t", Some(&Position::new(3, "other")), 100)
                .messages
                .is_none()
        );
        assert!(
            b.history("t", Some(&Position::new(9, epoch.clone())), 100)
                .messages
                .is_none()
        );
        assert_eq!(
            b.history("t", Some(&Position::new(5, epoch)), 100)
                .messages
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn the_memory_budget_drops_the_longest_unpublished_topic_and_its_epoch() {
        let b = broker(100, 3 * LOG_OVERHEAD + 100, Duration::from_secs(60));
        b.publish("a", Message::text("x"));
        let a_epoch = b.history("a", None, 0).top.epoch;
        for name in ["b", "c", "d"] {
            b.publish(name, Message::text("y"));
        }
        let (topics, bytes) = b.usage();
        assert!(
            topics <= 3 && bytes <= 3 * LOG_OVERHEAD + 100,
            "{topics} {bytes}"
        );
        let a = b.history("a", None, 0).top;
        assert_ne!(a.epoch, a_epoch, "a's log was dropped: a new epoch");
        assert_eq!(a.offset, 0);
    }

    #[test]
    fn history_expires_after_the_ttl() {
        let b = broker(100, 1 << 20, Duration::from_millis(20));
        b.publish("a", Message::text("x"));
        let before = b.history("a", None, 0).top;
        std::thread::sleep(Duration::from_millis(40));
        b.publish("other", Message::text("y"));
        assert_eq!(b.usage().0, 1, "a expired");
        let after = b.history("a", None, 0).top;
        assert_ne!(after.epoch, before.epoch);
    }

    /// Regression: a history entry was the received message itself, a slice of its
    /// connection's read buffer, so 1,000 entries of 64 bytes could keep 1,000 read buffers
    /// alive (RSS grew by about 0.5 MB/s under a soak). Entries must own their bytes.
    #[test]
    fn history_entries_do_not_keep_the_buffer_they_were_received_in() {
        let b = broker(10, 1 << 20, Duration::from_secs(60));
        let buffer = bytes::Bytes::from(vec![7u8; 96 << 10]);
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        b.publish("t", Message::binary(buffer.slice(0..64)));
        let epoch = b.history("t", None, 0).top.epoch;
        let kept = b
            .history("t", Some(&Position::new(0, epoch)), 10)
            .messages
            .unwrap();
        let at = |m: &Message| m.as_bytes().as_ptr() as usize;
        assert!(
            !range.contains(&at(&kept[0].1)),
            "the entry aliases the read buffer"
        );
        assert_eq!(kept[0].1.as_bytes(), &[7u8; 64][..]);
    }

    #[test]
    fn one_topic_alone_over_the_budget_trims_its_own_history() {
        let b = broker(100, LOG_OVERHEAD + 10, Duration::from_secs(60));
        for _ in 0..5 {
            b.publish("a", Message::text("12345"));
        }
        let (_, bytes) = b.usage();
        assert!(bytes <= LOG_OVERHEAD + 10, "{bytes}");
        assert_eq!(b.history("a", None, 0).top.offset, 5, "offsets go on");
    }
}
