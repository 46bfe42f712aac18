//! permessage-deflate (RFC 7692): negotiation for both roles, and the codec.
//!
//! Built on zlib-rs (the engine behind flate2's `zlib-rs` backend) through its safe API, used
//! directly because flate2 does not expose zlib's `memLevel`, which decides most of a
//! compressor's memory (see `docs/compression.md`).
//!
//! **Window bits 8.** zlib, and zlib-rs after it, cannot produce a raw deflate stream with a
//! 256-byte window: asked for 8 it silently uses 9, and a peer with an 8-bit window could then
//! fail on distances it cannot reach. So when the peer limits this end's compressor to 8 bits
//! (`server_max_window_bits=8` in a client's offer, `client_max_window_bits=8` in a server's
//! response), ferry accepts the extension but sends every message uncompressed, which RFC 7692
//! always allows; it still decompresses what the peer sends.

use bytes::{Bytes, BytesMut};
use zlib_rs::{
    Deflate, DeflateConfig as ZDeflateConfig, DeflateFlush, Inflate, InflateFlush, Status,
};

use super::{Extension, ExtensionOffer};
use crate::connection::Role;
use crate::error::ProtocolError;
use crate::prepared::{DeflateEncoding, FrameEncoding};

/// The extension token.
pub const NAME: &str = "permessage-deflate";

/// RSV1: the "Per-Message Compressed" bit (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// The bytes a sync flush ends with, stripped from each message and put back before inflating
/// (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How this end negotiates and runs permessage-deflate. The same struct serves both roles;
/// "own" is the compressor of this end, "peer" the compressor at the other end.
///
/// ```
/// use ferry_proto::extension::deflate::DeflateConfig;
/// let config = DeflateConfig { level: 1, own_window_bits: 10, ..DeflateConfig::default() };
/// assert!(config.validate().is_ok());
/// assert!(DeflateConfig { own_window_bits: 16, ..config }.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Compression level, 0 (store) to 9 (best). Default 1: on 64 KiB of JSON it compresses to
    /// 25% against level 6's 17%, at about three times the speed.
    pub level: u8,
    /// zlib `memLevel`, 1 to 9: the compressor's hash table and buffers take about
    /// `2^(mem_level + 9)` bytes. Default 5 (16 KiB), against zlib's 8 (128 KiB).
    pub mem_level: u8,
    /// The largest LZ77 window this end compresses with, 9 to 15 (a window of `2^bits` bytes;
    /// the compressor holds about four times that). Default 12 (4 KiB). The peer may ask for a
    /// smaller one.
    pub own_window_bits: u8,
    /// The window to ask of the peer's compressor, 8 to 15; this end's decompressor keeps a
    /// window of that size. A server asks with `client_max_window_bits` when the client's offer
    /// allows it; a client offers `server_max_window_bits` when this is below 15. Default 15
    /// Default 12 (a 4 KiB window; browsers offer `client_max_window_bits`, so they comply).
    pub peer_window_bits: u8,
    /// Reset this end's compressor after every message instead of keeping its window ("no
    /// context takeover"). Default true: the compressor is then shared by every connection on a
    /// thread, instead of costing each connection about 150 KiB (zlib-rs' 128 KiB hash table
    /// plus the window). Turn it off for streams of small similar messages (chat), where the
    /// shared history shrinks messages four times as much.
    pub own_no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message. Default false.
    pub request_peer_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed: without context takeover, deflate
    /// saves little on them. Default 256 bytes; lower it with context takeover.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    /// Defaults for a public server, measured with `cargo bench -p ferry-proto --bench
    /// compression` (see `docs/compression.md`): level 1, this end without context takeover so
    /// one compressor per thread serves every connection and an idle connection holds no
    /// compressor, and a 4 KiB window asked of the peer, so its decompressor stays small.
    fn default() -> Self {
        DeflateConfig {
            level: 1,
            mem_level: 5,
            own_window_bits: 12,
            peer_window_bits: 12,
            own_no_context_takeover: true,
            request_peer_no_context_takeover: false,
            threshold: 256,
        }
    }
}

