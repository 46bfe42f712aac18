//! WebSocket URLs: where to connect, and what to ask for.

use std::path::PathBuf;

use crate::error::Error;

/// A parsed WebSocket URL.
///
/// Forms understood:
/// - `ws://host[:port][/path][?query]`, port 80 by default; IPv6 hosts in brackets;
/// - `wss://host[:port][/path][?query]`, the same over TLS, port 443 by default;
/// - `ws+unix:///path/to/socket[:/request/path]`, as Node's `ws` spells it, for a Unix socket.
///
/// ```
/// use ferry::Address;
/// let a = Address::parse("ws://[::1]:9001/chat?x=1").unwrap();
/// assert_eq!(a.host_header, "[::1]:9001");
/// assert_eq!(a.path, "/chat?x=1");
/// let u = Address::parse("ws+unix:///tmp/ferry.sock:/echo").unwrap();
/// assert_eq!(u.path, "/echo");
/// let s = Address::parse("wss://example.com/feed").unwrap();
/// assert!(s.secure);
/// assert_eq!(s.host_header, "example.com");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Where the transport connects.
    pub transport: Transport,
    /// The Host header value.
    pub host_header: String,
    /// The request target: path and query.
    pub path: String,
    /// `wss://`: TLS over the TCP connection.
    pub secure: bool,
}

/// The transport endpoint of an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A TCP host (name or IP literal, without brackets) and port.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Address {
    /// Parses a `ws://`, `wss://` or `ws+unix://` URL.
    pub fn parse(url: &str) -> Result<Address, Error> {
        let invalid = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        // RFC 6455 §3: fragment identifiers MUST NOT be used in WebSocket URIs.
        if url.contains('#') {
            return Err(invalid("a WebSocket URL cannot have a #fragment"));
        }
        // RFC 3986 §3.1: schemes are case-insensitive (`WS://` is `ws://`).
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("the scheme must be ws://, wss:// or ws+unix://"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "ws+unix" {
            let (socket, path) = match rest.split_once(':') {
                Some((socket, path)) => (socket, path),
                None => (rest, "/"),
            };
            if socket.is_empty() {
                return Err(invalid("no socket path after ws+unix://"));
            }
            let path = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            };
            return Ok(Address {
                transport: Transport::Unix(socket.into()),
                host_header: "localhost".into(),
                path,
                secure: false,
            });
        }
        let secure = match scheme.as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(invalid("the scheme must be ws://, wss:// or ws+unix://")),
        };
        let default_port = if secure { 443 } else { 80 };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(invalid(
                "user information in a WebSocket URL is not supported",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in IPv6 host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("junk after IPv6 host"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| invalid("the port must be a number from 0 to 65535"))?,
        };
        // RFC 6455 §4.1: the port is left out of Host when it is the scheme's default.
        let host_header = match (authority.starts_with('['), port == default_port) {
            (true, true) => format!("[{host}]"),
            (true, false) => format!("[{host}]:{port}"),
            (false, true) => host.to_owned(),
            (false, false) => format!("{host}:{port}"),
        };
        Ok(Address {
            transport: Transport::Tcp {
                host: host.to_owned(),
                port,
            },
            host_header,
            path,
            secure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        // Regression: `WS://` was refused; RFC 3986 §3.1 schemes are case-insensitive.
        for upper in [
            "WS://example.com/x",
            "Wss://example.com/x",
            "WS+UNIX:///tmp/s:/x",
        ] {
            assert!(Address::parse(upper).is_ok(), "{upper}");
        }
        assert!(Address::parse("WSS://example.com").unwrap().secure);
        let a = Address::parse("ws://example.com").unwrap();
        assert_eq!(
            a.transport,
            Transport::Tcp {
                host: "example.com".into(),
                port: 80
            }
        );
        assert_eq!(
            (a.host_header.as_str(), a.path.as_str()),
            ("example.com", "/")
        );
        let a = Address::parse("ws://127.0.0.1:9001?x").unwrap();
        assert_eq!(
            (a.host_header.as_str(), a.path.as_str()),
            ("127.0.0.1:9001", "/?x")
        );
        let a = Address::parse("ws+unix:///run/x.sock").unwrap();
        assert_eq!(a.transport, Transport::Unix("/run/x.sock".into()));
        assert_eq!(a.path, "/");
        let a = Address::parse("wss://example.com:443/x").unwrap();
        assert!(a.secure);
        assert_eq!(a.host_header, "example.com");
        let a = Address::parse("wss://[::1]:8443").unwrap();
        assert_eq!(
            a.transport,
            Transport::Tcp {
                host: "::1".into(),
                port: 8443
            }
        );
        assert_eq!(a.host_header, "[::1]:8443");
    }

    #[test]
    fn errors_name_the_problem() {
        for (url, needle) in [
            ("http://x", "scheme"),
            ("wss://x:0x", "port"),
            ("ws://x:99999", "port"),
            ("ws://x/#frag", "fragment"),
            ("ws://:80/", "no host"),
        ] {
            let err = Address::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
