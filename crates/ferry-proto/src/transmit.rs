//! The bytes a connection owes the peer, in two lanes.
//!
//! **Data** (message frames, then the close frame) goes in order, as a queue of shared chunks: small frames (headers, short payloads) are written into one growing buffer so a
//! batch of them leaves in a single write; a large payload is queued as its own `Bytes`, shared
//! with the application's message instead of copied, and goes out with its header in one
//! vectored write.
//!
//! **Control** (pongs and pings) goes at the next frame boundary of the data, so it waits
//! behind at most the rest of one frame, never behind the queue. RFC 6455 §5.4 allows control
//! frames between the fragments of a message and forbids them inside a frame; with `Config::fragment_size` set, a large message is many frames, so a pong gets out
//! after at most one fragment's bytes however much is queued, long before a strict peer's
//! keepalive gives up. The close frame is the exception among control frames: it goes in the
//! data lane, after what is queued, so the answers this end owes reach the peer before it, and
//! nothing can follow it (§5.5.1).
//!
//! The boundaries are read from the data itself: at a boundary the next bytes are a frame
//! header, which says how long the frame is.
//!
//! **A client's large message is masked as it goes out**, a window at a time, not when it is
//! queued: a client must mask every byte it sends (§5.3), and masking a whole 16 MiB message at
//! once would hold a 16 MiB copy of it for as long as it waits. Queued, each of its frames'
//! payloads is shared with the application's message like a server's; only about the next
//! 64 KiB to be written, near the front of the queue, is masked into buffers of their own.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::FrameHeader;
use crate::mask::apply_mask;

/// Payloads at least this long are queued by reference rather than copied (server side).
const SHARE_THRESHOLD: usize = 1024;

/// A client's messages at least this long are masked a window at a time as they go out
/// ([`Transmit::put_masked`]), each of their frames; shorter ones are masked by copy when
/// queued, so that a batch of them still leaves in one write.
pub(crate) const LAZY_MASK_THRESHOLD: usize = 64 * 1024;

/// A large message's frames shorter than this are still masked by copy: a frame masked as it
/// goes out costs a box and a window of its own, more than copying a few hundred bytes.
pub(crate) const LAZY_MASK_MIN_FRAME: usize = 1024;

/// How much of a lazily masked payload is masked ahead of the writes.
const MASK_WINDOW: usize = 64 * 1024;

/// Bytes waiting to be written to the transport.
///
/// Implements [`Buf`], so the I/O layer can write it with `write_buf`/`chunks_vectored` and
/// [`Buf::advance`] past what was written. [`Buf::chunk`] is always the next bytes the wire
/// should carry: control frames when the data is at a frame boundary, the data otherwise.
#[derive(Debug, Default)]
pub struct Transmit {
    /// Data chunks sealed in order; `tail` comes after them.
    chunks: VecDeque<Chunk>,
    /// Small data writes accumulate here until a shared chunk must follow them.
    tail: BytesMut,
    /// Total bytes in `chunks`.
    sealed_len: usize,
    /// Bytes of the data frame being written that have not gone yet; 0 at a frame boundary.
    frame_left: usize,
    /// Whole control frames, waiting for a boundary (or going out). Boxed, and only while it
    /// is used: every connection holds a `Transmit` for its whole life, and control frames are
    /// rare (docs/memory.md).
    control: Option<Box<ControlLane>>,
}

/// A sealed data chunk.
#[derive(Debug)]
enum Chunk {
    /// Bytes as they go on the wire.
    Wire(Bytes),
    /// A client's payload, masked a window at a time. Boxed: rare, and larger than `Bytes`.
    Masked(Box<Masked>),
}

/// A client's payload that is masked as it goes out.
#[derive(Debug)]
struct Masked {
    /// The payload not yet masked, as the application gave it.
    payload: Bytes,
    key: [u8; 4],
    /// Bytes of this frame's payload masked so far (the mask's phase continues from it).
    offset: usize,
    /// The masked window that [`Buf::chunk`] offers; filled only near the front of the queue
    /// (`Transmit::fill_ahead`), so however much waits, about one window's worth is masked.
    window: BytesMut,
}

