//! The server side of the opening handshake (RFC 6455 §4.2).

use bytes::Bytes;

use super::headers::Headers;
use super::{HandshakeError, accept_key, find_header_end, has_token, is_safe_header, split_list};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::connection::{Config, Connection};
use crate::extension::deflate::{self, DeflateConfig, DeflateParams};
use crate::extension::{ExtensionOffer, parse_extensions};
use crate::limits::Limits;
use crate::role::Role;

/// Reads a client's opening handshake, incrementally.
///
/// ```
/// use ferry_proto::{handshake::ServerHandshake, Limits};
/// let mut handshake = ServerHandshake::new(&Limits::default());
/// let request = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// assert!(handshake.receive(&request[..10]).unwrap().is_none());
/// let request = handshake.receive(&request[10..]).unwrap().unwrap();
/// assert_eq!(request.path(), "/chat");
/// let response = request.accept(None);
/// assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// ```
#[derive(Debug)]
pub struct ServerHandshake {
    buf: Vec<u8>,
    max_bytes: usize,
    max_headers: usize,
}

impl ServerHandshake {
    /// A handshake reader bounded by `limits.max_handshake_bytes` and `limits.max_headers`.
    pub fn new(limits: &Limits) -> Self {
        ServerHandshake {
            buf: Vec::new(),
            max_bytes: limits.max_handshake_bytes,
            max_headers: limits.max_headers,
        }
    }

    /// Adds received bytes. Returns the validated request once the header block is complete,
    /// or the error whose [`refusal`](HandshakeError::refusal) the server should send.
    ///
    /// Each call searches only the new bytes for the end of the block, so a request that
    /// trickles in one byte at a time costs linear time overall.
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<Request>, HandshakeError> {
        if self.buf.is_empty() {
            // The usual case: the whole request in the first read. Parse it where it lies
            // instead of copying it into a buffer of our own first, and let the parser find
            // where the header block ends rather than searching for it first.
            // A block the parser ends at a bare LF goes the buffered way below, which looks
            // for CRLF CRLF, as every request did before.
            // A parse error goes the buffered way too, so the answer never depends on how the
            // request was cut into reads (fuzz/: server_handshake checks that).
            // So does a read that starts with an empty line, which the parser skips and the
            // search would take for the end of an empty block.
            if !data.starts_with(b"\r")
                && !data.starts_with(b"\n")
                && let Ok(Some((mut request, end))) = parse(data, self.max_headers)
                && data.get(end.saturating_sub(4)..end) == Some(b"\r\n\r\n")
            {
                if end > self.max_bytes {
                    return Err(HandshakeError::HeadersTooLarge {
                        limit: self.max_bytes,
                    });
                }
                request.leftover = leftover(data, end);
                return Ok(Some(request));
            }
        }
        let searched = self.buf.len();
        self.buf.extend_from_slice(data);
        let end = match find_header_end(&self.buf, searched) {
            Some(end) => end,
            None if self.buf.len() > self.max_bytes => {
                return Err(HandshakeError::HeadersTooLarge {
                    limit: self.max_bytes,
                });
            }
            None => return Ok(None),
        };
        let buf = std::mem::take(&mut self.buf);
        self.complete(&buf, end).map(Some)
    }

    /// Parses the header block `data[..end]`; what follows it is the start of the frames.
    fn complete(&self, data: &[u8], end: usize) -> Result<Request, HandshakeError> {
        if end > self.max_bytes {
            return Err(HandshakeError::HeadersTooLarge {
                limit: self.max_bytes,
            });
        }
        let Some((mut request, _)) = parse(data.get(..end).unwrap_or_default(), self.max_headers)?
        else {
            return Err(HandshakeError::Malformed("incomplete request"));
        };
        request.leftover = leftover(data, end);
        Ok(request)
    }
}

/// What arrived after the header block ending at `end`: the start of the frames.
fn leftover(data: &[u8], end: usize) -> Bytes {
    match data.get(end..) {
        Some(rest) if !rest.is_empty() => Bytes::copy_from_slice(rest),
        _ => Bytes::new(),
    }
}

/// Header slots parsed on the stack; a larger `Limits::max_headers` takes them from the heap.
const STACK_HEADERS: usize = 64;

