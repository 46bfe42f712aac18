//! A client that reconnects: exponential backoff with jitter, a retry policy, a bounded queue
//! for messages sent while disconnected, events, and a hook run on every connection.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ferry::reconnect::{Client, Policy, Update};
//! let (client, mut updates) = Client::start("ws://127.0.0.1:9001/feed", ferry::Config::default(), Policy::default())?;
//! client.send("hello")?; // queued if disconnected; handed back if the queue is full
//! while let Some(update) = updates.recv().await {
//!     match update {
//!         Update::Message(message) => println!("{message:?}"),
//!         Update::Event(event) => eprintln!("{event}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Delivery: messages sent while disconnected wait in the queue and go out, in order, once a
//! connection is up; none is sent twice. A message already handed to a connection that then
//! drops may or may not have reached the server: WebSocket has no acknowledgements, so resuming
//! exactly is the application's protocol (the [`Policy::on_connect`] hook is where it starts).
//! A connection that keepalive finds dead is reset, so what the kernel still held for it is
//! dropped rather than delivered later, after a newer connection's messages.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::handshake::Response;
use ferry_proto::{CloseCode, CloseInfo, Initiator, Message, Utf8Bytes};
use tokio::sync::{Notify, mpsc, watch};

use crate::address::Address;
use crate::config::Config;
use crate::error::Error;
use crate::socket::{Incoming, Sender};

/// Exponential backoff with jitter, capped.
///
/// After `n` consecutive failures the base delay is `initial * multiplier^n`, at most `max`;
/// the delay used is drawn uniformly from `[base * (1 - jitter), base]`, so a fleet of clients
/// cut off together does not come back together.
///
/// ```
/// use std::time::Duration;
/// use ferry::reconnect::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.bounds(0), (Duration::from_millis(125), Duration::from_millis(250)));
/// assert_eq!(b.bounds(20).1, Duration::from_secs(30));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The base delay after the first failure. 250 ms by default.
    pub initial: Duration,
    /// The cap on the base delay. 30 s by default.
    pub max: Duration,
    /// The growth factor per failure, at least 1. 2 by default.
    pub multiplier: f64,
    /// The fraction of the base delay that is random, 0 (none) to 1 (full jitter). 0.5 by
    /// default.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The smallest and largest delay after `failures` consecutive failures (0: the first).
    pub fn bounds(&self, failures: u32) -> (Duration, Duration) {
        let multiplier = self.multiplier.max(1.0);
        let grown = self.initial.as_secs_f64() * multiplier.powi(failures.min(64) as i32);
        let base = grown.min(self.max.as_secs_f64()).max(0.0);
        let jitter = self.jitter.clamp(0.0, 1.0);
        (
            Duration::from_secs_f64(base * (1.0 - jitter)),
            Duration::from_secs_f64(base),
        )
    }

    /// The delay after `failures` consecutive failures, `random` in `[0, 1)` choosing where in
    /// the [`bounds`](Self::bounds) it falls.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let (low, high) = self.bounds(failures);
        let span = high.as_secs_f64() - low.as_secs_f64();
        Duration::from_secs_f64(low.as_secs_f64() + span * random.clamp(0.0, 1.0))
    }
}

/// Runs after every connection is up (the first included), before queued messages go out:
/// subscribe, authenticate, resume. Messages it sends go out ahead of the queue.
pub type OnConnect = Arc<dyn Fn(Sender) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// When and how a [`Client`] reconnects.
#[derive(Clone)]
pub struct Policy {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Consecutive failed attempts before giving up; `None` (the default) never gives up.
    pub max_attempts: Option<u32>,
    /// Bytes of messages kept while disconnected; past it, `send` hands the message back.
    /// 1 MiB by default.
    pub queue_bytes: usize,
    /// Whether a connection that ended this way is retried. By default: everything but a
    /// close this end asked for, and the codes that say retrying cannot help (1002 protocol
    /// error, 1003 unsupported data, 1007 invalid payload, 1008 policy, 1009 too big, 1010
    /// missing extension).
    pub retry_close: fn(&CloseInfo) -> bool,
    /// Whether a failed attempt is retried. By default: network errors and timeouts, and HTTP
    /// 408, 429 and 5xx; not bad URLs, TLS failures or other HTTP refusals (401, 403, 404...).
    pub retry_error: fn(&Error) -> bool,
    /// Called after each connection is up; see [`OnConnect`].
    pub on_connect: Option<OnConnect>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("queue_bytes", &self.queue_bytes)
            .field("on_connect", &self.on_connect.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff: Backoff::default(),
            max_attempts: None,
            queue_bytes: 1 << 20,
            retry_close: default_retry_close,
            retry_error: default_retry_error,
            on_connect: None,
        }
    }
}

/// The default [`Policy::retry_close`].
pub fn default_retry_close(info: &CloseInfo) -> bool {
    if info.initiator == Initiator::Local && info.clean {
        return false;
    }
    !matches!(info.code.as_u16(), 1002 | 1003 | 1007 | 1008 | 1009 | 1010)
}