impl Masked {
    /// Masks the next window if the current one is used up.
    fn fill(&mut self) {
        if !self.window.is_empty() || self.payload.is_empty() {
            return;
        }
        let piece = self.payload.split_to(self.payload.len().min(MASK_WINDOW));
        self.window.clear();
        self.window.extend_from_slice(&piece);
        apply_mask(&mut self.window, self.key, self.offset);
        self.offset += piece.len();
    }

    fn len(&self) -> usize {
        self.window.len() + self.payload.len()
    }
}

impl Chunk {
    /// The bytes ready to be written: all of a wire chunk, the masked window of a masked one
    /// (empty until it reaches the front).
    fn ready(&self) -> &[u8] {
        match self {
            Chunk::Wire(bytes) => bytes,
            Chunk::Masked(masked) => &masked.window,
        }
    }

    /// Whether every byte of this chunk is ready.
    fn is_all_ready(&self) -> bool {
        match self {
            Chunk::Wire(_) => true,
            Chunk::Masked(masked) => masked.payload.is_empty(),
        }
    }
}

/// The control lane's bytes.
#[derive(Debug, Default)]
struct ControlLane {
    bytes: BytesMut,
    /// Part of `bytes` has been written: the control lane keeps the wire until it is empty, so
    /// a control frame is never cut by data either.
    started: bool,
}

impl Transmit {
    /// Total bytes waiting, in both lanes.
    #[inline]
    pub fn len(&self) -> usize {
        self.data_len() + self.control_len()
    }

    /// Bytes of data waiting (frames of messages, a close this end started).
    #[inline]
    pub fn data_len(&self) -> usize {
        self.sealed_len + self.tail.len()
    }

    /// Bytes of control frames waiting.
    #[inline]
    pub fn control_len(&self) -> usize {
        match &self.control {
            None => 0,
            Some(lane) => lane.bytes.len(),
        }
    }

    fn control_bytes(&self) -> &[u8] {
        self.control.as_ref().map_or(&[], |lane| &lane.bytes[..])
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether everything waiting is in one chunk, so [`Buf::chunk`] holds it all and a plain
    /// write serves where a vectored one would only add the cost of gathering.
    pub fn is_contiguous(&self) -> bool {
        if self.control.is_some() && self.control_goes_next() {
            return true;
        }
        match self.chunks.len() {
            0 => self.control_len() == 0,
            1 => {
                self.tail.is_empty()
                    && self.control_len() == 0
                    && self.chunks.front().is_some_and(Chunk::is_all_ready)
            }
            _ => false,
        }
    }

    /// Whether the control lane has the wire: it has bytes, and the data is between frames
    /// (or the control lane is partly written already).
    fn control_goes_next(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(|lane| !lane.bytes.is_empty() && (lane.started || self.frame_left == 0))
    }

    /// Takes everything waiting as one contiguous buffer (copying if there are several chunks).
    /// Handy in tests and simple drivers; the tokio layer writes chunks vectored instead.
    pub fn take_all(&mut self) -> Bytes {
        if self.chunks.is_empty() && self.control_len() == 0 {
            return self.tail.split().freeze();
        }
        if self.data_len() == 0
            && let Some(lane) = &mut self.control
        {
            lane.started = false;
            return lane.bytes.split().freeze();
        }
        let mut out = BytesMut::with_capacity(self.len());
        while self.has_remaining() {
            let chunk = self.chunk();
            let n = chunk.len();
            out.put_slice(chunk);
            self.advance(n);
        }
        out.freeze()
    }

    /// When nothing is waiting, frees the chunk list and hands out the small-write buffer, so an
    /// idle connection holds neither.
    pub(crate) fn take_if_empty(&mut self) -> Option<BytesMut> {
        if !self.is_empty() {
            return None;
        }
        if self.chunks.capacity() != 0 {
            self.chunks = VecDeque::new();
        }
        self.control = None;
        if self.tail.capacity() == 0 {
            return None;
        }
        Some(std::mem::take(&mut self.tail))
    }

    /// Whether the small-write buffer has no capacity at all.
    pub(crate) fn wants_buf(&self) -> bool {
        self.tail.capacity() == 0
    }

    /// Uses `buf` (cleared) as the small-write buffer if the current one has no capacity.
    pub(crate) fn provide(&mut self, mut buf: BytesMut) {
        if self.wants_buf() {
            buf.clear();
            self.tail = buf;
        }
    }

    /// Appends small data bytes by copy.
    pub(crate) fn put_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
    }