/// Parses a request from the start of `data`: the request and the length of its header block,
/// or `None` if the block is not complete yet.
fn parse(data: &[u8], max_headers: usize) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut stack = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if max_headers <= STACK_HEADERS {
        stack.get_mut(..max_headers).unwrap_or_default()
    } else {
        heap.resize(max_headers, std::mem::MaybeUninit::uninit());
        &mut heap[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    let end = match parsed.parse_with_uninit_headers(data, slots) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { limit: max_headers });
        }
        Err(err) => return Err(HandshakeError::Malformed(describe(err))),
    };
    let method = parsed.method.unwrap_or_default();
    let minor = parsed.version.unwrap_or_default();
    let path = parsed.path.unwrap_or_default();
    let mut headers = Headers::with_path(path, end, parsed.headers.len());
    for header in parsed.headers.iter() {
        headers.push(header.name, header.value);
    }
    Request::from_headers(method, minor, headers).map(|request| Some((request, end)))
}

fn describe(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// What the checks of §4.2.1 need from a request's header fields, gathered in one pass over
/// them. A lookup per name was a pass per name: seven passes, the handshake's largest cost
/// after SHA-1 (callgrind, `bench/instructions.sh` with `WORKLOADS=handshake`).
#[derive(Default)]
struct UpgradeFields<'a> {
    host: bool,
    /// The first Upgrade field's value.
    upgrade: Option<&'a [u8]>,
    /// Whether any Connection field lists `upgrade`.
    connection_upgrade: bool,
    /// The first Sec-WebSocket-Version field's value.
    version: Option<&'a [u8]>,
    /// The first Sec-WebSocket-Key field's value, and how many there were.
    key: Option<&'a [u8]>,
    keys: usize,
    /// Whether a subprotocol or an extension was offered.
    offers: bool,
}

