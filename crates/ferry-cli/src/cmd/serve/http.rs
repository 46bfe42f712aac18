//! The one listener: HTTP/1.1 and HTTP/2 by hyper, upgraded to ferry's WebSocket on the
//! WebSocket routes (an HTTP/1.1 Upgrade, or an HTTP/2 extended CONNECT, RFC 8441).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use ferry::Sender;
use ferry::upgrade::{Upgrade, UpgradeError, refusal_response};
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::State;
use super::admission::{AcceptFailures, Admission};
use super::auth::{Grant, Rejected};
use super::bridge::{self, TokenCheck};
use super::per_ip::{PerIp, Slot};
pub use super::reply::{Reply, text};
use super::timers::Timers;
use super::tls::Tls;
use super::topic::TopicRequest;

const PAGE: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Accepts until SIGINT or SIGTERM, then closes every WebSocket with 1001 after its queued
/// messages, waits up to `grace`, and returns. SIGHUP reloads the TLS certificate.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<Arc<Tls>>,
    per_ip: Arc<PerIp>,
    grace: Duration,
) -> Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    #[cfg(unix)]
    if let Some(tls) = &tls {
        tokio::spawn(reload_on_sighup(tls.clone()));
    }
    let mut failing = AcceptFailures::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failing.recovered();
                    let _ = stream.set_nodelay(true);
                    let slot = if state.trusted_proxies.iter().any(|c| c.contains(peer.ip())) {
                        // A reverse proxy: its clients are counted per request, by the address
                        // it forwards.
                        per_ip.exempt(peer.ip())
                    } else {
                        per_ip.acquire(peer.ip())
                    };
                    if !slot.admitted() {
                        state.metrics.handshake_failed("too_many_from_ip");
                    }
                    let state = state.clone();
                    match &tls {
                        None if state.http2.is_some() => {
                            tokio::spawn(async move {
                                let timeout = state.config.limits.handshake_timeout;
                                match super::http2::opens_with_preface(&stream, timeout).await {
                                    Some(http2) => serve_connection(stream, state, slot, http2).await,
                                    None => state.metrics.handshake_failed("timeout"),
                                }
                            });
                        }
                        None => {
                            tokio::spawn(serve_connection(stream, state, slot, false));
                        }
                        Some(tls) => {
                            let acceptor = tls.acceptor();
                            tokio::spawn(async move {
                                let timeout = state.config.limits.handshake_timeout;
                                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => {
                                        // ALPN decided (RFC 9113 §3.2); tls.rs offers h2 only
                                        // with --http2 on.
                                        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                        serve_connection(stream, state, slot, http2).await
                                    }
                                    Ok(Err(err)) => {
                                        state.metrics.handshake_failed("tls");
                                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                    }
                                    Err(_) => {
                                        state.metrics.handshake_failed("tls");
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                    }
                                }
                            });
                        }
                    }
                }
                Err(err) => {
                    let pause = failing.failed(&err, &state.metrics);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: closing every connection with 1001");
    match tokio::time::timeout(grace, state.connections.close_all()).await {
        Ok(closed) => tracing::info!(connections = closed, "every connection closed"),
        Err(_) => tracing::warn!("grace period over: dropping the connections still open"),
    }
    Ok(())
}

