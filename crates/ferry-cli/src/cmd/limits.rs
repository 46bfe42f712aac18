//! The limit flags shared by the commands that accept or open connections.

use std::time::Duration;

use clap::Args;
use ferry::{DeflateConfig, Limits};

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
    /// Outgoing bytes a connection may queue before sends wait (a larger message is taken
    /// into an empty queue).
    // 1 MiB, as `Limits::default()` and `ferry serve` (docs/limits.md): 16 MiB let each
    // connection of `echo`, `connect` or `listen` queue 16 MiB before its sends waited. Bulk
    // echo throughput did not move either way (docs/BENCHMARKS.md, "Bulk").
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1MiB")]
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

/// permessage-deflate (RFC 7692) settings.
#[derive(Args, Debug, Clone)]
pub struct DeflateArgs {
    /// Turn permessage-deflate off: decline every offer (server) or offer none (client).
    #[arg(long)]
    pub no_deflate: bool,
    /// Compression level, 0 (store) to 9 (best).
    #[arg(long, value_name = "0-9", default_value_t = DeflateConfig::default().level, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate_level: u8,
    /// Largest window this end compresses with, as bits (a 2^BITS-byte window).
    #[arg(long, value_name = "9-15", default_value_t = DeflateConfig::default().own_window_bits, value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_window_bits: u8,
    /// Window to ask of the peer's compressor, as bits; sizes this end's decompressor.
    #[arg(long, value_name = "8-15", default_value_t = DeflateConfig::default().peer_window_bits, value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_peer_window_bits: u8,
    /// zlib memLevel of this end's compressor: memory against speed.
    #[arg(long, value_name = "1-9", default_value_t = DeflateConfig::default().mem_level, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub deflate_mem_level: u8,
    /// Send messages shorter than this uncompressed.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value_t = DeflateConfig::default().threshold)]
    pub deflate_threshold: usize,
    /// Reset this end's compressor after every message (no context takeover).
    #[arg(long)]
    pub deflate_no_context_takeover: bool,
}

impl DeflateArgs {
    pub fn config(&self) -> Option<DeflateConfig> {
        (!self.no_deflate).then(|| DeflateConfig {
            level: self.deflate_level,
            mem_level: self.deflate_mem_level,
            own_window_bits: self.deflate_window_bits,
            peer_window_bits: self.deflate_peer_window_bits,
            own_no_context_takeover: self.deflate_no_context_takeover,
            threshold: self.deflate_threshold,
            ..DeflateConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn the_send_queue_defaults_to_the_library_budget() {
        let flags = Flags::try_parse_from(["ferry"]).unwrap();
        assert_eq!(
            flags.limits.limits().send_queue_bytes,
            Limits::default().send_queue_bytes
        );
        let flags = Flags::try_parse_from(["ferry", "--send-queue", "4MiB"]).unwrap();
        assert_eq!(flags.limits.limits().send_queue_bytes, 4 << 20);
    }
}
