//! RFC 6455 §4: the opening handshake, both roles, through the public API.
//!
//! The unit tests in `src/handshake/*.rs` cover the RFC example and the main refusals; these
//! add one test per remaining MUST of §4.1 (what the client sends and checks) and §4.2 (what the
//! server checks and answers), plus the hand-over of bytes that follow the handshake.

mod common;

use common::*;
use ferry_proto::handshake::{
    ClientHandshake, ClientRequest, HandshakeError, Request, ServerHandshake, accept_key,
};
use ferry_proto::{Connection, Limits, Message, Role};

/// The nonce of the RFC 6455 §1.3 example: base64 "dGhlIHNhbXBsZSBub25jZQ==".
const KEY: [u8; 16] = *b"the sample nonce";
const KEY_B64: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A request that satisfies every requirement of §4.1; tests break one thing at a time.
const REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The status line and headers of a valid 101 for [`KEY`], without the final empty line.
const RESPONSE_HEAD: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

fn server_receive(request: &str) -> Result<Request, HandshakeError> {
    ServerHandshake::new(&Limits::default())
        .receive(request.as_bytes())
        .map(|r| r.expect("complete request"))
}

fn refusal_status(request: &str) -> u16 {
    server_receive(request)
        .expect_err("refused")
        .refusal()
        .expect("a server error has a refusal")
        .status
}

fn client(request: &ClientRequest) -> ClientHandshake {
    ClientHandshake::with_key(request, &Limits::default(), KEY)
        .expect("valid request")
        .0
}

fn client_receive(response: &str) -> Result<ferry_proto::handshake::Response, HandshakeError> {
    client_receive_for(&ClientRequest::new("server.example.com", "/chat"), response)
}

fn client_receive_for(
    request: &ClientRequest,
    response: &str,
) -> Result<ferry_proto::handshake::Response, HandshakeError> {
    client(request)
        .receive(response.as_bytes())
        .map(|r| r.expect("complete response"))
}

// -------------------------------------------------------------------------------------------
// §4.1: the client's request

#[test]
fn client_request_has_exactly_the_required_fields() {
    let (_, bytes) = ClientHandshake::with_key(
        &ClientRequest::new("server.example.com", "/chat?x=1"),
        &Limits::default(),
        KEY,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
}

fn request_key(request: &[u8]) -> String {
    let text = std::str::from_utf8(request).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a key header");
    line.to_owned()
}

#[test]
fn client_key_is_a_fresh_random_16_byte_nonce() {
    // §4.1: "a nonce consisting of a randomly selected 16-byte value ... base64-encoded".
    let request = ClientRequest::new("h", "/");
    let keys: Vec<String> = (0..4)
        .map(|_| {
            request_key(
                &ClientHandshake::new(&request, &Limits::default())
                    .unwrap()
                    .1,
            )
        })
        .collect();
    for key in &keys {
        // 16 bytes in base64: 22 significant characters, the last holding 2 bits, then "==".
        assert_eq!(key.len(), 24, "{key}");
        assert!(key.ends_with("=="), "{key}");
        assert!(
            key[..22]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        );
        assert!(
            matches!(key.as_bytes()[21], b'A' | b'Q' | b'g' | b'w'),
            "{key}"
        );
    }
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), keys.len(), "keys repeat: {keys:?}");
}

#[test]
fn client_refuses_to_build_a_request_that_would_split() {
    let limits = Limits::default();
    for request in [
        ClientRequest::new("h\r\nX: y", "/"),
        ClientRequest::new("", "/"),
        ClientRequest::new("h", "no-slash"),
        ClientRequest::new("h", "/a\r\nX: y"),
        ClientRequest::new("h", "/").origin("o\r\nX: y"),
        ClientRequest::new("h", "/").protocol("a b"),
        ClientRequest::new("h", "/").protocol("a,b"),
        ClientRequest::new("h", "/").header("Bad Name", "v"),
    ] {
        assert!(
            matches!(
                ClientHandshake::with_key(&request, &limits, KEY),
                Err(HandshakeError::InvalidHeader(_))
            ),
            "{request:?}"
        );
    }
}

// -------------------------------------------------------------------------------------------
// §4.1: the client's checks of the response ("the client MUST _Fail the WebSocket Connection_")

