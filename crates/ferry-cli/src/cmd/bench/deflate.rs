//! permessage-deflate for the load generator: a compressible payload, compressed once per run,
//! and a streaming inflater that hands the verifier each piece as it comes out.
//!
//! The generator compresses nothing per message: every message of a run has the same payload
//! (fan-out patches a stored block in front, see [`STORED_PREFIX_HEADER`]), so it is deflated
//! once at start-up. What the server sends back is inflated as it arrives, in fixed steps, and
//! compared piece by piece without assembling the message.

use anyhow::{Result, bail};
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

/// The bytes a sync flush ends with, stripped from each message and put back before the last
/// piece is inflated (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The window the generator compresses with, in bits. 12 (4 KiB) is what `ferry echo` and
/// `ferry serve` ask of a client by default, and what most servers allow.
pub(super) const OWN_WINDOW_BITS: u8 = 12;

/// zlib's default level: what a client that does not choose one uses.
pub(super) const LEVEL: i32 = 6;

/// A deterministic JSON-like text of exactly `size` bytes: an array of order records whose
/// numbers come from a fixed pseudo-random sequence. It compresses about as well as real API
/// traffic (repeated keys, varying values), unlike a byte pattern, which deflate either
/// flattens to nothing or cannot touch. The last record is cut at `size`.
pub(super) fn json_payload(size: usize) -> Vec<u8> {
    const SIDES: [&str; 2] = ["buy", "sell"];
    const VENUES: [&str; 4] = ["XNAS", "XNYS", "BATS", "ARCX"];
    let mut out = Vec::with_capacity(size + 160);
    out.push(b'[');
    // xorshift64: deterministic across runs and machines, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut id = 100_000u64;
    while out.len() < size {
        let r = next();
        id += 1 + r % 7;
        let record = format!(
            "{{\"id\":{id},\"symbol\":\"FRY{:02}\",\"price\":{}.{:02},\"qty\":{},\"side\":\"{}\",\
             \"venue\":\"{}\",\"ts\":{}}},",
            r % 40,
            100 + (r >> 8) % 900,
            (r >> 20) % 100,
            ((r >> 28) % 50 + 1) * 100,
            SIDES[((r >> 40) % 2) as usize],
            VENUES[((r >> 44) % 4) as usize],
            1_700_000_000_000u64 + id * 13,
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(size);
    out
}

/// `payload` as one permessage-deflate message (a sync-flushed raw deflate stream without its
/// 4-byte tail), compressed with [`LEVEL`] and a window of [`OWN_WINDOW_BITS`]; `None` when
/// that is not smaller, in which case the message goes uncompressed as RFC 7692 allows.
///
/// The stream refers to nothing before it, so it is a valid message whether or not the two
/// ends take context over: the server's inflater may keep its window, it is never referred to.
pub(super) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    let mut deflate = Deflate::new_with_config(DeflateConfig {
        level: LEVEL,
        window_bits: -i32::from(OWN_WINDOW_BITS),
        ..DeflateConfig::default()
    });
    // Room for the worst case, so one call does the whole message.
    let mut out = vec![0u8; zlib_rs::compress_bound(payload.len()) + 64];
    let status = deflate.compress(payload, &mut out, DeflateFlush::SyncFlush);
    let produced = deflate.total_out() as usize;
    let whole = status.is_ok()
        && deflate.total_in() as usize == payload.len()
        && out.get(..produced).is_some_and(|o| o.ends_with(&TAIL));
    if !whole || produced - TAIL.len() >= payload.len() {
        return None;
    }
    out.truncate(produced - TAIL.len());
    Some(out)
}

/// The head of a non-final stored deflate block of [`super::SEQ_LEN`] bytes: BFINAL 0,
/// BTYPE 00 and padding in the first byte, then LEN and its complement, little-endian
/// (RFC 1951 §3.2.4). Fan-out puts the sequence number in such a block in front of the
/// compressed rest of the payload, so each message is the pre-compressed one with 16 bytes
/// patched, instead of a compression per message.
pub(super) const STORED_PREFIX_HEADER: [u8; 5] = {
    let len = super::SEQ_LEN as u16;
    let [l0, l1] = len.to_le_bytes();
    let [n0, n1] = (!len).to_le_bytes();
    [0x00, l0, l1, n0, n1]
};

/// A connection's inflater for what the server compresses.
pub(super) struct Inflater {
    z: Box<Inflate>,
    /// The server resets its compressor after every message (`server_no_context_takeover`):
    /// so may we, which keeps the window from holding memory between messages.
    reset_each: bool,
}

impl Inflater {
    /// An inflater for a server whose compressor uses at most `window_bits`.
    pub(super) fn new(window_bits: u8, reset_each: bool) -> Inflater {
        Inflater {
            // zlib cannot inflate with an 8-bit window; 9 bits reach every distance an 8-bit
            // compressor produces.
            z: Box::new(Inflate::new(false, window_bits.clamp(9, 15))),
            reset_each,
        }
    }

    /// Inflates `input` (part of a compressed message's payload), handing each piece of output
    /// to `sink`. With `last`, the sync-flush tail follows the input, ending the message.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        last: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.inflate(input, sink)?;
        if last {
            self.inflate(&TAIL, sink)?;
            if self.reset_each {
                self.z.reset(false);
            }
        }
        Ok(())
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut scratch = [0u8; 8192];
        loop {
            let before = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut scratch, InflateFlush::SyncFlush);
            let consumed = (self.z.total_in() - before.0) as usize;
            let produced = (self.z.total_out() - before.1) as usize;
            input = input.get(consumed..).unwrap_or_default();
            sink(scratch.get(..produced).unwrap_or_default())?;
            match status {
                Err(e) => bail!(
                    "the server's compressed data does not inflate: {}",
                    e.as_str()
                ),
                // A final block ended the stream (allowed in a message); the next message
                // starts a new one.
                Ok(Status::StreamEnd) => {
                    self.z.reset(false);
                    if !input.is_empty() && input != TAIL {
                        bail!("the server's compressed message goes on after its final block");
                    }
                    return Ok(());
                }
                Ok(_) if input.is_empty() && produced < scratch.len() => return Ok(()),
                Ok(_) if consumed == 0 && produced == 0 => {
                    bail!("the server's compressed data does not inflate (no progress)")
                }
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(inflater: &mut Inflater, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = data.chunks(chunk.max(1)).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, piece) in chunks.iter().enumerate() {
            inflater
                .feed(piece, i == last, &mut |p| {
                    out.extend_from_slice(p);
                    Ok(())
                })
                .unwrap();
        }
        if chunks.is_empty() {
            inflater
                .feed(&[], true, &mut |p| {
                    out.extend_from_slice(p);
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn json_payload_is_exact_deterministic_and_compressible() {
        for size in [0, 1, 20, 1024, 16 * 1024] {
            let p = json_payload(size);
            assert_eq!(p.len(), size);
            assert_eq!(p, json_payload(size));
            assert!(std::str::from_utf8(&p).is_ok());
        }
        let p = json_payload(16 * 1024);
        let c = compress(&p).expect("JSON compresses");
        // Realistic, not degenerate: well under half, well over a twentieth.
        assert!(
            c.len() * 2 < p.len() && c.len() * 20 > p.len(),
            "{}",
            c.len()
        );
        assert!(
            compress(&json_payload(20)).is_none(),
            "20 bytes do not shrink"
        );
    }

    #[test]
    fn compressed_payload_inflates_back_however_split_and_twice_in_a_row() {
        let p = json_payload(5000);
        let c = compress(&p).unwrap();
        for reset_each in [false, true] {
            let mut inflater = Inflater::new(15, reset_each);
            for chunk in [1, 3, 100, 8192] {
                // Twice on one inflater: the second message follows the first in the stream.
                assert_eq!(inflate_all(&mut inflater, &c, chunk), p, "chunk {chunk}");
                assert_eq!(inflate_all(&mut inflater, &c, chunk), p, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn a_stored_prefix_block_in_front_of_the_compressed_rest_inflates_to_both() {
        let rest = json_payload(3000);
        let prefix = *b"00000000000000ff";
        let mut message = STORED_PREFIX_HEADER.to_vec();
        message.extend_from_slice(&prefix);
        message.extend(compress(&rest).unwrap());
        let mut expected = prefix.to_vec();
        expected.extend_from_slice(&rest);
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflate_all(&mut inflater, &message, 7), expected);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut inflater = Inflater::new(15, true);
        let err = inflater
            .feed(&[0xff; 64], true, &mut |_| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("does not inflate"), "{err}");
    }
}