/// The default [`Policy::retry_error`].
pub fn default_retry_error(error: &Error) -> bool {
    use ferry_proto::handshake::HandshakeError;
    match error {
        Error::Io(_)
        | Error::HandshakeTimeout
        | Error::ConnectTimeout
        | Error::TlsTimeout
        | Error::Handshake(HandshakeError::Eof) => true,
        Error::Handshake(HandshakeError::Status { code, .. }) => {
            matches!(code, 408 | 429 | 500..=599)
        }
        _ => false,
    }
}

/// What happened to the connection; delivered in order with the messages.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection is up. `failures`: failed attempts before this one.
    Connected {
        /// Failed attempts since the last connection.
        failures: u32,
        /// The server's handshake response.
        response: Box<Response>,
    },
    /// The connection ended.
    Disconnected(CloseInfo),
    /// An attempt failed.
    ConnectFailed {
        /// Consecutive failures, this one included.
        failures: u32,
        /// Why.
        error: Error,
    },
    /// The next attempt starts after `delay`.
    Retrying {
        /// Consecutive failures so far.
        failures: u32,
        /// The backoff delay chosen.
        delay: Duration,
    },
    /// The client stopped: closed by the application, or the policy said not to retry.
    Stopped,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { failures, .. } => {
                write!(f, "connected (after {failures} failed attempts)")
            }
            Event::Disconnected(info) => write!(f, "disconnected: {} {}", info.code, info.reason),
            Event::ConnectFailed { failures, error } => {
                write!(f, "attempt failed ({failures} in a row): {error}")
            }
            Event::Retrying { delay, .. } => write!(f, "reconnecting in {delay:.2?}"),
            Event::Stopped => f.write_str("stopped"),
        }
    }
}

/// What a [`Client`]'s update stream yields.
#[derive(Debug)]
pub enum Update {
    /// A message from the server.
    Message(Message),
    /// A change of connection state.
    Event(Event),
}

/// [`Client::send`] did not queue the message: the queue is over `Policy::queue_bytes`, or
/// the client has stopped. The message is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull(pub Message);

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reconnect queue is full or the client has stopped")
    }
}

impl std::error::Error for QueueFull {}

struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    budget: usize,
    /// The manager: a message was queued, or a stop was asked for.
    wake: Notify,
    /// Senders waiting in `send_wait`: the queue shrank, or the client stopped.
    space: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (push/pop only).
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pop(&self) -> Option<Message> {
        let mut queue = self.lock();
        let message = queue.messages.pop_front()?;
        queue.bytes -= message.len();
        drop(queue);
        self.space.notify_waiters();
        Some(message)
    }

    fn push_front(&self, message: Message) {
        let mut queue = self.lock();
        queue.bytes += message.len();
        queue.messages.push_front(message);
    }
}

/// A WebSocket client that reconnects by itself. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    close: Arc<watch::Sender<Option<(CloseCode, String)>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("queued_bytes", &self.queued_bytes())
            .finish()
    }
}

/// Messages and events of a [`Client`], in order. A slow reader slows the connection down
/// (the client stops reading from the socket) rather than growing memory.
pub type Updates = mpsc::Receiver<Update>;

impl Client {
    /// Starts connecting in the background; must be called within a tokio runtime. `request`
    /// is a URL, an `http::Uri` or an `http::Request<()>` whose headers go into every
    /// handshake (see [`IntoClientRequest`](crate::IntoClientRequest)). Fails only on a URL or
    /// request that cannot be used; everything else arrives as events.
    pub fn start(
        request: impl crate::IntoClientRequest,
        config: Config,
        policy: Policy,
    ) -> Result<(Client, Updates), Error> {
        let target = request.into_target()?;
        let config = target.apply(&config).into_owned();
        Address::parse(&target.url)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                bytes: 0,
                stopped: false,
            }),
            budget: policy.queue_bytes,
            wake: Notify::new(),
            space: Notify::new(),
        });
        let (close_tx, close_rx) = watch::channel(None);
        let (updates_tx, updates_rx) = mpsc::channel(256);
        let manager = Manager {
            url: target.url,
            config,
            policy,
            shared: shared.clone(),
            close: close_rx,
            updates: updates_tx,
        };
        tokio::spawn(manager.run());
        Ok((
            Client {
                shared,
                close: Arc::new(close_tx),
            },
            updates_rx,
        ))
    }

    /// Queues a message: sent at once when connected, after the reconnect otherwise. When the
    /// queue is over `Policy::queue_bytes` (or the client has stopped), the message is handed
    /// back. A message larger than the whole budget is taken only into an empty queue.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), QueueFull> {
        let message = message.into();
        let mut queue = self.shared.lock();
        if queue.stopped || (queue.bytes > 0 && queue.bytes + message.len() > self.shared.budget) {
            return Err(QueueFull(message));
        }
        queue.bytes += message.len();
        queue.messages.push_back(message);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Like [`send`](Self::send), but waits while the queue is full instead of handing the
    /// message back; fails, handing it back, only once the client has stopped.
    pub async fn send_wait(&self, message: impl Into<Message>) -> Result<(), QueueFull> {
        let mut message = message.into();
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            // Registered before trying, so a pop between the try and the wait is seen.
            space.as_mut().enable();
            match self.send(message) {
                Ok(()) => return Ok(()),
                Err(QueueFull(back)) if !self.is_stopped() => message = back,
                Err(full) => return Err(full),
            }
            space.await;
        }
    }

    /// Whether the client has stopped (closed, or given up): `send` fails from now on.
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().stopped
    }

    /// Bytes of messages waiting for a connection.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Stops reconnecting and closes the current connection (if any) with `code`, after the
    /// messages queued so far have gone out. The update stream ends with [`Event::Stopped`].
    pub fn close(&self, code: CloseCode, reason: &str) {
        let _ = self.close.send(Some((code, reason.to_owned())));
    }
}