#[test]
fn client_accepts_valid_101() {
    let response = client_receive(&format!("{RESPONSE_HEAD}\r\n")).unwrap();
    assert_eq!(response.status, 101);
    assert_eq!(response.protocol, None);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(ACCEPT.as_bytes())
    );
    assert!(response.leftover.is_empty());
}

#[test]
fn client_rejects_101_with_wrong_accept() {
    // The accept of another key, a corrupted one, the key itself, and the right value with
    // different case: all must fail.
    let other = accept_key(b"AAAAAAAAAAAAAAAAAAAAAA==");
    for wrong in [
        other.as_str(),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOO=",
        KEY_B64,
        "S3PPLMBITXAQ9KYGZZHZRBK+XOO=",
    ] {
        let response = RESPONSE_HEAD.replace(ACCEPT, wrong);
        assert_eq!(
            client_receive(&format!("{response}\r\n")).unwrap_err(),
            HandshakeError::InvalidAccept,
            "{wrong}"
        );
    }
}

#[test]
fn client_rejects_101_without_accept() {
    let response = RESPONSE_HEAD.replace(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"), "");
    assert_eq!(
        client_receive(&format!("{response}\r\n")).unwrap_err(),
        HandshakeError::InvalidAccept
    );
}

#[test]
fn client_rejects_101_with_two_accepts() {
    let response = format!("{RESPONSE_HEAD}Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n");
    assert_eq!(
        client_receive(&response).unwrap_err(),
        HandshakeError::InvalidAccept
    );
}

#[test]
fn client_rejects_non_101_status() {
    for (status, reason) in [
        (200, "OK"),
        (400, "Bad Request"),
        (426, "Upgrade Required"),
        (302, "Found"),
    ] {
        let response = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            client_receive(&response).unwrap_err(),
            HandshakeError::Status {
                code: status,
                reason: reason.into()
            }
        );
    }
}

#[test]
fn client_rejects_101_without_upgrade_websocket() {
    for upgrade in ["", "Upgrade: h2c\r\n", "Upgrade: websockets\r\n"] {
        let response = RESPONSE_HEAD.replace("Upgrade: websocket\r\n", upgrade);
        assert_eq!(
            client_receive(&format!("{response}\r\n")).unwrap_err(),
            HandshakeError::MissingUpgrade,
            "{upgrade:?}"
        );
    }
}

#[test]
fn client_rejects_101_without_connection_upgrade() {
    for connection in ["", "Connection: keep-alive\r\n", "Connection: upgraded\r\n"] {
        let response = RESPONSE_HEAD.replace("Connection: Upgrade\r\n", connection);
        assert_eq!(
            client_receive(&format!("{response}\r\n")).unwrap_err(),
            HandshakeError::MissingConnection,
            "{connection:?}"
        );
    }
}

#[test]
fn client_rejects_subprotocol_it_did_not_offer() {
    // None offered, one chosen.
    assert_eq!(
        client_receive(&format!(
            "{RESPONSE_HEAD}Sec-WebSocket-Protocol: chat\r\n\r\n"
        ))
        .unwrap_err(),
        HandshakeError::UnexpectedProtocol("chat".into())
    );
    // Two offered, another chosen.
    let offered = ClientRequest::new("h", "/").protocol("a").protocol("b");
    assert_eq!(
        client_receive_for(
            &offered,
            &format!("{RESPONSE_HEAD}Sec-WebSocket-Protocol: c\r\n\r\n")
        )
        .unwrap_err(),
        HandshakeError::UnexpectedProtocol("c".into())
    );
    // Two offered, both "chosen": the server must pick one.
    assert_eq!(
        client_receive_for(
            &offered,
            &format!("{RESPONSE_HEAD}Sec-WebSocket-Protocol: a, b\r\n\r\n")
        )
        .unwrap_err(),
        HandshakeError::UnexpectedProtocol("a, b".into())
    );
}

