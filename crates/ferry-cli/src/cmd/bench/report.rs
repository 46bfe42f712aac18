//! The report: figures from two snapshots, as text for people or JSON for scripts.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::json;

use super::args::{Kind, Mode, PayloadKind, Protocol};
use super::histogram::Histogram;
use super::plan::Plan;
use super::settings::Settings;
use super::snapshot::Snapshot;
use super::subscribers_on;

/// USER_HZ: the unit of utime and stime in /proc/PID/stat, 100 on every Linux architecture
/// that ferry builds for.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Default)]
pub(super) struct Outcome {
    pub(super) connect_secs: f64,
    pub(super) start: Option<Snapshot>,
    pub(super) end: Option<Snapshot>,
    pub(super) hist: Histogram,
    pub(super) warnings: Vec<String>,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_after: Option<u64>,
    pub(super) server_start_ticks: Option<u64>,
    pub(super) connected: u64,
}

// The report.

pub(super) struct Report {
    pub(super) label: Option<String>,
    pub(super) mode: Mode,
    pub(super) protocol: Protocol,
    pub(super) kind: Kind,
    /// Every --url, in order.
    pub(super) urls: Vec<String>,
    pub(super) connections: usize,
    pub(super) size: usize,
    pub(super) pipeline: usize,
    pub(super) threads: usize,
    pub(super) warmup_s: f64,
    pub(super) measured_s: f64,
    pub(super) connect_s: f64,
    pub(super) messages: u64,
    pub(super) rate: f64,
    pub(super) mb_per_s: f64,
    pub(super) latency: Option<[u64; 6]>,
    pub(super) server: Option<ServerFigures>,
    pub(super) client_cpu_s: Option<f64>,
    pub(super) client_util: Option<f64>,
    pub(super) warnings: Vec<String>,
    pub(super) payload: PayloadKind,
    pub(super) fanout: Option<FanoutFigures>,
    pub(super) deflate: Option<DeflateFigures>,
    /// --http2: WebSockets per HTTP/2 connection.
    pub(super) http2_streams: Option<usize>,
}

/// fanout: what the publisher did in the measured window.
pub(super) struct FanoutFigures {
    pub(super) published: u64,
    pub(super) published_per_s: f64,
    /// The publisher's copies of its own messages: deliveries the server made too.
    pub(super) copies: u64,
    pub(super) rate: Option<f64>,
    /// Subscribers connected to each URL, in --url order (the publisher is on the first).
    pub(super) subscribers_per_url: Vec<usize>,
}

/// --deflate: what was negotiated and how small the payload went on the wire.
pub(super) struct DeflateFigures {
    pub(super) offer: String,
    pub(super) response: Option<String>,
    /// Payload bytes on the wire per message we send (`None`: sent uncompressed).
    pub(super) compressed_len: Option<usize>,
}

pub(super) struct ServerFigures {
    pub(super) pid: u32,
    pub(super) cpu_s: Option<f64>,
    pub(super) rss_before_kib: Option<u64>,
    pub(super) rss_after_kib: Option<u64>,
    pub(super) connections: u64,
}

