//! The base64 of the handshake's two fixed-size values (RFC 4648 §4, the standard alphabet,
//! padded): checking a `Sec-WebSocket-Key` (16 bytes, §4.2.1 item 5) and writing a
//! `Sec-WebSocket-Accept` (a 20-byte SHA-1, §4.2.2).
//!
//! Both are written here rather than through the `base64` crate, which the client still uses
//! to make its key: for these two fixed sizes the crate's general decoder and encoder (and the
//! zeroed buffer it encodes into) took about 880 instructions per handshake, these about 310.
//! Measured per function: `KEEP_PROFILES=DIR SERVERS=ferry WORKLOADS=handshake
//! bench/instructions.sh` on the binaries before and after, then `callgrind_annotate
//! --inclusive=no` of the 1,000- and 200-connection profiles, their difference over 800. The
//! unit tests hold both equal to the crate.

/// The standard base64 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Each byte's value as a base64 character, or `INVALID`: one load per character.
// Evaluated while compiling: an index out of range would fail the build, never a handshake.
#[allow(clippy::indexing_slicing)]
const VALUES: [u8; 256] = {
    let mut values = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        values[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    values
};

/// Not a base64 character.
const INVALID: u8 = 0xff;

/// The value of one base64 character, if it is one.
fn value(c: u8) -> Option<u8> {
    // In range for every `u8`: the check compiles away.
    VALUES
        .get(usize::from(c))
        .copied()
        .filter(|&v| v != INVALID)
}

/// Whether `key` is the canonical padded base64 of exactly 16 bytes: 22 characters of the
/// alphabet, then `==`. 16 bytes fill 21 characters and 2 bits, so the 22nd character's low
/// four bits must be zero, as a strict decoder requires.
pub(crate) fn is_valid_key(key: &[u8]) -> bool {
    let Some((data, padding)) = key.split_at_checked(22) else {
        return false;
    };
    padding == b"=="
        && data.iter().all(|&c| value(c).is_some())
        && data
            .last()
            .and_then(|&c| value(c))
            .is_some_and(|last| last & 0x0f == 0)
}

/// `digest` in padded base64: 28 characters.
pub(crate) fn encode_digest(digest: &[u8; 20]) -> String {
    let char_of = |group: u32, shift: u32| {
        let index = ((group >> shift) & 63) as usize;
        ALPHABET.get(index).copied().unwrap_or(b'=')
    };
    let mut out = [b'='; 28];
    for (chunk, quad) in digest.chunks(3).zip(out.chunks_mut(4)) {
        let group = chunk
            .iter()
            .zip([16, 8, 0])
            .fold(0u32, |group, (&byte, shift)| {
                group | u32::from(byte) << shift
            });
        // A short last chunk keeps its padding: 20 bytes end in two characters and one `=`.
        for (at, (slot, shift)) in quad.iter_mut().zip([18, 12, 6, 0]).enumerate() {
            if at <= chunk.len() {
                *slot = char_of(group, shift);
            }
        }
    }
    // Every byte is from the alphabet or `=`: ASCII.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// What the `base64` crate's strict decoder says of `key`.
    fn crate_says(key: &[u8]) -> bool {
        STANDARD
            .decode_slice(key, &mut [0u8; 18])
            .is_ok_and(|len| len == 16)
    }

    /// A small deterministic generator: the tests need variety, not quality.
    fn next(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    #[test]
    fn keys_are_judged_as_the_crate_judges_them() {
        let mut state = 7;
        let interesting = b"AQgwBz+/=-_ \t\0\xffa9";
        for round in 0..20_000 {
            let bytes: Vec<u8> = (0..16).map(|_| next(&mut state) as u8).collect();
            let mut key = STANDARD.encode(&bytes).into_bytes();
            assert!(is_valid_key(&key), "{key:?}");
            // Spoil it: change a character, cut it, or lengthen it.
            match round % 4 {
                0 => {
                    let at = next(&mut state) as usize % key.len();
                    key[at] = interesting[next(&mut state) as usize % interesting.len()];
                }
                1 => key.truncate(next(&mut state) as usize % key.len()),
                2 => key.push(interesting[next(&mut state) as usize % interesting.len()]),
                _ => key[21] = ALPHABET[next(&mut state) as usize % 64],
            }
            assert_eq!(is_valid_key(&key), crate_says(&key), "{key:?}");
        }
    }

    #[test]
    fn every_last_character_is_judged_as_the_crate_judges_it() {
        for c in 0..=255u8 {
            let mut key = *b"dGhlIHNhbXBsZSBub25jZQ==";
            key[21] = c;
            assert_eq!(is_valid_key(&key), crate_says(&key), "{c}");
            let mut unpadded = key;
            unpadded[23] = c;
            assert_eq!(is_valid_key(&unpadded), crate_says(&unpadded), "{c}");
        }
    }

    #[test]
    fn digests_encode_as_the_crate_encodes_them() {
        let mut state = 11;
        for _ in 0..10_000 {
            let digest: [u8; 20] = std::array::from_fn(|_| next(&mut state) as u8);
            assert_eq!(encode_digest(&digest), STANDARD.encode(digest));
        }
        assert_eq!(encode_digest(&[0; 20]), STANDARD.encode([0u8; 20]));
        assert_eq!(encode_digest(&[0xff; 20]), STANDARD.encode([0xffu8; 20]));
    }
}