impl DeflateConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("level", self.level, 0, 9),
            ("mem_level", self.mem_level, 1, 9),
            ("own_window_bits", self.own_window_bits, 9, 15),
            ("peer_window_bits", self.peer_window_bits, 8, 15),
        ];
        for (name, value, low, high) in fields {
            if !(low..=high).contains(&value) {
                return Err(format!(
                    "deflate {name} {value} out of range: use {low} to {high}"
                ));
            }
        }
        Ok(())
    }

    /// The offer a client sends: `permessage-deflate; client_max_window_bits`, plus what this
    /// config asks of the server. Offering `client_max_window_bits` lets the server limit this
    /// end's window, as browsers do.
    pub fn client_offer(&self) -> String {
        let mut offer = String::from(NAME);
        if self.own_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if self.request_peer_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.peer_window_bits < 15 {
            offer.push_str(&format!(
                "; server_max_window_bits={}",
                self.peer_window_bits
            ));
        }
        offer.push_str("; client_max_window_bits");
        offer
    }

    /// Server side: picks the first acceptable permessage-deflate offer, in the client's order
    /// (RFC 7692 §5). Returns the agreed parameters and the response header value, or `None`
    /// to decline, so the connection opens uncompressed. Malformed offers (unknown or
    /// duplicate parameters, bad values) are declined one by one, as §5 says.
    pub fn accept_offer(&self, offers: &[ExtensionOffer]) -> Option<(DeflateParams, String)> {
        offers
            .iter()
            .filter(|o| o.name == NAME)
            .find_map(|offer| self.accept_one(offer))
    }

    fn accept_one(&self, offer: &ExtensionOffer) -> Option<(DeflateParams, String)> {
        let offered = OfferParams::parse(&offer.params, Role::Client)?;
        // Our compressor: at most what we like, at most what the client allows.
        let server_bits = offered
            .server_max_window_bits
            .map_or(self.own_window_bits, |max| max.min(self.own_window_bits));
        let server_no_context_takeover =
            offered.server_no_context_takeover || self.own_no_context_takeover;
        // The client's compressor: we may limit it only if it offered client_max_window_bits.
        let client_bits = match offered.client_max_window_bits {
            None => None,
            Some(limit) => {
                let wanted = self.peer_window_bits.min(limit.unwrap_or(15));
                (wanted < 15 || limit.is_some()).then_some(wanted)
            }
        };
        let client_no_context_takeover =
            offered.client_no_context_takeover || self.request_peer_no_context_takeover;
        let params = DeflateParams {
            server_no_context_takeover,
            client_no_context_takeover,
            // §7.1.2.1: accepting an offer that has server_max_window_bits means answering with
            // it; without one, a smaller window needs no announcement.
            server_max_window_bits: offered.server_max_window_bits.map(|_| server_bits),
            client_max_window_bits: client_bits,
        };
        Some((params, params.to_header()))
    }

    /// Client side: validates the server's response to [`client_offer`](Self::client_offer).
    /// RFC 7692 §5: the client fails the connection on anything it did not offer or cannot
    /// honour; the error text says which.
    pub fn accept_response(&self, response: &ExtensionOffer) -> Result<DeflateParams, String> {
        if response.name != NAME {
            return Err(format!("extension {} was not offered", response.name));
        }
        let mut params = DeflateParams::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &response.params {
            if seen.contains(&name.as_str()) {
                return Err(format!("duplicate parameter {name}"));
            }
            seen.push(name);
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => {
                    let bits = window_bits(v)
                        .ok_or_else(|| format!("invalid server_max_window_bits={v}"))?;
                    if self.peer_window_bits < 15 && bits > self.peer_window_bits {
                        return Err(format!(
                            "server_max_window_bits={bits} is over the {} offered",
                            self.peer_window_bits
                        ));
                    }
                    params.server_max_window_bits = Some(bits);
                }
                ("client_max_window_bits", Some(v)) => {
                    params.client_max_window_bits = Some(
                        window_bits(v)
                            .ok_or_else(|| format!("invalid client_max_window_bits={v}"))?,
                    );
                }
                (name, _) => return Err(format!("unexpected parameter {name}")),
            }
        }
        if self.request_peer_no_context_takeover && !params.server_no_context_takeover {
            // §7.1.1.1: the server must honour it by including the parameter, or decline.
            return Err("server_no_context_takeover was requested but not granted".into());
        }
        Ok(params)
    }
}