impl Report {
    pub(super) fn new(s: &Settings, plan: &Plan, o: Outcome) -> Report {
        let (start, end) = match (o.start, o.end) {
            (Some(a), Some(b)) => (a, b),
            (None, Some(b)) => (b, b),
            _ => {
                let now = Snapshot {
                    at: Instant::now(),
                    messages: 0,
                    bytes: 0,
                    server_ticks: None,
                    client_ticks: None,
                    published: 0,
                    copies: 0,
                };
                (now, now)
            }
        };
        let measured_s = end.at.saturating_duration_since(start.at).as_secs_f64();
        let messages = end.messages - start.messages;
        let per_s = |n: f64| {
            if measured_s > 0.0 {
                n / measured_s
            } else {
                0.0
            }
        };
        let ticks = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / CLOCK_TICKS_PER_SEC),
            _ => None,
        };
        let latency = (o.hist.total > 0).then(|| {
            [
                o.hist.quantile(0.5).unwrap_or(0),
                o.hist.quantile(0.9).unwrap_or(0),
                o.hist.quantile(0.99).unwrap_or(0),
                o.hist.quantile(0.999).unwrap_or(0),
                o.hist.max_ns,
                o.hist.mean().unwrap_or(0),
            ]
        });
        let server = s.server_pid.map(|pid| ServerFigures {
            pid,
            cpu_s: if s.mode == Mode::Idle {
                ticks(o.server_start_ticks, end.server_ticks)
            } else {
                ticks(start.server_ticks, end.server_ticks)
            },
            rss_before_kib: o.rss_before,
            rss_after_kib: o.rss_after,
            connections: o.connected,
        });
        let client_cpu_s = ticks(start.client_ticks, end.client_ticks);
        Report {
            label: s.label.clone(),
            mode: s.mode,
            protocol: s.protocol,
            kind: s.kind,
            urls: s.targets.iter().map(|t| t.url.clone()).collect(),
            connections: s.connections,
            http2_streams: s.http2_streams,
            size: s.size,
            pipeline: s.pipeline,
            threads: s.threads,
            warmup_s: s.warmup.as_secs_f64(),
            measured_s,
            connect_s: o.connect_secs,
            messages,
            rate: per_s(messages as f64),
            mb_per_s: per_s((end.bytes - start.bytes) as f64) / 1e6,
            latency,
            server,
            client_util: client_cpu_s
                .filter(|_| measured_s > 0.0)
                .map(|c| c / measured_s / s.threads as f64),
            client_cpu_s,
            warnings: o.warnings,
            payload: s.payload,
            fanout: (s.mode == Mode::Fanout).then(|| {
                let published = end.published - start.published;
                FanoutFigures {
                    published,
                    published_per_s: per_s(published as f64),
                    copies: end.copies - start.copies,
                    rate: s.rate,
                    subscribers_per_url: (0..s.targets.len())
                        .map(|k| subscribers_on(s.connections, s.targets.len(), k))
                        .collect(),
                }
            }),
            deflate: plan.deflate.as_ref().map(|d| DeflateFigures {
                offer: d.offer.client_offer(),
                response: plan.negotiated.get().cloned(),
                compressed_len: d.compressed_len,
            }),
        }
    }

    /// The server's operations in the window: messages, plus in fanout the publisher's copies,
    /// which the server delivers like any other.
    pub(super) fn server_ops(&self) -> u64 {
        self.messages + self.fanout.as_ref().map_or(0, |f| f.copies)
    }

    pub(super) fn cpu_us_per_message(&self) -> Option<f64> {
        let cpu = self.server.as_ref()?.cpu_s?;
        let ops = self.server_ops();
        (ops > 0).then(|| cpu * 1e6 / ops as f64)
    }

    pub(super) fn server_util(&self) -> Option<f64> {
        let cpu = self.server.as_ref()?.cpu_s?;
        (self.measured_s > 0.0).then(|| cpu / self.measured_s)
    }

    pub(super) fn rss_per_connection_kib(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        let (before, after) = (server.rss_before_kib?, server.rss_after_kib?);
        (server.connections > 0).then(|| (after as f64 - before as f64) / server.connections as f64)
    }

    /// The generator used (nearly) all of its threads' time: messages/s may measure it.
    pub(super) fn saturated(&self) -> bool {
        self.client_util.is_some_and(|u| u >= 0.95)
    }

    pub(super) fn table(&self) -> String {
        let mut t = String::new();
        let what = match self.mode {
            Mode::Handshakes => "handshake",
            Mode::Fanout => "delivery",
            _ => "message",
        };
        let whats = match self.mode {
            Mode::Fanout => "deliveries",
            _ if self.mode == Mode::Handshakes => "handshakes",
            _ => "messages",
        };
        let _ = write!(t, "ferry bench {}", self.mode.name());
        if let Some(label) = &self.label {
            let _ = write!(t, " [{label}]");
        }
        let kind = match self.protocol {
            Protocol::Ws => self.kind.name(),
            Protocol::Tcp => "length-prefixed tcp",
        };
        let _ = writeln!(t, ": {}", self.urls.join(", "));
        let content = match self.payload {
            PayloadKind::Json => " (JSON-like text)",
            PayloadKind::Pattern => "",
        };
        match &self.fanout {
            Some(f) => {
                let _ = write!(
                    t,
                    "  1 publisher, {} subscribers, {} {kind} messages{content}, at most {} in \
                     flight",
                    group(self.connections as u64),
                    bytes(self.size),
                    self.pipeline
                );
                if let Some(rate) = f.rate {
                    let _ = write!(t, ", paced at {}/s", group(rate.round() as u64));
                }
            }
            None => {
                let _ = write!(
                    t,
                    "  {} connections, {} {kind} messages{content}",
                    group(self.connections as u64),
                    bytes(self.size)
                );
                if let Some(streams) = self.http2_streams {
                    let _ = write!(
                        t,
                        " (WebSockets over HTTP/2: {} per connection)",
                        group(streams as u64)
                    );
                }
            }
        }
        if matches!(self.mode, Mode::Echo | Mode::Bulk) {
            let _ = write!(t, ", {} in flight each", self.pipeline);
        }
        let _ = writeln!(
            t,
            ", {} thread{}",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<13} {value}");
        };
        if let Some(f) = self.fanout.as_ref().filter(|_| self.urls.len() > 1) {
            let spread: Vec<String> = self
                .urls
                .iter()
                .zip(&f.subscribers_per_url)
                .enumerate()
                .map(|(k, (url, n))| {
                    let publisher = if k == 0 { " (and the publisher)" } else { "" };
                    format!("{} on {url}{publisher}", group(*n as u64))
                })
                .collect();
            row(&mut t, "subscribers", spread.join(", "));
        }
        if let Some(d) = &self.deflate {
            let wire = match d.compressed_len {
                Some(len) => format!(
                    "{} sent as {} ({:.0}%, level {}, window {} bits, compressed once)",
                    bytes(self.size),
                    bytes(len),
                    100.0 * len as f64 / self.size.max(1) as f64,
                    super::deflate::LEVEL,
                    super::deflate::OWN_WINDOW_BITS
                ),
                None => format!("{} does not shrink: sent uncompressed", bytes(self.size)),
            };
            row(
                &mut t,
                "deflate",
                format!(
                    "server answered \"{}\"; {wire}",
                    d.response
                        .as_deref()
                        .unwrap_or("(no connection finished its handshake)")
                ),
            );
        }
        if self.mode == Mode::Idle {
            row(
                &mut t,
                "connected",
                format!(
                    "{} in {:.2} s, each echoed one message",
                    group(
                        self.server
                            .as_ref()
                            .map_or(self.connections as u64, |s| s.connections)
                    ),
                    self.connect_s
                ),
            );
            match (&self.server, self.rss_per_connection_kib()) {
                (Some(server), Some(per)) => row(
                    &mut t,
                    "server RSS",
                    format!(
                        "{} KiB before, {} KiB after: {per:.2} KiB per connection (pid {})",
                        group(server.rss_before_kib.unwrap_or(0)),
                        group(server.rss_after_kib.unwrap_or(0)),
                        server.pid
                    ),
                ),
                _ => row(
                    &mut t,
                    "server RSS",
                    "pass --server-pid PID to measure it".into(),
                ),
            }
        } else {
            row(
                &mut t,
                "measured",
                format!(
                    "{:.2} s after {:.2} s warmup",
                    self.measured_s, self.warmup_s
                ),
            );
            if let Some(f) = &self.fanout {
                row(
                    &mut t,
                    "published",
                    format!(
                        "{} ({}/s)",
                        group(f.published),
                        group(f.published_per_s.round() as u64)
                    ),
                );
            }
            row(
                &mut t,
                whats,
                format!(
                    "{} ({}/s){}",
                    group(self.messages),
                    group(self.rate.round() as u64),
                    match &self.fanout {
                        Some(f) => format!(
                            " to subscribers, each checked; the publisher got its {} back too",
                            group(f.copies)
                        ),
                        None => String::new(),
                    }
                ),
            );
            if self.mode != Mode::Handshakes {
                let way = match self.mode {
                    Mode::Fanout => "delivered",
                    _ => "each way",
                };
                row(
                    &mut t,
                    "payload",
                    format!("{:.2} MB/s {way}", self.mb_per_s),
                );
            }
            if let Some([p50, p90, p99, p999, max, _]) = self.latency {
                let from = match self.mode {
                    Mode::Fanout => "publish to delivery: ",
                    _ => "",
                };
                row(
                    &mut t,
                    "latency",
                    format!(
                        "{from}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                        nanos(p50),
                        nanos(p90),
                        nanos(p99),
                        nanos(p999),
                        nanos(max)
                    ),
                );
            }
            match (&self.server, self.cpu_us_per_message(), self.server_util()) {
                (Some(server), Some(per), Some(util)) => row(
                    &mut t,
                    "server CPU",
                    format!(
                        "{per:.2} µs per {what}{}  ({:.2} s, {:.0}% of a core; pid {}, \
                         utime+stime)",
                        if self.fanout.is_some() {
                            ", the publisher's own copies counted"
                        } else {
                            ""
                        },
                        server.cpu_s.unwrap_or(0.0),
                        util * 100.0,
                        server.pid
                    ),
                ),
                (Some(server), _, _) => row(
                    &mut t,
                    "server CPU",
                    format!(
                        "not measured (no {whats}, or /proc/{} unreadable)",
                        server.pid
                    ),
                ),
                (None, _, _) => row(
                    &mut t,
                    "server CPU",
                    "pass --server-pid PID to measure it".into(),
                ),
            }
            if let Some(util) = self.client_util {
                let note = if self.saturated() {
                    format!(": saturated, so {whats}/s may measure this generator, not the server")
                } else {
                    String::new()
                };
                row(
                    &mut t,
                    "client CPU",
                    format!(
                        "{:.0}% of {} thread{}{note}",
                        util * 100.0,
                        self.threads,
                        if self.threads == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        if !self.warnings.is_empty() {
            row(
                &mut t,
                "warnings",
                format!("{} (first: {})", self.warnings.len(), self.warnings[0]),
            );
        }
        t
    }

    /// One JSON object per run (`--json`), for scripts (bench/run.sh, bench/ab.sh,
    /// bench/cluster.sh). Figures that could not be measured are `null`.
    pub(super) fn json(&self) -> String {
        let server = self.server.as_ref().map(|server| {
            json!({
                "pid": server.pid,
                "cpu_s": server.cpu_s,
                "cpu_util": self.server_util(),
                "cpu_us_per_op": self.cpu_us_per_message(),
                "rss_before_kib": server.rss_before_kib,
                "rss_after_kib": server.rss_after_kib,
                "rss_per_conn_kib": self.rss_per_connection_kib(),
            })
        });
        let latency = self.latency.map(|[p50, p90, p99, p999, max, mean]| {
            let us = |ns: u64| ns as f64 / 1e3;
            json!({
                "p50": us(p50), "p90": us(p90), "p99": us(p99), "p999": us(p999),
                "max": us(max), "mean": us(mean),
            })
        });
        let fanout = self.fanout.as_ref().map(|f| {
            json!({
                "published": f.published,
                "published_per_s": f.published_per_s,
                "publisher_copies": f.copies,
                "deliveries_total": self.server_ops(),
                "rate": f.rate,
                "subscribers_per_url": f.subscribers_per_url,
            })
        });
        let deflate = self.deflate.as_ref().map(|d| {
            json!({
                "offer": d.offer,
                "response": d.response,
                "level": super::deflate::LEVEL,
                "window_bits": super::deflate::OWN_WINDOW_BITS,
                "sent_payload_bytes": d.compressed_len.unwrap_or(self.size),
            })
        });
        json!({
            "label": self.label,
            "mode": self.mode.name(),
            "protocol": self.protocol.name(),
            "kind": self.kind.name(),
            "url": self.urls.join(", "),
            "urls": self.urls,
            "connections": self.connections,
            "http2_streams_per_connection": self.http2_streams,
            "size": self.size,
            "pipeline": self.pipeline,
            "threads": self.threads,
            "warmup_s": self.warmup_s,
            "measured_s": self.measured_s,
            "connect_s": self.connect_s,
            "messages": self.messages,
            "per_s": self.rate,
            "payload_mb_per_s": self.mb_per_s,
            "latency_us": latency,
            "server": server,
            "client": {
                "cpu_s": self.client_cpu_s,
                "cpu_util": self.client_util,
                "saturated": self.saturated(),
            },
            "payload": self.payload.name(),
            "fanout": fanout,
            "deflate": deflate,
            "warnings": self.warnings,
        })
        .to_string()
    }
}

/// 1234567 → "1,234,567".
pub(super) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

pub(super) fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

pub(super) fn nanos(ns: u64) -> String {
    match ns {
        ns if ns >= 10_000_000 => format!("{:.0} ms", ns as f64 / 1e6),
        ns if ns >= 1_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        ns if ns >= 10_000 => format!("{:.0} µs", ns as f64 / 1e3),
        ns => format!("{:.1} µs", ns as f64 / 1e3),
    }
}
