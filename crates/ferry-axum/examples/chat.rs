//! A chat room in an axum app: a page at `/`, and a WebSocket at `/ws?name=NAME` whose every
//! message goes to everyone in the room, framed and compressed once for all of them (ferry's
//! pub/sub hub). A reader too slow for its send queue is closed with 1013 rather than holding
//! the room back. Works over HTTP/1.1 and HTTP/2 alike.
//!
//!   cargo run -p ferry-axum --example chat            # http://127.0.0.1:3000, two tabs

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{Html, Response};
use axum::routing::{any, get};
use ferry::pubsub::{Broker, LocalBroker, SlowSubscriber};
use ferry::{Limits, Message};
use ferry_axum::WebSocketUpgrade;

/// The room every connection joins.
const ROOM: &str = "room";

/// The app: the page and the chat route, sharing one hub.
pub fn app() -> Router {
    let hub = Arc::new(LocalBroker::new(SlowSubscriber::Close));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", any(chat))
        .with_state(hub)
}

async fn chat(State(hub): State<Arc<LocalBroker>>, ws: WebSocketUpgrade) -> Response {
    let name = name_in(ws.request().path());
    let limits = Limits {
        max_message_size: 4096,
        ..Limits::default()
    };
    ws.limits(limits)
        .on_upgrade(move |sender, mut receiver| async move {
            let id = hub.subscribe(ROOM, sender.into());
            hub.publish(ROOM, Message::text(format!("* {name} joined")));
            while let Some(message) = receiver.recv_message().await {
                if let Message::Text(text) = message {
                    hub.publish(ROOM, Message::text(format!("{name}: {text}")));
                }
            }
            hub.unsubscribe(ROOM, id);
            hub.publish(ROOM, Message::text(format!("* {name} left")));
        })
}

/// The `name` query parameter when it is 1 to 20 letters or digits, else "guest".
fn name_in(path: &str) -> String {
    path.split_once('?')
        .map(|(_, query)| query)
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("name="))
        .filter(|name| (1..=20).contains(&name.len()))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("guest")
        .to_owned()
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>ferry chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; height: 20rem; overflow-y: auto; padding: .5rem; white-space: pre-wrap; }
  form { display: flex; gap: .5rem; margin-top: .5rem; } input[name=text] { flex: 1; }
</style>
<h1>ferry chat</h1>
<div id="log"></div>
<form id="send"><input name="text" autocomplete="off" placeholder="say something" disabled><button disabled>Send</button></form>
<script>
  const log = document.getElementById('log');
  const form = document.getElementById('send');
  const show = (line) => { log.textContent += line + '\n'; log.scrollTop = log.scrollHeight; };
  const name = (prompt('Your name (letters and digits)') || 'guest').replace(/[^A-Za-z0-9]/g, '').slice(0, 20);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/ws?name=${encodeURIComponent(name)}`);
  ws.onopen = () => { for (const el of form.elements) el.disabled = false; form.text.focus(); };
  ws.onmessage = (event) => show(event.data);
  ws.onclose = (event) => show(`(closed: ${event.code} ${event.reason})`);
  form.onsubmit = (event) => {
    event.preventDefault();
    if (form.text.value) ws.send(form.text.value);
    form.text.value = '';
  };
</script>
"#;

#[allow(dead_code)] // the test includes this file for `app` alone
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("chat on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}
