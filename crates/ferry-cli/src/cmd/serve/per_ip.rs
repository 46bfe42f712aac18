//! Connections per client IP address, so one client cannot take every connection slot.
//!
//! Counts TCP connections (which a WebSocket stays on), from accept until the connection ends.
//! Behind a reverse proxy every client has the proxy's address: turn the limit off there (0) and
//! let the proxy limit per client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The count of open connections per address.
#[derive(Debug)]
pub struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted (or refused) connection; dropping it gives its slot back.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerIp>,
    ip: IpAddr,
    /// Whether this connection holds a count (with no limit, none is kept).
    held: bool,
    admitted: bool,
}

impl Slot {
    /// Whether the connection fits the limit; one that does not is answered 503 and closed.
    pub fn admitted(&self) -> bool {
        self.admitted
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl PerIp {
    /// `limit` 0 means no limit.
    pub fn new(limit: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`, unless that address is at the limit already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Slot {
        let mut slot = Slot {
            owner: self.clone(),
            ip,
            held: false,
            admitted: true,
        };
        if self.limit == 0 {
            return slot;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count < self.limit {
            *count += 1;
            slot.held = true;
        } else {
            slot.admitted = false;
        }
        drop(open);
        slot
    }

    /// Open connections from `ip`.
    #[cfg(test)]
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_address() {
        let limiter = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.acquire(a);
        let second = limiter.acquire(a);
        let third = limiter.acquire(a);
        assert!(first.admitted() && second.admitted());
        assert!(!third.admitted());
        assert!(limiter.acquire(b).admitted());
        drop(third);
        assert_eq!(limiter.count(a), 2);
        drop(first);
        assert!(limiter.acquire(a).admitted());
        drop(second);
        assert_eq!(limiter.count(a), 0);
        assert_eq!(limiter.count(b), 0);
    }

    #[test]
    fn zero_is_no_limit() {
        let limiter = PerIp::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| limiter.acquire(a)).collect();
        assert!(slots.iter().all(Slot::admitted));
        assert_eq!(limiter.count(a), 0);
    }
}
