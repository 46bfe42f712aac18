//! Reaching a server through a proxy: HTTP CONNECT (with Basic auth) and SOCKS5 (RFC 1928,
//! with RFC 1929 username/password), set explicitly or read from the environment as curl
//! reads it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;

/// Which proxy a client uses. [`ProxySetting::None`] by default in the library; `ferry
/// connect` uses [`ProxySetting::FromEnv`], like curl.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Connect directly.
    #[default]
    None,
    /// Read `http_proxy` (ws://), `HTTPS_PROXY`/`https_proxy` (wss://), `ALL_PROXY`/`all_proxy`
    /// and `NO_PROXY`/`no_proxy` when connecting; see [`Proxy::from_env`].
    FromEnv,
    /// Always this proxy.
    Use(Proxy),
}

/// The protocol spoken to a proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP CONNECT (`http://` proxy URLs, and URLs without a scheme).
    HttpConnect,
    /// SOCKS5, the client resolving the target's name (`socks5://`).
    Socks5,
    /// SOCKS5, the proxy resolving the target's name (`socks5h://`).
    Socks5h,
}

/// A proxy: where it is, how to talk to it, and the credentials it wants.
///
/// ```
/// use ferry::proxy::{Proxy, ProxyKind};
/// let p = Proxy::parse("http://user:secret@proxy.internal:3128").unwrap();
/// assert_eq!((p.kind, p.host.as_str(), p.port), (ProxyKind::HttpConnect, "proxy.internal", 3128));
/// assert_eq!(p.auth, Some(("user".into(), "secret".into())));
/// assert_eq!(Proxy::parse("socks5h://127.0.0.1").unwrap().port, 1080);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The protocol.
    pub kind: ProxyKind,
    /// The proxy's host name or IP address (without brackets).
    pub host: String,
    /// The proxy's port: 1080 by default for SOCKS, 80 for HTTP.
    pub port: u16,
    /// Username and password, for HTTP Basic or SOCKS5 username/password authentication.
    pub auth: Option<(String, String)>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs.
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .finish()
    }
}

fn invalid(url: &str, reason: &'static str) -> Error {
    // The URL may hold a password: only its scheme and host part go into the error.
    let shown = match url.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => url.to_owned(),
    };
    Error::InvalidUrl { url: shown, reason }
}

