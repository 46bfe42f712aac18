//! `ferry serve`'s configuration: built-in defaults, then `--config FILE`, then the flags given
//! on the command line, in that order. [`ServeConfig::validate`] checks the result once, at
//! start-up, and every error names the key (and flag) and the fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::names::valid_name;

/// The largest `auth.leeway`: skew between honest clocks is seconds, and a bound keeps the
/// token's validity arithmetic (now ± leeway) in range.
const MAX_JWT_LEEWAY: Duration = Duration::from_secs(86_400);
pub use crate::size::{Dur, Size};

/// The effective configuration of `ferry serve`; `--print-config` prints it as TOML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// HOST:PORT to listen on.
    pub listen: String,
    /// Path prefix of the WebSocket routes.
    pub ws_prefix: String,
    /// Origins allowed besides the server's own (`*` for any).
    pub allow_origins: Vec<String>,
    /// How long shutdown waits for closing handshakes.
    pub grace: Dur,
    /// Worker threads; 0: one per CPU. 1: a single-threaded runtime.
    pub threads: usize,
    /// Address ranges of reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<String>,
    pub limits: LimitsConfig,
    pub tls: Option<TlsConfig>,
    pub deflate: DeflateSection,
    pub http2: Http2Section,
    pub topics: TopicsConfig,
    pub broker: BrokerSection,
    pub api: ApiConfig,
    /// Signed tokens (docs/auth.md); off unless a key is given.
    pub auth: super::auth::AuthConfig,
    /// Bridges by name: `PREFIX/bridge/NAME`.
    pub bridges: BTreeMap<String, BridgeConfig>,
}

/// More worker threads than this is a typo, not a machine: tokio would try to start them all
/// and abort the process when the system refuses.
const MAX_THREADS: usize = 1024;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            ws_prefix: "/ws".into(),
            allow_origins: Vec::new(),
            grace: Dur(Duration::from_secs(10)),
            threads: 0,
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            tls: None,
            deflate: DeflateSection::default(),
            http2: Http2Section::default(),
            topics: TopicsConfig::default(),
            broker: BrokerSection::default(),
            api: ApiConfig::default(),
            auth: super::auth::AuthConfig::default(),
            bridges: BTreeMap::new(),
        }
    }
}

/// Per-connection and per-server limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    /// 0 turns the per-IP limit off (behind a proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// IPv6 clients count per network of this many leading bits.
    pub ipv6_prefix: u8,
    pub max_message_size: Size,
    /// Most frames in one message (bounds the CPU spent on floods of tiny fragments).
    pub max_fragments: usize,
    pub send_queue: Size,
    pub handshake_timeout: Dur,
    /// 0 turns it off.
    pub idle_timeout: Dur,
    /// 0 turns keepalive pings off.
    pub ping_interval: Dur,
    pub ping_timeout: Dur,
    /// Publishes per connection: `"N/s"` (a second's worth as a burst); `"0"`: no limit.
    pub publish_rate: String,
    /// WebSocket handshakes per client address: `"N/s"`; `"0"`: no limit.
    pub handshake_rate: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            ipv6_prefix: 64,
            max_message_size: Size(1 << 20),
            max_fragments: ferry::Limits::default().max_fragments,
            send_queue: Size(1 << 20),
            handshake_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::ZERO),
            ping_interval: Dur(Duration::from_secs(30)),
            ping_timeout: Dur(Duration::from_secs(30)),
            publish_rate: "0".into(),
            handshake_rate: "0".into(),
        }
    }
}

/// PEM files of the server certificate chain and its private key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// permessage-deflate (RFC 7692) settings; see docs/compression.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateSection {
    pub enabled: bool,
    pub level: u8,
    pub window_bits: u8,
    pub peer_window_bits: u8,
    pub mem_level: u8,
    pub threshold: Size,
    pub no_context_takeover: bool,
}

impl Default for DeflateSection {
    fn default() -> Self {
        let d = ferry::DeflateConfig::default();
        DeflateSection {
            enabled: true,
            level: d.level,
            window_bits: d.own_window_bits,
            peer_window_bits: d.peer_window_bits,
            mem_level: d.mem_level,
            threshold: Size(d.threshold),
            no_context_takeover: d.own_no_context_takeover,
        }
    }
}

impl DeflateSection {
    pub fn config(&self) -> Option<ferry::DeflateConfig> {
        self.enabled.then(|| ferry::DeflateConfig {
            level: self.level,
            mem_level: self.mem_level,
            own_window_bits: self.window_bits,
            peer_window_bits: self.peer_window_bits,
            own_no_context_takeover: self.no_context_takeover,
            threshold: self.threshold.0,
            ..ferry::DeflateConfig::default()
        })
    }
}