/// SIGHUP reloads the certificate and key (Unix only: elsewhere restart to reload).
#[cfg(unix)]
async fn reload_on_sighup(tls: Arc<Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the TLS certificate will not be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(err) => {
                tracing::error!(error = %err, "SIGHUP: TLS reload failed; keeping the old certificate")
            }
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix (what service managers send), starts the graceful shutdown.
#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(unix)]
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

/// A transport the server speaks HTTP on: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Serves HTTP/1.1, or HTTP/2 when `http2` (the preface or ALPN said so), on one connection.
async fn serve_connection<S: Transport>(stream: S, state: Arc<State>, slot: Slot, http2: bool) {
    let io = TokioIo::new(stream);
    let timeout = state.config.limits.handshake_timeout;
    let h2 = state.http2.clone().filter(|_| http2);
    let slot = Arc::new(slot);
    let service = service_fn(move |req| {
        let state = state.clone();
        let slot = slot.clone();
        async move {
            if req.uri().path() == "/demo/tcp-chunks" && slot.admitted() {
                let reply = super::lesson::tcp_chunks(req.method(), req.uri().query()).await;
                return Ok::<_, Infallible>(reply);
            }
            if !slot.admitted() {
                let mut reply = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections from your address; try again later",
                );
                reply
                    .headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
                return Ok::<_, Infallible>(reply);
            }
            Ok::<_, Infallible>(route::<S>(req, state, slot).await)
        }
    });
    let served = match h2 {
        // Extended CONNECT streams are handed over without with_upgrades.
        Some(builder) => builder.serve_connection(io, service).await,
        None => {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
    };
    if let Err(err) = served {
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

fn asset(content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    reply
}

/// Where an upgrade goes.
enum Target {
    Echo,
    Control,
    Topic(String),
    Bridge(String),
}

async fn route<S: Transport>(
    req: hyper::Request<Body>,
    state: Arc<State>,
    slot: Arc<Slot>,
) -> Reply {
    let path = req.uri().path().to_owned();
    if let Some(name) = &state.catch_all_bridge {
        // `ferry bridge`: every path but the two operational ones is the bridge.
        if path != "/healthz" && path != "/metrics" {
            let name = name.clone();
            return upgrade::<S>(req, state, Target::Bridge(name), slot);
        }
    }
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
        "/readyz" => {
            return match state.broker.readiness() {
                Ok(()) => text(StatusCode::OK, "ready"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready: {why}"),
                ),
            };
        }
        "/metrics" => {
            let hub = state.broker.hub();
            return asset(
                "text/plain; version=0.0.4",
                state
                    .metrics
                    .render(&hub.stats(), &hub.totals(), &state.broker.stats()),
            );
        }
        _ => {}
    }
    if path == "/api" || path.starts_with("/api/") {
        return super::api::handle(req, &state).await;
    }
    let Some(rest) = path.strip_prefix(state.prefix.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let target = if rest == "/echo" {
        Target::Echo
    } else if rest == "/control" {
        Target::Control
    } else if let Some(name) = rest.strip_prefix("/topics/") {
        if !valid_name(name) {
            return text(
                StatusCode::NOT_FOUND,
                "topic names are 1 to 64 letters, digits, '.', '_' or '-'",
            );
        }
        if !state.topic_allowed(name) {
            return text(StatusCode::NOT_FOUND, "no such topic");
        }
        if let Err(why) = state.broker.readiness() {
            state.metrics.handshake_failed("broker_unavailable");
            tracing::warn!(reason = %why, "topic connection refused: the broker is unavailable");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the message broker is unavailable; try again later",
            );
        }
        Target::Topic(name.to_owned())
    } else if let Some(name) = rest.strip_prefix("/bridge/") {
        if !state.bridges.contains_key(name) {
            return text(StatusCode::NOT_FOUND, "no such bridge");
        }
        Target::Bridge(name.to_owned())
    } else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    upgrade::<S>(req, state, target, slot)
}

use super::names::valid_name;

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Validates the upgrade with ferry's handshake rules, answers 101, and hands the connection
/// to the route's handler once hyper lets go of it.
fn upgrade<S: Transport>(
    mut req: hyper::Request<Body>,
    state: Arc<State>,
    target: Target,
    slot: Arc<Slot>,
) -> Reply {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let client = super::forwarded::client_address(
        slot.ip(),
        &state.trusted_proxies,
        header("forwarded"),
        header("x-forwarded-for"),
    );
    // Behind a trusted proxy the connection is the proxy's; this WebSocket is the client's.
    // Over HTTP/2 the connection carries many WebSockets: each counts under
    // --max-connections-per-ip too, beside the connection itself.
    let http2 = req.version() == hyper::Version::HTTP_2;
    let slot = if client == slot.ip() && !http2 {
        slot
    } else {
        let client_slot = state.per_ip.acquire(client);
        if !client_slot.admitted() {
            state.metrics.handshake_failed("too_many_from_ip");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections from your address; try again later",
            );
        }
        Arc::new(client_slot)
    };
    if let Err(wait) = state.handshake_rate.take(slot.key()) {
        state.metrics.rate_limited("handshake");
        let mut reply = text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many handshakes from your address; try again after Retry-After seconds",
        );
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(value) = HeaderValue::try_from(seconds.to_string()) {
            reply.headers_mut().insert("retry-after", value);
        }
        return reply;
    }
    tracing::debug!(
        peer = %slot.ip(),
        path = req.uri().path(),
        query = %super::auth::strip_token(req.uri().query().unwrap_or("")),
        "WebSocket request"
    );
    // Before the handshake is even parsed: a plain GET with a token learns why it would be
    // refused (the page asks that way, since a browser's WebSocket hides the status).
    let authorized = match authorize(&state, &req, &target) {
        Ok(authorized) => authorized,
        Err(reply) => return *reply,
    };
    // ferry's handshake rules, through the library's hyper integration (ferry::upgrade).
    let upgrade = match Upgrade::from_request(&mut req) {
        Ok(upgrade) => upgrade,
        Err(err) => {
            state.metrics.handshake_failed(failure_reason(&err));
            return refusal_response(&err.refusal(), req.version());
        }
    };
    let request = upgrade.request();
    if !state.origins.allows(request.origin(), request.host()) {
        state.metrics.handshake_failed("origin");
        return text(
            StatusCode::FORBIDDEN,
            "origin not allowed; the server's --allow-origin list decides",
        );
    }
    // Checked and counted in one step, so a burst of handshakes never gets past the limit.
    let Some(admission) = Admission::new(&state) else {
        state.metrics.handshake_failed("too_many_connections");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again later",
        );
    };
    let mut protocols: &[&str] = &[];
    if let Target::Bridge(name) = &target {
        let Some(bridge) = state.bridges.get(name) else {
            return text(StatusCode::NOT_FOUND, "no such bridge");
        };
        let query = req.uri().query();
        let token = bridge::presented_token(request.header_str("authorization"), query);
        let check = if authorized.bridge_checked {
            TokenCheck::Accepted
        } else {
            bridge.check_token(token)
        };
        match check {
            TokenCheck::Accepted => {}
            TokenCheck::Missing | TokenCheck::Refused => {
                state.metrics.handshake_failed("token");
                let mut reply = text(
                    StatusCode::UNAUTHORIZED,
                    "this bridge needs a token: Authorization: Bearer TOKEN, or ?token=TOKEN",
                );
                reply
                    .headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                return reply;
            }
            TokenCheck::Unavailable => {
                state.metrics.handshake_failed("token_file");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this bridge cannot check tokens right now",
                );
            }
        }
        // websockify's subprotocol: the data is carried in binary messages, as ferry does anyway.
        protocols = &["binary"];
    }
    // The response and the connection, settled together (subprotocol, permessage-deflate).
    let (reply, pending) = upgrade.accept_with_protocols(&state.config, protocols);
    let grant = authorized.grant;
    // Over HTTP/1.1 the WebSocket runs on the connection's own stream (S), taken back from
    // hyper with whatever it read past the request; an HTTP/2 stream stays hyper's. Each kind
    // of route is its own task, so an echo connection's task is the size of the echo loop,
    // not of the largest route's future (it lives as long as the connection: docs/memory.md).
    let route = match target {
        Target::Echo => {
            // Only answers what it receives: one task, no handles (echo.rs). The wait for the
            // stream is boxed, and the token reduced to its expiry timer, before the task is
            // made: the task keeps its size for the connection's whole life (under 1 KiB
            // against 4.9).
            let timers = Timers::new(grant.map(|g| g.remaining()), state.idle_timeout);
            let upgrading = Box::pin(pending.into_websocket_on::<S>());
            tokio::spawn(super::echo::serve(
                upgrading, http2, timers, slot, admission,
            ));
            return reply;
        }
        Target::Topic(name) => {
            // Held by its handles (the broker sends to it), with a task as small as echo's:
            // the token reduced to what the loop needs before the task is made (topic.rs).
            let may_publish = state.access.may_publish(&name, grant.as_ref());
            let timers = Timers::new(grant.map(|g| g.remaining()), state.idle_timeout);
            let upgrading = Box::pin(pending.websocket_on::<S>());
            let topic = TopicRequest { name, may_publish };
            tokio::spawn(super::topic::serve(
                upgrading, http2, topic, timers, slot, admission,
            ));
            return reply;
        }
        Target::Control => HandlesRoute::Control,
        Target::Bridge(name) => HandlesRoute::Bridge(name),
    };
    // As for echo: the wait for the stream is boxed, so it does not size the task.
    let upgrading = Box::pin(pending.websocket_on::<S>());
    tokio::spawn(async move {
        match upgrading.await {
            Ok((sender, receiver)) => {
                let websocket = WebSocketRequest {
                    route,
                    http2,
                    grant,
                };
                run_websocket(sender, receiver, state, websocket, slot, admission).await
            }
            Err(err) => tracing::debug!(error = %err, "upgrade failed"),
        }
    });
    reply
}

