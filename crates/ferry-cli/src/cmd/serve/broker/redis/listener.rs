//! The pub/sub side of a shard: one task owns the connection, resubscribes after a loss,
//! probes that it still delivers, and puts every topic's messages in offset order.

use super::wire::{channel, parse_published, read_history, topic_of_channel};
use super::*;

/// Why a pub/sub connection ended.
pub(super) struct Lost(String);

impl<E: fmt::Display> From<E> for Lost {
    fn from(err: E) -> Self {
        Lost(err.to_string())
    }
}

/// The task that owns one shard's pub/sub connection and this node's place in its topics.
pub(super) struct Listener {
    pub(super) shard: Arc<Shard>,
    pub(super) hub: Arc<LocalBroker>,
    pub(super) settings: HistorySettings,
    pub(super) counters: Arc<Counters>,
    pub(super) probe_channel: String,
    /// The last position delivered on this node, per topic held.
    pub(super) positions: HashMap<String, Position>,
    pub(super) last_probe: Instant,
}

impl Listener {
    pub(super) async fn run(mut self, mut orders: mpsc::UnboundedReceiver<Order>) {
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
        let limit = self.shard.timeouts.command;
        let pubsub = tokio::time::timeout(limit, self.shard.client.get_async_pubsub())
            .await
            .map_err(|_| Lost("connect timed out".into()))??;
        let (mut sink, mut stream) = pubsub.split();
        within(sink.subscribe(&self.probe_channel), limit).await?;
        let held: Vec<String> = self
            .shard
            .topics()
            .iter()
            .filter(|(_, h)| h.holders > 0)
            .map(|(t, _)| t.clone())
            .collect();
        for batch in held.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|t| channel(t)).collect();
            within(sink.subscribe(&channels), limit).await?;
        }
        for topic in &held {
            self.resync(topic).await?;
        }
        self.last_probe = Instant::now();
        self.shard.up.store(true, Ordering::Release);
        tracing::info!(redis = %self.shard.url, topics = held.len(), "Redis pub/sub connected");
        let mut probe = tokio::time::interval(self.shard.timeouts.probe);
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
                            within(sink.subscribe(channel(&topic)), limit).await?;
                            self.resync(&topic).await?;
                            if let Some(held) = self.shard.topics().get_mut(&topic) {
                                held.subscribed = true;
                            }
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Some(Order::Unsubscribe(topic)) => {
                        if self.forget_if_unheld(&topic) {
                            within(sink.unsubscribe(channel(&topic)), limit).await?;
                        }
                    }
                    None => return Err(Lost("shutting down".into())),
                },
                _ = probe.tick() => {
                    let silence = self.shard.timeouts.silence();
                    if self.last_probe.elapsed() > silence {
                        return Err(Lost(format!(
                            "no probe came back on the pub/sub connection for {} s",
                            silence.as_secs_f64()
                        )));
                    }
                    let mut commands = self.shard.commands();
                    let probe_channel = self.probe_channel.clone();
                    tokio::spawn(async move {
                        let mut publish = redis::cmd("PUBLISH");
                        publish.arg(probe_channel).arg("probe");
                        let _ = tokio::time::timeout(limit, publish.exec_async(&mut commands)).await;
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
            self.shard.timeouts.command,
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
                self.shard.timeouts.command,
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
pub(super) async fn within<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
    limit: Duration,
) -> Result<T, Lost> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(Lost::from),
        Err(_) => Err(Lost("a pub/sub command timed out".into())),
    }
}
