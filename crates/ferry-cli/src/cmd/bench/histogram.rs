//! Latency histogram: log-linear buckets, 64 per power of two (under 1.6% error), in ns.

use std::time::Duration;

pub(super) const SUB_BITS: u32 = 6;
pub(super) const SUB: u64 = 1 << SUB_BITS;
pub(super) const BUCKETS: usize = (2 * SUB + (63 - SUB_BITS as u64) * SUB) as usize;

#[derive(Clone)]
pub(super) struct Histogram {
    pub(super) counts: Vec<u64>,
    pub(super) total: u64,
    pub(super) sum_ns: u128,
    pub(super) max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub(super) fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    pub(super) fn index(ns: u64) -> usize {
        if ns < 2 * SUB {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (ns >> shift) - SUB;
        (2 * SUB + u64::from(shift - 1) * SUB + sub) as usize
    }

    /// The middle of bucket `index`.
    pub(super) fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let shift = (index - 2 * SUB) / SUB + 1;
        let sub = (index - 2 * SUB) % SUB;
        ((SUB + sub) << shift) + (1 << shift) / 2
    }

    pub(super) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(Self::index(ns)) {
            *count += 1;
        }
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub(super) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The latency at quantile `q` (0..=1), in ns.
    pub(super) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Some(self.max_ns);
        }
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value(i).min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    pub(super) fn mean(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.sum_ns / u128::from(self.total)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_tight_and_monotonic() {
        let mut last = 0;
        for ns in (0..200_000u64).chain([1 << 30, (1 << 40) + 12345, u64::MAX / 2]) {
            let i = Histogram::index(ns);
            assert!(i >= last || ns < 200_000, "index not monotonic at {ns}");
            if ns < 200_000 {
                last = i;
            }
            assert!(i < BUCKETS);
            let v = Histogram::value(i);
            let err = (v as f64 - ns as f64).abs() / (ns.max(1) as f64);
            assert!(err <= 1.0 / 64.0 + 1e-9, "{ns} -> bucket {i} value {v}");
        }
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0).unwrap(), 100_000);
    }
}
