//! `PREFIX/control`: many topics on one connection, driven by JSON (docs/control-protocol.md).
//!
//! Requests are text messages holding one JSON object with an `op`; each gets exactly one
//! reply, an `ack` or an `error` carrying the request's `id`. Messages of subscribed topics
//! arrive as `message` envelopes naming their topic and their place in its history (`offset`,
//! `epoch`). Replies are queued with `send` (waiting for room), so the slow-subscriber policy
//! can drop topic messages but never a reply.
//!
//! A subscribe with `since` recovers: the subscription joins *held* (live messages wait), the
//! ack carries the topics' positions, the missed messages follow it from history, and only
//! then do the held live messages go, those already sent skipped.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry::pubsub::{Envelope, Position, Subscriber, SubscriptionId};
use ferry::{CloseCode, Incoming, Message, Receiver, Sender};
use serde_json::{Map, Value, json};

pub use request::{Parsed, Refused, Request, parse, refused};

use super::State;
use super::auth::{CLOSE_TOKEN_EXPIRED, Grant};
use super::broker::Joined;
use super::metrics::Route;
use super::rate::Bucket;

mod request;

/// Every control connection shares one envelope, so a message is wrapped, framed and
/// compressed once for all of them (per encoding group).
static ENVELOPE: LazyLock<Arc<dyn Envelope>> = LazyLock::new(|| Arc::new(JsonEnvelope));

/// `{"type":"message","topic":T,"offset":N,"epoch":E,"data":TEXT}`, or `"binary":BASE64` for
/// binary messages.
struct JsonEnvelope;

impl Envelope for JsonEnvelope {
    fn wrap(&self, topic: &str, position: Option<&Position>, message: &Message) -> Message {
        let mut body = Map::new();
        body.insert("type".into(), "message".into());
        body.insert("topic".into(), topic.into());
        if let Some(position) = position {
            body.insert("offset".into(), position.offset.into());
            body.insert("epoch".into(), (*position.epoch).into());
        }
        match message {
            Message::Text(text) => body.insert("data".into(), text.as_str().into()),
            Message::Binary(data) => body.insert("binary".into(), BASE64.encode(data).into()),
        };
        Message::text(Value::Object(body).to_string())
    }
}

/// A subscription joined held: what to send after the ack, then release.
struct Recovery {
    topic: String,
    id: SubscriptionId,
    top: u64,
    missed: Vec<(Position, Message)>,
}

/// One control connection's subscriptions and rights.
struct Session {
    state: Arc<State>,
    sender: Sender,
    topics: HashMap<String, SubscriptionId>,
    /// The connection's token's permissions (`None` without one).
    grant: Option<Grant>,
    /// Publishes left under --publish-rate.
    bucket: Bucket,
}

/// Serves a control connection until it closes, then drops its subscriptions.
pub async fn serve(
    state: Arc<State>,
    sender: Sender,
    mut receiver: Receiver,
    grant: Option<Grant>,
) {
    let mut session = Session {
        state: state.clone(),
        sender: sender.clone(),
        topics: HashMap::new(),
        bucket: Bucket::full(state.publish_rate),
        grant,
    };
    loop {
        // A token's connection lives until its token expires, unless a refresh extends it.
        let expires = session.grant.as_ref().map(Grant::remaining);
        let item = tokio::select! {
            item = receiver.recv() => item,
            () = sleep_or_never(expires) => {
                sender.start_close(CloseCode::from(CLOSE_TOKEN_EXPIRED), "token expired");
                session.grant = None;
                receiver.recv().await
            }
        };
        let Some(item) = item else { break };
        match item {
            Incoming::Message(message) => {
                state.metrics.received(Route::Control, message.len());
                let (reply, recoveries) = match &message {
                    Message::Text(text) => session.handle(text.as_str()).await,
                    Message::Binary(_) => (
                        error_reply(
                            None,
                            refused("text_only", "requests are JSON text messages"),
                        ),
                        Vec::new(),
                    ),
                };
                let reply = Message::text(reply.to_string());
                let len = reply.len() as u64;
                if sender.send(reply).await.is_err() {
                    break;
                }
                state.metrics.sent(Route::Control, 1, len);
                if !session.recover(recoveries).await {
                    break;
                }
            }
            Incoming::Closed(info) => state.metrics.closed(&info),
        }
    }
    for (topic, id) in session.topics.drain() {
        state.broker.unsubscribe(&topic, id);
    }
}