struct Manager {
    url: String,
    config: Config,
    policy: Policy,
    shared: Arc<Shared>,
    close: watch::Receiver<Option<(CloseCode, String)>>,
    updates: mpsc::Sender<Update>,
}

/// Why a connection's loop ended.
enum Ended {
    Closed(CloseInfo),
    /// The application asked to stop, or dropped every handle.
    Stop,
}

impl Manager {
    async fn run(mut self) {
        let mut failures = 0u32;
        let random = RandomState::new();
        let mut draws = 0u64;
        loop {
            if self.stopping() {
                break;
            }
            let attempt = tokio::select! {
                result = crate::connect_with(&self.url, &self.config) => Some(result),
                _ = self.close.changed() => None,
            };
            let Some(result) = attempt else { break };
            match result {
                Ok((sender, receiver, response)) => {
                    let connected = Event::Connected {
                        failures,
                        response: Box::new(response),
                    };
                    failures = 0;
                    if !self.emit(Update::Event(connected)).await {
                        sender.close(CloseCode::GOING_AWAY, "").await;
                        break;
                    }
                    match self.run_connection(sender, receiver).await {
                        Ended::Stop => break,
                        Ended::Closed(info) => {
                            let retry = (self.policy.retry_close)(&info);
                            if !self.emit(Update::Event(Event::Disconnected(info))).await || !retry
                            {
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let retry = (self.policy.retry_error)(&error)
                        && self.policy.max_attempts.is_none_or(|max| failures < max);
                    let event = Event::ConnectFailed { failures, error };
                    if !self.emit(Update::Event(event)).await || !retry {
                        break;
                    }
                }
            }
            draws += 1;
            let mut hasher = random.build_hasher();
            hasher.write_u64(draws);
            let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
            let delay = self.policy.backoff.delay(failures, unit);
            if !self
                .emit(Update::Event(Event::Retrying { failures, delay }))
                .await
            {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.close.changed() => {}
            }
        }
        self.shared.lock().stopped = true;
        self.shared.space.notify_waiters();
        let _ = self.updates.send(Update::Event(Event::Stopped)).await;
    }

    /// Whether the application asked to stop or dropped every handle.
    fn stopping(&self) -> bool {
        self.close.has_changed().is_err() || self.close.borrow().is_some()
    }

    async fn emit(&self, update: Update) -> bool {
        self.updates.send(update).await.is_ok()
    }

    async fn run_connection(&mut self, sender: Sender, mut receiver: crate::Receiver) -> Ended {
        if let Some(hook) = &self.policy.on_connect {
            hook(sender.clone()).await;
        }
        let mut stop_requested = false;
        loop {
            // Hand queued messages to the connection. One that the connection refuses (it is
            // closing) goes back to the front, for the next connection.
            while !sender.is_closed() {
                let Some(message) = self.shared.pop() else {
                    break;
                };
                if let Err(crate::SendError(message)) = sender.send(message).await {
                    self.shared.push_front(message);
                }
            }
            if !stop_requested && self.stopping() {
                stop_requested = true;
                let (code, reason) = self
                    .close
                    .borrow()
                    .clone()
                    .unwrap_or((CloseCode::GOING_AWAY, String::new()));
                sender.start_close(code, &reason);
            }
            tokio::select! {
                item = receiver.recv() => match item {
                    Some(Incoming::Message(message)) => {
                        if !self.emit(Update::Message(message)).await {
                            sender.start_close(CloseCode::GOING_AWAY, "");
                            stop_requested = true;
                        }
                    }
                    Some(Incoming::Closed(info)) => {
                        if stop_requested {
                            let _ = self.emit(Update::Event(Event::Disconnected(info))).await;
                            return Ended::Stop;
                        }
                        return Ended::Closed(info);
                    }
                    None => {
                        let info = receiver.close_info().unwrap_or(CloseInfo {
                            code: CloseCode::ABNORMAL,
                            reason: Utf8Bytes::from_static("connection task ended"),
                            initiator: Initiator::Remote,
                            clean: false,
                        });
                        return if stop_requested { Ended::Stop } else { Ended::Closed(info) };
                    }
                },
                _ = self.shared.wake.notified() => {}
                _ = self.close.changed(), if !stop_requested => {}
            }
        }
    }
}
