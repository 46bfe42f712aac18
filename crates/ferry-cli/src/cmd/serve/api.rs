//! The HTTP API for backends (docs/cluster.md): publish to a topic and read its history
//! without a WebSocket. Off unless `--api-key-file` is given; every request carries
//! `Authorization: Bearer KEY`.
//!
//! - `POST /api/publish/TOPIC`: the body is the message (text for `text/*` and
//!   `application/json`, binary otherwise). 200 `{"topic","offset","epoch"}`.
//! - `GET /api/history/TOPIC?since=N&epoch=E&limit=L`: the messages after offset N, as a
//!   subscribe with `since` would replay them. 200 `{"topic","epoch","offset","recovered",
//!   "messages":[{"offset","data"|"binary"}]}`.
//!
//! Error bodies are JSON `{"error": CODE, "message": TEXT}` that never echo the request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ferry::Message;
use ferry::pubsub::Position;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::State;
use super::reply::Reply;

fn reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    reply(status, &json!({"error": code, "message": message}))
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &Request<Body>, keys: &[String]) -> bool {
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return false;
    };
    // Every key is compared, so the time does not tell which one nearly matched.
    keys.iter().fold(false, |found, key| {
        same(presented.as_bytes(), key.as_bytes()) | found
    })
}

pub async fn handle(req: Request<Body>, state: &State) -> Reply {
    let Some(keys) = &state.api_keys else {
        return error(
            StatusCode::NOT_FOUND,
            "api_off",
            "the HTTP API is off; start ferry serve with --api-key-file",
        );
    };
    if !authorized(&req, keys) {
        let mut reply = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "give a key of --api-key-file as Authorization: Bearer KEY",
        );
        reply
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return reply;
    }
    let path = req.uri().path().to_owned();
    let (method, topic, expected) = if let Some(topic) = path.strip_prefix("/api/publish/") {
        ("publish", topic, Method::POST)
    } else if let Some(topic) = path.strip_prefix("/api/history/") {
        ("history", topic, Method::GET)
    } else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the API has /api/publish/TOPIC (POST) and /api/history/TOPIC (GET)",
        );
    };
    if req.method() != expected {
        let mut reply = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("use {expected} here"),
        );
        reply.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(if expected == Method::POST {
                "POST"
            } else {
                "GET"
            }),
        );
        return reply;
    }
    if !state.topic_allowed(topic) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_topic",
            "not a topic here; names are 1 to 64 letters, digits, '.', '_' or '-', and the server may allow only some",
        );
    }
    let topic = topic.to_owned();
    match method {
        "publish" => publish(req, state, &topic).await,
        _ => history(&req, state, &topic).await,
    }
}

async fn publish(req: Request<Body>, state: &State, topic: &str) -> Reply {
    let limit = state.config.limits.max_message_size;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the message is over --max-message-size ({limit} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let text = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v.starts_with("text/") || v.starts_with("application/json"));
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read whole",
            );
        }
    };
    let message = if text {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Message::text(text),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_utf8",
                    "a text/* or application/json body must be UTF-8; send binary as application/octet-stream",
                );
            }
        }
    } else {
        Message::binary(body)
    };
    match state.broker.publish(topic, message).await {
        Ok(published) => {
            let p = &published.position;
            reply(
                StatusCode::OK,
                &json!({"topic": topic, "offset": p.offset, "epoch": &*p.epoch}),
            )
        }
        Err(err) => {
            state.metrics.broker_refused();
            tracing::warn!(topic, reason = %err, "API publish refused: the broker is unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "the message broker is unavailable; the message was not published",
            )
        }
    }
}

async fn history(req: &Request<Body>, state: &State, topic: &str) -> Reply {
    let max = state.history.recovery_max;
    let (mut since, mut epoch, mut limit) = (None, None, max);
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| error(StatusCode::BAD_REQUEST, "bad_query", what);
        match name {
            "since" => match value.parse::<u64>() {
                Ok(n) => since = Some(n),
                Err(_) => return bad("since must be an offset (a whole number)"),
            },
            "epoch" if value.len() <= 128 => epoch = Some(value.to_owned()),
            "epoch" => return bad("epoch is too long"),
            "limit" => match value.parse::<usize>() {
                Ok(n) if n <= max => limit = n,
                _ => {
                    return bad(&format!(
                        "limit must be a whole number up to --recovery-max ({max})"
                    ));
                }
            },
            "" => {}
            _ => return bad("the query takes since, epoch and limit"),
        }
    }
    let since = match (since, epoch) {
        (Some(offset), Some(epoch)) => Some(Position::new(offset, epoch)),
        (None, None) => None,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "give since and epoch together, as a message or ack carried them",
            );
        }
    };
    let history = match state.broker.history(topic, since.as_ref(), limit).await {
        Ok(history) => history,
        Err(err) => {
            state.metrics.broker_refused();
            tracing::warn!(topic, reason = %err, "API history refused: the broker is unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "the message broker is unavailable",
            );
        }
    };
    let messages: Vec<Value> = history
        .messages
        .iter()
        .flatten()
        .map(|(position, message)| match message {
            Message::Text(text) => json!({"offset": position.offset, "data": text.as_str()}),
            Message::Binary(data) => {
                json!({"offset": position.offset, "binary": BASE64.encode(data)})
            }
        })
        .collect();
    let mut body = json!({
        "topic": topic,
        "epoch": &*history.top.epoch,
        "offset": history.top.offset,
        "messages": messages,
    });
    if let (Some(_), Value::Object(fields)) = (&since, &mut body) {
        fields.insert("recovered".into(), history.messages.is_some().into());
    }
    reply(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn keys_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