/// Parses a window-bits value: a decimal 8 to 15, no leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// The parameters of one offer, validated (§7.1).
struct OfferParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl OfferParams {
    fn parse(params: &[(String, Option<String>)], _from: Role) -> Option<OfferParams> {
        let mut out = OfferParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in params {
            if seen.contains(&name.as_str()) {
                return None;
            }
            seen.push(name);
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => out.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => out.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => {
                    out.server_max_window_bits = Some(window_bits(v)?)
                }
                ("client_max_window_bits", None) => out.client_max_window_bits = Some(None),
                ("client_max_window_bits", Some(v)) => {
                    out.client_max_window_bits = Some(Some(window_bits(v)?))
                }
                _ => return None,
            }
        }
        Some(out)
    }
}

/// The agreed permessage-deflate parameters, as in the server's response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's compressor window is at most this (bits).
    pub server_max_window_bits: Option<u8>,
    /// The client's compressor window is at most this (bits).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value for these parameters.
    pub fn to_header(&self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// The permessage-deflate codec for one connection.
///
/// Compressor and decompressor are allocated on the first message that needs them, not at the
/// handshake, so a connection that never compresses costs nothing.
pub struct PerMessageDeflate {
    level: i32,
    mem_level: i32,
    threshold: usize,
    /// This end's compressor window, or `None` when it must not compress (window 8).
    own_window_bits: Option<u8>,
    own_no_context_takeover: bool,
    peer_window_bits: u8,
    peer_no_context_takeover: bool,
    compressor: Option<Box<Deflate>>,
    decompressor: Option<Box<Inflate>>,
    /// A fragmented compressed message is being inflated.
    in_message: bool,
}

impl std::fmt::Debug for PerMessageDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerMessageDeflate")
            .field("own_window_bits", &self.own_window_bits)
            .field("own_no_context_takeover", &self.own_no_context_takeover)
            .field("peer_window_bits", &self.peer_window_bits)
            .field("peer_no_context_takeover", &self.peer_no_context_takeover)
            .field("compressor_allocated", &self.compressor.is_some())
            .field("decompressor_allocated", &self.decompressor.is_some())
            .finish()
    }
}