impl Proxy {
    /// Parses a proxy URL: `http://`, `socks5://` or `socks5h://`, with optional
    /// `user:password@` (percent-encoded) and port. A URL without a scheme is HTTP, as in curl.
    pub fn parse(url: &str) -> Result<Proxy, Error> {
        let (kind, rest) = match url.split_once("://") {
            None => (ProxyKind::HttpConnect, url),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (ProxyKind::HttpConnect, rest),
                "socks5" => (ProxyKind::Socks5, rest),
                "socks5h" => (ProxyKind::Socks5h, rest),
                "https" => {
                    return Err(invalid(
                        url,
                        "TLS to the proxy itself (https://) is not supported; use an http:// proxy",
                    ));
                }
                _ => {
                    return Err(invalid(
                        url,
                        "the proxy scheme must be http://, socks5:// or socks5h://",
                    ));
                }
            },
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(user), percent_decode(password))),
                    hostport,
                )
            }
            None => (None, authority),
        };
        let default_port = match kind {
            ProxyKind::HttpConnect => 80,
            ProxyKind::Socks5 | ProxyKind::Socks5h => 1080,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid(url, "unclosed [ in the proxy's IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(invalid(url, "the proxy URL has no host"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(port) => port
                .parse()
                .map_err(|_| invalid(url, "the proxy port must be a number from 1 to 65535"))?,
        };
        Ok(Proxy {
            kind,
            host: host.to_owned(),
            port,
            auth,
        })
    }

    /// The proxy the environment sets for a connection to `host` (`secure`: `wss://`), as curl
    /// reads it: `https_proxy` or `HTTPS_PROXY` for wss://, `http_proxy` (lowercase only: the
    /// uppercase one can be set by a web request's `Proxy:` header in CGI programs) for ws://,
    /// then `all_proxy` or `ALL_PROXY`; none when `no_proxy` or `NO_PROXY` covers the host.
    pub fn from_env(host: &str, secure: bool) -> Result<Option<Proxy>, Error> {
        Proxy::from_vars(host, secure, |name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables looked up by `var`, for tests and for
    /// applications with their own settings store.
    pub fn from_vars(
        host: &str,
        secure: bool,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>, Error> {
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
        };
        if let Some(no_proxy) = get(&["no_proxy", "NO_PROXY"])
            && no_proxy_matches(&no_proxy, host)
        {
            return Ok(None);
        }
        let scheme_var: &[&str] = if secure {
            &["https_proxy", "HTTPS_PROXY"]
        } else {
            &["http_proxy"]
        };
        match get(scheme_var).or_else(|| get(&["all_proxy", "ALL_PROXY"])) {
            Some(url) => Proxy::parse(url.trim()).map(Some),
            None => Ok(None),
        }
    }
}

/// Whether a `NO_PROXY` list covers `host`: `*` covers all; an entry covers the same name or
/// IP address, and, for names, any subdomain (`example.com` and `.example.com` both cover
/// `api.example.com`). Case-insensitive; ports in entries are ignored.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.trim_start_matches('[');
        let entry = match entry.split_once(']') {
            Some((v6, _)) => v6,
            // host:port, but not a bare IPv6 address
            None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or(entry),
            None => entry,
        };
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        !entry.is_empty()
            && (host == entry
                || (host.parse::<std::net::IpAddr>().is_err()
                    && host.ends_with(&entry)
                    && host[..host.len() - entry.len()].ends_with('.')))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The most bytes of a CONNECT response head read before giving up on the proxy.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Asks the proxy on `stream` for a tunnel to `host:port`.
pub(crate) async fn tunnel<S>(
    stream: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match proxy.kind {
        ProxyKind::HttpConnect => http_connect(stream, proxy, host, port).await,
        ProxyKind::Socks5 | ProxyKind::Socks5h => socks5(stream, proxy, host, port).await,
    }
}

async fn http_connect<S>(stream: &mut S, proxy: &Proxy, host: &str, port: u16) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = &proxy.auth {
        let token = BASE64.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read byte by byte up to the blank line: nothing past the response head may be consumed,
    // it belongs to the tunnel. The head is small, and this happens once per connection.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::Proxy(format!(
                "the proxy's CONNECT response head is over {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let byte = stream.read_u8().await.map_err(|err| {
            Error::Proxy(format!("the proxy closed or failed during CONNECT: {err}"))
        })?;
        head.push(byte);
    }
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    match code {
        Some(200..=299) => Ok(()),
        Some(407) => Err(Error::Proxy(if proxy.auth.is_some() {
            "the proxy refused the credentials (HTTP 407)".into()
        } else {
            "the proxy wants credentials (HTTP 407); put them in the proxy URL, http://user:password@host:port".into()
        })),
        Some(code) => Err(Error::Proxy(format!(
            "the proxy refused CONNECT {target} with HTTP {code}"
        ))),
        None => Err(Error::Proxy(
            "the proxy's answer to CONNECT is not HTTP/1.x".into(),
        )),
    }
}

