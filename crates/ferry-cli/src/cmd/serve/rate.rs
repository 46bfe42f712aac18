//! Rate limits: a token bucket per connection for publishes (`--publish-rate`), and one per
//! client address for WebSocket handshakes (`--handshake-rate`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate of `per_second` with room for `burst` at once; `per_second` 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// `N/s` (also `N/m`, `N/h`, or a bare `N` per second); 0 is no limit. The burst is a
    /// second's worth, at least 1.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (number, per) = match text.split_once('/') {
            Some((n, "s")) => (n, 1.0),
            Some((n, "m")) => (n, 60.0),
            Some((n, "h")) => (n, 3600.0),
            None => (text, 1.0),
            Some(_) => return Err(format!("{text:?}: use N/s, N/m or N/h, e.g. 20/s")),
        };
        let n: f64 = number
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("{text:?}: use N/s, N/m or N/h, e.g. 20/s (0: no limit)"))?;
        let per_second = n / per;
        Ok(Rate {
            per_second,
            burst: per_second.max(1.0),
        })
    }

    pub fn is_limited(&self) -> bool {
        self.per_second > 0.0
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(rate: Rate) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: Instant::now(),
        }
    }

    /// Takes one token; when none is there, how long until one is.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if !rate.is_limited() {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// Buckets per client address. Bounded: an address whose bucket has refilled is forgotten when
/// the table grows past `MAX_ADDRESSES`, since a full bucket is what a new one would be.
pub struct PerAddress {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

const MAX_ADDRESSES: usize = 65_536;

impl PerAddress {
    pub fn new(rate: Rate) -> PerAddress {
        PerAddress {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`; when none is left, how long until one is.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        if !self.rate.is_limited() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            let rate = self.rate;
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(self.rate))
            .take(self.rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(Rate::parse("20/s").unwrap().per_second, 20.0);
        assert_eq!(Rate::parse("120/m").unwrap().per_second, 2.0);
        assert!(!Rate::parse("0").unwrap().is_limited());
        assert!(Rate::parse("x/s").is_err());
        assert!(Rate::parse("5/d").is_err());
        assert!(Rate::parse("-1/s").is_err());
    }

    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let rate = Rate::parse("10/s").unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(rate);
        for _ in 0..10 {
            bucket.take(rate, start).unwrap();
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        bucket
            .take(rate, start + Duration::from_millis(100))
            .unwrap();
        assert!(
            bucket
                .take(rate, start + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn addresses_have_buckets_of_their_own() {
        let limits = PerAddress::new(Rate::parse("1/s").unwrap());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        limits.take(a).unwrap();
        assert!(limits.take(a).is_err());
        limits.take(b).unwrap();
        let unlimited = PerAddress::new(Rate::parse("0").unwrap());
        for _ in 0..100 {
            unlimited.take(a).unwrap();
        }
    }
}