impl PerMessageDeflate {
    /// The codec for `role` after negotiating `params` with this end's `config`.
    pub fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let (own_max, own_nct, peer_max, peer_nct) = match role {
            Role::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
                params.client_max_window_bits,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
        };
        let own = own_max
            .unwrap_or(15)
            .min(config.own_window_bits.clamp(9, 15));
        PerMessageDeflate {
            level: i32::from(config.level.min(9)),
            mem_level: i32::from(config.mem_level.clamp(1, 9)),
            threshold: config.threshold,
            own_window_bits: (own >= 9).then_some(own),
            own_no_context_takeover: own_nct || config.own_no_context_takeover,
            // zlib cannot inflate with an 8-bit window either; 9 bits reach every distance an
            // 8-bit compressor can produce.
            peer_window_bits: peer_max.unwrap_or(15).max(9),
            peer_no_context_takeover: peer_nct,
            compressor: None,
            decompressor: None,
            in_message: false,
        }
    }

    /// A compress-only codec with a fan-out group's settings, for [`crate::PreparedMessage`].
    pub(crate) fn stateless(settings: DeflateEncoding) -> Self {
        PerMessageDeflate {
            level: settings.level,
            mem_level: settings.mem_level,
            threshold: settings.threshold,
            own_window_bits: Some(settings.window_bits),
            own_no_context_takeover: true,
            peer_window_bits: 15,
            peer_no_context_takeover: true,
            compressor: None,
            decompressor: None,
            in_message: false,
        }
    }

    /// Whether the compressor and decompressor have been allocated.
    pub fn allocated(&self) -> (bool, bool) {
        (self.compressor.is_some(), self.decompressor.is_some())
    }

    /// Compresses one whole message: a sync-flushed raw deflate stream without its 4-byte tail.
    /// `None` if the result would not be smaller.
    ///
    /// Without context takeover the compressor keeps nothing between messages, so it is not
    /// this connection's: one compressor per thread serves every such connection, and an idle
    /// connection holds no compressor memory at all.
    pub fn compress(&mut self, payload: &[u8]) -> Option<Bytes> {
        let bits = self.own_window_bits?;
        let key = (self.level, bits, self.mem_level);
        if self.own_no_context_takeover {
            return SHARED_COMPRESSORS.with(|shared| {
                let mut shared = shared.borrow_mut();
                let index = match shared.iter().position(|(k, _)| *k == key) {
                    Some(index) => index,
                    None => {
                        shared.push((key, new_compressor(key)));
                        shared.len() - 1
                    }
                };
                let (_, compressor) = shared.get_mut(index)?;
                match compress_message(compressor, payload, true) {
                    Ok(compressed) => compressed,
                    Err(Poisoned) => {
                        shared.remove(index);
                        None
                    }
                }
            });
        }
        let compressor = self
            .compressor
            .get_or_insert_with(|| Box::new(new_compressor(key)));
        match compress_message(compressor, payload, false) {
            Ok(compressed) => compressed,
            Err(Poisoned) => {
                self.compressor = None;
                None
            }
        }
    }

    /// Decompresses one frame's payload into `out`, adding the tail after the final frame.
    ///
    /// A whole message in one frame from a peer without context takeover is inflated by this
    /// thread's shared decompressor; otherwise the connection's own, which is dropped again at
    /// the end of the message when the peer does not take context over.
    pub fn decompress(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        let bits = self.peer_window_bits;
        if self.peer_no_context_takeover && fin && !self.in_message {
            return SHARED_DECOMPRESSOR.with(|shared| {
                let mut shared = shared.borrow_mut();
                let inflater = shared.get_or_insert_with(|| Inflate::new(false, 15));
                let result = inflate_message_end(inflater, payload, out, limit);
                match result {
                    Ok(()) => inflater.reset(false),
                    // Possibly mid-stream or poisoned: start the next message with a new one.
                    Err(_) => *shared = None,
                }
                result
            });
        }
        let decompressor = self
            .decompressor
            .get_or_insert_with(|| Box::new(Inflate::new(false, bits)));
        self.in_message = !fin;
        if !fin {
            return inflate_into(decompressor, payload, out, limit);
        }
        let result = inflate_message_end(decompressor, payload, out, limit);
        if self.peer_no_context_takeover || result.is_err() {
            self.decompressor = None;
        }
        result
    }
}

thread_local! {
    /// Compressors for connections without context takeover, one per setting, per thread.
    static SHARED_COMPRESSORS: std::cell::RefCell<Vec<(CompressorKey, Deflate)>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The decompressor for single-frame messages from peers without context takeover.
    static SHARED_DECOMPRESSOR: std::cell::RefCell<Option<Inflate>> = const { std::cell::RefCell::new(None) };
}

/// Level, window bits and memLevel: what makes two compressors interchangeable.
type CompressorKey = (i32, u8, i32);

