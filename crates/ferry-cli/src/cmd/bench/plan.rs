//! The plan: what every connection sends and expects, built once per run.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use ferry::proto::extension::deflate::{DeflateConfig, RSV1};
use ferry::proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use ferry::proto::mask::apply_mask;

use super::args::{Kind, Mode, PayloadKind, Protocol};
use super::sequence::{SEQ_LEN, seq_prefix};
use super::settings::{Settings, Target};

/// Pre-built frames are repeated up to this many bytes, so K pipelined messages go in one write.
pub(super) const BATCH_BYTES: usize = 256 * 1024;

pub(super) struct Plan {
    pub(super) mode: Mode,
    /// Connections (fanout: subscribers).
    pub(super) connections: usize,
    pub(super) protocol: Protocol,
    /// The servers: fanout spreads subscribers over them ([`Plan::target`]).
    pub(super) targets: Vec<Target>,
    pub(super) path: String,
    /// Each connection's path gets "-N" appended (idle mode, --path-per-connection).
    pub(super) path_per_connection: bool,
    /// Idle mode: no echo after the handshake (--silent).
    pub(super) silent: bool,
    pub(super) sources: Vec<IpAddr>,
    pub(super) size: usize,
    pub(super) pipeline: usize,
    pub(super) timeout: Duration,
    /// The opcode the echo must carry.
    pub(super) opcode: OpCode,
    /// The payload, unmasked: what every echo must equal.
    pub(super) payload: Vec<u8>,
    /// One whole frame (WebSocket: masked; tcp: length prefix and payload).
    pub(super) frame_len: usize,
    /// `batch_frames` copies of the frame back to back.
    pub(super) batch: Vec<u8>,
    pub(super) batch_frames: usize,
    /// A masked close frame with code 1000.
    pub(super) close_frame: Vec<u8>,
    pub(super) mask: [u8; 4],
    /// Read buffer size per connection.
    pub(super) read_buf: usize,
    /// With --deflate: what is offered, and the size of the compressed payload (`None`: it does
    /// not shrink, so messages go uncompressed).
    pub(super) deflate: Option<DeflatePlan>,
    /// The permessage-deflate parameters the server answered (the first connection's).
    pub(super) negotiated: OnceLock<String>,
    /// fanout: where the sequence number sits in `batch`'s first frame, and its offset in the
    /// masked payload (for the mask's phase).
    pub(super) seq_at: usize,
    pub(super) seq_mask_offset: usize,
    /// fanout: an empty message, masked, that tells when every subscriber is subscribed.
    pub(super) sync_frame: Vec<u8>,
    /// fanout: messages per second, if paced.
    pub(super) rate: Option<f64>,
    pub(super) http2: Option<Http2Plan>,
}

/// --http2: the WebSockets are streams of a few HTTP/2 connections, opened as needed.
pub(super) struct Http2Plan {
    /// WebSockets per connection.
    pub(super) streams: usize,
    /// The connections by target URL and group (connection id / `streams`).
    pub(super) connections: tokio::sync::Mutex<
        std::collections::HashMap<(String, usize), ferry::http2::Http2Connection>,
    >,
}

pub(super) struct DeflatePlan {
    pub(super) offer: DeflateConfig,
    pub(super) compressed_len: Option<usize>,
}