    /// The buffer small data writes go to, for in-place encoding (a client's short payloads).
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The control lane, for writing whole control frames.
    pub(crate) fn control_mut(&mut self) -> &mut BytesMut {
        &mut self.control.get_or_insert_with(Box::default).bytes
    }

    /// Appends a payload, by reference when it is large enough for that to pay.
    pub(crate) fn put_bytes(&mut self, data: Bytes) {
        if data.len() < SHARE_THRESHOLD {
            self.tail.extend_from_slice(&data);
            return;
        }
        self.seal();
        self.sealed_len += data.len();
        self.chunks.push_back(Chunk::Wire(data));
    }

    /// Appends a client's payload, to be masked with `key` a window at a time as it goes out
    /// (its header, with the key, must be queued already).
    pub(crate) fn put_masked(&mut self, payload: Bytes, key: [u8; 4]) {
        if payload.is_empty() {
            return;
        }
        self.seal();
        // Masked at once when it starts within the first window of the queue, so a vectored
        // write gathers a finely fragmented message's first frames; what lies beyond is
        // masked as the writes reach it (`fill_if_needed`).
        let ahead = self.sealed_len;
        self.sealed_len += payload.len();
        let mut masked = Box::new(Masked {
            payload,
            key,
            offset: 0,
            window: BytesMut::new(),
        });
        if ahead < MASK_WINDOW {
            masked.fill();
        }
        self.chunks.push_back(Chunk::Masked(masked));
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.sealed_len += chunk.len();
            self.chunks.push_back(Chunk::Wire(chunk));
        }
    }

    /// After the front chunk is gone: if the new front, or the payload right behind its header,
    /// is a masked payload with nothing masked yet, masks ahead (`fill_ahead`). Looking at two
    /// chunks only keeps this constant-time per chunk written; the scan runs once per window.
    fn fill_if_needed(&mut self) {
        let unmasked = |chunk: &Chunk| matches!(chunk, Chunk::Masked(m) if m.window.is_empty() && !m.payload.is_empty());
        if self.chunks.iter().take(2).any(unmasked) {
            self.fill_ahead();
        }
    }

    /// Masks ahead from the front until a window's worth (64 KiB) is ready, or up to the first
    /// payload not wholly masked: the front chunk's bytes are always ready to be written, and
    /// a vectored write can gather the short frames of a message fragmented finely, not one
    /// frame per write.
    fn fill_ahead(&mut self) {
        let mut ready = 0;
        for chunk in &mut self.chunks {
            if ready >= MASK_WINDOW {
                return;
            }
            match chunk {
                Chunk::Wire(bytes) => ready += bytes.len(),
                Chunk::Masked(masked) => {
                    masked.fill();
                    ready += masked.window.len();
                    if !masked.payload.is_empty() {
                        return;
                    }
                }
            }
        }
    }
}