fn new_compressor((level, bits, mem_level): CompressorKey) -> Deflate {
    Deflate::new_with_config(ZDeflateConfig {
        level,
        window_bits: -i32::from(bits),
        mem_level,
        ..ZDeflateConfig::default()
    })
}

/// Inflates the last frame of a message, then the sync-flush tail (RFC 7692 §7.2.2).
fn inflate_message_end(
    inflater: &mut Inflate,
    payload: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), ProtocolError> {
    inflate_into(inflater, payload, out, limit)?;
    inflate_into(inflater, &TAIL, out, limit)
}

/// Compresses a whole message with sync flush and strips the tail (RFC 7692 §7.2.1). `reset`
/// forgets the message afterwards (no context takeover). `Err` means the compressor panicked and
/// must be thrown away.
///
/// The output buffer always has room for the worst case (`compress_bound`), so one call does the
/// whole message. That is also a workaround: zlib-rs 0.6.8 at level 1 (its "quick" strategy)
/// panics when the output buffer runs short mid-block with a small memLevel, and a panic is
/// never acceptable on network input; `catch_unwind` is the second line of defence.
fn compress_message(
    compressor: &mut Deflate,
    payload: &[u8],
    reset: bool,
) -> Result<Option<Bytes>, Poisoned> {
    /// Above this, a temporary buffer is used instead of keeping a big scratch buffer around.
    const SCRATCH_MAX: usize = 1 << 20;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let bound = zlib_rs::compress_bound(payload.len()) + 64;
    let mut run = |out: &mut [u8]| -> Result<Option<Bytes>, Poisoned> {
        let before = (compressor.total_in(), compressor.total_out());
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compressor.compress(payload, out, DeflateFlush::SyncFlush)
        }))
        .map_err(|_| Poisoned)?;
        let consumed = (compressor.total_in() - before.0) as usize;
        let produced = (compressor.total_out() - before.1) as usize;
        let written = out.get(..produced).unwrap_or_default();
        let ok = status.is_ok()
            && consumed == payload.len()
            && written.ends_with(&TAIL)
            && produced - TAIL.len() < payload.len();
        if reset || !ok {
            // A message sent uncompressed does not enter the peer's window, so ours must forget
            // it too.
            compressor.reset();
        }
        Ok(ok.then(|| {
            Bytes::copy_from_slice(written.get(..produced - TAIL.len()).unwrap_or_default())
        }))
    };
    if bound > SCRATCH_MAX {
        return run(&mut vec![0u8; bound]);
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < bound {
            scratch.resize(bound, 0);
        }
        run(scratch.get_mut(..bound).unwrap_or_default())
    })
}

/// A zlib-rs call panicked; its state can no longer be trusted.
#[derive(Debug)]
struct Poisoned;

