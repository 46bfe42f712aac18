//! A per-thread pool of I/O buffers, lent to connections while they have bytes in flight.
//!
//! An idle connection holds no read or write buffer (see `docs/memory.md`); without a pool it
//! would allocate and free one of each for every message it echoes, and the allocator was the
//! largest single cost of a small echo (about a quarter of its instructions under callgrind). A
//! buffer goes back to the pool of whatever thread the connection's task runs on when a read
//! would block; the pool keeps at most `MAX_POOLED` buffers per thread and drops the rest, so
//! its memory is bounded per thread rather than per connection.

use std::cell::RefCell;

use bytes::BytesMut;

/// The capacity of a fresh buffer: a 64 KiB message and its header arrive in it whole, with no
/// growth and no copy (with 32 KiB, each 64 KiB echo grew the buffer and copied what had
/// arrived: 56,846 -> 22,650 instructions per 64 KiB echo, 14,570 -> 8,936 per 16 KiB, with the
/// reclaim in `Transport::prepare_read_buf`; callgrind, `bench/instructions.sh`). Only busy
/// connections hold one; pages are touched only as far as reads fill.
pub(crate) const BUF_SIZE: usize = 96 * 1024;
/// Buffers kept per thread (at most 3 MiB at `KEEP_MAX`, of which only the pages reads touched
/// are resident). A thread lends one per connection with bytes in flight, and gets it back as
/// soon as that connection's reads would block.
const MAX_POOLED: usize = 16;
/// Buffers outside this range of capacity are not kept: a tiny remnant is not worth a slot, and
/// a large one (grown for a large frame) would hold memory the pool's bound does not count.
const KEEP_MIN: usize = 1024;
/// See `KEEP_MIN`; the driver also frees, rather than pools, a buffer it grew past this.
pub(crate) const KEEP_MAX: usize = 2 * BUF_SIZE;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer: a pooled one if this thread has one, else a new one of `BUF_SIZE`.
pub(crate) fn take() -> BytesMut {
    POOL.try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

/// Returns a buffer to this thread's pool, or frees it if the pool is full or the buffer is not
/// worth keeping.
pub(crate) fn put(mut buf: BytesMut) {
    buf.clear();
    if !(KEEP_MIN..=KEEP_MAX).contains(&buf.capacity()) {
        return;
    }
    // During thread teardown the pool may be gone; the buffer is then simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < MAX_POOLED {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_lent_again_and_the_pool_is_bounded() {
        let buf = take();
        let ptr = buf.as_ptr();
        put(buf);
        let again = take();
        assert_eq!(again.as_ptr(), ptr, "the pooled buffer is reused");
        assert!(again.is_empty());
        for _ in 0..MAX_POOLED + 10 {
            put(BytesMut::with_capacity(BUF_SIZE));
        }
        assert_eq!(POOL.with(|p| p.borrow().len()), MAX_POOLED);
        put(BytesMut::with_capacity(KEEP_MAX + 1));
        put(BytesMut::with_capacity(16));
        assert_eq!(POOL.with(|p| p.borrow().len()), MAX_POOLED);
    }
}
