//! `PREFIX/control`: many topics on one connection, driven by JSON (docs/control-protocol.md).
//!
//! Requests are text messages holding one JSON object with an `op`; each gets exactly one
//! reply, an `ack` or an `error` carrying the request's `id`. Messages of subscribed topics
//! arrive as `message` envelopes naming their topic. Replies are queued with `send` (waiting
//! for room), so the slow-subscriber policy can drop topic messages but never a reply.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry::pubsub::{Broker, Envelope, Subscriber, SubscriptionId};
use ferry::{Incoming, Initiator, Message, Receiver, Sender};
use serde_json::{Map, Value, json};

use super::State;
use super::metrics::Route;

/// Longest `id` string echoed back.
const MAX_ID_LEN: usize = 128;

/// Every control connection shares one envelope, so a message is wrapped, framed and
/// compressed once for all of them (per encoding group).
static ENVELOPE: LazyLock<Arc<dyn Envelope>> = LazyLock::new(|| Arc::new(JsonEnvelope));

/// `{"type":"message","topic":T,"data":TEXT}`, or `"binary":BASE64` for binary messages.
struct JsonEnvelope;

impl Envelope for JsonEnvelope {
    fn wrap(&self, topic: &str, message: &Message) -> Message {
        let body = match message {
            Message::Text(text) => {
                json!({"type": "message", "topic": topic, "data": text.as_str()})
            }
            Message::Binary(data) => {
                json!({"type": "message", "topic": topic, "binary": BASE64.encode(data)})
            }
        };
        Message::text(body.to_string())
    }
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

/// One control connection's subscriptions.
struct Session {
    state: Arc<State>,
    sender: Sender,
    topics: HashMap<String, SubscriptionId>,
}

/// Serves a control connection until it closes, then drops its subscriptions.
pub async fn serve(state: Arc<State>, sender: Sender, mut receiver: Receiver) {
    let mut session = Session {
        state: state.clone(),
        sender: sender.clone(),
        topics: HashMap::new(),
    };
    while let Some(item) = receiver.recv().await {
        match item {
            Incoming::Message(message) => {
                state.metrics.received(Route::Control, message.len());
                let reply = match &message {
                    Message::Text(text) => session.handle(text.as_str()),
                    Message::Binary(_) => error_reply(
                        None,
                        refused("text_only", "requests are JSON text messages"),
                    ),
                };
                let reply = Message::text(reply.to_string());
                let len = reply.len() as u64;
                if sender.send(reply).await.is_err() {
                    break;
                }
                state.metrics.sent(Route::Control, 1, len);
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
    fn handle(&mut self, text: &str) -> Value {
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
            Some("subscribe") => self.subscribe(&request),
            Some("unsubscribe") => self.unsubscribe(&request),
            Some("publish") => self.publish(&request),
            Some(_) => Err(refused(
                "unknown_op",
                "unknown \"op\"; use subscribe, unsubscribe or publish",
            )),
            None => Err(refused(
                "missing_field",
                "\"op\" is missing or not a string; use subscribe, unsubscribe or publish",
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

    fn subscribe(&mut self, request: &Map<String, Value>) -> Result<Value, Refused> {
        let names = self.topic_list(request)?;
        let max = self.state.control_max_topics;
        let new = names
            .iter()
            .filter(|n| !self.topics.contains_key(*n))
            .count();
        if self.topics.len() + new > max {
            return Err(refused(
                "too_many_topics",
                format!(
                    "a connection may subscribe to at most {max} topics (--control-max-topics); nothing was subscribed"
                ),
            ));
        }
        for name in &names {
            if !self.topics.contains_key(name) {
                let subscriber = Subscriber::with_envelope(self.sender.clone(), ENVELOPE.clone());
                let id = self.state.broker.subscribe(name, subscriber);
                self.topics.insert(name.clone(), id);
            }
        }
        Ok(json!({"op": "subscribe", "topics": names, "subscribed": self.subscribed()}))
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

    fn subscribed(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.topics.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn publish(&mut self, request: &Map<String, Value>) -> Result<Value, Refused> {
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
        let len = message.len() as u64;
        let delivered = self.state.broker.publish(topic, message);
        self.state
            .metrics
            .sent(Route::Control, delivered as u64, delivered as u64 * len);
        Ok(json!({"op": "publish", "topic": topic, "delivered": delivered}))
    }
}