/// Inflates all of `input` into `out`, in steps of at most 64 KiB so output over `limit` is
/// caught as soon as it appears.
///
/// The first step is sized from the input (text inflates by a few times) and steps double
/// while the output keeps filling them: a fixed 64 KiB step zeroed, and faulted in, 64 KiB of
/// output room twice per message, which cost more than inflating a 1 KiB message (4.4 times the
/// CPU of the same echo uncompressed, `ferry bench --deflate`), and left every small message
/// holding a 64 KiB allocation.
fn inflate_into(
    inflater: &mut Inflate,
    mut input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), ProtocolError> {
    const STEP: usize = 64 * 1024;
    const FIRST_MIN: usize = 256;
    let mut step = input.len().saturating_mul(4).clamp(FIRST_MIN, STEP);
    loop {
        let len = out.len();
        let room = step.min(limit.saturating_sub(len) + 1);
        out.resize(len + room, 0);
        let before = (inflater.total_in(), inflater.total_out());
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inflater.decompress(
                input,
                out.get_mut(len..).unwrap_or_default(),
                InflateFlush::SyncFlush,
            )
        }))
        .map_err(|_| ProtocolError::InvalidCompressedData)?;
        let consumed = (inflater.total_in() - before.0) as usize;
        let produced = (inflater.total_out() - before.1) as usize;
        out.truncate(len + produced);
        input = input.get(consumed..).unwrap_or_default();
        if out.len() > limit {
            return Err(ProtocolError::MessageTooLarge {
                size: out.len() as u64,
                limit,
            });
        }
        match status {
            Err(_) => return Err(ProtocolError::InvalidCompressedData),
            // A final (BFINAL) block ended the stream: what follows is the tail we appended.
            // The next message starts a new stream.
            Ok(Status::StreamEnd) => {
                inflater.reset(false);
                return Ok(());
            }
            // All input taken and the output not filled: nothing more is pending.
            Ok(_) if input.is_empty() && produced < room => return Ok(()),
            Ok(_) if consumed == 0 && produced == 0 => {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(ProtocolError::InvalidCompressedData)
                };
            }
            Ok(_) => {}
        }
        if produced == room {
            step = step.saturating_mul(2).min(STEP);
        }
    }
}

impl Extension for PerMessageDeflate {
    fn rsv_bits(&self) -> u8 {
        RSV1
    }

    fn encode(&mut self, payload: &[u8], is_text: bool) -> Option<Bytes> {
        if payload.len() < self.threshold || (!is_text && looks_compressed(payload)) {
            return None;
        }
        self.compress(payload)
    }

    fn decode(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.decompress(payload, fin, out, limit)
    }

    fn frame_encoding(&self) -> Option<FrameEncoding> {
        // With context takeover each message's output depends on this connection's history.
        if !self.own_no_context_takeover {
            return None;
        }
        Some(match self.own_window_bits {
            Some(window_bits) => FrameEncoding::Deflate(DeflateEncoding {
                level: self.level,
                mem_level: self.mem_level,
                window_bits,
                threshold: self.threshold,
            }),
            // A window of 8 bits: this end never compresses.
            None => FrameEncoding::Plain,
        })
    }
}

