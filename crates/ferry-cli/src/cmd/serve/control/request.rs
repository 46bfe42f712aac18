//! What one control request says: the JSON text of a message checked into a [`Request`], or
//! refused with a stable code and a sentence, before anything touches a subscription or the
//! broker (docs/control-protocol.md).
//!
//! Parsing needs nothing but the text and the server's topic-name rule, so it can be tested
//! (and fuzzed) on its own; what depends on the connection (rights, what it already holds)
//! is checked by the session afterwards.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry::Message;
use ferry::pubsub::Position;
use serde_json::{Map, Value};

/// Longest `id` string echoed back, and longest `epoch` accepted in `since`.
pub const MAX_ID_LEN: usize = 128;

/// The sentence of every topic-name refusal.
const NOT_A_TOPIC: &str = "not a topic here; names are 1 to 64 letters, digits, '.', '_' or '-', and the server may allow only some";

/// A refused request: a stable code for programs, a sentence for people. The sentence never
/// repeats the request's text, only the place in it (a field, an index, a parser position).
#[derive(Debug)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

/// A [`Refused`] with `code` and `message`.
pub fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// A well-formed request.
#[derive(Debug)]
pub enum Request {
    /// `topics`: valid, distinct, in request order; `since`: a position for some of them.
    Subscribe {
        topics: Vec<String>,
        since: HashMap<String, Position>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Publish {
        topic: String,
        message: Message,
    },
    Refresh {
        token: String,
    },
}

/// A parsed request and the `id` its reply carries (`None` when it had none, or when the
/// request was too broken to find one).
#[derive(Debug)]
pub struct Parsed {
    pub id: Option<Value>,
    pub request: Result<Request, Refused>,
}

/// Parses one request. `topic_ok` says whether a name is a topic on this server.
pub fn parse(text: &str, topic_ok: impl Fn(&str) -> bool) -> Parsed {
    let broken = |refusal| Parsed {
        id: None,
        request: Err(refusal),
    };
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
            return broken(refused("bad_json", why));
        }
    };
    let Value::Object(request) = request else {
        return broken(refused(
            "not_object",
            "a request is a JSON object with an \"op\"",
        ));
    };
    let id = match request.get("id") {
        None => None,
        Some(id @ Value::Number(_)) => Some(id.clone()),
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Some(Value::String(s.clone())),
        Some(_) => {
            return broken(refused(
                "bad_id",
                format!("\"id\" must be a number or a string of at most {MAX_ID_LEN} bytes"),
            ));
        }
    };
    let request = match request.get("op").and_then(Value::as_str) {
        Some("subscribe") => subscribe(&request, &topic_ok),
        Some("unsubscribe") => {
            topic_list(&request, &topic_ok).map(|topics| Request::Unsubscribe { topics })
        }
        Some("publish") => publish(&request, &topic_ok),
        Some("refresh") => match request.get("token").and_then(Value::as_str) {
            Some(token) => Ok(Request::Refresh {
                token: token.to_owned(),
            }),
            None => Err(refused(
                "missing_field",
                "\"token\" is missing; give the new token as a string",
            )),
        },
        Some(_) => Err(refused(
            "unknown_op",
            "unknown \"op\"; use subscribe, unsubscribe, publish or refresh",
        )),
        None => Err(refused(
            "missing_field",
            "\"op\" is missing or not a string; use subscribe, unsubscribe, publish or refresh",
        )),
    };
    Parsed { id, request }
}

/// The `topics` field: a non-empty array of valid names, duplicates dropped, in request order.
fn topic_list(
    request: &Map<String, Value>,
    topic_ok: &impl Fn(&str) -> bool,
) -> Result<Vec<String>, Refused> {
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
            Some(name) if topic_ok(name) => {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            _ => {
                return Err(refused(
                    "bad_topic",
                    format!("topics[{index}]: {NOT_A_TOPIC}"),
                ));
            }
        }
    }
    Ok(names)
}

