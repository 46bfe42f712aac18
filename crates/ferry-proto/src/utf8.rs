//! Incremental UTF-8 validation that fails at the first invalid byte.
//!
//! RFC 6455 §8.1: when an endpoint finds that a text message is not valid UTF-8 it MUST fail the
//! connection. Finding out early matters (Autobahn 6.4.* "fail fast"): a message can arrive in
//! many frames and a frame in many reads, and an invalid sequence must be reported as soon as
//! its bytes arrive, not when the message is complete. A multi-byte character split across
//! pieces is carried over (at most 3 bytes), and a piece that ends in a prefix which can never
//! become valid fails at once.

/// The input is not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates UTF-8 fed in arbitrary pieces.
///
/// ```
/// use ferry_proto::utf8::Validator;
/// let euro = "€".as_bytes(); // e2 82 ac
/// let mut v = Validator::default();
/// v.feed(&euro[..1]).unwrap();
/// v.feed(&euro[1..]).unwrap();
/// v.finish().unwrap();
///
/// let mut v = Validator::default();
/// assert!(v.feed(b"ok \xed\xa0").is_err()); // a surrogate: no continuation can fix it
/// ```
#[derive(Clone, Debug, Default)]
pub struct Validator {
    /// Bytes of a character not yet complete, and how many of them there are.
    carry: [u8; 4],
    carry_len: usize,
}

impl Validator {
    /// Validates the next piece. Fails as soon as the bytes so far cannot start valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.carry_len > 0 {
            // Complete the carried character with the fewest bytes of input that could do it.
            let take = (4 - self.carry_len).min(input.len());
            let mut joined = self.carry;
            let (head, _) = input.split_at(take);
            joined
                .get_mut(self.carry_len..self.carry_len + take)
                .ok_or(Utf8Error)?
                .copy_from_slice(head);
            let joined_len = self.carry_len + take;
            let joined = joined.get(..joined_len).ok_or(Utf8Error)?;
            match std::str::from_utf8(joined) {
                Ok(_) => {
                    self.carry_len = 0;
                    input = input.get(take..).unwrap_or_default();
                }
                Err(err) if err.valid_up_to() > 0 => {
                    // The carried character completed; continue after the bytes it used.
                    let used = err.valid_up_to() - self.carry_len;
                    self.carry_len = 0;
                    input = input.get(used..).unwrap_or_default();
                }
                Err(err) if err.error_len().is_none() => {
                    // Still a valid prefix, and the input ran out before it could complete.
                    self.carry = [0; 4];
                    self.carry
                        .get_mut(..joined_len)
                        .ok_or(Utf8Error)?
                        .copy_from_slice(joined);
                    self.carry_len = joined_len;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(err) if err.error_len().is_none() => {
                let rest = input.get(err.valid_up_to()..).unwrap_or_default();
                self.carry = [0; 4];
                self.carry
                    .get_mut(..rest.len())
                    .ok_or(Utf8Error)?
                    .copy_from_slice(rest);
                self.carry_len = rest.len();
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the input: fails if it stopped in the middle of a character.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.carry_len == 0;
        *self = Validator::default();
        if complete { Ok(()) } else { Err(Utf8Error) }
    }

    /// Forgets any partial character, ready for a new message.
    pub fn reset(&mut self) {
        *self = Validator::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], cuts: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Validator::default();
        let mut start = 0;
        for &cut in cuts {
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn every_split_of_valid_text_is_valid() {
        let text = "aé€😀z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(feed_split(text, &[i, j]), Ok(()), "cuts {i} {j}");
            }
        }
    }

    #[test]
    fn every_split_of_invalid_text_is_invalid() {
        for bad in [
            &b"a\xffb"[..],
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"ab\xe2\x82",
        ] {
            for i in 0..=bad.len() {
                for j in i..=bad.len() {
                    assert_eq!(
                        feed_split(bad, &[i, j]),
                        Err(Utf8Error),
                        "{bad:?} cuts {i} {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        // 0xF4 0x90 is above U+10FFFF: no continuation can fix it, so fail before the rest.
        let mut v = Validator::default();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));
        // Autobahn 6.4.1: a valid piece, then one with U+110000 encoded.
        let mut v = Validator::default();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(b"\xf4\x90\x80\x80"), Err(Utf8Error));
    }

    #[test]
    fn incomplete_at_end_fails_on_finish() {
        let mut v = Validator::default();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(Utf8Error));
    }
}