/// Who is connecting, as far as the route needs to know.
struct Authorized {
    /// The verified token's permissions; `None` without tokens, or without one presented
    /// where none is needed.
    grant: Option<Grant>,
    /// A bridge already let in by a token (its own, or a JWT naming it).
    bridge_checked: bool,
}

fn unauthorized(state: &State, rejected: Rejected) -> Reply {
    tracing::debug!(reason = rejected.reason(), "token refused");
    state.metrics.auth_failed(rejected.reason());
    state.metrics.handshake_failed("token");
    let mut reply = text(StatusCode::UNAUTHORIZED, rejected.message());
    reply
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    reply
}

fn forbidden(state: &State, op: &'static str, why: &str) -> Reply {
    state.metrics.forbidden(op);
    state.metrics.handshake_failed("forbidden");
    text(StatusCode::FORBIDDEN, why)
}

/// Checks the token a request presents against the route (docs/auth.md): 401 for a token
/// missing where one is needed, or one that does not verify; 403 for a valid one (or none)
/// that does not cover the topic or bridge.
fn authorize(
    state: &State,
    req: &hyper::Request<Body>,
    target: &Target,
) -> Result<Authorized, Box<Reply>> {
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = bridge::presented_token(authorization, req.uri().query());
    let Some(verifier) = &state.verifier else {
        // Tokens are off: anyone may subscribe (rules can only restrict publishing then).
        return Ok(Authorized {
            grant: None,
            bridge_checked: false,
        });
    };
    if let Target::Bridge(name) = target
        && let Some(bridge) = state.bridges.get(name)
        && !bridge.is_open()
        && bridge.check_token(presented) == TokenCheck::Accepted
    {
        // The bridge's own token opens it, as without signed tokens.
        return Ok(Authorized {
            grant: None,
            bridge_checked: true,
        });
    }
    let grant = match presented {
        Some(token) => Some(
            verifier
                .verify(token)
                .map_err(|r| Box::new(unauthorized(state, r)))?,
        ),
        None => None,
    };
    let missing = || Err(Box::new(unauthorized(state, Rejected::Missing)));
    match target {
        Target::Echo if grant.is_none() => return missing(),
        Target::Control if grant.is_none() && !state.access.anything_for_anyone() => {
            return missing();
        }
        Target::Topic(name) if !state.access.may_subscribe(name, grant.as_ref()) => {
            if grant.is_none() {
                return missing();
            }
            return Err(Box::new(forbidden(
                state,
                "subscribe",
                "this token does not allow subscribing to this topic",
            )));
        }
        Target::Bridge(name) => match &grant {
            None => return missing(),
            Some(g) if !g.may_bridge(name) => {
                return Err(Box::new(forbidden(
                    state,
                    "bridge",
                    "this token does not allow this bridge",
                )));
            }
            Some(_) => {
                return Ok(Authorized {
                    grant,
                    bridge_checked: true,
                });
            }
        },
        _ => {}
    }
    if let Some(g) = &grant {
        tracing::debug!(sub = g.sub.as_deref().unwrap_or("-"), "token accepted");
    }
    Ok(Authorized {
        grant,
        bridge_checked: false,
    })
}