async fn sleep_or_never(duration: Option<std::time::Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

fn error_reply(id: Option<Value>, refused: Refused) -> Value {
    let mut reply = Map::new();
    reply.insert("type".into(), "error".into());
    if let Some(id) = id {
        reply.insert("id".into(), id);
    }
    reply.insert("code".into(), refused.code.into());
    reply.insert("message".into(), refused.message.into());
    Value::Object(reply)
}

impl Session {
    /// After a subscribe's ack: the missed messages, in order, then the held live ones.
    /// Returns false when the connection is gone.
    async fn recover(&mut self, recoveries: Vec<Recovery>) -> bool {
        let mut open = true;
        for recovery in recoveries {
            for (position, message) in &recovery.missed {
                if !open {
                    break;
                }
                let wrapped = ENVELOPE.wrap(&recovery.topic, Some(position), message);
                let len = wrapped.len() as u64;
                open = self.sender.send(wrapped).await.is_ok();
                self.state.metrics.sent(Route::Control, 1, len);
            }
            if self
                .state
                .broker
                .release(&recovery.topic, recovery.id, recovery.top)
                .is_err()
            {
                // Live messages overflowed the buffer meanwhile: this connection missed some.
                self.sender
                    .start_close(CloseCode::TRY_AGAIN_LATER, "subscriber too slow");
            }
        }
        open
    }

    async fn handle(&mut self, text: &str) -> (Value, Vec<Recovery>) {
        let mut recoveries = Vec::new();
        let reply = self.reply(text, &mut recoveries).await;
        (reply, recoveries)
    }

    async fn reply(&mut self, text: &str, recoveries: &mut Vec<Recovery>) -> Value {
        let state = self.state.clone();
        let Parsed { id, request } = parse(text, |name| state.topic_allowed(name));
        let result = match request {
            Ok(Request::Subscribe { topics, since }) => {
                self.subscribe(topics, since, recoveries).await
            }
            Ok(Request::Unsubscribe { topics }) => Ok(self.unsubscribe(topics)),
            Ok(Request::Publish { topic, message }) => self.publish(topic, message).await,
            Ok(Request::Refresh { token }) => self.refresh(&token),
            Err(refused) => Err(refused),
        };
        match result {
            Ok(Value::Object(mut fields)) => {
                let mut reply = Map::new();
                reply.insert("type".into(), "ack".into());
                if let Some(id) = id {
                    reply.insert("id".into(), id);
                }
                reply.append(&mut fields);
                Value::Object(reply)
            }
            Ok(other) => other,
            Err(refused) => error_reply(id, refused),
        }
    }

    async fn subscribe(
        &mut self,
        names: Vec<String>,
        since: HashMap<String, Position>,
        recoveries: &mut Vec<Recovery>,
    ) -> Result<Value, Refused> {
        if let Some(topic) = since.keys().find(|t| self.topics.contains_key(*t)) {
            return Err(refused(
                "bad_field",
                format!(
                    "since.{topic}: already subscribed on this connection; its messages are arriving"
                ),
            ));
        }
        if let Some(index) = names
            .iter()
            .position(|n| !self.state.access.may_subscribe(n, self.grant.as_ref()))
        {
            self.state.metrics.forbidden("subscribe");
            return Err(refused(
                "forbidden",
                format!(
                    "topics[{index}]: this connection may not subscribe to it; nothing was subscribed"
                ),
            ));
        }
        let max = self.state.control_max_topics;
        let new: Vec<&String> = names
            .iter()
            .filter(|n| !self.topics.contains_key(*n))
            .collect();
        if self.topics.len() + new.len() > max {
            return Err(refused(
                "too_many_topics",
                format!(
                    "a connection may subscribe to at most {max} topics (--control-max-topics); nothing was subscribed"
                ),
            ));
        }
        let broker = &self.state.broker;
        let recovery_max = self.state.history.recovery_max;
        let buffer = self.state.config.limits.send_queue_bytes;
        let mut joined: Vec<(String, Joined)> = Vec::new();
        for name in new {
            let subscriber = Subscriber::with_envelope(self.sender.clone(), ENVELOPE.clone());
            match broker
                .join(name, subscriber, since.get(name), recovery_max, buffer)
                .await
            {
                Ok(join) => joined.push((name.clone(), join)),
                Err(err) => {
                    // All or nothing: undo what this request joined.
                    for (topic, join) in joined {
                        broker.unsubscribe(&topic, join.id);
                    }
                    self.state.metrics.broker_refused();
                    tracing::warn!(reason = %err, "subscribe refused: the broker is unavailable");
                    return Err(refused(
                        "broker_unavailable",
                        "the message broker is unavailable; nothing was subscribed, try again later",
                    ));
                }
            }
        }
        let mut positions = Map::new();
        let mut recovered = Map::new();
        for name in &names {
            if let Some((_, join)) = joined.iter().find(|(t, _)| t == name) {
                let top = &join.history.top;
                positions.insert(
                    name.clone(),
                    json!({"offset": top.offset, "epoch": &*top.epoch}),
                );
            }
        }
        for (name, join) in joined {
            let top = join.history.top.offset;
            let missed = match (since.contains_key(&name), join.history.messages) {
                (true, Some(missed)) => {
                    recovered.insert(name.clone(), true.into());
                    missed
                }
                (true, None) => {
                    recovered.insert(name.clone(), false.into());
                    Vec::new()
                }
                (false, _) => Vec::new(),
            };
            self.topics.insert(name.clone(), join.id);
            recoveries.push(Recovery {
                topic: name,
                id: join.id,
                top,
                missed,
            });
        }
        let mut ack = json!({"op": "subscribe", "topics": names, "subscribed": self.subscribed()});
        if let Value::Object(fields) = &mut ack {
            fields.insert("positions".into(), Value::Object(positions));
            if !recovered.is_empty() {
                fields.insert("recovered".into(), Value::Object(recovered));
            }
        }
        Ok(ack)
    }

    fn unsubscribe(&mut self, names: Vec<String>) -> Value {
        for name in &names {
            if let Some(id) = self.topics.remove(name) {
                self.state.broker.unsubscribe(name, id);
            }
        }
        json!({"op": "unsubscribe", "topics": names, "subscribed": self.subscribed()})
    }

    /// `{"op":"refresh","token":T}`: a newer token for the same user replaces the connection's
    /// token, moving its expiry; topics the new token no longer covers are unsubscribed, and
    /// the ack names them.
    fn refresh(&mut self, token: &str) -> Result<Value, Refused> {
        let Some(verifier) = &self.state.verifier else {
            return Err(refused("forbidden", "this server does not use tokens"));
        };
        let Some(current) = &self.grant else {
            return Err(refused(
                "forbidden",
                "this connection has no token to refresh; connect with one",
            ));
        };
        let grant = verifier.verify(token).map_err(|rejected| {
            self.state.metrics.auth_failed(rejected.reason());
            refused("bad_token", rejected.message())
        })?;
        if grant.sub != current.sub {
            self.state.metrics.forbidden("refresh");
            return Err(refused(
                "forbidden",
                "the new token is for another user (sub); nothing changed",
            ));
        }
        let mut ended: Vec<String> = self
            .topics
            .keys()
            .filter(|t| !self.state.access.may_subscribe(t, Some(&grant)))
            .cloned()
            .collect();
        ended.sort_unstable();
        for topic in &ended {
            if let Some(id) = self.topics.remove(topic) {
                self.state.broker.unsubscribe(topic, id);
            }
        }
        let expires = grant
            .expires
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.grant = Some(grant);
        Ok(
            json!({"op": "refresh", "expires": expires, "unsubscribed": ended,
                  "subscribed": self.subscribed()}),
        )
    }

    fn subscribed(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.topics.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    async fn publish(&mut self, topic: String, message: Message) -> Result<Value, Refused> {
        let topic = topic.as_str();
        if !self.state.access.may_publish(topic, self.grant.as_ref()) {
            self.state.metrics.forbidden("publish");
            return Err(refused(
                "forbidden",
                "this connection may not publish to this topic; nothing was published",
            ));
        }
        if self
            .bucket
            .take(self.state.publish_rate, std::time::Instant::now())
            .is_err()
        {
            self.state.metrics.rate_limited("publish");
            return Err(refused(
                "rate_limited",
                format!(
                    "over --publish-rate ({}); nothing was published, try again shortly",
                    self.state.publish_rate
                ),
            ));
        }
        let len = message.len() as u64;
        let published = match self.state.broker.publish(topic, message).await {
            Ok(published) => published,
            Err(err) => {
                self.state.metrics.broker_refused();
                tracing::warn!(topic = %topic, reason = %err, "publish refused: the broker is unavailable");
                return Err(refused(
                    "broker_unavailable",
                    "the message broker is unavailable; the message was not published, try again later",
                ));
            }
        };
        let position = &published.position;
        let mut ack = json!({
            "op": "publish",
            "topic": topic,
            "offset": position.offset,
            "epoch": &*position.epoch,
        });
        if let (Some(delivered), Value::Object(fields)) = (published.delivered, &mut ack) {
            self.state
                .metrics
                .sent(Route::Control, delivered as u64, delivered as u64 * len);
            fields.insert("delivered".into(), delivered.into());
        }
        Ok(ack)
    }
}