/// `{"op":"subscribe","topics":[..],"since":{"TOPIC":{"offset":N,"epoch":"E"}}}`: each topic
/// of `since` must also be in `topics`.
fn subscribe(
    request: &Map<String, Value>,
    topic_ok: &impl Fn(&str) -> bool,
) -> Result<Request, Refused> {
    let topics = topic_list(request, topic_ok)?;
    let mut since = HashMap::new();
    if let Some(value) = request.get("since") {
        let Some(object) = value.as_object() else {
            return Err(refused(
                "bad_field",
                "\"since\" must be an object: {\"TOPIC\": {\"offset\": N, \"epoch\": \"E\"}}",
            ));
        };
        for (topic, position) in object {
            // A name found in `topics` is a valid one, so it may be repeated in the sentence.
            if !topics.contains(topic) {
                return Err(refused(
                    "bad_field",
                    "since: a topic that is not in \"topics\"",
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
    }
    Ok(Request::Subscribe { topics, since })
}

/// `{"op":"publish","topic":T,"data":TEXT}` or `"binary":BASE64`.
fn publish(
    request: &Map<String, Value>,
    topic_ok: &impl Fn(&str) -> bool,
) -> Result<Request, Refused> {
    let topic = match request.get("topic") {
        None => {
            return Err(refused(
                "missing_field",
                "\"topic\" is missing; name the topic to publish to",
            ));
        }
        Some(Value::String(name)) if topic_ok(name) => name.clone(),
        Some(_) => return Err(refused("bad_topic", NOT_A_TOPIC)),
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
        _ => return Err(refused("bad_field", "\"data\" and \"binary\" are strings")),
    };
    Ok(Request::Publish { topic, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_topic(name: &str) -> bool {
        crate::cmd::serve::names::valid_name(name)
    }

    fn code(text: &str) -> &'static str {
        match parse(text, any_topic).request {
            Ok(request) => panic!("accepted {text}: {request:?}"),
            Err(refused) => refused.code,
        }
    }

    #[test]
    fn a_subscribe_keeps_request_order_and_drops_duplicates() {
        let parsed = parse(
            r#"{"op":"subscribe","id":7,"topics":["b","a","b"],"since":{"a":{"offset":3,"epoch":"e"}}}"#,
            any_topic,
        );
        assert_eq!(parsed.id, Some(Value::from(7)));
        let Ok(Request::Subscribe { topics, since }) = parsed.request else {
            panic!("not a subscribe: {parsed:?}");
        };
        assert_eq!(topics, ["b", "a"]);
        assert_eq!(since["a"], Position::new(3, "e"));
        assert_eq!(since.len(), 1);
    }

    #[test]
    fn each_malformed_request_gets_its_code() {
        assert_eq!(code("{"), "bad_json");
        assert_eq!(code("[1]"), "not_object");
        assert_eq!(code(r#"{"op":"publish","id":[1]}"#), "bad_id");
        assert_eq!(code(r#"{"op":"dance"}"#), "unknown_op");
        assert_eq!(code(r#"{"topics":["a"]}"#), "missing_field");
        assert_eq!(code(r#"{"op":"subscribe"}"#), "missing_field");
        assert_eq!(code(r#"{"op":"subscribe","topics":[]}"#), "bad_field");
        assert_eq!(code(r#"{"op":"subscribe","topics":["a b"]}"#), "bad_topic");
        assert_eq!(
            code(r#"{"op":"subscribe","topics":["a"],"since":{"b":{"offset":1,"epoch":"e"}}}"#),
            "bad_field"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","topics":["a"],"since":{"a":{"offset":-1,"epoch":"e"}}}"#),
            "bad_field"
        );
        assert_eq!(code(r#"{"op":"publish","data":"x"}"#), "missing_field");
        assert_eq!(code(r#"{"op":"publish","topic":"a"}"#), "missing_field");
        assert_eq!(
            code(r#"{"op":"publish","topic":"a","data":"x","binary":"eA=="}"#),
            "bad_field"
        );
        assert_eq!(
            code(r#"{"op":"publish","topic":"a","binary":"*"}"#),
            "bad_base64"
        );
        assert_eq!(code(r#"{"op":"refresh"}"#), "missing_field");
    }

    #[test]
    fn a_refusal_never_repeats_what_was_sent() {
        let secret = "SECRET-VALUE";
        for text in [
            format!(r#"{{"op":"{secret}"}}"#),
            format!(r#"{{"op":"subscribe","topics":["{secret} x"]}}"#),
            format!(r#"{{"op":"subscribe","topics":["a"],"since":{{"{secret}":1}}}}"#),
            format!(r#"{{"op":"publish","topic":"{secret}!","data":"x"}}"#),
            format!(r#"{{"op":"publish","topic":"a","binary":"{secret}!"}}"#),
            format!(
                r#"{{"op":"publish","id":"{}","topic":"a"}}"#,
                "x".repeat(200)
            ),
            format!(r#"{{"op":"x" {secret}"#),
        ] {
            let refusal = parse(&text, any_topic).request.unwrap_err();
            assert!(
                !refusal.message.contains(secret) && !refusal.message.contains("xxxx"),
                "{text} -> {}",
                refusal.message
            );
        }
    }
}