fn failure_reason(err: &UpgradeError) -> &'static str {
    use ferry::proto::handshake::HandshakeError as E;
    match err {
        UpgradeError::Handshake(E::MethodNotAllowed) => "method",
        UpgradeError::Handshake(E::NotWebSocket | E::NotExtendedConnect) => "not_websocket",
        UpgradeError::Handshake(E::UnknownProtocol) => "unknown_protocol",
        UpgradeError::Handshake(E::UnsupportedVersion) => "version",
        UpgradeError::Handshake(E::InvalidKey) => "key",
        UpgradeError::Handshake(E::HeadersTooLarge { .. } | E::TooManyHeaders { .. }) => {
            "headers_too_large"
        }
        _ => "bad_request",
    }
}

/// A route whose connection is held by its `Sender`/`Receiver` handles, because it is sent to
/// from more than one place (the broker, other connections, a bridge's target), and whose
/// task is this file's `run_websocket`. The echo route runs on a single task (`echo::serve`);
/// the topic route, held by handles too, has a task of its own (`topic::serve`).
enum HandlesRoute {
    Control,
    Bridge(String),
}

/// What the handshake settled about one WebSocket held by its handles.
struct WebSocketRequest {
    route: HandlesRoute,
    /// Whether it is a stream of an HTTP/2 connection.
    http2: bool,
    grant: Option<Grant>,
}

async fn run_websocket(
    sender: Sender,
    receiver: ferry::Receiver,
    state: Arc<State>,
    websocket: WebSocketRequest,
    // Held for the connection's life: the per-IP count covers the WebSocket too.
    _slot: Arc<Slot>,
    // Holds this connection's place under --max-connections until it ends.
    _admission: Admission,
) {
    let WebSocketRequest {
        route,
        http2,
        grant,
    } = websocket;
    let metrics = &state.metrics;
    metrics.opened(http2);
    let id = state.connections.add(sender.clone());
    let closed = match &route {
        HandlesRoute::Control => {
            // Records its own close in the metrics. Boxed, as the bridge below: a connection
            // then carries its own route's loop, not the larger of the two.
            Box::pin(super::control::serve(
                state.clone(),
                sender,
                receiver,
                grant,
            ))
            .await;
            None
        }
        HandlesRoute::Bridge(name) => match state.bridges.get(name) {
            Some(bridge) => {
                // Ends when the token does, with 4001 (the control route can refresh its own).
                Box::pin(bridge::relay(
                    bridge,
                    sender,
                    receiver,
                    metrics,
                    state.idle_timeout,
                    grant.map(|g| g.remaining()),
                ))
                .await
            }
            None => None,
        },
    };
    if let Some(info) = closed {
        metrics.closed(&info);
    }
    state.connections.remove(id);
}
