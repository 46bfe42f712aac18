//! The one listener: HTTP/1.1 by hyper, upgraded to ferry's WebSocket on the WebSocket routes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use ferry::pubsub::Broker;
use ferry::{CloseCode, DeflateParams, Incoming, Initiator, Refusal, Request, Role, Sender};
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::State;
use super::metrics::Route;

const PAGE: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Open WebSocket connections, so shutdown can close each with 1001.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Sender>>,
}

impl Registry {
    fn add(&self, sender: Sender) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, sender);
        id
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn all(&self) -> Vec<Sender> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Accepts until SIGINT or SIGTERM, then closes every WebSocket with 1001 after its queued
/// messages, waits up to `grace`, and returns.
pub async fn serve(listener: TcpListener, state: Arc<State>, grace: Duration) -> Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, state.clone()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = state.connections.all();
    tracing::info!(
        connections = open.len(),
        "shutting down: closing every connection with 1001"
    );
    let closes = open.into_iter().map(|sender| async move {
        sender
            .close(CloseCode::GOING_AWAY, "server shutting down")
            .await;
    });
    let all = futures_join(closes);
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!("grace period over: dropping the connections still open");
    }
    Ok(())
}

/// Waits for every future, without pulling in a futures combinator crate.
async fn futures_join<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let io = TokioIo::new(stream);
    let timeout = state.config.limits.handshake_timeout;
    let service = service_fn(move |req| {
        let state = state.clone();
        async move {
            if req.uri().path() == "/demo/tcp-chunks" {
                let reply = super::lesson::tcp_chunks(req.method(), req.uri().query()).await;
                return Ok::<_, Infallible>(reply);
            }
            Ok::<_, Infallible>(route(req, state))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(err) = conn.await {
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

type Reply = Response<Full<Bytes>>;

fn text(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn asset(content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    reply
}

fn refusal(refusal: &Refusal) -> Reply {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut reply = text(status, &refusal.body);
    for (name, value) in &refusal.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(*name),
            HeaderValue::try_from(value.as_str()),
        ) {
            reply.headers_mut().insert(name, value);
        }
    }
    reply
}

fn route(req: hyper::Request<Body>, state: Arc<State>) -> Reply {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" | "/index.html" => {
            let page = PAGE.replace(
                "content=\"/ws\"",
                &format!("content=\"{}\"", html_escape(&state.prefix)),
            );
            return asset("text/html; charset=utf-8", page);
        }
        "/app.js" => return asset("text/javascript; charset=utf-8", APP_JS.to_owned()),
        "/style.css" => return asset("text/css; charset=utf-8", STYLE_CSS.to_owned()),
        "/healthz" => return text(StatusCode::OK, "ok"),
        "/metrics" => {
            return asset(
                "text/plain; version=0.0.4",
                state
                    .metrics
                    .render(&state.broker.stats(), &state.broker.totals()),
            );
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix(state.prefix.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let (route, topic) = match rest {
        "/echo" => (Route::Echo, None),
        "/control" => (Route::Control, None),
        _ => match rest.strip_prefix("/topics/") {
            Some(name) if valid_topic(name) => (Route::Topics, Some(name.to_owned())),
            Some(_) => {
                return text(
                    StatusCode::NOT_FOUND,
                    "topic names are 1 to 64 letters, digits, '.', '_' or '-'",
                );
            }
            None => return text(StatusCode::NOT_FOUND, "not found"),
        },
    };
    upgrade(req, state, route, topic)
}

pub(super) fn valid_topic(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Validates the upgrade with ferry's handshake rules, answers 101, and hands the connection
/// to the route's handler once hyper lets go of it.
fn upgrade(
    mut req: hyper::Request<Body>,
    state: Arc<State>,
    route: Route,
    topic: Option<String>,
) -> Reply {
    let minor = match req.version() {
        hyper::Version::HTTP_10 | hyper::Version::HTTP_09 => 0,
        _ => 1,
    };
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let request = match Request::from_parts(req.method().as_str(), minor, path, headers) {
        Ok(request) => request,
        Err(err) => {
            state.metrics.handshake_failed(failure_reason(&err));
            return match err.refusal() {
                Some(r) => refusal(&r),
                None => text(StatusCode::BAD_REQUEST, "bad WebSocket handshake"),
            };
        }
    };
    if !state.origins.allows(request.origin(), request.host()) {
        state.metrics.handshake_failed("origin");
        return text(
            StatusCode::FORBIDDEN,
            "origin not allowed; the server's --allow-origin list decides",
        );
    }
    if state.metrics.connections_open.load(Ordering::Relaxed) as usize >= state.max_connections {
        state.metrics.handshake_failed("too_many_connections");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again later",
        );
    }
    let deflate = state
        .config
        .deflate
        .as_ref()
        .and_then(|d| d.accept_offer(&request.extension_offers()));
    let extensions = deflate.as_ref().map(|(_, header)| header.as_str());
    let extra: Vec<(&str, &str)> = extensions
        .map(|h| ("Sec-WebSocket-Extensions", h))
        .into_iter()
        .collect();
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in request.accept_headers(None, &extra) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            reply.headers_mut().insert(name, value);
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let params = deflate.map(|(params, _)| params);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_websocket(upgraded, state, route, topic, params).await,
            Err(err) => tracing::debug!(error = %err, "upgrade failed"),
        }
    });
    reply
}

fn failure_reason(err: &ferry::proto::handshake::HandshakeError) -> &'static str {
    use ferry::proto::handshake::HandshakeError as E;
    match err {
        E::MethodNotAllowed => "method",
        E::NotWebSocket => "not_websocket",
        E::UnsupportedVersion => "version",
        E::InvalidKey => "key",
        E::HeadersTooLarge { .. } | E::TooManyHeaders { .. } => "headers_too_large",
        _ => "bad_request",
    }
}

async fn run_websocket(
    upgraded: hyper::upgrade::Upgraded,
    state: Arc<State>,
    route: Route,
    topic: Option<String>,
    deflate: Option<DeflateParams>,
) {
    // Take the TCP stream back from hyper (and whatever it read past the request), so the
    // WebSocket runs on the socket itself rather than through hyper's boxed IO.
    let (sender, mut receiver) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => ferry::from_raw(
            parts.io.into_inner(),
            Role::Server,
            &state.config,
            deflate,
            parts.read_buf,
        ),
        Err(upgraded) => ferry::from_raw(
            TokioIo::new(upgraded),
            Role::Server,
            &state.config,
            deflate,
            Bytes::new(),
        ),
    };
    state
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let id = state.connections.add(sender.clone());
    if route == Route::Control {
        super::control::serve(state.clone(), sender, receiver).await;
        state.connections.remove(id);
        state
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let subscription = topic
        .as_ref()
        .map(|name| state.broker.subscribe(name, sender.clone().into()));
    while let Some(item) = receiver.recv().await {
        match item {
            Incoming::Message(message) => {
                state.metrics.received(route, message.len());
                let len = message.len() as u64;
                match &topic {
                    None => {
                        if sender.send(message).await.is_err() {
                            break;
                        }
                        state.metrics.sent(route, 1, len);
                    }
                    Some(name) => {
                        let delivered = state.broker.publish(name, message) as u64;
                        state.metrics.sent(route, delivered, delivered * len);
                    }
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
    if let (Some(name), Some(subscription)) = (&topic, subscription) {
        state.broker.unsubscribe(name, subscription);
    }
    state.connections.remove(id);
    state
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}