impl Transmit {
    /// The first data chunk.
    #[inline]
    fn data_chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk.ready(),
            None => &self.tail,
        }
    }

    /// The length of the data frame that starts here (at a boundary). The data lane holds only
    /// frames this crate encoded, each header whole within one chunk; if that ever failed to
    /// hold, the rest is treated as one frame, which only delays control frames.
    fn next_frame_len(&self) -> usize {
        match FrameHeader::parse(self.data_chunk()) {
            Ok(Some((header, header_len))) => {
                usize::try_from(header.payload_len).map_or(usize::MAX, |n| n + header_len)
            }
            _ => self.data_len(),
        }
        .clamp(1, self.data_len().max(1))
    }

    /// Moves past `cnt` written data bytes, keeping count of the frame being written.
    fn advance_data(&mut self, mut cnt: usize) {
        if cnt >= self.data_len() {
            // Everything written (the usual case): the lane holds whole frames, so this ends at
            // a boundary, and no header needs reading. Dropped at once, not chunk by chunk.
            self.chunks.clear();
            self.sealed_len = 0;
            self.tail.clear();
            self.frame_left = 0;
            return;
        }
        while cnt > 0 && self.data_len() > 0 {
            if self.frame_left == 0 {
                self.frame_left = self.next_frame_len();
            }
            let step = cnt.min(self.frame_left);
            self.advance_raw(step);
            self.frame_left -= step;
            cnt -= step;
        }
    }

    #[inline]
    fn advance_raw(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let step = match self.chunks.front_mut() {
                // Shared and small-write chunks: the common case, kept to a slice's advance.
                Some(Chunk::Wire(front)) => {
                    let step = cnt.min(front.len());
                    front.advance(step);
                    if front.is_empty() {
                        self.chunks.pop_front();
                        self.fill_if_needed();
                    }
                    step
                }
                // A masked payload: its window at a time, the next masked as this one empties.
                Some(Chunk::Masked(front)) => {
                    let step = cnt.min(front.window.len());
                    front.window.advance(step);
                    front.fill();
                    if front.len() == 0 {
                        self.chunks.pop_front();
                        self.fill_if_needed();
                    }
                    step
                }
                None => {
                    let step = cnt.min(self.tail.len());
                    self.tail.advance(step);
                    return;
                }
            };
            if step == 0 {
                // Only if the front chunk were not ready, which `fill_if_needed` rules out: stop
                // rather than spin.
                debug_assert!(false, "the front chunk has no ready bytes");
                return;
            }
            self.sealed_len -= step;
            cnt -= step;
        }
    }
}

