//! The client side of the opening handshake (RFC 6455 §4.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::{HandshakeError, accept_key, find_header_end, has_token, is_safe_header, split_list};
use crate::extension::deflate::{self, DeflateConfig, DeflateParams};
use std::sync::Arc;
use std::time::Instant;

use crate::connection::{Config, Connection};
use crate::extension::parse_extensions;
use crate::limits::Limits;
use crate::role::Role;

/// What a client asks for in its opening handshake.
///
/// ```
/// use ferry_proto::handshake::ClientRequest;
/// let request = ClientRequest::new("example.com:8080", "/chat")
///     .protocol("chat")
///     .origin("https://example.com")
///     .header("Authorization", "Bearer abc");
/// assert_eq!(request.protocols, ["chat"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientRequest {
    /// The Host header: host, and port when it is not the scheme's default.
    pub host: String,
    /// The request target: path and query, starting with `/`.
    pub path: String,
    /// The Origin header, if any. Browsers always send one; other clients usually do not.
    pub origin: Option<String>,
    /// Subprotocols offered, in order of preference.
    pub protocols: Vec<String>,
    /// Extra headers (authorization, cookies, ...).
    pub headers: Vec<(String, String)>,
    /// Offer permessage-deflate with these settings.
    pub deflate: Option<DeflateConfig>,
}

impl ClientRequest {
    /// A request for `path` on `host`.
    pub fn new(host: impl Into<String>, path: impl Into<String>) -> Self {
        ClientRequest {
            host: host.into(),
            path: path.into(),
            ..ClientRequest::default()
        }
    }

