//! Which Redis shard holds a topic: jump consistent hashing (Lamping and Veach, 2014) of a
//! stable hash of the name. Every node computes the same shard for a topic, and adding an
//! N+1th shard moves only about 1/(N+1) of the topics.

/// FNV-1a, 64 bits: stable across processes, versions and machines (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard, in `0..shards`, of `topic`. `shards` must be at least 1.
pub fn shard_of(topic: &str, shards: usize) -> usize {
    let mut key = fnv1a(topic.as_bytes());
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_spread_and_minimal_moves() {
        assert_eq!(shard_of("anything", 1), 0);
        let names: Vec<String> = (0..10_000).map(|i| format!("topic-{i}")).collect();
        let mut counts = [0usize; 4];
        for name in &names {
            counts[shard_of(name, 4)] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "uneven: {counts:?}");
        }
        // From 4 to 5 shards a topic stays or moves to the new shard, nowhere else.
        let moved = names
            .iter()
            .filter(|n| {
                let (before, after) = (shard_of(n, 4), shard_of(n, 5));
                assert!(after == before || after == 4);
                after != before
            })
            .count();
        assert!((1_500..2_500).contains(&moved), "{moved}");
        // Fixed values: a change here would move topics between shards on upgrade.
        assert_eq!(fnv1a(b"news"), 0xe549_5bba_a03a_6526);
    }
}
