//! The limit flags shared by the commands that accept or open connections.

use std::time::Duration;

use clap::Args;
use ferry::Limits;

use crate::size::{parse_duration, parse_size};

/// Connection limits. Defaults are the command's own (shown in --help).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest message accepted, after reassembly (e.g. 16MiB). Over it: close 1009.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    pub max_message_size: usize,
    /// Largest single frame accepted. Over it: close 1009.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    pub max_frame_size: usize,
    /// Most frames in one message, empty ones included. Over it: close 1009.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub max_fragments: usize,
    /// Largest handshake header block. Over it: HTTP 431.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16KiB")]
    pub max_handshake_size: usize,
    /// Time allowed for the opening handshake.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
    /// Outgoing bytes a connection may queue before sends wait.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    pub send_queue: usize,
    /// Received bytes a connection may hold for the application before it stops reading.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    pub recv_queue: usize,
    /// Time to wait for the peer's close frame, and for the final flush.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub close_timeout: Duration,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_size: self.max_message_size,
            max_frame_size: self.max_frame_size,
            max_fragments: self.max_fragments,
            max_handshake_bytes: self.max_handshake_size,
            handshake_timeout: self.handshake_timeout,
            send_queue_bytes: self.send_queue,
            recv_queue_bytes: self.recv_queue,
            close_timeout: self.close_timeout,
            ..Limits::default()
        }
    }
}
