//! Counters for `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry::pubsub::{BrokerStats, TopicStats};
use ferry::{CloseInfo, Initiator};

use super::broker::BrokerMetrics;

/// The WebSocket routes, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Echo,
    Topics,
    Control,
    Bridge,
}

impl Route {
    pub const ALL: [Route; 4] = [Route::Echo, Route::Topics, Route::Control, Route::Bridge];

    pub fn label(self) -> &'static str {
        match self {
            Route::Echo => "echo",
            Route::Topics => "topics",
            Route::Control => "control",
            Route::Bridge => "bridge",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Picks one counter of a topic.
type TopicField = fn(&TopicStats) -> u64;

/// Picks one counter of a route.
type Field = fn(&PerRoute) -> &AtomicU64;

#[derive(Default)]
struct PerRoute {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Every counter the server keeps. Hot-path counters are atomics; the keyed ones (close codes,
/// handshake failures) change once per connection and sit behind a mutex.
#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    /// WebSockets accepted over HTTP/1.1 (an Upgrade).
    pub connections_http1_total: AtomicU64,
    /// WebSockets accepted as HTTP/2 streams (extended CONNECT).
    pub connections_http2_total: AtomicU64,
    routes: [PerRoute; Route::ALL.len()],
    closes: Mutex<BTreeMap<(u16, &'static str), u64>>,
    handshake_failures: Mutex<BTreeMap<&'static str, u64>>,
    bridge_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Publishes and subscribes refused because the broker was unavailable.
    broker_refusals: AtomicU64,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    forbidden: Mutex<BTreeMap<&'static str, u64>>,
    rate_limited: Mutex<BTreeMap<&'static str, u64>>,
    accept_errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn received(&self, route: Route, bytes: usize) {
        if let Some(r) = self.routes.get(route.index()) {
            r.messages_in.fetch_add(1, Ordering::Relaxed);
            r.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn sent(&self, route: Route, messages: u64, bytes: u64) {
        if let Some(r) = self.routes.get(route.index()) {
            r.messages_out.fetch_add(messages, Ordering::Relaxed);
            r.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A WebSocket was accepted (over HTTP/2 as an extended CONNECT stream, else HTTP/1.1).
    pub fn opened(&self, http2: bool) {
        let total = if http2 {
            &self.connections_http2_total
        } else {
            &self.connections_http1_total
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket closed as `info` says, by the close code and which side started it.
    pub fn closed(&self, info: &CloseInfo) {
        let initiator = match info.initiator {
            Initiator::Local => "server",
            Initiator::Remote => "client",
        };
        let mut closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        *closes.entry((info.code.as_u16(), initiator)).or_default() += 1;
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        let mut failures = self
            .handshake_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *failures.entry(reason).or_default() += 1;
    }

    /// A bridge's target could not be reached, or failed mid-stream.
    /// A token refused (`reason` is `auth::Rejected::reason`).
    pub fn auth_failed(&self, reason: &'static str) {
        bump(&self.auth_failures, reason);
    }

    /// A valid token (or none) that does not allow `op`: subscribe, publish, bridge, connect.
    /// A publish, subscribe or history request refused because the broker was unavailable.
    /// The caller logs it, naming what was refused.
    pub fn broker_refused(&self) {
        self.broker_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn forbidden(&self, op: &'static str) {
        bump(&self.forbidden, op);
    }

    /// An accept that failed: `no_file_descriptors` (EMFILE, ENFILE) or `other`.
    pub fn accept_failed(&self, kind: &'static str) {
        bump(&self.accept_errors, kind);
    }

    /// A publish or handshake over its rate.
    pub fn rate_limited(&self, what: &'static str) {
        bump(&self.rate_limited, what);
    }

    pub fn bridge_failed(&self, reason: &'static str) {
        let mut failures = self
            .bridge_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *failures.entry(reason).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        topics: &[TopicStats],
        totals: &BrokerStats,
        broker: &BrokerMetrics,
    ) -> String {
        let mut out = String::with_capacity(2048);
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            &mut out,
            "ferry_connections_open",
            "Open WebSocket connections.",
            self.connections_open.load(Ordering::Relaxed),
        );
        let _ = write!(
            out,
            "# HELP ferry_connections_total WebSocket connections accepted, by HTTP version.\n# TYPE ferry_connections_total counter\nferry_connections_total{{http=\"1.1\"}} {}\nferry_connections_total{{http=\"2\"}} {}\n",
            self.connections_http1_total.load(Ordering::Relaxed),
            self.connections_http2_total.load(Ordering::Relaxed)
        );
        let series: [(&str, &str, Field); 4] = [
            (
                "ferry_messages_received_total",
                "Messages received, by route.",
                |r| &r.messages_in,
            ),
            (
                "ferry_messages_sent_total",
                "Messages sent, by route.",
                |r| &r.messages_out,
            ),
            (
                "ferry_bytes_received_total",
                "Payload bytes received, by route.",
                |r| &r.bytes_in,
            ),
            (
                "ferry_bytes_sent_total",
                "Payload bytes sent, by route.",
                |r| &r.bytes_out,
            ),
        ];
        for (name, help, field) in series {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for route in Route::ALL {
                if let Some(r) = self.routes.get(route.index()) {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\"}} {}",
                        route.label(),
                        field(r).load(Ordering::Relaxed)
                    );
                }
            }
        }
        let _ = write!(
            out,
            "# HELP ferry_closes_total Closed connections, by close code and initiator.\n# TYPE ferry_closes_total counter\n"
        );
        for ((code, initiator), n) in self.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "ferry_closes_total{{code=\"{code}\",initiator=\"{initiator}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP ferry_handshake_failures_total Refused or failed handshakes, by reason.\n# TYPE ferry_handshake_failures_total counter\n"
        );
        for (reason, n) in self
            .handshake_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ferry_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP ferry_bridge_failures_total Bridge targets unreachable or failing, by reason.\n# TYPE ferry_bridge_failures_total counter\n"
        );
        for (reason, n) in self
            .bridge_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ferry_bridge_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP ferry_topic_subscribers Subscribers, by topic.\n# TYPE ferry_topic_subscribers gauge\n"
        );
        for t in topics {
            let _ = writeln!(
                out,
                "ferry_topic_subscribers{{topic=\"{}\"}} {}",
                escape(&t.name),
                t.subscribers
            );
        }
        let gauges: [(&str, &str, TopicField); 2] = [
            (
                "ferry_topic_encoding_groups",
                "Groups of subscribers sharing one encoding (and compression) of each message, by topic.",
                |t| t.encoding_groups as u64,
            ),
            (
                "ferry_topic_self_encoding_subscribers",
                "Subscribers that encode and compress each message themselves (context takeover), by topic.",
                |t| t.self_encoding as u64,
            ),
        ];
        for (name, help, field) in gauges {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for t in topics {
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escape(&t.name), field(t));
            }
        }
        let per_topic: [(&str, &str, TopicField); 3] = [
            (
                "ferry_topic_published_total",
                "Messages published, by topic.",
                |t| t.published,
            ),
            (
                "ferry_topic_delivered_total",
                "Messages queued for subscribers, by topic.",
                |t| t.delivered,
            ),
            (
                "ferry_topic_dropped_total",
                "Messages slow subscribers did not get (refused or dropped oldest), by topic.",
                |t| t.dropped,
            ),
        ];
        for (name, help, field) in per_topic {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for t in topics {
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escape(&t.name), field(t));
            }
        }
        let pubsub: [(&str, &str, u64); 7] = [
            (
                "ferry_pubsub_published_total",
                "Messages published, every topic.",
                totals.published,
            ),
            (
                "ferry_pubsub_delivered_total",
                "Messages queued for subscribers, every topic.",
                totals.delivered,
            ),
            (
                "ferry_pubsub_dropped_total",
                "Messages slow subscribers did not get, every topic.",
                totals.dropped,
            ),
            (
                "ferry_pubsub_shared_encodings_total",
                "Frames encoded once for a group of subscribers with the same encoding.",
                totals.shared_encodings,
            ),
            (
                "ferry_pubsub_shared_compressions_total",
                "Compressions done once for a whole group of subscribers.",
                totals.shared_compressions,
            ),
            (
                "ferry_pubsub_per_socket_compressions_total",
                "Deliveries to connections that compress each message themselves (context takeover).",
                totals.per_socket_compressions,
            ),
            (
                "ferry_pubsub_topics_forgotten_total",
                "Empty topics whose counters were forgotten beyond the retention limit.",
                totals.topics_forgotten,
            ),
        ];
        for (name, help, value) in pubsub {
            single(&mut out, "counter", name, help, value);
        }
        let keyed: [(&str, &str, &str, &Keyed); 4] = [
            (
                "ferry_accept_errors_total",
                "Accepts that failed, by kind (no_file_descriptors: EMFILE or ENFILE).",
                "kind",
                &self.accept_errors,
            ),
            (
                "ferry_auth_failures_total",
                "Tokens refused, by reason.",
                "reason",
                &self.auth_failures,
            ),
            (
                "ferry_forbidden_total",
                "Requests a token (or its absence) does not allow, by operation.",
                "op",
                &self.forbidden,
            ),
            (
                "ferry_rate_limited_total",
                "Publishes and handshakes over their rate, by what.",
                "what",
                &self.rate_limited,
            ),
        ];
        for (name, help, label, map) in keyed {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for (key, n) in map.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
            }
        }
        self.render_broker(&mut out, broker);
        out
    }

    fn render_broker(&self, out: &mut String, b: &BrokerMetrics) {
        let _ = write!(
            out,
            "# HELP ferry_broker_info The broker in use.\n# TYPE ferry_broker_info gauge\nferry_broker_info{{kind=\"{}\"}} 1\n",
            b.kind
        );
        let gauges: [(&str, &str, u64); 4] = [
            (
                "ferry_broker_shards",
                "Redis shards configured (0: the memory broker).",
                b.shards as u64,
            ),
            (
                "ferry_broker_shards_up",
                "Redis shards reachable now.",
                b.shards_up as u64,
            ),
            (
                "ferry_history_topics",
                "Topics with a history log in this process (memory broker).",
                b.history_topics as u64,
            ),
            (
                "ferry_history_bytes",
                "Bytes of history held in this process (memory broker).",
                b.history_bytes as u64,
            ),
        ];
        for (name, help, value) in gauges {
            single(out, "gauge", name, help, value);
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "ferry_broker_errors_total",
                "Redis commands or subscriptions that failed.",
                b.errors,
            ),
            (
                "ferry_broker_reconnects_total",
                "Redis pub/sub connections lost (or silent past the probe timeout) and rebuilt.",
                b.reconnects,
            ),
            (
                "ferry_broker_refusals_total",
                "Publishes and subscribes refused with broker_unavailable.",
                self.broker_refusals.load(Ordering::Relaxed),
            ),
            (
                "ferry_broker_repaired_total",
                "Messages this node missed on the pub/sub stream and read back from history.",
                b.repaired,
            ),
            (
                "ferry_broker_duplicates_total",
                "Messages that reached this node twice and were skipped.",
                b.duplicates,
            ),
            (
                "ferry_broker_positions_lost_total",
                "Times a topic's stream could not be repaired and its subscribers were closed with 4010.",
                b.lost,
            ),
        ];
        for (name, help, value) in counters {
            single(out, "counter", name, help, value);
        }
    }
}

/// One series without labels, with its HELP and TYPE lines.
fn single(out: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// Counts keyed by a label value known at compile time.
type Keyed = Mutex<BTreeMap<&'static str, u64>>;

fn bump(map: &Keyed, key: &'static str) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// Label values are client-chosen topic names: escape what the format gives meaning to.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