impl Buf for Transmit {
    #[inline]
    fn remaining(&self) -> usize {
        self.len()
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        if self.control.is_none() {
            // No control lane: the data is all there is (the hot path).
            return self.data_chunk();
        }
        if self.control_goes_next() || self.data_len() == 0 {
            return self.control_bytes();
        }
        let chunk = self.data_chunk();
        if self.control_len() == 0 || self.frame_left == 0 {
            chunk
        } else {
            // A control frame waits: offer no more than the rest of this frame.
            chunk.get(..self.frame_left).unwrap_or(chunk)
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        if self.control.is_some() && (self.control_goes_next() || self.data_len() == 0) {
            return match dst.first_mut() {
                Some(slot) if self.control_len() != 0 => {
                    *slot = IoSlice::new(self.control_bytes());
                    1
                }
                _ => 0,
            };
        }
        // With a control frame waiting, the data offered ends with the frame being written.
        let mut budget = if self.control_len() == 0 {
            usize::MAX
        } else {
            self.frame_left
        };
        let mut n = 0;
        // The chunks in order, up to the first one that is not wholly ready (a masked payload
        // whose later windows are not masked yet): nothing after it may go before it.
        for chunk in &self.chunks {
            let (bytes, whole) = match chunk {
                Chunk::Wire(bytes) => (&bytes[..], true),
                Chunk::Masked(masked) => (&masked.window[..], masked.payload.is_empty()),
            };
            if !offer(dst, &mut n, &mut budget, bytes) || !whole {
                return n;
            }
        }
        offer(dst, &mut n, &mut budget, &self.tail);
        n
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        if self.control.is_none() && self.chunks.is_empty() && cnt >= self.tail.len() {
            // The hot path: everything written from the small-write buffer, which holds whole
            // frames, so this ends at a boundary.
            self.tail.advance(self.tail.len());
            self.frame_left = 0;
            return;
        }
        if self.control.is_some() && (self.control_goes_next() || self.data_len() == 0) {
            let mut step = 0;
            if let Some(lane) = &mut self.control {
                step = cnt.min(lane.bytes.len());
                lane.bytes.advance(step);
                lane.started = !lane.bytes.is_empty();
            }
            // Only what chunk() offered is advanced past; anything more is data.
            self.advance_data(cnt - step);
            return;
        }
        self.advance_data(cnt);
    }
}

/// Puts `bytes` (cut to `budget`) in the next free slot of `dst`; whether there is room for
/// more after it.
#[inline]
fn offer<'a>(dst: &mut [IoSlice<'a>], n: &mut usize, budget: &mut usize, bytes: &'a [u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let Some(slot) = dst.get_mut(*n) else {
        return false;
    };
    let bytes = bytes.get(..*budget).unwrap_or(bytes);
    *budget -= bytes.len();
    *slot = IoSlice::new(bytes);
    *n += 1;
    *budget > 0 && *n < dst.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes masked ahead of the writes, in every queued payload.
    fn masked_ahead(t: &Transmit) -> usize {
        t.chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Wire(_) => 0,
                Chunk::Masked(masked) => masked.window.capacity(),
            })
            .sum()
    }

    /// What `fill_ahead` may hold masked: it stops once a window's worth is ready, and the last
    /// payload it masks adds at most one more window.
    const MASKED_AT_MOST: usize = 2 * MASK_WINDOW;

    /// 16 MiB queued by a client as 256 fragments holds about one masked window, not a masked
    /// copy of each: before, it held 16 MiB of masked copies for as long as it waited.
    #[test]
    fn a_client_holds_one_masked_window_however_much_is_queued() {
        let mut t = Transmit::default();
        let payload = Bytes::from(vec![0x5a; 16 << 20]);
        for fragment in 0..256 {
            let piece = payload.slice(fragment * MASK_WINDOW..(fragment + 1) * MASK_WINDOW);
            t.put_slice(b"hdr");
            t.put_masked(piece, [1, 2, 3, 4]);
        }
        assert_eq!(t.len(), (16 << 20) + 256 * 3);
        assert!(masked_ahead(&t) <= MASKED_AT_MOST, "{}", masked_ahead(&t));
        t.advance(3);
        assert!(masked_ahead(&t) <= MASKED_AT_MOST, "{}", masked_ahead(&t));
        t.advance(MASK_WINDOW / 2);
        assert!(masked_ahead(&t) <= MASKED_AT_MOST, "{}", masked_ahead(&t));
        assert_eq!(t.chunk()[0], 0x5a ^ [1, 2, 3, 4][(MASK_WINDOW / 2) % 4]);
        t.advance(MASK_WINDOW / 2 + 3);
        assert!(masked_ahead(&t) <= MASKED_AT_MOST, "{}", masked_ahead(&t));
        assert_eq!(
            t.chunk()[0],
            0x5a ^ 1,
            "the next fragment's mask starts over"
        );
    }

    /// A message in short fragments is masked ahead a window's worth at a time, so one
    /// vectored write carries many of its frames, not one frame per write.
    #[test]
    fn short_masked_fragments_leave_many_to_a_write() {
        let mut t = Transmit::default();
        let payload = Bytes::from(vec![0x5a; 1 << 20]);
        for fragment in 0..256 {
            t.put_slice(b"hdr");
            t.put_masked(
                payload.slice(fragment * 4096..(fragment + 1) * 4096),
                [1, 2, 3, 4],
            );
        }
        let mut slots = [IoSlice::new(&[]); 64];
        let n = t.chunks_vectored(&mut slots);
        let offered: usize = slots[..n].iter().map(|s| s.len()).sum();
        // A window's worth of frames (16 of 4 KiB and their headers), and the next header.
        assert_eq!(n, 33);
        assert_eq!(offered, 16 * (3 + 4096) + 3);
        assert!(masked_ahead(&t) <= MASKED_AT_MOST, "{}", masked_ahead(&t));
    }

    #[test]
    fn order_is_kept_across_small_and_shared_chunks() {
        let mut t = Transmit::default();
        t.put_slice(b"ab");
        t.put_bytes(Bytes::from(vec![b'x'; 2000]));
        t.put_slice(b"cd");
        assert_eq!(t.len(), 2004);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(t.chunks_vectored(&mut slices), 3);
        t.advance(1);
        assert_eq!(t.chunk(), b"b");
        t.advance(2002);
        assert_eq!(t.take_all(), Bytes::from_static(b"d"));
        assert!(t.is_empty());
    }
}