/// Whether a binary payload starts like an already-compressed format (gzip, zlib-wrapped
/// deflate is not checked: it is rare), in which case compressing it again wastes CPU.
pub fn looks_compressed(payload: &[u8]) -> bool {
    const MAGIC: [&[u8]; 8] = [
        b"\x1f\x8b",         // gzip
        b"PK\x03\x04",       // zip, docx, jar
        b"\x89PNG",          // png
        b"\xff\xd8\xff",     // jpeg
        b"GIF8",             // gif
        b"\x28\xb5\x2f\xfd", // zstd
        b"BZh",              // bzip2
        b"\xfd7zXZ",         // xz
    ];
    MAGIC.iter().any(|magic| payload.starts_with(magic))
        || (payload.starts_with(b"RIFF") && payload.get(8..12) == Some(b"WEBP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::parse_extensions;

    /// Deterministic incompressible bytes (xorshift).
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// The RFC's defaults: context takeover, full windows, no threshold.
    fn classic() -> DeflateConfig {
        DeflateConfig {
            level: 6,
            peer_window_bits: 15,
            own_no_context_takeover: false,
            threshold: 0,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn default_answers_a_browser_with_shared_compressor_and_small_window() {
        let config = DeflateConfig::default();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        assert!(params.server_no_context_takeover);
        assert_eq!(
            config.client_offer(),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits"
        );
    }

    fn offer(text: &str) -> Vec<ExtensionOffer> {
        parse_extensions(&[text]).unwrap()
    }

    #[test]
    fn server_accepts_browser_offer() {
        let config = classic();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(params, DeflateParams::default());
        let config = DeflateConfig {
            peer_window_bits: 12,
            ..classic()
        };
        let (_, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(header, "permessage-deflate; client_max_window_bits=12");
    }

    #[test]
    fn server_takes_first_acceptable_offer() {
        let config = classic();
        let offers = offer(
            "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=9; server_no_context_takeover",
        );
        let (params, header) = config.accept_offer(&offers).unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(params.server_max_window_bits, Some(9));
    }

    #[test]
    fn server_declines_malformed_offers() {
        let config = classic();
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x=1",
            "x-other",
        ] {
            assert_eq!(config.accept_offer(&offer(bad)), None, "{bad}");
        }
    }

    #[test]
    fn server_window_8_is_accepted_but_never_compressed() {
        let config = classic();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; server_max_window_bits=8"))
            .unwrap();
        assert_eq!(header, "permessage-deflate; server_max_window_bits=8");
        let mut codec = PerMessageDeflate::new(Role::Server, params, &config);
        assert_eq!(codec.encode(&[b'a'; 1000], true), None);
        assert_eq!(codec.allocated(), (false, false));
    }

    #[test]
    fn client_validates_responses() {
        let config = classic();
        let ok = |text: &str| config.accept_response(&offer(text)[0]);
        assert!(ok("permessage-deflate").is_ok());
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits=10")
                .unwrap()
                .client_max_window_bits,
            Some(10)
        );
        assert!(ok("permessage-deflate; client_max_window_bits").is_err());
        assert!(ok("permessage-deflate; server_max_window_bits=7").is_err());
        assert!(
            ok("permessage-deflate; server_no_context_takeover; server_no_context_takeover")
                .is_err()
        );
        assert!(ok("permessage-deflate; foo").is_err());
        assert!(ok("x-other").is_err());
        let asking = DeflateConfig {
            peer_window_bits: 10,
            ..classic()
        };
        assert!(
            asking
                .accept_response(&offer("permessage-deflate; server_max_window_bits=11")[0])
                .is_err()
        );
        assert_eq!(
            asking.client_offer(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits"
        );
    }

    fn roundtrip(params: DeflateParams, messages: &[&[u8]]) {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut server = PerMessageDeflate::new(Role::Server, params, &config);
        let mut client = PerMessageDeflate::new(Role::Client, params, &config);
        for message in messages {
            let compressed = server.compress(message);
            let Some(compressed) = compressed else {
                continue;
            };
            assert!(!compressed.ends_with(&TAIL));
            let mut out = BytesMut::new();
            // Split into three frames to exercise streaming inflation.
            let (a, rest) = compressed.split_at(compressed.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            client.decompress(a, false, &mut out, 1 << 20).unwrap();
            client.decompress(b, false, &mut out, 1 << 20).unwrap();
            client.decompress(c, true, &mut out, 1 << 20).unwrap();
            assert_eq!(&out[..], *message);
        }
    }

    #[test]
    fn roundtrips_with_and_without_takeover() {
        let json: &[u8] = br#"{"type":"chat","room":"general","user":"alice","text":"hello there, how is everyone doing today?"}"#;
        let messages = [json, json, &[0u8; 5000][..], b"short but over zero", json];
        roundtrip(DeflateParams::default(), &messages);
        roundtrip(
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..Default::default()
            },
            &messages,
        );
        roundtrip(
            DeflateParams {
                server_max_window_bits: Some(9),
                ..Default::default()
            },
            &messages,
        );
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let json = br#"{"type":"chat","room":"general","user":"alice","text":"hello there, how is everyone doing today?"}"#;
        let mut takeover = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let first = takeover.compress(json).unwrap().len();
        let second = takeover.compress(json).unwrap().len();
        assert!(second < first / 3, "{first} then {second}");
        let params = DeflateParams {
            server_no_context_takeover: true,
            ..Default::default()
        };
        let mut fresh = PerMessageDeflate::new(Role::Server, params, &config);
        assert_eq!(fresh.compress(json).unwrap().len(), first);
        assert_eq!(fresh.compress(json).unwrap().len(), first);
    }

    #[test]
    fn incompressible_payload_goes_out_raw() {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut codec = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let noise = noise(4096);
        assert_eq!(codec.compress(&noise), None);
        assert!(
            codec
                .encode(
                    b"\x1f\x8b\x08\x00 lots of gzip bytes here, more than the threshold....",
                    false
                )
                .is_none()
        );
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        // 1 MiB of zeros compresses to about 1 KiB; inflating it with a 64 KiB limit must stop
        // after at most one more step.
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut server = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let bomb = server.compress(&vec![0u8; 1 << 20]).unwrap();
        assert!(bomb.len() < 2048, "{}", bomb.len());
        let mut client = PerMessageDeflate::new(Role::Client, DeflateParams::default(), &config);
        let mut out = BytesMut::new();
        let err = client
            .decompress(&bomb, true, &mut out, 64 * 1024)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { .. }));
        assert!(out.len() <= 2 * 64 * 1024 + 1);
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut client = PerMessageDeflate::new(Role::Client, DeflateParams::default(), &classic());
        let mut out = BytesMut::new();
        let mut garbage = BytesMut::from(&b"\xff\xff\xff\xff\xff"[..]);
        garbage.extend_from_slice(&TAIL);
        assert_eq!(
            client.decompress(&garbage, true, &mut out, 1 << 20),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    /// Regression: zlib-rs 0.6.8 at level 1 with memLevel 5 (the defaults) panicked inside
    /// `deflate_quick` when its output buffer ran short (Autobahn 12.2.* as client). Every size
    /// and kind of payload must now compress and inflate back, with and without takeover.
    #[test]
    fn level_1_small_mem_level_never_panics_on_any_payload() {
        let noise = noise(1 << 20);
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        for takeover in [true, false] {
            let config = DeflateConfig {
                own_no_context_takeover: !takeover,
                threshold: 0,
                ..DeflateConfig::default()
            };
            let mut server =
                PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
            let mut client =
                PerMessageDeflate::new(Role::Client, DeflateParams::default(), &config);
            for size in [100usize, 1000, 10_000, 65_536, 100_000, 300_000, 1 << 20] {
                for data in [&noise[..size], &text[..size]] {
                    if let Some(compressed) = server.encode(data, false) {
                        let mut out = BytesMut::new();
                        client.decode(&compressed, true, &mut out, 2 << 20).unwrap();
                        assert_eq!(&out[..], data);
                    }
                }
            }
        }
    }

    #[test]
    fn state_is_allocated_lazily() {
        let config = DeflateConfig {
            threshold: 64,
            ..classic()
        };
        let mut codec = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        assert_eq!(codec.allocated(), (false, false));
        assert_eq!(codec.encode(b"tiny", true), None); // under the threshold
        assert_eq!(codec.allocated(), (false, false));
        codec.encode(&[b'x'; 1000], true).unwrap();
        assert_eq!(codec.allocated(), (true, false));
    }

    #[test]
    fn without_takeover_nothing_stays_allocated_per_connection() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Default::default()
        };
        let mut server = PerMessageDeflate::new(Role::Server, params, &DeflateConfig::default());
        let mut client = PerMessageDeflate::new(Role::Client, params, &DeflateConfig::default());
        let message = vec![b'x'; 5000];
        let compressed = server.encode(&message, true).unwrap();
        let mut out = BytesMut::new();
        client.decode(&compressed, true, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[..], &message[..]);
        // Fragmented: the connection's own decompressor, dropped again at the end.
        let mut out = BytesMut::new();
        let (a, b) = compressed.split_at(compressed.len() / 2);
        client.decode(a, false, &mut out, 1 << 20).unwrap();
        assert_eq!(client.allocated(), (false, true));
        client.decode(b, true, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[..], &message[..]);
        assert_eq!(server.allocated(), (false, false));
        assert_eq!(client.allocated(), (false, false));
    }
}