#[test]
fn client_returns_the_offered_subprotocol_chosen() {
    let offered = ClientRequest::new("h", "/").protocol("a").protocol("b");
    let response = client_receive_for(
        &offered,
        &format!("{RESPONSE_HEAD}Sec-WebSocket-Protocol: b\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(response.protocol.as_deref(), Some("b"));
}

#[test]
fn client_rejects_extension_it_did_not_request() {
    assert_eq!(
        client_receive(&format!(
            "{RESPONSE_HEAD}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ))
        .unwrap_err(),
        HandshakeError::UnexpectedExtension("permessage-deflate".into())
    );
}

#[test]
fn client_rejects_oversized_response() {
    let limits = Limits {
        max_handshake_bytes: 200,
        ..Limits::default()
    };
    let (mut hs, _) =
        ClientHandshake::with_key(&ClientRequest::new("h", "/"), &limits, KEY).unwrap();
    let response = format!("{RESPONSE_HEAD}X-Filler: {}\r\n\r\n", "a".repeat(200));
    assert_eq!(
        hs.receive(response.as_bytes()).unwrap_err(),
        HandshakeError::HeadersTooLarge { limit: 200 }
    );
}

#[test]
fn client_response_split_anywhere_gives_the_same_result() {
    let wire = cat(&[
        format!("{RESPONSE_HEAD}Sec-WebSocket-Protocol: chat\r\n\r\n").as_bytes(),
        b"\x81\x02hi",
    ]);
    let request = ClientRequest::new("h", "/").protocol("chat");
    let end = wire.len() - 4;
    for cut in 0..wire.len() {
        let mut hs = client(&request);
        let (a, b) = wire.split_at(cut);
        // The response is complete as soon as its header block is, and only then.
        let (response, leftover_end) = match hs.receive(a).unwrap() {
            Some(response) => (response, cut),
            None => (hs.receive(b).unwrap().expect("complete"), wire.len()),
        };
        assert!(leftover_end >= end, "cut {cut}");
        assert_eq!(cut >= end, leftover_end == cut, "cut {cut}");
        assert_eq!(response.protocol.as_deref(), Some("chat"), "cut {cut}");
        assert_eq!(
            &response.leftover[..],
            &wire[end..leftover_end],
            "cut {cut}"
        );
    }
}

#[test]
fn client_hands_frames_after_the_response_to_the_connection() {
    // A server may send frames right behind its 101, in the same segment.
    let wire = cat(&[
        format!("{RESPONSE_HEAD}\r\n").as_bytes(),
        &to_fin(Role::Client, TEXT, b"first"),
    ]);
    let response = client(&ClientRequest::new("h", "/"))
        .receive(&wire)
        .unwrap()
        .unwrap();
    let mut connection = conn(Role::Client);
    assert_eq!(
        feed(&mut connection, &response.leftover),
        vec![text("first")]
    );
}

// -------------------------------------------------------------------------------------------
// §4.2.1: the server's checks of the request

#[test]
fn server_accepts_valid_request_and_answers_exactly() {
    // §4.2.2: 101, Upgrade: websocket, Connection: Upgrade, and the accept of the key; no
    // subprotocol and no extension unless chosen.
    let request = server_receive(REQUEST).unwrap();
    assert_eq!(request.path(), "/chat");
    assert_eq!(request.host(), Some("server.example.com"));
    assert_eq!(
        String::from_utf8(request.accept(None)).unwrap(),
        format!("{RESPONSE_HEAD}\r\n")
    );
}

#[test]
fn server_refuses_missing_version() {
    // §4.2.1 item 6 and §4.4: the version MUST be 13; the refusal names the version spoken.
    let request = REQUEST.replace("Sec-WebSocket-Version: 13\r\n", "");
    let err = server_receive(&request).unwrap_err();
    assert_eq!(err, HandshakeError::UnsupportedVersion);
    let refusal = err.refusal().unwrap();
    assert_eq!(refusal.status, 426);
    assert!(
        refusal
            .headers
            .contains(&("Sec-WebSocket-Version", "13".to_owned()))
    );
    let bytes = String::from_utf8(refusal.to_bytes()).unwrap();
    assert!(
        bytes.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{bytes}"
    );
    assert!(
        bytes.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{bytes}"
    );
}

#[test]
fn server_refuses_other_versions() {
    for version in ["8", "7", "12", "14", "13, 8", "thirteen"] {
        let request = REQUEST.replace("Version: 13", &format!("Version: {version}"));
        assert_eq!(
            server_receive(&request).unwrap_err(),
            HandshakeError::UnsupportedVersion,
            "{version}"
        );
    }
}

#[test]
fn server_refuses_missing_or_bad_key() {
    let missing = REQUEST.replace(&format!("Sec-WebSocket-Key: {KEY_B64}\r\n"), "");
    let not_16_bytes = REQUEST.replace(KEY_B64, "c2hvcnQ="); // "short"
    let seventeen = REQUEST.replace(KEY_B64, "dGhlIHNhbXBsZSBub25jZSE="); // 17 bytes
    let not_base64 = REQUEST.replace(KEY_B64, "!!!!!!!!!!!!!!!!!!!!!!==");
    for request in [missing, not_16_bytes, seventeen, not_base64] {
        let err = server_receive(&request).unwrap_err();
        assert_eq!(err, HandshakeError::InvalidKey);
        assert_eq!(err.refusal().unwrap().status, 400);
    }
}

#[test]
fn server_refuses_method_other_than_get() {
    for method in ["POST", "PUT", "HEAD", "get"] {
        let request = REQUEST.replacen("GET", method, 1);
        let err = server_receive(&request).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotAllowed, "{method}");
        let refusal = err.refusal().unwrap();
        assert_eq!(refusal.status, 405);
        assert!(refusal.headers.contains(&("Allow", "GET".to_owned())));
    }
}

#[test]
fn server_refuses_http_1_0() {
    assert_eq!(
        server_receive(&REQUEST.replace("HTTP/1.1", "HTTP/1.0")).unwrap_err(),
        HandshakeError::HttpVersion
    );
    assert_eq!(
        refusal_status(&REQUEST.replace("HTTP/1.1", "HTTP/1.0")),
        400
    );
}

#[test]
fn server_refuses_missing_host() {
    assert_eq!(
        server_receive(&REQUEST.replace("Host: server.example.com\r\n", "")).unwrap_err(),
        HandshakeError::MissingHost
    );
    assert_eq!(
        refusal_status(&REQUEST.replace("Host: server.example.com\r\n", "")),
        400
    );
}

#[test]
fn server_refuses_missing_upgrade_websocket_with_426() {
    for upgrade in ["", "Upgrade: h2c\r\n"] {
        let request = REQUEST.replace("Upgrade: websocket\r\n", upgrade);
        let err = server_receive(&request).unwrap_err();
        assert_eq!(err, HandshakeError::NotWebSocket, "{upgrade:?}");
        let refusal = err.refusal().unwrap();
        assert_eq!(refusal.status, 426);
        assert!(
            refusal
                .headers
                .contains(&("Upgrade", "websocket".to_owned()))
        );
    }
}

#[test]
fn server_refuses_missing_connection_upgrade() {
    for connection in ["", "Connection: keep-alive\r\n", "Connection: close\r\n"] {
        let request = REQUEST.replace("Connection: Upgrade\r\n", connection);
        assert_eq!(
            server_receive(&request).unwrap_err(),
            HandshakeError::MissingConnectionUpgrade,
            "{connection:?}"
        );
    }
}

#[test]
fn server_finds_upgrade_token_among_several_connection_headers() {
    let request = REQUEST.replace(
        "Connection: Upgrade\r\n",
        "Connection: keep-alive\r\nConnection: Upgrade\r\n",
    );
    assert!(server_receive(&request).is_ok());
}

#[test]
fn server_refuses_malformed_request_with_400() {
    for request in [
        "GET /chat HTTP/1.1\r\nHost server\r\n\r\n",
        "GET\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n", // a TLS ClientHello
    ] {
        let err = server_receive(request).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Malformed(_)),
            "{request:?}: {err:?}"
        );
        assert_eq!(err.refusal().unwrap().status, 400);
    }
}

#[test]
fn server_refuses_oversized_request_with_431_before_it_ends() {
    let limits = Limits {
        max_handshake_bytes: 128,
        ..Limits::default()
    };
    let mut hs = ServerHandshake::new(&limits);
    // No end of header block in sight: refuse as soon as the limit is passed.
    assert!(hs.receive(&[b'a'; 128]).unwrap().is_none());
    let err = hs.receive(b"a").unwrap_err();
    assert_eq!(err, HandshakeError::HeadersTooLarge { limit: 128 });
    assert_eq!(err.refusal().unwrap().status, 431);
}

#[test]
fn server_refuses_too_many_headers_with_431() {
    let limits = Limits {
        max_headers: 5,
        ..Limits::default()
    };
    let request = REQUEST.replace("\r\n\r\n", "\r\nX-A: 1\r\n\r\n"); // 6 headers
    let err = ServerHandshake::new(&limits)
        .receive(request.as_bytes())
        .unwrap_err();
    assert_eq!(err, HandshakeError::TooManyHeaders { limit: 5 });
    assert_eq!(err.refusal().unwrap().status, 431);
}

#[test]
fn server_refusal_does_not_echo_the_request() {
    let request = REQUEST.replace("Version: 13", "Version: <script>alert(1)</script>");
    let refusal = server_receive(&request).unwrap_err().refusal().unwrap();
    let bytes = String::from_utf8(refusal.to_bytes()).unwrap();
    assert!(!bytes.contains("script"), "{bytes}");
    assert!(bytes.contains("\r\nConnection: close\r\n"));
}

#[test]
fn server_chooses_only_an_offered_subprotocol() {
    // §4.2.2: the server MUST NOT answer with a subprotocol the client did not offer.
    let offered = REQUEST.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n",
    );
    let request = server_receive(&offered).unwrap();
    assert_eq!(request.protocols(), ["chat", "superchat"]);
    assert_eq!(
        request.choose_protocol(&["mqtt", "superchat"]),
        Some("superchat")
    );
    assert_eq!(request.choose_protocol(&["mqtt"]), None);
    assert_eq!(
        String::from_utf8(request.accept(Some("superchat"))).unwrap(),
        format!("{RESPONSE_HEAD}Sec-WebSocket-Protocol: superchat\r\n\r\n")
    );
    assert_eq!(
        String::from_utf8(request.accept(Some("mqtt"))).unwrap(),
        format!("{RESPONSE_HEAD}\r\n")
    );
    // And when the client offered none, none.
    let plain = server_receive(REQUEST).unwrap();
    assert_eq!(
        String::from_utf8(plain.accept(Some("chat"))).unwrap(),
        format!("{RESPONSE_HEAD}\r\n")
    );
}

