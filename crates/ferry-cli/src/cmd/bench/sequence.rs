//! Sequence numbers at the start of every fan-out message, and checking them in order.

/// Bytes of the sequence number at the start of every fan-out message: 16 lowercase hex
/// digits, so text messages stay valid UTF-8.
pub(super) const SEQ_LEN: usize = 16;

/// The first [`SEQ_LEN`] bytes of message `seq`.
pub(super) fn seq_prefix(seq: u64) -> [u8; SEQ_LEN] {
    let mut out = [0u8; SEQ_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        let nibble = (seq >> (4 * (SEQ_LEN - 1 - i))) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// Where a receiver is in the publisher's sequence.
pub(super) struct SeqState {
    /// The sequence number of the next numbered message.
    pub(super) next: u64,
    /// `seq_prefix(next)`: what the next message must start with.
    pub(super) prefix: [u8; SEQ_LEN],
    /// Empty (sync) messages seen before the first numbered one.
    pub(super) syncs: u64,
}

impl SeqState {
    pub(super) fn new() -> SeqState {
        SeqState {
            next: 0,
            prefix: seq_prefix(0),
            syncs: 0,
        }
    }

    pub(super) fn advance(&mut self) {
        self.next += 1;
        self.prefix = seq_prefix(self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_prefixes_are_fixed_width_hex() {
        assert_eq!(&seq_prefix(0), b"0000000000000000");
        assert_eq!(&seq_prefix(0xabc), b"0000000000000abc");
        assert_eq!(&seq_prefix(u64::MAX), b"ffffffffffffffff");
        let mut s = SeqState::new();
        s.advance();
        s.advance();
        assert_eq!((s.next, &s.prefix), (2, b"0000000000000002"));
    }
}