/// WebSocket over HTTP/2 (RFC 8441); see docs/http2.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Section {
    /// Speak HTTP/2 beside HTTP/1.1: ALPN h2 over TLS, prior knowledge (h2c) in cleartext.
    pub enabled: bool,
    /// Most streams (WebSockets and requests) open at once on one HTTP/2 connection.
    pub max_streams: u32,
    /// Bytes a client may send on one stream before ferry reads them: what one WebSocket that
    /// stops reading can hold of the connection's window.
    pub stream_window: Size,
    /// Bytes a client may send on one connection, all streams together, before ferry reads
    /// them.
    pub connection_window: Size,
}

impl Default for Http2Section {
    fn default() -> Self {
        Http2Section {
            enabled: true,
            max_streams: 100,
            stream_window: Size(256 << 10),
            connection_window: Size(16 << 20),
        }
    }
}

/// The largest flow-control window HTTP/2 can express (RFC 9113 §6.9.1).
const MAX_HTTP2_WINDOW: usize = (1 << 31) - 1;

/// Pub/sub settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// If not empty, only these topics exist; others get 404.
    pub allowed: Vec<String>,
    /// A subscriber whose send queue is full: `close` (1013) or `drop-oldest`.
    pub slow_subscriber: super::SlowSubscriberArg,
    /// Empty topics whose counters are kept for /metrics.
    pub retained: usize,
    /// Most topics one control connection may subscribe to.
    pub control_max_topics: usize,
    /// Who may subscribe and publish to topics matching each pattern: `[[topics.rule]]`, the
    /// first match wins.
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<super::access::RuleConfig>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            allowed: Vec::new(),
            slow_subscriber: super::SlowSubscriberArg::Close,
            retained: 1024,
            control_max_topics: 100,
            rules: Vec::new(),
        }
    }
}

/// Where topics live and how much history they keep (docs/cluster.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// `["memory"]` (one process), or Redis URLs: `redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS; several shard the topics between them.
    pub urls: Vec<String>,
    /// Messages of history kept per topic.
    pub history_size: usize,
    /// How long a topic's history outlives its last publish.
    pub history_ttl: Dur,
    /// Most messages one subscribe with `since` replays.
    pub recovery_max: usize,
    /// The memory broker's bound on all history together.
    pub history_memory: Size,
    /// Redis: time allowed to connect and for one command; past it the call fails
    /// (`broker_unavailable`) and the connection is rebuilt.
    pub timeout: Dur,
    /// Redis: how often each node checks its pub/sub connection with a probe; one that
    /// delivers none for three of these is rebuilt.
    pub probe: Dur,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            urls: vec!["memory".into()],
            history_size: 1000,
            history_ttl: Dur(Duration::from_secs(300)),
            recovery_max: 1000,
            history_memory: Size(64 << 20),
            timeout: Dur(Duration::from_secs(2)),
            probe: Dur(Duration::from_secs(1)),
        }
    }
}

/// The HTTP API for backends (`/api/...`), off unless a key file is given.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// A file of accepted keys, one a line (`#` starts a comment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The keys in an API key file: one a line, blank lines and `#` comments skipped.
pub fn read_api_keys(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "api.key_file (--api-key-file) {}: cannot read it ({e}); give a file with one key a line",
            path.display()
        )
    })?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "api.key_file (--api-key-file) {}: holds no key; put one long random key a line",
            path.display()
        ));
    }
    if let Some(short) = keys.iter().find(|k| k.len() < 16) {
        return Err(format!(
            "api.key_file (--api-key-file) {}: a key of {} characters is too easy to guess; use at least 16 (e.g. openssl rand -hex 32)",
            path.display(),
            short.len()
        ));
    }
    Ok(keys)
}