async fn socks5<S>(stream: &mut S, proxy: &Proxy, host: &str, port: u16) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |what: &str, err: std::io::Error| Error::Proxy(format!("SOCKS5 {what}: {err}"));
    // RFC 1928 §3: version 5, the methods offered: 0 (none) and, with credentials, 2.
    let greeting: &[u8] = if proxy.auth.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    stream.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    stream
        .read_exact(&mut choice)
        .await
        .map_err(|err| failed("greeting", err))?;
    match choice {
        [5, 0] => {}
        [5, 2] => {
            let Some((user, password)) = &proxy.auth else {
                return Err(Error::Proxy(
                    "the SOCKS5 proxy chose password authentication, which was not offered".into(),
                ));
            };
            // RFC 1929 §2: each field is at most 255 bytes.
            let (Ok(user_len), Ok(password_len)) =
                (u8::try_from(user.len()), u8::try_from(password.len()))
            else {
                return Err(Error::Proxy(
                    "SOCKS5 usernames and passwords are at most 255 bytes".into(),
                ));
            };
            let mut auth = vec![1, user_len];
            auth.extend_from_slice(user.as_bytes());
            auth.push(password_len);
            auth.extend_from_slice(password.as_bytes());
            stream.write_all(&auth).await?;
            let mut status = [0u8; 2];
            stream
                .read_exact(&mut status)
                .await
                .map_err(|err| failed("authentication", err))?;
            if status[1] != 0 {
                return Err(Error::Proxy(
                    "the SOCKS5 proxy refused the username and password".into(),
                ));
            }
        }
        [5, 0xff] => {
            return Err(Error::Proxy(if proxy.auth.is_some() {
                "the SOCKS5 proxy accepts none of the offered authentication methods".into()
            } else {
                "the SOCKS5 proxy wants credentials; put them in the proxy URL, socks5://user:password@host:port".into()
            }));
        }
        _ => {
            return Err(Error::Proxy(
                "the SOCKS5 proxy answered out of protocol".into(),
            ));
        }
    }
    // RFC 1928 §4: CONNECT to an IPv4 (1), domain name (3) or IPv6 (4) address.
    let mut request = vec![5, 1, 0];
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    let address = match (literal, proxy.kind) {
        (Some(ip), _) => Some(ip),
        (None, ProxyKind::Socks5) => {
            // socks5://: this end resolves the name.
            let mut addrs = tokio::net::lookup_host((host, port)).await?;
            Some(
                addrs
                    .next()
                    .ok_or_else(|| Error::Proxy(format!("{host} did not resolve")))?
                    .ip(),
            )
        }
        (None, _) => None,
    };
    match address {
        Some(std::net::IpAddr::V4(v4)) => {
            request.push(1);
            request.extend_from_slice(&v4.octets());
        }
        Some(std::net::IpAddr::V6(v6)) => {
            request.push(4);
            request.extend_from_slice(&v6.octets());
        }
        None => {
            let Ok(len) = u8::try_from(host.len()) else {
                return Err(Error::Proxy(
                    "a SOCKS5 host name is at most 255 bytes".into(),
                ));
            };
            request.push(3);
            request.push(len);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|err| failed("reply", err))?;
    if reply[0] != 5 {
        return Err(Error::Proxy(
            "the SOCKS5 proxy answered out of protocol".into(),
        ));
    }
    if reply[1] != 0 {
        let why = match reply[1] {
            1 => "general failure",
            2 => "not allowed by the proxy's rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unknown error",
        };
        return Err(Error::Proxy(format!(
            "the SOCKS5 proxy could not connect to {host}:{port}: {why} ({})",
            reply[1]
        )));
    }
    // The bound address that follows is of no use to a client; read past it.
    let skip = match reply[3] {
        1 => 4,
        4 => 16,
        3 => usize::from(stream.read_u8().await.map_err(|err| failed("reply", err))?),
        _ => {
            return Err(Error::Proxy(
                "the SOCKS5 proxy answered out of protocol".into(),
            ));
        }
    };
    let mut rest = vec![0u8; skip + 2];
    stream
        .read_exact(&mut rest)
        .await
        .map_err(|err| failed("reply", err))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let vars = env(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("http_proxy", "plain:8080"),
            ("NO_PROXY", "localhost,.internal.example, 10.0.0.1"),
        ]);
        let p = Proxy::from_vars("api.example", true, vars)
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("secure", 3128));
        let p = Proxy::from_vars("api.example", false, vars)
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("plain", 8080));
        for host in [
            "localhost",
            "a.internal.example",
            "internal.example",
            "10.0.0.1",
        ] {
            assert_eq!(Proxy::from_vars(host, true, vars).unwrap(), None, "{host}");
        }
        // Uppercase HTTP_PROXY is ignored, as curl does; ALL_PROXY is the fallback.
        let vars = env(&[
            ("HTTP_PROXY", "ignored:1"),
            ("ALL_PROXY", "socks5h://s:1081"),
        ]);
        let p = Proxy::from_vars("x", false, vars).unwrap().unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5h, 1081));
        assert!(
            Proxy::from_vars("x", false, env(&[("NO_PROXY", "*"), ("ALL_PROXY", "p:1")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn no_proxy_entries() {
        assert!(no_proxy_matches("example.com", "api.example.com"));
        assert!(!no_proxy_matches("example.com", "badexample.com"));
        assert!(no_proxy_matches("EXAMPLE.com:443", "example.COM"));
        assert!(no_proxy_matches("::1", "[::1]"));
        assert!(no_proxy_matches("[::1]:80", "::1"));
        assert!(!no_proxy_matches("0.0.1", "10.0.0.1"));
        assert!(!no_proxy_matches("", "x"));
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("socks5://us%40er:p%3Ass@[::1]:9050").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.auth, Some(("us@er".into(), "p:ss".into())));
        let err = Proxy::parse("https://u:secret@p:1")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(Proxy::parse("ftp://p").is_err());
        assert!(Proxy::parse("http://p:99999").is_err());
    }
}
