//! Connections per client IP address, so one client cannot take every connection slot.
//!
//! Counts TCP connections (which a WebSocket stays on), from accept until the connection ends.
//! Behind a reverse proxy every client has the proxy's address: turn the limit off there (0) and
//! let the proxy limit per client.
//!
//! IPv6 clients are counted by network, not by address: one host usually holds a whole /64 and
//! can pick a fresh address per connection, so counting addresses would not limit it at all.
//! `--ipv6-prefix` (64 by default) sets the width; IPv4 (and IPv4-mapped IPv6) counts by address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The address a client is counted under: its IPv4 address, or its IPv6 address cut to the
/// first `prefix` bits.
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = match prefix {
                    0 => 0,
                    p if p >= 128 => u128::MAX,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// The count of open connections per client (address, or IPv6 network).
#[derive(Debug)]
pub struct PerIp {
    limit: usize,
    ipv6_prefix: u8,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted (or refused) connection; dropping it gives its slot back.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerIp>,
    ip: IpAddr,
    /// What the client is counted under ([`client_key`]).
    key: IpAddr,
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

    /// What the client is counted under: its address, or its IPv6 network.
    pub fn key(&self) -> IpAddr {
        self.key
    }
}

impl PerIp {
    /// `limit` 0 means no limit; IPv6 clients are counted by their first `ipv6_prefix` bits.
    pub fn new(limit: usize, ipv6_prefix: u8) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            ipv6_prefix,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A connection not counted here: a trusted proxy's, whose clients are counted per request
    /// once their address is known.
    pub fn exempt(self: &Arc<Self>, ip: IpAddr) -> Slot {
        Slot {
            owner: self.clone(),
            ip,
            key: client_key(ip, self.ipv6_prefix),
            held: false,
            admitted: true,
        }
    }

    /// Counts a new connection from `ip`, unless that address is at the limit already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Slot {
        let key = client_key(ip, self.ipv6_prefix);
        let mut slot = Slot {
            owner: self.clone(),
            ip,
            key,
            held: false,
            admitted: true,
        };
        if self.limit == 0 {
            return slot;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_default();
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
        open.get(&client_key(ip, self.ipv6_prefix))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_address() {
        let limiter = PerIp::new(2, 64);
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

    /// Regression: IPv6 clients were keyed by their full address, so one host with a /64 could
    /// open a connection per address and escape the limit.
    #[test]
    fn ipv6_clients_count_by_network() {
        let limiter = PerIp::new(2, 64);
        let hosts: Vec<IpAddr> = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let slots: Vec<Slot> = hosts.iter().map(|ip| limiter.acquire(*ip)).collect();
        assert!(slots[0].admitted() && slots[1].admitted());
        assert!(
            !slots[2].admitted(),
            "the third address of one /64 is over the limit"
        );
        assert!(
            limiter
                .acquire("2001:db8:1:3::1".parse().unwrap())
                .admitted()
        );
        assert_eq!(
            client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap(), 48),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("::ffff:10.1.2.3".parse().unwrap(), 64),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        let one = "2001:db8::1".parse().unwrap();
        assert_eq!(client_key(one, 128), one);
    }

    #[test]
    fn zero_is_no_limit() {
        let limiter = PerIp::new(0, 64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| limiter.acquire(a)).collect();
        assert!(slots.iter().all(Slot::admitted));
        assert_eq!(limiter.count(a), 0);
    }
}
