//! The client's address behind a reverse proxy: `Forwarded` (RFC 7239) or `X-Forwarded-For`,
//! believed only when the connection comes from a `--trusted-proxy` address, since anyone else
//! can write those headers.

use std::net::IpAddr;

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!("{text:?} is not an address range; use 10.0.0.0/8, 192.0.2.1 or 2001:db8::/32")
        };
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { network, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.bits)
    }
}

/// One node of a forwarding chain as written in a header: `192.0.2.1`, `192.0.2.1:4711`,
/// `[2001:db8::1]:4711`, `"[2001:db8::1]"`; `unknown` and obfuscated names are not addresses.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    // IPv4 with a port.
    node.rsplit_once(':')?.0.parse().ok()
}

/// The client's address for a request that `peer` sent: when `peer` is a trusted proxy, the
/// nearest address in the forwarding chain that is not itself a trusted proxy (reading from the
/// right, as each proxy appends); otherwise `peer`. `Forwarded` wins over `X-Forwarded-For`.
pub fn client_address(
    peer: IpAddr,
    trusted: &[Cidr],
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = match (forwarded, x_forwarded_for) {
        (Some(forwarded), _) => forwarded
            .split(',')
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| node_address(value))?
                })
            })
            .collect(),
        (None, Some(list)) => list.split(',').filter_map(node_address).collect(),
        (None, None) => return peer,
    };
    chain
        .iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or_else(|| chain.first().copied())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.200.1.1")) && !ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_believed_only_from_a_trusted_proxy() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy = ip("10.0.0.5");
        let stranger = ip("203.0.113.9");
        // From a stranger the headers are ignored: anyone can write them.
        assert_eq!(
            client_address(stranger, &trusted, None, Some("198.51.100.1")),
            stranger
        );
        assert_eq!(
            client_address(proxy, &trusted, None, Some("198.51.100.1")),
            ip("198.51.100.1")
        );
        // A client's own forged entry sits left of what the trusted proxies appended.
        assert_eq!(
            client_address(
                proxy,
                &trusted,
                None,
                Some("1.1.1.1, 198.51.100.1, 10.0.0.7")
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(
                proxy,
                &trusted,
                Some(r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#),
                Some("198.51.100.1")
            ),
            ip("2001:db8::1"),
            "Forwarded wins, read from the right"
        );
        assert_eq!(client_address(proxy, &trusted, None, None), proxy);
        assert_eq!(
            client_address(proxy, &trusted, None, Some("unknown, 192.0.2.1:4711")),
            ip("192.0.2.1")
        );
    }
}
