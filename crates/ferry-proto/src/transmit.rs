//! The bytes a connection owes the peer, in order, as a queue of shared chunks.
//!
//! Small frames (headers, control frames, short payloads) are written into one growing buffer
//! so a batch of them leaves in a single write; a large payload is queued as its own `Bytes`,
//! shared with the application's message instead of copied, and goes out with its header in one
//! vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Payloads at least this long are queued by reference rather than copied (server side; a client
/// must copy anyway to mask).
const SHARE_THRESHOLD: usize = 1024;

/// Bytes waiting to be written to the transport.
///
/// Implements [`Buf`], so the I/O layer can write it with `write_buf`/`chunks_vectored` and
/// [`Buf::advance`] past what was written.
#[derive(Debug, Default)]
pub struct Transmit {
    /// Chunks sealed in order; `tail` comes after them.
    chunks: VecDeque<Bytes>,
    /// Small writes accumulate here until a shared chunk must follow them.
    tail: BytesMut,
    /// Total bytes in `chunks`.
    sealed_len: usize,
}

impl Transmit {
    /// Total bytes waiting.
    pub fn len(&self) -> usize {
        self.sealed_len + self.tail.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether everything waiting is in one chunk, so [`Buf::chunk`] holds it all and a plain
    /// write serves where a vectored one would only add the cost of gathering.
    pub fn is_contiguous(&self) -> bool {
        match self.chunks.len() {
            0 => true,
            1 => self.tail.is_empty(),
            _ => false,
        }
    }

    /// Takes everything waiting as one contiguous buffer (copying if there are several chunks).
    /// Handy in tests and simple drivers; the tokio layer writes chunks vectored instead.
    pub fn take_all(&mut self) -> Bytes {
        if self.chunks.is_empty() {
            return self.tail.split().freeze();
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

    /// Appends small bytes by copy.
    pub(crate) fn put_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
    }

    /// The buffer small writes go to, for in-place encoding (client masking).
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Appends a payload, by reference when it is large enough for that to pay.
    pub(crate) fn put_bytes(&mut self, data: Bytes) {
        if data.len() < SHARE_THRESHOLD {
            self.tail.extend_from_slice(&data);
            return;
        }
        self.seal();
        self.sealed_len += data.len();
        self.chunks.push_back(data);
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.sealed_len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let sources = self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]));
        for (slot, chunk) in dst.iter_mut().zip(sources.filter(|c| !c.is_empty())) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) => {
                    let step = cnt.min(front.len());
                    front.advance(step);
                    self.sealed_len -= step;
                    cnt -= step;
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                }
                None => {
                    let step = cnt.min(self.tail.len());
                    self.tail.advance(step);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