impl<'a> UpgradeFields<'a> {
    fn scan(headers: &'a Headers) -> UpgradeFields<'a> {
        let mut seen = UpgradeFields::default();
        for (name, value) in headers.raw() {
            // By length first: most fields are compared once, if at all.
            let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
            match name.len() {
                4 if is(b"host") => seen.host = true,
                7 if is(b"upgrade") => {
                    seen.upgrade.get_or_insert(value);
                }
                10 if is(b"connection") => seen.connection_upgrade |= has_token(value, "upgrade"),
                17 if is(b"sec-websocket-key") => {
                    seen.keys += 1;
                    seen.key.get_or_insert(value);
                }
                21 if is(b"sec-websocket-version") => {
                    seen.version.get_or_insert(value);
                }
                22 if is(b"sec-websocket-protocol") => seen.offers = true,
                24 if is(b"sec-websocket-extensions") => seen.offers = true,
                _ => {}
            }
        }
        seen
    }
}

/// A validated WebSocket upgrade request.
///
/// Look at it (path, Origin, subprotocols, any header) to decide, then answer with
/// [`accept_connection`](Request::accept_connection) (the response and the connection, in one
/// step), or a [`Refusal`](super::Refusal).
#[derive(Clone, Debug)]
pub struct Request {
    /// The path and the header fields.
    headers: Headers,
    /// Sec-WebSocket-Key of an HTTP/1.1 upgrade; `None` for an HTTP/2 extended CONNECT, which
    /// has no key and no Accept (RFC 8441 §5).
    /// Held inline: a valid key is always 24 bytes (16 in padded base64), so it needs no
    /// allocation of its own.
    key: Option<[u8; 24]>,
    protocols: Vec<String>,
    extensions: Vec<String>,
    leftover: Bytes,
}

/// An accepted request: the response and the connection that speaks what it agreed
/// ([`Request::accept_connection`]).
#[derive(Debug)]
pub struct Accepted {
    /// The response's status: 101 for an HTTP/1.1 upgrade, 200 for an HTTP/2 extended CONNECT
    /// (RFC 8441 §5).
    pub status: u16,
    /// The response's headers, for an HTTP server (hyper, say) that writes the status line and
    /// headers itself; [`response`](Self::response) has the whole HTTP/1.1 response as bytes.
    /// The names are the protocol's own, and so are the fixed values (`Upgrade: websocket`,
    /// `Connection: Upgrade`), so they are not copied per connection.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The subprotocol chosen, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters agreed, if any.
    pub deflate: Option<DeflateParams>,
    /// The connection, its extension installed and the bytes after the request fed.
    pub connection: Connection,
}

impl Accepted {
    /// The whole 101 response, status line included, as HTTP/1.1 writes it. Over HTTP/2 the
    /// response is HEADERS that the HTTP/2 stack encodes from [`status`](Self::status) and
    /// [`headers`](Self::headers).
    pub fn response(&self) -> Vec<u8> {
        let mut out = String::with_capacity(160);
        out.push_str("HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

impl Request {
    /// Validates a request that was parsed elsewhere (by hyper, say): `http_minor` is 1 for
    /// HTTP/1.1. The checks are those of RFC 6455 §4.2.1, in an order that gives each client the
    /// most useful refusal: 405, 400 (version, Host), 426 (no Upgrade, so a plain HTTP request),
    /// 400 (Connection), 426 (Sec-WebSocket-Version), 400 (key).
    ///
    /// `headers` are the fields as the HTTP stack holds them: pairs of a name (`&str`,
    /// `String`) and a value (`&[u8]`, `Vec<u8>`, anything `AsRef<[u8]>`), copied once.
    pub fn from_parts(
        method: &str,
        http_minor: u8,
        path: String,
        headers: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<[u8]>)>,
    ) -> Result<Request, HandshakeError> {
        Request::from_headers(method, http_minor, Headers::collect(&path, headers))
    }

    fn from_headers(
        method: &str,
        http_minor: u8,
        headers: Headers,
    ) -> Result<Request, HandshakeError> {
        // §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at least 1.1."
        if method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if http_minor < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        let seen = UpgradeFields::scan(&headers);
        if !seen.host {
            return Err(HandshakeError::MissingHost);
        }
        if !seen.upgrade.is_some_and(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::NotWebSocket);
        }
        // The Connection header may list other tokens (keep-alive, Upgrade), and may repeat.
        if !seen.connection_upgrade {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // §4.4: a version other than 13 gets 426 with the versions the server speaks.
        if seen.version.map(<[u8]>::trim_ascii) != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        // Exactly one key, the base64 of 16 bytes (§4.2.1 item 5).
        let key = match seen.key.map(<[u8]>::trim_ascii) {
            Some(key) if seen.keys == 1 && super::key::is_valid_key(key) => {
                <[u8; 24]>::try_from(key).map_err(|_| HandshakeError::InvalidKey)?
            }
            _ => return Err(HandshakeError::InvalidKey),
        };
        let offers = seen.offers;
        Ok(Request::negotiable(headers, Some(key), offers))
    }

    /// Validates an HTTP/2 request (RFC 8441 §4 and §5), parsed by an HTTP/2 stack: `method`
    /// must be CONNECT and `protocol`, the `:protocol` pseudo-header, `websocket`; `path` is
    /// `:path`, and `authority` is `:authority`, which takes the place of Host. There is no
    /// Sec-WebSocket-Key; Sec-WebSocket-Version, Origin, subprotocols and extensions mean what
    /// they mean over HTTP/1.1, so permessage-deflate is negotiated the same way.
    ///
    /// Refusals: 400 for a request that is not an extended CONNECT, 501 for another
    /// `:protocol`, 400 without an authority, 426 for a version other than 13.
    ///
    /// ```
    /// use ferry_proto::handshake::Request;
    /// let headers = vec![("sec-websocket-version".to_owned(), b"13".to_vec())];
    /// let request = Request::from_extended_connect(
    ///     "CONNECT", Some("websocket"), Some("example.com"), "/chat".into(), headers,
    /// ).unwrap();
    /// assert!(request.is_http2());
    /// assert_eq!(request.host(), Some("example.com"));
    /// ```
    pub fn from_extended_connect(
        method: &str,
        protocol: Option<&str>,
        authority: Option<&str>,
        path: String,
        headers: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<[u8]>)>,
    ) -> Result<Request, HandshakeError> {
        let mut headers = Headers::collect(&path, headers);
        let Some(protocol) = protocol.filter(|_| method == "CONNECT") else {
            return Err(HandshakeError::NotExtendedConnect);
        };
        // RFC 8441 §4: the value is a token from the HTTP Upgrade Token registry, which
        // compares without regard to case.
        if !protocol.eq_ignore_ascii_case("websocket") {
            return Err(HandshakeError::UnknownProtocol);
        }
        let has_host = headers.get("host").is_some();
        if headers.get("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        match authority {
            // RFC 9113 §8.3.1: :authority replaces Host; keep it where Request::host looks.
            Some(authority) if !has_host => {
                headers.push("host", authority.as_bytes());
            }
            Some(_) => {}
            None if has_host => {}
            None => return Err(HandshakeError::MissingHost),
        }
        Ok(Request::negotiable(headers, None, true))
    }

    /// The request, its subprotocol and extension offers read from `headers`; `offers`: false
    /// when the headers are known to hold neither, so they are not searched again.
    fn negotiable(headers: Headers, key: Option<[u8; 24]>, offers: bool) -> Request {
        let (protocols, extensions) = if offers {
            let protocols = headers
                .all("sec-websocket-protocol")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(split_list)
                .map(str::to_owned)
                .collect();
            let extensions = headers
                .all("sec-websocket-extensions")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
                .collect();
            (protocols, extensions)
        } else {
            (Vec::new(), Vec::new())
        };
        Request {
            headers,
            key,
            protocols,
            extensions,
            leftover: Bytes::new(),
        }
    }

    /// Whether this came as an HTTP/2 extended CONNECT
    /// ([`from_extended_connect`](Self::from_extended_connect)) rather than an HTTP/1.1 upgrade.
    pub fn is_http2(&self) -> bool {
        self.key.is_none()
    }

    /// The request target, as sent (`/chat?room=1`).
    pub fn path(&self) -> &str {
        self.headers.path()
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The Host header.
    pub fn host(&self) -> Option<&str> {
        self.header_str("host")
    }

    /// The Origin header, sent by browsers (§4.1, §10.2).
    pub fn origin(&self) -> Option<&str> {
        self.header_str("origin")
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extension offers from Sec-WebSocket-Extensions, in the client's order. A header
    /// that does not parse yields no offers: the connection then opens without extensions.
    pub fn extension_offers(&self) -> Vec<ExtensionOffer> {
        let values: Vec<&str> = self.extensions.iter().map(String::as_str).collect();
        parse_extensions(&values).unwrap_or_default()
    }

    /// The first of `supported` that the client offered: subprotocol selection in the server's
    /// order of preference.
    pub fn choose_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        supported
            .iter()
            .copied()
            .find(|s| self.protocols.iter().any(|p| p == s))
    }

    /// Bytes the client sent after the header block; they belong to the WebSocket stream.
    pub fn take_leftover(&mut self) -> Bytes {
        std::mem::take(&mut self.leftover)
    }

    /// Accepts this request in one step: picks the subprotocol (the first of `protocols`, in
    /// this server's order of preference, that the client offered), negotiates
    /// permessage-deflate (RFC 7692 §5: the first offer `deflate` can accept, or none, and the
    /// connection is then uncompressed), and returns the 101 response's headers together with
    /// the connection that speaks what they say, the bytes the client sent after its request
    /// already fed to it. The response and the connection cannot disagree.
    ///
    /// ```
    /// use ferry_proto::extension::deflate::DeflateConfig;
    /// use ferry_proto::handshake::ServerHandshake;
    /// use ferry_proto::{Config, Limits};
    /// use std::time::Instant;
    /// let mut request = ServerHandshake::new(&Limits::default())
    ///     .receive(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    ///         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
    ///         Sec-WebSocket-Protocol: chat\r\n\
    ///         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    ///     .unwrap()
    ///     .unwrap();
    /// let deflate = DeflateConfig::default();
    /// let accepted = request.accept_connection(&["chat"], Some(&deflate), Config::default(), Instant::now());
    /// assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    /// // (Without the `deflate` feature, the offer is declined.)
    /// assert_eq!(accepted.deflate.is_some(), cfg!(feature = "deflate"));
    /// assert_eq!(accepted.connection.extension().is_some(), cfg!(feature = "deflate"));
    /// assert!(accepted.response().starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    /// ```
    pub fn accept_connection(
        &mut self,
        protocols: &[&str],
        deflate: Option<&DeflateConfig>,
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Accepted {
        let protocol = self.choose_protocol(protocols).map(str::to_owned);
        let negotiated = deflate::usable(deflate)
            .and_then(|d| Some((d.accept_offer(&self.extension_offers())?, d)));
        let extension = negotiated
            .as_ref()
            .map(|((_, header), _)| [("Sec-WebSocket-Extensions", header.as_str())]);
        let extra = extension.as_ref().map_or(&[][..], |e| &e[..]);
        let headers = self.accept_headers(protocol.as_deref(), extra);
        let params = negotiated.as_ref().map(|((params, _), _)| *params);
        let leftover = self.take_leftover();
        let connection = Connection::after_handshake(
            Role::Server,
            config,
            negotiated.map(|((params, _), settings)| (params, settings)),
            &leftover,
            now,
        );
        Accepted {
            status: if self.is_http2() { 200 } else { 101 },
            headers,
            protocol,
            deflate: params,
            connection,
        }
    }

    /// The 101 response that accepts this request, with the chosen subprotocol.
    ///
    /// A subprotocol the client did not offer is left out: the client would have to fail the
    /// connection on it (§4.1). Extensions are declined; to accept one, pass its
    /// `Sec-WebSocket-Extensions` header to [`accept_with_headers`](Self::accept_with_headers).
    pub fn accept(&self, protocol: Option<&str>) -> Vec<u8> {
        self.accept_with_headers(protocol, &[])
    }

    /// Like [`accept`](Self::accept), with extra response headers (e.g. `Set-Cookie`).
    pub fn accept_with_headers(&self, protocol: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = String::with_capacity(160);
        out.push_str("HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in self.accept_headers(protocol, extra) {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(&value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// The headers of the response, for an HTTP server (hyper, say) that writes the status line
    /// and headers itself. Same rules as [`accept_with_headers`](Self::accept_with_headers):
    /// an unoffered subprotocol is left out, and so is any extra header that could split the
    /// response. Over HTTP/2 there is no Upgrade, Connection or Sec-WebSocket-Accept (RFC 8441
    /// §5; connection-specific headers are forbidden there, RFC 9113 §8.2.2).
    pub fn accept_headers<'a>(
        &self,
        protocol: Option<&str>,
        extra: &[(&'a str, &str)],
    ) -> Vec<(&'a str, Cow<'static, str>)> {
        let mut headers = Vec::with_capacity(3 + usize::from(protocol.is_some()) + extra.len());
        if let Some(key) = &self.key {
            headers.extend([
                ("Upgrade", Cow::Borrowed("websocket")),
                ("Connection", Cow::Borrowed("Upgrade")),
                ("Sec-WebSocket-Accept", Cow::Owned(accept_key(key))),
            ]);
        }
        if let Some(protocol) = protocol.filter(|p| self.protocols.iter().any(|o| o == p)) {
            headers.push(("Sec-WebSocket-Protocol", Cow::Owned(protocol.to_owned())));
        }
        for (name, value) in extra {
            if is_safe_header(name, value) && !(self.is_http2() && is_connection_specific(name)) {
                headers.push((name, Cow::Owned((*value).to_owned())));
            }
        }
        headers
    }
}

/// A header that HTTP/2 forbids in any message (RFC 9113 §8.2.2).
fn is_connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HandshakeError as E;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn run(request: &str) -> Result<Request, HandshakeError> {
        ServerHandshake::new(&Limits::default())
            .receive(request.as_bytes())
            .map(|r| r.unwrap())
    }

    fn status(request: &str) -> u16 {
        run(request).unwrap_err().refusal().unwrap().status
    }

    #[test]
    fn rfc_example_is_accepted() {
        let request = run(GOOD).unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.origin(), Some("http://example.com"));
        assert_eq!(request.protocols(), ["chat", "superchat"]);
        assert_eq!(
            request.choose_protocol(&["superchat", "chat"]),
            Some("superchat")
        );
        let response = String::from_utf8(request.accept(Some("chat"))).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn byte_at_a_time_works_and_keeps_leftover() {
        let mut hs = ServerHandshake::new(&Limits::default());
        let mut wire = GOOD.as_bytes().to_vec();
        wire.extend_from_slice(b"\x81\x80");
        let mut done = None;
        for (i, b) in wire.iter().enumerate() {
            if let Some(req) = hs.receive(&[*b]).unwrap() {
                done = Some((i, req));
                break;
            }
        }
        let (i, mut req) = done.unwrap();
        assert_eq!(i, GOOD.len() - 1);
        assert!(req.take_leftover().is_empty());
        let mut hs = ServerHandshake::new(&Limits::default());
        let mut req = hs.receive(&wire).unwrap().unwrap();
        assert_eq!(&req.take_leftover()[..], b"\x81\x80");
    }

    /// The first read is parsed where it lies and the parser says where the block ends; a
    /// block it ends at a bare LF still waits for CRLF CRLF, as with any other read, and one
    /// over the size limit is refused even when it arrives whole.
    #[test]
    fn a_whole_first_read_ends_only_at_crlf_crlf_and_within_the_limit() {
        let bare = GOOD.replace("\r\n\r\n", "\n\n");
        let mut hs = ServerHandshake::new(&Limits::default());
        assert!(hs.receive(bare.as_bytes()).unwrap().is_none());
        assert!(hs.receive(b"\r\n").unwrap().is_none());

        let limits = Limits {
            max_handshake_bytes: GOOD.len() - 1,
            ..Limits::default()
        };
        let too_large = ServerHandshake::new(&limits).receive(GOOD.as_bytes());
        assert!(
            matches!(too_large, Err(HandshakeError::HeadersTooLarge { .. })),
            "{too_large:?}"
        );
    }

    #[test]
    fn unoffered_protocol_is_left_out() {
        let response = String::from_utf8(run(GOOD).unwrap().accept(Some("other"))).unwrap();
        assert!(!response.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn refusals_have_the_right_status() {
        assert_eq!(status(&GOOD.replace("GET", "POST")), 405);
        assert_eq!(status(&GOOD.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(
            status(&GOOD.replace("Host: server.example.com\r\n", "")),
            400
        );
        assert_eq!(status(&GOOD.replace("Upgrade: websocket\r\n", "")), 426);
        assert_eq!(
            status(&GOOD.replace("Connection: keep-alive, Upgrade", "Connection: keep-alive")),
            400
        );
        assert_eq!(status(&GOOD.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            400
        );
        assert_eq!(status(&GOOD.replace("Host:", "Ho st:")), 400);
    }

    #[test]
    fn version_refusal_names_version_13() {
        let refusal = run(&GOOD.replace("Version: 13", "Version: 8"))
            .unwrap_err()
            .refusal()
            .unwrap();
        assert!(
            refusal
                .headers
                .contains(&("Sec-WebSocket-Version", "13".to_owned()))
        );
        let text = String::from_utf8(refusal.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    }

    #[test]
    fn upgrade_and_connection_are_case_insensitive() {
        let request = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("keep-alive, Upgrade", "UPGRADE");
        assert!(run(&request).is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let request = GOOD.replace(
            "Origin:",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:",
        );
        assert_eq!(run(&request).unwrap_err(), E::InvalidKey);
    }

    #[test]
    fn oversized_header_block_gets_431() {
        let limits = Limits {
            max_handshake_bytes: 256,
            ..Limits::default()
        };
        let mut hs = ServerHandshake::new(&limits);
        let big = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n", "a".repeat(300));
        let err = hs.receive(big.as_bytes()).unwrap_err();
        assert_eq!(err, E::HeadersTooLarge { limit: 256 });
        assert_eq!(err.refusal().unwrap().status, 431);
    }

    /// The whole block in one read takes the path that parses in place: the size limit holds
    /// there too.
    #[test]
    fn oversized_header_block_complete_in_one_read_gets_431() {
        let limits = Limits {
            max_handshake_bytes: 256,
            ..Limits::default()
        };
        let big = GOOD.replacen("\r\n", &format!("\r\nX-Filler: {}\r\n", "a".repeat(300)), 1);
        let err = ServerHandshake::new(&limits)
            .receive(big.as_bytes())
            .unwrap_err();
        assert_eq!(err, E::HeadersTooLarge { limit: 256 });
    }

    /// More header slots than the parser keeps on the stack: they come from the heap.
    #[test]
    fn a_header_limit_above_the_stack_slots_still_parses() {
        let limits = Limits {
            max_headers: STACK_HEADERS + 40,
            ..Limits::default()
        };
        let extra: String = (0..STACK_HEADERS + 20)
            .map(|i| format!("X-Extra-{i}: {i}\r\n"))
            .collect();
        let request = GOOD.replacen("\r\n", &format!("\r\n{extra}"), 1);
        let request = ServerHandshake::new(&limits)
            .receive(request.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(request.path(), "/chat");
        let mut hs = ServerHandshake::new(&Limits::default());
        let many = GOOD.replacen("\r\n", &format!("\r\n{extra}"), 1);
        assert_eq!(
            hs.receive(many.as_bytes()).unwrap_err(),
            E::TooManyHeaders { limit: 64 }
        );
    }

    #[test]
    fn too_many_headers_gets_431() {
        let limits = Limits {
            max_headers: 4,
            ..Limits::default()
        };
        let err = ServerHandshake::new(&limits)
            .receive(GOOD.as_bytes())
            .unwrap_err();
        assert_eq!(err.refusal().unwrap().status, 431);
    }

    #[test]
    fn extra_headers_cannot_split_the_response() {
        let request = run(GOOD).unwrap();
        let response = String::from_utf8(
            request.accept_with_headers(None, &[("X-Ok", "1"), ("X-Bad", "a\r\nb: c")]),
        )
        .unwrap();
        assert!(response.contains("X-Ok: 1\r\n"));
        assert!(!response.contains("X-Bad"));
    }

    fn h2(
        method: &str,
        protocol: Option<&str>,
        authority: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Request, HandshakeError> {
        let mut headers = vec![("sec-websocket-version".to_owned(), b"13".to_vec())];
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())),
        );
        Request::from_extended_connect(method, protocol, authority, "/chat?x=1".into(), headers)
    }

    #[test]
    fn extended_connect_is_accepted_with_200_and_no_key() {
        let offers = [
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("origin", "https://example.com"),
        ];
        let mut request = h2("CONNECT", Some("websocket"), Some("example.com"), &offers).unwrap();
        assert!(request.is_http2());
        assert_eq!(request.path(), "/chat?x=1");
        assert_eq!(request.host(), Some("example.com"));
        assert_eq!(request.origin(), Some("https://example.com"));
        let accepted = request.accept_connection(
            &["superchat"],
            Some(&DeflateConfig::default()),
            Config::default(),
            Instant::now(),
        );
        assert_eq!(accepted.status, 200);
        assert_eq!(accepted.protocol.as_deref(), Some("superchat"));
        assert_eq!(accepted.deflate.is_some(), cfg!(feature = "deflate"));
        let names: Vec<&str> = accepted.headers.iter().map(|(n, _)| *n).collect();
        let expected: &[&str] = if cfg!(feature = "deflate") {
            &["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"]
        } else {
            &["Sec-WebSocket-Protocol"]
        };
        assert_eq!(
            names, expected,
            "no Upgrade, Connection or Accept over HTTP/2"
        );
        // Connection-specific headers cannot be added by the caller either (RFC 9113 §8.2.2).
        let headers = request.accept_headers(None, &[("Connection", "close"), ("X-Ok", "1")]);
        assert_eq!(headers, [("X-Ok", Cow::Borrowed("1"))]);
    }

    #[test]
    fn extended_connect_refusals() {
        let refused = |r: Result<Request, HandshakeError>| r.unwrap_err().refusal().unwrap().status;
        assert_eq!(refused(h2("GET", None, Some("a"), &[])), 400);
        assert_eq!(
            h2("GET", Some("websocket"), Some("a"), &[]).unwrap_err(),
            E::NotExtendedConnect
        );
        assert_eq!(
            h2("CONNECT", None, Some("a"), &[]).unwrap_err(),
            E::NotExtendedConnect
        );
        assert_eq!(
            refused(h2("CONNECT", Some("connect-udp"), Some("a"), &[])),
            501
        );
        assert!(h2("CONNECT", Some("WebSocket"), Some("a"), &[]).is_ok());
        assert_eq!(
            h2("CONNECT", Some("websocket"), None, &[]).unwrap_err(),
            E::MissingHost
        );
        assert!(h2("CONNECT", Some("websocket"), None, &[("host", "a")]).is_ok());
        let old = Request::from_extended_connect(
            "CONNECT",
            Some("websocket"),
            Some("a"),
            "/".into(),
            [("sec-websocket-version", b"8")],
        );
        assert_eq!(old.unwrap_err(), E::UnsupportedVersion);
        // The refusal of an unknown :protocol echoes nothing of the request.
        let body = h2("CONNECT", Some("<script>"), Some("a"), &[])
            .unwrap_err()
            .refusal()
            .unwrap()
            .body;
        assert!(!body.contains("script"), "{body}");
    }
}
