//! The permessage-deflate codec (RFC 7692 §7.2): compressing a message into one deflate block
//! sequence, inflating one under the message-size limit, with context takeover or without.

use bytes::{Bytes, BytesMut};
use zlib_rs::{
    Deflate, DeflateConfig as ZDeflateConfig, DeflateFlush, Inflate, InflateFlush, Status,
};

use super::RSV1;
use super::negotiation::{DeflateConfig, DeflateParams};
use crate::encoding::{DeflateEncoding, FrameEncoding};
use crate::error::ProtocolError;
use crate::extension::Extension;
use crate::role::Role;

/// The bytes a sync flush ends with, stripped from each message and put back before inflating
/// (RFC 7692 §7.2.1, §7.2.2).
pub(super) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

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