impl Plan {
    pub(super) fn new(s: &Settings) -> Plan {
        let mut payload: Vec<u8> = match s.payload {
            PayloadKind::Json => super::deflate::json_payload(s.size),
            PayloadKind::Pattern => (0..s.size)
                .map(|i| match s.kind {
                    // Printable ASCII, so the text is valid UTF-8 and no two neighbours are equal.
                    Kind::Text => b'!' + (i % 94) as u8,
                    Kind::Binary => (i.wrapping_mul(31) ^ (i >> 8)) as u8,
                })
                .collect(),
        };
        let fanout = s.mode == Mode::Fanout;
        if fanout {
            // The template: message 0. The publisher patches the number into each copy.
            payload[..SEQ_LEN].copy_from_slice(&seq_prefix(0));
        }
        let opcode = match s.kind {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        };
        // Every frame of a run is masked with one key (RFC 6455 §5.3 asks for a fresh key per
        // frame to defeat proxy cache poisoning; a load generator on loopback has no proxy).
        let mask = run_mask_key();
        // What goes on the wire: the payload, or with --deflate its compressed form. Fan-out
        // compresses all but the sequence number, which goes in front in a stored block, so
        // every message is the same compressed bytes with 16 of them patched.
        let (compressed, seq_in_payload) = match (s.deflate, fanout) {
            (false, _) => (None, 0),
            (true, false) => (super::deflate::compress(&payload), 0),
            (true, true) => {
                let rest = super::deflate::compress(&payload[SEQ_LEN..]).map(|rest| {
                    let mut wire = super::deflate::STORED_PREFIX_HEADER.to_vec();
                    wire.extend_from_slice(&payload[..SEQ_LEN]);
                    wire.extend(rest);
                    wire
                });
                (rest, super::deflate::STORED_PREFIX_HEADER.len())
            }
        };
        let (wire, rsv, seq_mask_offset) = match &compressed {
            Some(wire) => (&wire[..], RSV1, seq_in_payload),
            None => (&payload[..], 0, 0),
        };
        let frame = build_frame(s.protocol, opcode, rsv, wire, mask);
        let frame_len = frame.len();
        let seq_at = frame_len - wire.len() + seq_mask_offset;
        let batch_frames = (BATCH_BYTES / frame_len).clamp(1, s.pipeline);
        let batch = frame.repeat(batch_frames);
        let close_frame = build_frame(Protocol::Ws, OpCode::Close, 0, &1000u16.to_be_bytes(), mask);
        let sync_frame = build_frame(Protocol::Ws, opcode, 0, &[], mask);
        let read_buf = if fanout {
            // Up to thousands of subscribers each: what four messages need is plenty, as the
            // verifier streams.
            frame_len.saturating_mul(4).clamp(4096, 64 * 1024)
        } else {
            frame_len.saturating_mul(s.pipeline).clamp(4096, 256 * 1024)
        }
        .next_power_of_two();
        let deflate = s.deflate.then(|| DeflatePlan {
            offer: DeflateConfig {
                level: super::deflate::LEVEL as u8,
                own_window_bits: super::deflate::OWN_WINDOW_BITS,
                // Not limiting the server: it compresses as it would for a browser.
                peer_window_bits: 15,
                own_no_context_takeover: true,
                request_peer_no_context_takeover: false,
                ..DeflateConfig::default()
            },
            compressed_len: compressed.as_ref().map(Vec::len),
        });
        Plan {
            mode: s.mode,
            connections: s.connections,
            protocol: s.protocol,
            targets: s.targets.clone(),
            path: s.path.clone(),
            path_per_connection: s.path_per_connection,
            silent: s.silent,
            sources: s.sources.clone(),
            size: s.size,
            pipeline: s.pipeline,
            timeout: s.timeout,
            opcode,
            payload,
            frame_len,
            batch,
            batch_frames,
            close_frame,
            mask,
            read_buf,
            deflate,
            negotiated: OnceLock::new(),
            seq_at,
            seq_mask_offset,
            sync_frame,
            rate: s.rate,
            http2: s.http2_streams.map(|streams| Http2Plan {
                streams,
                connections: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// What a received message is called in errors.
    pub(super) fn noun(&self) -> &'static str {
        match self.mode {
            Mode::Fanout => "delivery",
            _ => "echo",
        }
    }

    /// Where connection `id` goes: subscriber `id` to the URLs in turn, the publisher (id
    /// `connections`) and every connection outside fanout (one URL) to the first.
    pub(super) fn target(&self, id: usize) -> &Target {
        let index = if id < self.connections {
            id % self.targets.len().max(1)
        } else {
            0
        };
        &self.targets[index]
    }

    /// The request path of connection `id`.
    pub(super) fn path(&self, id: usize) -> std::borrow::Cow<'_, str> {
        if self.path_per_connection {
            std::borrow::Cow::Owned(format!("{}-{id}", self.path))
        } else {
            std::borrow::Cow::Borrowed(&self.path)
        }
    }

    pub(super) fn source(&self, n: usize) -> Option<IpAddr> {
        match self.sources.len() {
            0 => None,
            len => self.sources.get(n % len).copied(),
        }
    }
}

pub(super) fn run_mask_key() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5eed);
    (nanos ^ std::process::id().rotate_left(16) ^ 0x9e37_79b9).to_le_bytes()
}

/// One whole frame: WebSocket (masked, `rsv` bits set), or tcp's length prefix and payload.
pub(super) fn build_frame(
    protocol: Protocol,
    opcode: OpCode,
    rsv: u8,
    payload: &[u8],
    mask: [u8; 4],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + MAX_HEADER_LEN);
    match protocol {
        Protocol::Ws => {
            let header = FrameHeader {
                fin: true,
                rsv,
                opcode,
                mask: Some(mask),
                payload_len: payload.len() as u64,
            };
            let mut bytes = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut bytes);
            out.extend_from_slice(&bytes[..n]);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask, 0);
        }
        Protocol::Tcp => {
            // Settings checked that the size fits in 32 bits.
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
    out
}