#[test]
fn server_declines_extensions_it_does_not_implement() {
    let offered = REQUEST.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    let request = server_receive(&offered).unwrap();
    let offers = request.extension_offers();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].name, "permessage-deflate");
    assert_eq!(
        offers[0].params,
        [("client_max_window_bits".to_owned(), None)]
    );
    let response = String::from_utf8(request.accept(None)).unwrap();
    assert!(
        !response.to_ascii_lowercase().contains("extensions"),
        "{response}"
    );
}

#[test]
fn server_request_split_anywhere_gives_the_same_result() {
    let mut wire = REQUEST.as_bytes().to_vec();
    wire.extend_from_slice(&to_fin(Role::Server, TEXT, b"hi"));
    let end = REQUEST.len();
    for cut in 0..wire.len() {
        let mut hs = ServerHandshake::new(&Limits::default());
        let (a, b) = wire.split_at(cut);
        // The request is complete as soon as its header block is, and only then.
        let (mut request, rest) = match hs.receive(a).unwrap() {
            Some(request) => (request, b),
            None => (hs.receive(b).unwrap().expect("complete"), &[][..]),
        };
        assert_eq!(
            cut >= end,
            !rest.is_empty() || cut == wire.len(),
            "cut {cut}"
        );
        assert_eq!(request.path(), "/chat", "cut {cut}");
        // Leftover plus whatever the handshake was not fed is the WebSocket stream.
        let stream = cat(&[&request.take_leftover(), rest]);
        assert_eq!(stream, &wire[end..], "cut {cut}");
        let mut connection = conn(Role::Server);
        assert_eq!(feed(&mut connection, &stream), vec![text("hi")]);
    }
}

// -------------------------------------------------------------------------------------------
// Both roles together

#[test]
fn full_handshake_then_messages_both_ways() {
    let limits = Limits::default();
    let (mut client_hs, request) = ClientHandshake::new(
        &ClientRequest::new("localhost:9001", "/echo").protocol("chat"),
        &limits,
    )
    .unwrap();
    let mut request = ServerHandshake::new(&limits)
        .receive(&request)
        .unwrap()
        .unwrap();
    let protocol = request.choose_protocol(&["chat"]);
    assert!(request.take_leftover().is_empty());
    let response = client_hs
        .receive(&request.accept(protocol))
        .unwrap()
        .unwrap();
    assert_eq!(response.protocol.as_deref(), Some("chat"));

    let mut client: Connection = conn(Role::Client);
    let mut server: Connection = conn(Role::Server);
    client.send(Message::text("ping?")).unwrap();
    assert_eq!(feed(&mut server, &sent(&mut client)), vec![text("ping?")]);
    server.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(
        feed(&mut client, &sent(&mut server)),
        vec![binary(&[1, 2, 3])]
    );
}
