//! `ferry bridge`: one WebSocket-to-TCP bridge, on any path, with no config file (websockify's
//! everyday use).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;

use super::serve::config::{BridgeConfig, Dur, ServeConfig, Size, Target, TlsConfig};
use crate::size::{parse_duration, parse_size};

/// The name the single bridge has in metrics and logs.
const NAME: &str = "bridge";

/// Bridge WebSocket clients to one TCP or Unix service: every WebSocket connection, on any
/// path, becomes one connection to --to. Bytes from the service go out as binary messages;
/// messages from the client are written to the service. Speaks websockify's `binary`
/// subprotocol, so noVNC-style clients work unchanged.
///
/// Examples:
///   ferry bridge --listen 127.0.0.1:6080 --to tcp://127.0.0.1:5900
///   ferry bridge --listen 0.0.0.0:443 --to tcp://10.0.0.5:22 --token-file tokens.txt \
///       --tls-cert cert.pem --tls-key key.pem
///   ferry bridge --to unix:/run/app.sock --allow-origin https://app.example.com
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct BridgeArgs {
    /// Where to listen: HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The service: tcp://HOST:PORT or unix:/PATH.
    #[arg(long, value_name = "TARGET", value_parser = Target::parse)]
    pub to: Target,
    /// Require this bearer token (Authorization: Bearer TOKEN, or ?token=TOKEN in the URL).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Require one of the tokens in this file (one per line, # comments), read per connection.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also accept browser pages from this Origin (repeatable; * for any).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// PEM certificate chain: serve wss (with --tls-key). SIGHUP reloads it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Time allowed to connect to the service; past it the client gets close 1014.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Most bridged connections at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most connections from one IP address (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Largest message accepted from a client. Over it: close 1009.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1MiB")]
    pub max_message_size: usize,
    /// Close (1001) a connection that has moved no byte either way for this long (0: never).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub idle_timeout: Duration,
}

pub fn run(args: BridgeArgs) -> Result<()> {
    let mut config = ServeConfig {
        listen: args.listen,
        allow_origins: args.allow_origins,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsConfig { cert, key }),
        ..ServeConfig::default()
    };
    config.limits.max_connections = args.max_connections;
    config.limits.max_connections_per_ip = args.max_connections_per_ip;
    config.limits.max_message_size = Size(args.max_message_size);
    config.limits.idle_timeout = Dur(args.idle_timeout);
    config.bridges.insert(
        NAME.to_owned(),
        BridgeConfig {
            to: args.to.to_string(),
            token: args.token,
            token_file: args.token_file,
            connect_timeout: Dur(args.connect_timeout),
        },
    );
    config.validate().map_err(|e| anyhow!(e))?;
    super::serve::start(config, Some(NAME.to_owned()))
}