    /// Offers a subprotocol.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Sets the Origin header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A client's opening handshake in progress: the request to send, then the response to check.
///
/// ```
/// use ferry_proto::{handshake::{ClientHandshake, ClientRequest, ServerHandshake}, Limits};
/// let (mut client, request) = ClientHandshake::new(&ClientRequest::new("localhost", "/"), &Limits::default()).unwrap();
/// let accepted = ServerHandshake::new(&Limits::default()).receive(&request).unwrap().unwrap();
/// let response = client.receive(&accepted.accept(None)).unwrap().unwrap();
/// assert_eq!(response.status, 101);
/// ```
#[derive(Debug)]
pub struct ClientHandshake {
    /// Sec-WebSocket-Accept the 101 must carry; `None` for an HTTP/2 request, which has no key.
    expected_accept: Option<String>,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    buf: Vec<u8>,
    max_bytes: usize,
    max_headers: usize,
}

/// The server's accepted response.
#[derive(Clone, Debug)]
pub struct Response {
    /// 101 over HTTP/1.1; over HTTP/2 the 2xx of the extended CONNECT.
    pub status: u16,
    /// Every header, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The subprotocol the server chose, if any (always one that was offered).
    pub protocol: Option<String>,
    /// The permessage-deflate parameters the server accepted, if it did.
    pub deflate: Option<DeflateParams>,
    /// Bytes after the header block: the start of the WebSocket stream.
    pub leftover: Bytes,
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl ClientHandshake {
    /// Builds the request with a fresh random key (§4.1: "randomly selected 16-byte value").
    /// Returns the handshake state and the request bytes to send.
    pub fn new(
        request: &ClientRequest,
        limits: &Limits,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::with_key(request, limits, rand::random())
    }

    /// Like [`new`](Self::new) with a given key, for tests.
    pub fn with_key(
        request: &ClientRequest,
        limits: &Limits,
        key: [u8; 16],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let key = BASE64.encode(key);
        let bad = |what: &str| HandshakeError::InvalidHeader(what.to_owned());
        if !request.path.starts_with('/')
            || request
                .path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("path"));
        }
        if request.host.is_empty()
            || !is_safe_header("Host", &request.host)
            || request.host.contains(' ')
        {
            return Err(bad("Host"));
        }
        let mut out = String::with_capacity(256);
        out.push_str(&format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            request.path, request.host
        ));
        if let Some(origin) = &request.origin {
            if !is_safe_header("Origin", origin) {
                return Err(bad("Origin"));
            }
            out.push_str(&format!("Origin: {origin}\r\n"));
        }
        if !request.protocols.is_empty() {
            for protocol in &request.protocols {
                // §4.1: each subprotocol is a token, so it cannot hold a comma or whitespace.
                if !is_safe_header(protocol, "") {
                    return Err(bad("Sec-WebSocket-Protocol"));
                }
            }
            out.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                request.protocols.join(", ")
            ));
        }
        if let Some(deflate) = deflate::usable(request.deflate.as_ref()) {
            deflate.validate().map_err(HandshakeError::InvalidHeader)?;
            out.push_str(&format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                deflate.client_offer()
            ));
        }
        for (name, value) in &request.headers {
            if !is_safe_header(name, value) {
                return Err(bad(name));
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let state = ClientHandshake {
            expected_accept: Some(accept_key(key.as_bytes())),
            protocols: request.protocols.clone(),
            deflate: deflate::usable(request.deflate.as_ref()).cloned(),
            buf: Vec::new(),
            max_bytes: limits.max_handshake_bytes,
            max_headers: limits.max_headers,
        };
        Ok((state, out.into_bytes()))
    }

    /// An HTTP/2 WebSocket request (RFC 8441 §4): checks `request` as
    /// [`new`](Self::new) does and returns the handshake state with the headers to send, beside
    /// the pseudo-headers the HTTP/2 stack writes (`:method CONNECT`, `:protocol websocket`,
    /// `:scheme`, `:path` = `request.path`, `:authority` = `request.host`). There is no key
    /// (§5), and names are lowercase, as HTTP/2 requires (RFC 9113 §8.2.1).
    ///
    /// ```
    /// use ferry_proto::handshake::{ClientHandshake, ClientRequest};
    /// use ferry_proto::Limits;
    /// let request = ClientRequest::new("example.com", "/chat").protocol("chat");
    /// let (handshake, headers) = ClientHandshake::extended_connect(&request, &Limits::default()).unwrap();
    /// assert!(headers.contains(&("sec-websocket-version".into(), "13".into())));
    /// let response = handshake
    ///     .extended_connect_response(200, vec![("sec-websocket-protocol".into(), b"chat".to_vec())])
    ///     .unwrap();
    /// assert_eq!(response.protocol.as_deref(), Some("chat"));
    /// ```
    pub fn extended_connect(
        request: &ClientRequest,
        limits: &Limits,
    ) -> Result<(Self, Vec<(String, String)>), HandshakeError> {
        // The HTTP/1.1 request runs every check on the same fields; its bytes are not needed.
        let (mut state, _) = Self::with_key(request, limits, [0; 16])?;
        state.expected_accept = None;
        let mut headers = vec![("sec-websocket-version".to_owned(), "13".to_owned())];
        if let Some(origin) = &request.origin {
            headers.push(("origin".to_owned(), origin.clone()));
        }
        if !request.protocols.is_empty() {
            headers.push((
                "sec-websocket-protocol".to_owned(),
                request.protocols.join(", "),
            ));
        }
        if let Some(deflate) = deflate::usable(request.deflate.as_ref()) {
            headers.push((
                "sec-websocket-extensions".to_owned(),
                deflate.client_offer(),
            ));
        }
        for (name, value) in &request.headers {
            headers.push((name.to_ascii_lowercase(), value.clone()));
        }
        Ok((state, headers))
    }

    /// Checks the response to an [`extended_connect`](Self::extended_connect) request: a 2xx
    /// status (RFC 8441 §5), and a subprotocol and extensions that were offered, by the rules of
    /// §4.1. `headers` are the response's, as the HTTP/2 stack decoded them.
    pub fn extended_connect_response(
        &self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Response, HandshakeError> {
        if !(200..300).contains(&status) {
            return Err(HandshakeError::Status {
                code: status,
                reason: String::new(),
            });
        }
        let (protocol, deflate) = self.negotiated(&headers)?;
        Ok(Response {
            status,
            headers,
            protocol,
            deflate,
            leftover: Bytes::new(),
        })
    }

    /// The connection the server's response agreed on, in one step: permessage-deflate as the
    /// response accepted it (with this request's settings), and the bytes the server sent after
    /// its response (taken from `response.leftover`) already fed.
    pub fn connection(
        &self,
        response: &mut Response,
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Connection {
        let leftover = std::mem::take(&mut response.leftover);
        let deflate = response.deflate.zip(self.deflate.as_ref());
        Connection::after_handshake(Role::Client, config, deflate, &leftover, now)
    }

    /// The subprotocol and permessage-deflate parameters the response's headers choose, checked
    /// against what was offered (§4.1, §9.1): the same rules over HTTP/1.1 and HTTP/2.
    fn negotiated(
        &self,
        headers: &[(String, Vec<u8>)],
    ) -> Result<(Option<String>, Option<DeflateParams>), HandshakeError> {
        let all = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        let mut chosen: Vec<&str> = Vec::new();
        for value in all("sec-websocket-protocol") {
            chosen.extend(split_list(
                std::str::from_utf8(value).map_err(|_| HandshakeError::InvalidAccept)?,
            ));
        }
        let protocol = match chosen.as_slice() {
            [] => None,
            [one] if self.protocols.iter().any(|p| p == one) => Some((*one).to_owned()),
            _ => return Err(HandshakeError::UnexpectedProtocol(chosen.join(", "))),
        };
        // §9.1: the server may only accept extensions that were offered, each at most once.
        let values: Vec<String> = all("sec-websocket-extensions")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let accepted = parse_extensions(&values).ok_or_else(|| {
            HandshakeError::InvalidExtension("unparsable Sec-WebSocket-Extensions".into())
        })?;
        let mut deflate = None;
        for extension in &accepted {
            match &self.deflate {
                Some(config) if extension.name == deflate::NAME && deflate.is_none() => {
                    deflate = Some(
                        config
                            .accept_response(extension)
                            .map_err(HandshakeError::InvalidExtension)?,
                    );
                }
                _ => return Err(HandshakeError::UnexpectedExtension(extension.name.clone())),
            }
        }
        Ok((protocol, deflate))
    }

    /// Adds received bytes. Returns the response once its header block is complete and valid.
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<Response>, HandshakeError> {
        let searched = self.buf.len();
        self.buf.extend_from_slice(data);
        let end = match find_header_end(&self.buf, searched) {
            Some(end) if end <= self.max_bytes => end,
            None if self.buf.len() <= self.max_bytes => return Ok(None),
            _ => {
                return Err(HandshakeError::HeadersTooLarge {
                    limit: self.max_bytes,
                });
            }
        };
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(self.buf.get(..end).unwrap_or_default()) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(HandshakeError::Malformed("incomplete response"));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HandshakeError::TooManyHeaders {
                    limit: self.max_headers,
                });
            }
            Err(_) => return Err(HandshakeError::Malformed("invalid HTTP response")),
        }
        let status = parsed.code.unwrap_or_default();
        if status != 101 {
            return Err(HandshakeError::Status {
                code: status,
                reason: parsed.reason.unwrap_or_default().to_owned(),
            });
        }
        let headers: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let all = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        // §4.1: the client MUST fail the connection unless each of these holds.
        if !all("upgrade").any(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !all("connection").any(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::MissingConnection);
        }
        let accepts: Vec<&[u8]> = all("sec-websocket-accept").collect();
        let expected = self.expected_accept.as_deref().unwrap_or_default();
        if expected.is_empty() || accepts.as_slice() != [expected.as_bytes()] {
            return Err(HandshakeError::InvalidAccept);
        }
        let (protocol, deflate) = self.negotiated(&headers)?;
        let leftover = Bytes::copy_from_slice(self.buf.get(end..).unwrap_or_default());
        self.buf = Vec::new();
        Ok(Some(Response {
            status,
            headers,
            protocol,
            deflate,
            leftover,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::ServerHandshake;

    const KEY: [u8; 16] = *b"the sample nonce";

    fn start(request: &ClientRequest) -> (ClientHandshake, String) {
        let (hs, bytes) = ClientHandshake::with_key(request, &Limits::default(), KEY).unwrap();
        (hs, String::from_utf8(bytes).unwrap())
    }

    const OK: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    #[test]
    fn request_bytes_are_exact() {
        let (_, text) = start(
            &ClientRequest::new("server.example.com", "/chat")
                .protocol("chat")
                .protocol("superchat")
                .origin("http://example.com"),
        );
        assert_eq!(
            text,
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
        );
    }

    #[test]
    fn server_accepts_the_request() {
        let request = ClientRequest::new("h", "/x").protocol("p");
        let (mut client, bytes) = ClientHandshake::new(&request, &Limits::default()).unwrap();
        let accepted = ServerHandshake::new(&Limits::default())
            .receive(&bytes)
            .unwrap()
            .unwrap();
        let response = client
            .receive(&accepted.accept(Some("p")))
            .unwrap()
            .unwrap();
        assert_eq!(response.protocol.as_deref(), Some("p"));
    }

    #[test]
    fn response_byte_at_a_time_with_leftover() {
        let (mut hs, _) = start(&ClientRequest::new("h", "/"));
        let mut wire = format!("{OK}\r\n").into_bytes();
        wire.extend_from_slice(b"\x81\x00");
        let mut result = None;
        for b in &wire {
            if let Some(r) = hs.receive(&[*b]).unwrap() {
                result = Some(r);
                break;
            }
        }
        assert!(result.is_some());
        let (mut hs, _) = start(&ClientRequest::new("h", "/"));
        let response = hs.receive(&wire).unwrap().unwrap();
        assert_eq!(&response.leftover[..], b"\x81\x00");
    }

    fn check(response: &str, request: &ClientRequest) -> Result<Response, HandshakeError> {
        let (mut hs, _) = start(request);
        hs.receive(response.as_bytes()).map(|r| r.unwrap())
    }

    #[test]
    fn bad_responses_are_precise_errors() {
        let plain = ClientRequest::new("h", "/");
        assert_eq!(
            check("HTTP/1.1 403 Forbidden\r\n\r\n", &plain).unwrap_err(),
            HandshakeError::Status {
                code: 403,
                reason: "Forbidden".into()
            }
        );
        assert_eq!(
            check(
                &format!("{}\r\n", OK.replace("Upgrade: websocket\r\n", "")),
                &plain
            )
            .unwrap_err(),
            HandshakeError::MissingUpgrade
        );
        assert_eq!(
            check(
                &format!("{}\r\n", OK.replace("Connection: Upgrade\r\n", "")),
                &plain
            )
            .unwrap_err(),
            HandshakeError::MissingConnection
        );
        assert_eq!(
            check(&format!("{}\r\n", OK.replace("s3pP", "XXXX")), &plain).unwrap_err(),
            HandshakeError::InvalidAccept
        );
        assert_eq!(
            check(&format!("{OK}Sec-WebSocket-Protocol: chat\r\n\r\n"), &plain).unwrap_err(),
            HandshakeError::UnexpectedProtocol("chat".into())
        );
        assert_eq!(
            check(
                &format!("{OK}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
                &plain
            )
            .unwrap_err(),
            HandshakeError::UnexpectedExtension("permessage-deflate".into())
        );
    }

    #[test]
    fn tokens_in_response_are_case_insensitive() {
        let response = format!(
            "{}\r\n",
            OK.replace("Upgrade: websocket", "UPGRADE: WebSocket")
                .replace("Connection: Upgrade", "connection: upgrade")
        );
        assert!(check(&response, &ClientRequest::new("h", "/")).is_ok());
    }

    #[test]
    fn offered_protocol_is_returned() {
        let request = ClientRequest::new("h", "/").protocol("a").protocol("b");
        let response = check(&format!("{OK}Sec-WebSocket-Protocol: b\r\n\r\n"), &request).unwrap();
        assert_eq!(response.protocol.as_deref(), Some("b"));
    }

    #[test]
    fn header_injection_is_refused() {
        let request = ClientRequest::new("h", "/").header("X-A", "1\r\nX-B: 2");
        assert!(matches!(
            ClientHandshake::new(&request, &Limits::default()),
            Err(HandshakeError::InvalidHeader(_))
        ));
        let request = ClientRequest::new("h", "/a b");
        assert!(ClientHandshake::new(&request, &Limits::default()).is_err());
    }

    /// RFC 8441 end to end in the core: the client's headers go through the server's check and
    /// accept, and the server's answer through the client's check; both ends agree.
    #[test]
    fn extended_connect_round_trip() {
        let request = ClientRequest {
            deflate: Some(DeflateConfig::default()),
            ..ClientRequest::new("example.com:443", "/chat?room=1")
                .protocol("v2")
                .protocol("v1")
                .origin("https://example.com")
                .header("X-Trace", "7")
        };
        let (client, headers) =
            ClientHandshake::extended_connect(&request, &Limits::default()).unwrap();
        assert!(headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
        assert!(
            !headers
                .iter()
                .any(|(n, _)| n == "sec-websocket-key" || n == "upgrade")
        );
        let mut server_request = crate::handshake::Request::from_extended_connect(
            "CONNECT",
            Some("websocket"),
            Some("example.com:443"),
            request.path.clone(),
            headers.into_iter().map(|(n, v)| (n, v.into_bytes())),
        )
        .unwrap();
        assert_eq!(server_request.header_str("x-trace"), Some("7"));
        let accepted = server_request.accept_connection(
            &["v1"],
            Some(&DeflateConfig::default()),
            crate::connection::Config::default(),
            Instant::now(),
        );
        assert_eq!(accepted.status, 200);
        let answer = accepted
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect();
        let response = client.extended_connect_response(200, answer).unwrap();
        assert_eq!(response.protocol.as_deref(), Some("v1"));
        assert_eq!(response.deflate, accepted.deflate);
        assert_eq!(response.deflate.is_some(), cfg!(feature = "deflate"));
    }

    #[test]
    fn extended_connect_responses_are_checked() {
        let request = ClientRequest::new("a", "/").protocol("v1");
        let (client, _) = ClientHandshake::extended_connect(&request, &Limits::default()).unwrap();
        assert!(matches!(
            client.extended_connect_response(404, Vec::new()),
            Err(HandshakeError::Status { code: 404, .. })
        ));
        let other = vec![("sec-websocket-protocol".to_owned(), b"v9".to_vec())];
        assert!(matches!(
            client.extended_connect_response(200, other),
            Err(HandshakeError::UnexpectedProtocol(_))
        ));
        let unasked = vec![(
            "sec-websocket-extensions".to_owned(),
            b"permessage-deflate".to_vec(),
        )];
        assert!(matches!(
            client.extended_connect_response(200, unasked),
            Err(HandshakeError::UnexpectedExtension(_))
        ));
        // The HTTP/1.1 reader of the same state refuses any 101: there is no key to check.
        let mut client = client;
        let upgrade =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(matches!(
            client.receive(upgrade),
            Err(HandshakeError::InvalidAccept)
        ));
        // A bad path is refused before anything is sent, as over HTTP/1.1.
        let bad = ClientRequest::new("a", "no-slash");
        assert!(ClientHandshake::extended_connect(&bad, &Limits::default()).is_err());
    }
}
