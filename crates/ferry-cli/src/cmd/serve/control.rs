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
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry::pubsub::{Envelope, Position, Subscriber, SubscriptionId};
use ferry::{CloseCode, Incoming, Initiator, Message, Receiver, Sender};
use serde_json::{Map, Value, json};

use super::State;
use super::auth::Grant;
use super::broker::Joined;
use super::http::CLOSE_TOKEN_EXPIRED;
use super::metrics::Route;
use super::rate::Bucket;

/// Longest `id` string echoed back.
const MAX_ID_LEN: usize = 128;

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

/// A refused request: a stable code for programs, a sentence for people.
struct Refused {
    code: &'static str,
    message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
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
            Incoming::Closed(info) => {
                let initiator = match info.initiator {
                    Initiator::Local => "server",
                    Initiator::Remote => "client",
                };
                state.metrics.closed(info.code.as_u16(), initiator);
            }
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
        let request: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) => {
                // The parser's position, never the input itself.
                let why = format!(
                    "not valid JSON ({:?} error at line {}, column {})",
                    err.classify(),
                    err.line(),
                    err.column()
                )
                .to_lowercase();
                return error_reply(None, refused("bad_json", why));
            }
        };
        let Value::Object(request) = request else {
            return error_reply(
                None,
                refused("not_object", "a request is a JSON object with an \"op\""),
            );
        };
        let id = match request.get("id") {
            None => None,
            Some(id @ Value::Number(_)) => Some(id.clone()),
            Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Some(Value::String(s.clone())),
            Some(_) => {
                return error_reply(
                    None,
                    refused(
                        "bad_id",
                        format!(
                            "\"id\" must be a number or a string of at most {MAX_ID_LEN} bytes"
                        ),
                    ),
                );
            }
        };
        let result = match request.get("op").and_then(Value::as_str) {
            Some("subscribe") => self.subscribe(&request, recoveries).await,
            Some("unsubscribe") => self.unsubscribe(&request),
            Some("publish") => self.publish(&request).await,
            Some("refresh") => self.refresh(&request),
            Some(_) => Err(refused(
                "unknown_op",
                "unknown \"op\"; use subscribe, unsubscribe, publish or refresh",
            )),
            None => Err(refused(
                "missing_field",
                "\"op\" is missing or not a string; use subscribe, unsubscribe, publish or refresh",
            )),
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

    /// The `topics` field: a non-empty array of valid, distinct names, in request order.
    fn topic_list(&self, request: &Map<String, Value>) -> Result<Vec<String>, Refused> {
        let Some(list) = request.get("topics") else {
            return Err(refused(
                "missing_field",
                "\"topics\" is missing; give an array of topic names",
            ));
        };
        let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
            return Err(refused(
                "bad_field",
                "\"topics\" must be a non-empty array of topic names",
            ));
        };
        let mut names: Vec<String> = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            match item.as_str() {
                Some(name) if self.state.topic_allowed(name) => {
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_owned());
                    }
                }
                _ => {
                    return Err(refused(
                        "bad_topic",
                        format!(
                            "topics[{index}]: not a topic here; names are 1 to 64 letters, digits, '.', '_' or '-', and the server may allow only some"
                        ),
                    ));
                }
            }
        }
        Ok(names)
    }

    /// `since`: an object from topic names (each also in `topics`, and not yet subscribed on
    /// this connection) to `{"offset": N, "epoch": E}`.
    fn since(
        &self,
        request: &Map<String, Value>,
        names: &[String],
    ) -> Result<HashMap<String, Position>, Refused> {
        let mut since = HashMap::new();
        let Some(value) = request.get("since") else {
            return Ok(since);
        };
        let Some(object) = value.as_object() else {
            return Err(refused(
                "bad_field",
                "\"since\" must be an object: {\"TOPIC\": {\"offset\": N, \"epoch\": \"E\"}}",
            ));
        };
        for (topic, position) in object {
            if !names.contains(topic) {
                return Err(refused(
                    "bad_field",
                    format!("since.{topic}: the topic is not in \"topics\""),
                ));
            }
            if self.topics.contains_key(topic) {
                return Err(refused(
                    "bad_field",
                    format!(
                        "since.{topic}: already subscribed on this connection; its messages are arriving"
                    ),
                ));
            }
            let offset = position.get("offset").and_then(Value::as_u64);
            let epoch = position.get("epoch").and_then(Value::as_str);
            match (offset, epoch) {
                (Some(offset), Some(epoch)) if epoch.len() <= MAX_ID_LEN => {
                    since.insert(topic.clone(), Position::new(offset, epoch));
                }
                _ => {
                    return Err(refused(
                        "bad_field",
                        format!(
                            "since.{topic}: give {{\"offset\": N, \"epoch\": \"E\"}} as a message envelope or ack carried them"
                        ),
                    ));
                }
            }
        }
        Ok(since)
    }

    async fn subscribe(
        &mut self,
        request: &Map<String, Value>,
        recoveries: &mut Vec<Recovery>,
    ) -> Result<Value, Refused> {
        let names = self.topic_list(request)?;
        let since = self.since(request, &names)?;
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
                    self.state
                        .metrics
                        .broker_refusals
                        .fetch_add(1, Ordering::Relaxed);
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

    fn unsubscribe(&mut self, request: &Map<String, Value>) -> Result<Value, Refused> {
        let names = self.topic_list(request)?;
        for name in &names {
            if let Some(id) = self.topics.remove(name) {
                self.state.broker.unsubscribe(name, id);
            }
        }
        Ok(json!({"op": "unsubscribe", "topics": names, "subscribed": self.subscribed()}))
    }

    /// `{"op":"refresh","token":T}`: a newer token for the same user replaces the connection's
    /// token, moving its expiry; topics the new token no longer covers are unsubscribed, and
    /// the ack names them.
    fn refresh(&mut self, request: &Map<String, Value>) -> Result<Value, Refused> {
        let Some(verifier) = &self.state.verifier else {
            return Err(refused("forbidden", "this server does not use tokens"));
        };
        let Some(current) = &self.grant else {
            return Err(refused(
                "forbidden",
                "this connection has no token to refresh; connect with one",
            ));
        };
        let Some(token) = request.get("token").and_then(Value::as_str) else {
            return Err(refused(
                "missing_field",
                "\"token\" is missing; give the new token as a string",
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

    async fn publish(&mut self, request: &Map<String, Value>) -> Result<Value, Refused> {
        let topic = match request.get("topic") {
            None => {
                return Err(refused(
                    "missing_field",
                    "\"topic\" is missing; name the topic to publish to",
                ));
            }
            Some(Value::String(name)) if self.state.topic_allowed(name) => name,
            Some(_) => {
                return Err(refused(
                    "bad_topic",
                    "not a topic here; names are 1 to 64 letters, digits, '.', '_' or '-', and the server may allow only some",
                ));
            }
        };
        let message = match (request.get("data"), request.get("binary")) {
            (Some(Value::String(text)), None) => Message::text(text.clone()),
            (None, Some(Value::String(encoded))) => match BASE64.decode(encoded) {
                Ok(bytes) => Message::binary(bytes),
                Err(_) => {
                    return Err(refused(
                        "bad_base64",
                        "\"binary\" must be standard base64 (RFC 4648, with padding)",
                    ));
                }
            },
            (None, None) => {
                return Err(refused(
                    "missing_field",
                    "give the message as \"data\" (text) or \"binary\" (base64)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(refused(
                    "bad_field",
                    "give either \"data\" or \"binary\", not both",
                ));
            }
            _ => {
                return Err(refused("bad_field", "\"data\" and \"binary\" are strings"));
            }
        };
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
                self.state
                    .metrics
                    .broker_refusals
                    .fetch_add(1, Ordering::Relaxed);
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
