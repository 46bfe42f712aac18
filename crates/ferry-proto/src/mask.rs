//! Masking (RFC 6455 §5.3): XOR of the payload with a 4-byte key, repeating.
//!
//! A client masks every frame it sends with a fresh key; the server unmasks in place. The same
//! function does both. [`apply_mask`] works eight bytes at a time (vectorised by the compiler); [`apply_mask_scalar`] is
//! the byte-at-a-time reference that tests compare it with at every length and alignment.

/// XORs `buf` with `key`, where `buf[0]` sits at byte `offset` of the masked payload.
///
/// The offset lets a payload be unmasked in pieces as it arrives; pass 0 for a whole payload.
///
/// ```
/// use ferry_proto::mask::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut data = *b"hello";
/// apply_mask(&mut data, key, 0);
/// apply_mask(&mut data, key, 0);
/// assert_eq!(&data, b"hello");
/// ```
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let pattern = [
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ];
    let wide = u64::from_ne_bytes(pattern);
    // Eight bytes at a time from the start, aligned or not: unaligned loads cost nothing on the
    // targets that matter, and the compiler turns this loop into vector instructions (see the
    // `mask` group of benches/kernels.rs). The tail, under 8 bytes, starts at a multiple of 8,
    // so the same pattern lines up with it.
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(pattern) {
        *byte ^= k;
    }
}

/// The byte-at-a-time reference implementation of [`apply_mask`].
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (byte, k) in buf.iter_mut().zip(key.iter().cycle().skip(offset & 3)) {
        *byte ^= k;
    }
}

#[inline]
fn rotate(key: [u8; 4], by: usize) -> [u8; 4] {
    // As one word: the slice rotation compiles to a loop the optimiser may leave out of line
    // (17 instructions per call where it did).
    let shift = (by & 3) as u32 * 8;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_mask_matches_scalar_at_every_length_alignment_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for align in 0..8 {
            for len in 0..(300 - align) {
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[align..align + len], key, offset);
                    apply_mask_scalar(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "align {align} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [9, 8, 7, 6];
        let mut whole: Vec<u8> = (0..100).collect();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, b) = pieces.split_at_mut(37);
        apply_mask(a, key, 0);
        apply_mask(b, key, 37);
        assert_eq!(whole, pieces);
    }
}