/// One bridge: a fixed target, never one the client names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `tcp://HOST:PORT` or `unix:/PATH`.
    pub to: String,
    /// A bearer token the client must present (`Authorization: Bearer` or `?token=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file of accepted tokens, one per line (`#` starts a comment); read on every connection,
    /// so tokens can be rotated without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Time allowed to connect to the target.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// Where a bridge connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Some(addr) = text.strip_prefix("tcp://") {
            let valid = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if valid {
                return Ok(Target::Tcp(addr.to_owned()));
            }
        } else if let Some(path) = text.strip_prefix("unix:")
            && path.starts_with('/')
        {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        Err(format!(
            "{text:?} is not a bridge target; use tcp://HOST:PORT or unix:/PATH"
        ))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp://{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ServeConfig {
    /// Reads a TOML file over the defaults. Errors carry the file name, and toml's own message,
    /// which names the key and the line.
    pub fn from_file(path: &Path) -> Result<ServeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("--config {}: {}", path.display(), one_line(&text, &e)))
    }

    /// Checks everything that can be checked before listening.
    pub fn validate(&self) -> Result<(), String> {
        let prefix = &self.ws_prefix;
        if !prefix.starts_with('/') || (prefix.ends_with('/') && prefix.len() > 1) {
            return Err(format!(
                "ws_prefix (--ws-prefix) {prefix:?}: must start with / and not end with one, e.g. /ws"
            ));
        }
        if self.threads > MAX_THREADS {
            return Err(format!(
                "threads (--threads) {}: at most {MAX_THREADS} worker threads; 0 runs one per CPU",
                self.threads
            ));
        }
        let limits = &self.limits;
        if limits.max_connections == 0 {
            return Err(
                "limits.max_connections (--max-connections) is 0: at least one connection must \
                 be allowed; try 10000"
                    .into(),
            );
        }
        if !(1..=128).contains(&limits.ipv6_prefix) {
            return Err(format!(
                "limits.ipv6_prefix (--ipv6-prefix) {}: give 1 to 128 bits; 64 counts one host's /64 as one client",
                limits.ipv6_prefix
            ));
        }
        if limits.max_message_size.0 == 0 {
            return Err("limits.max_message_size (--max-message-size) is 0; try 1MiB".into());
        }
        if limits.max_fragments == 0 {
            return Err("limits.max_fragments (--max-fragments) is 0; try 1024".into());
        }
        if limits.handshake_timeout.0.is_zero() {
            return Err("limits.handshake_timeout (--handshake-timeout) is 0; try 10s".into());
        }
        if !limits.ping_interval.0.is_zero() && limits.ping_timeout.0.is_zero() {
            return Err(
                "limits.ping_timeout (--ping-timeout) is 0 while pings are on; try 30s, or set \
                 ping_interval to 0 to turn pings off"
                    .into(),
            );
        }
        super::origin::Policy::allow(&self.allow_origins)
            .map_err(|e| format!("allow_origins (--allow-origin) {e}"))?;
        for proxy in &self.trusted_proxies {
            super::forwarded::Cidr::parse(proxy)
                .map_err(|e| format!("trusted_proxies (--trusted-proxy) {e}"))?;
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.cert (--tls-cert)", &tls.cert),
                ("tls.key (--tls-key)", &tls.key),
            ] {
                if !path.is_file() {
                    return Err(format!(
                        "{key} {}: no such file; give the PEM file's path",
                        path.display()
                    ));
                }
            }
        }
        if self.topics.control_max_topics == 0 {
            return Err(
                "topics.control_max_topics (--control-max-topics) is 0: a control connection must \
                 be able to subscribe; try 100"
                    .into(),
            );
        }
        for name in &self.topics.allowed {
            if !valid_name(name) {
                return Err(format!(
                    "topics.allowed: {name:?} is not a topic name; use 1 to 64 of A-Z a-z 0-9 . _ -"
                ));
            }
        }
        let h2 = &self.http2;
        if h2.max_streams == 0 {
            return Err("http2.max_streams (--http2-max-streams) is 0; try 100, or turn HTTP/2 off with --http2 off".into());
        }
        for (key, window) in [
            (
                "http2.stream_window (--http2-stream-window)",
                h2.stream_window.0,
            ),
            (
                "http2.connection_window (--http2-connection-window)",
                h2.connection_window.0,
            ),
        ] {
            if !(65_535..=MAX_HTTP2_WINDOW).contains(&window) {
                return Err(format!(
                    "{key} {window}: give 65535 bytes (HTTP/2's initial window) to 2GiB - 1"
                ));
            }
        }
        if h2.connection_window.0 < h2.stream_window.0 {
            return Err(format!(
                "http2.connection_window (--http2-connection-window) {} is below http2.stream_window {}: one stream that stops reading would stall the others; make it many stream windows, e.g. 16MiB",
                h2.connection_window.0, h2.stream_window.0
            ));
        }
        // Skew is seconds or minutes; a bound also keeps the validity arithmetic in range.
        if self.auth.leeway.0 > MAX_JWT_LEEWAY {
            return Err(format!(
                "auth.leeway (--jwt-leeway) {}s: clock skew is at most a day (86400s); try 60s",
                self.auth.leeway.0.as_secs()
            ));
        }
        let broker = &self.broker;
        super::broker::Broker::parse_urls(&broker.urls)?;
        if broker.history_ttl.0.is_zero() {
            return Err("broker.history_ttl (--history-ttl) is 0; try 5m".into());
        }
        if broker.timeout.0.is_zero() {
            return Err("broker.timeout (--broker-timeout) is 0; try 2s".into());
        }
        if broker.probe.0.is_zero() {
            return Err("broker.probe (--broker-probe) is 0; try 1s".into());
        }
        if broker.history_memory.0 == 0 {
            return Err("broker.history_memory (--history-memory) is 0; try 64MiB".into());
        }
        if let Some(path) = &self.api.key_file {
            read_api_keys(path)?;
        }
        super::rate::Rate::parse(&limits.publish_rate)
            .map_err(|e| format!("limits.publish_rate (--publish-rate) {e}"))?;
        super::rate::Rate::parse(&limits.handshake_rate)
            .map_err(|e| format!("limits.handshake_rate (--handshake-rate) {e}"))?;
        let verifier = super::auth::Verifier::load(&self.auth)?;
        super::access::Access::new(&self.topics.rules, verifier.is_some())?;
        for (name, bridge) in &self.bridges {
            if !valid_name(name) {
                return Err(format!(
                    "bridges.{name}: not a bridge name; use 1 to 64 of A-Z a-z 0-9 . _ -"
                ));
            }
            Target::parse(&bridge.to).map_err(|e| format!("bridges.{name}.to: {e}"))?;
            if bridge.token.is_some() && bridge.token_file.is_some() {
                return Err(format!("bridges.{name}: set token or token_file, not both"));
            }
            if bridge.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(format!(
                    "bridges.{name}.token is empty; remove it, or set a long random string"
                ));
            }
            if let Some(path) = &bridge.token_file {
                std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "bridges.{name}.token_file {}: cannot read it ({e}); give a file with one token per line",
                        path.display()
                    )
                })?;
            }
            if bridge.connect_timeout.0.is_zero() {
                return Err(format!("bridges.{name}.connect_timeout is 0; try 5s"));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, with bridge tokens redacted.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for bridge in shown.bridges.values_mut() {
            if bridge.token.is_some() {
                bridge.token = Some("<redacted>".into());
            }
        }
        for url in &mut shown.broker.urls {
            *url = super::broker::redact(url);
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

/// A TOML error on one line: where, the offending line itself (so the key is named), and what
/// is wrong.
fn one_line(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().replace('\n', " ");
    let Some(span) = err.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| format!("{l} "))
        .unwrap_or_default();
    format!("line {line_no}, {section}`{line}`: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, String> {
        let config: ServeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = ServeConfig::default();
        config.validate().unwrap();
        let again = parse(&config.to_toml()).unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
    }

    #[test]
    fn a_full_file() {
        let config = parse(
            r#"
            listen = "0.0.0.0:9000"
            allow_origins = ["https://app.example.com"]
            [limits]
            max_message_size = "64KiB"
            idle_timeout = "5m"
            [bridges.vnc]
            to = "tcp://127.0.0.1:5900"
            token = "s3cret"
            [bridges.db]
            to = "unix:/run/db.sock"
            "#,
        )
        .unwrap();
        assert_eq!(config.limits.max_message_size, Size(64 << 10));
        assert_eq!(config.limits.idle_timeout, Dur(Duration::from_secs(300)));
        assert_eq!(
            Target::parse(&config.bridges["db"].to),
            Ok(Target::Unix("/run/db.sock".into()))
        );
        let printed = config.to_toml();
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = parse("[limits]\nmax_mesage_size = 5\n").unwrap_err();
        assert!(unknown.contains("max_mesage_size"), "{unknown}");
        let target = parse("[bridges.x]\nto = \"ftp://h:1\"\n").unwrap_err();
        assert!(target.contains("bridges.x.to"), "{target}");
        assert!(target.contains("tcp://HOST:PORT"), "{target}");
        let size = parse("[limits]\nsend_queue = \"lots\"\n").unwrap_err();
        assert!(size.contains("send_queue"), "{size}");
        let both = parse("[bridges.x]\nto = \"tcp://h:1\"\ntoken = \"a\"\ntoken_file = \"/f\"\n")
            .unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let leeway = parse("[auth]\nleeway = 86401\n").unwrap_err();
        assert!(
            leeway.contains("--jwt-leeway") && leeway.contains("60s"),
            "{leeway}"
        );
        parse("[auth]\nleeway = 86400\n").unwrap();
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("tcp://localhost:22"),
            Ok(Target::Tcp("localhost:22".into()))
        );
        assert_eq!(
            Target::parse("tcp://[::1]:22"),
            Ok(Target::Tcp("[::1]:22".into()))
        );
        for bad in [
            "tcp://host",
            "tcp://:22",
            "tcp://h:99999",
            "unix:rel",
            "http://h:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
