//! Signed tokens and per-topic permissions against the real binary (docs/auth.md): every
//! refusal with its status or code and reason, forgery attempts, expiry and refresh, topic
//! rules, rate limits, and that a token never shows in logs, metrics or errors.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;
use common::control::{Ctl, http};
use ferry::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const SECRET: &str = "a-test-secret-of-more-than-32-bytes-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A file removed when the test ends.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ferry-auth-{name}-{}-{n}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        claims,
    )
}

/// Claims for `sub` valid for an hour, with these permissions.
fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "iat": now(),
           "ferry": {"subscribe": subscribe, "publish": publish}})
}

/// `ferry serve` with the HMAC secret (its file kept alive by the returned handle).
fn protected(extra: &[&str]) -> (Server, TempFile) {
    let secret = TempFile::new("secret", &format!("{SECRET}\n"));
    let mut flags = vec!["--jwt-hmac-secret-file", secret.path()];
    flags.extend_from_slice(extra);
    (Server::serve(&flags), secret)
}

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// A WebSocket handshake to `path` with `token` as a bearer header; the status and the body.
async fn handshake(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = UPGRADE.to_vec();
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    let (status, body) = head_and_body(&server.addr, path, &headers).await;
    if let Some(token) = token {
        assert!(!body.contains(token), "the body echoes the token: {body}");
    }
    (status, body)
}

/// A GET that may be upgraded: reads the head, and the body unless the answer is 101.
async fn head_and_body(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                if head.starts_with("HTTP/1.1 101") {
                    break;
                }
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A handshake to /ws/echo without a token; the whole answer, lowercased.
async fn raw_handshake(server: &Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let request = "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).to_lowercase()
}

async fn metrics(server: &Server) -> String {
    http(&server.addr, "GET", "/metrics", &[], b"").await.1
}

#[tokio::test]
async fn no_token_gets_401_with_www_authenticate() {
    let (server, _secret) = protected(&[]);
    for path in ["/ws/echo", "/ws/topics/chat.a", "/ws/control"] {
        let (status, body) = handshake(&server, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("a token is needed"), "{body}");
    }
    let answer = raw_handshake(&server).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("www-authenticate: bearer"), "{answer}");
    assert!(
        metrics(&server)
            .await
            .contains(r#"ferry_auth_failures_total{reason="missing"}"#)
    );
}

/// Claims that pass on the server of [`refused_with`] (audience and issuer set), changed by
/// `extra`'s fields.
fn good(extra: Value) -> Value {
    let mut c = claims("alice", &["*"], &["*"]);
    c["aud"] = json!("chat-app");
    c["iss"] = json!("backend");
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A server with an audience and an issuer refuses `token` before the upgrade with 401, a body
/// saying `says`, and counts it under `reason`.
async fn refused_with(token: String, reason: &str, says: &str) {
    let checks = ["--jwt-audience", "chat-app", "--jwt-issuer", "backend"];
    let (server, _secret) = protected(&checks);
    let (status, body) = handshake(&server, "/ws/echo", Some(&hs256(&good(json!({}))))).await;
    assert_eq!(status, 101, "the unchanged claims pass: {body}");
    let (status, body) = handshake(&server, "/ws/echo", Some(&token)).await;
    assert_eq!(status, 401, "{reason}: {body}");
    assert!(body.contains(says), "{reason}: {body}");
    let text = metrics(&server).await;
    assert!(
        text.contains(&format!(
            r#"ferry_auth_failures_total{{reason="{reason}"}} 1"#
        )),
        "{reason}: {text}"
    );
}

#[tokio::test]
async fn refused_not_a_jwt() {
    refused_with("not-a-jwt".into(), "malformed", "the token is not a JWT").await;
}

#[tokio::test]
async fn refused_signed_with_another_secret() {
    let other = EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes!!!!").unwrap();
    let token = sign(Algorithm::HS256, &other, &good(json!({})));
    refused_with(token, "signature", "signature does not verify").await;
}

#[tokio::test]
async fn refused_expired() {
    let token = hs256(&good(json!({"exp": now() - 5})));
    refused_with(token, "expired", "has expired").await;
}

#[tokio::test]
async fn refused_before_nbf() {
    let token = hs256(&good(json!({"nbf": now() + 600})));
    refused_with(token, "not_yet_valid", "not valid yet").await;
}

#[tokio::test]
async fn refused_issued_in_the_future() {
    let token = hs256(&good(json!({"iat": now() + 600})));
    refused_with(token, "not_yet_valid", "not valid yet").await;
}

#[tokio::test]
async fn refused_for_another_audience() {
    let token = hs256(&good(json!({"aud": "another-app"})));
    refused_with(token, "audience", "another audience").await;
}

#[tokio::test]
async fn refused_from_another_issuer() {
    let token = hs256(&good(json!({"iss": "someone-else"})));
    refused_with(token, "issuer", "another issuer").await;
}

#[tokio::test]
async fn refused_without_exp() {
    let token = hs256(&json!({"sub": "alice", "aud": "chat-app", "iss": "backend"}));
    refused_with(token, "claims", "exp is required").await;
}

#[tokio::test]
async fn refused_with_a_bad_pattern() {
    let token = hs256(&good(json!({"ferry": {"subscribe": ["bad pattern"]}})));
    refused_with(token, "claims", "claims are not valid").await;
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let rsa_public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let secret = TempFile::new("secret", SECRET);
    let server = Server::serve(&[
        "--jwt-hmac-secret-file",
        secret.path(),
        "--jwt-public-key",
        &fixture("rsa-public.pem"),
    ]);
    let c = claims("mallory", &["*"], &["*"]);
    // alg: none, with an empty signature.
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    let (status, body) = handshake(&server, "/ws/echo", Some(&none)).await;
    assert_eq!(
        (status, body.trim()),
        (401, "the token's algorithm is not accepted here")
    );
    // Key confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&rsa_public).unwrap(),
        &c,
    );
    let (status, body) = handshake(&server, "/ws/echo", Some(&confused)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature does not verify"), "{body}");
    // A real RS256 token passes; cut short, it does not.
    let rsa_private = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let real = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
        &c,
    );
    assert_eq!(handshake(&server, "/ws/echo", Some(&real)).await.0, 101);
    let truncated = &real[..real.len() - 10];
    let (status, body) = handshake(&server, "/ws/echo", Some(truncated)).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("signature") || body.contains("not a JWT"),
        "{body}"
    );
    // An ES256 token where only RSA and HMAC keys are configured: no key for it.
    let ec_private = std::fs::read(fixture("ec-private.pem")).unwrap();
    let es = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec_private).unwrap(),
        &c,
    );
    let (status, body) = handshake(&server, "/ws/echo", Some(&es)).await;
    assert_eq!(
        (status, body.trim()),
        (401, "the token's algorithm is not accepted here")
    );
    // The same confusion against a server with only the public key: no HMAC key at all.
    let only_rsa = Server::serve(&["--jwt-public-key", &fixture("rsa-public.pem")]);
    let (status, body) = handshake(&only_rsa, "/ws/echo", Some(&confused)).await;
    assert_eq!(
        (status, body.trim()),
        (401, "the token's algorithm is not accepted here")
    );
}

#[tokio::test]
async fn ec_and_ed25519_public_keys_verify_their_tokens() {
    let server = Server::serve(&[
        "--jwt-public-key",
        &fixture("ec-public.pem"),
        "--jwt-public-key",
        &fixture("ed-public.pem"),
    ]);
    let c = claims("carol", &["*"], &[]);
    let ec = std::fs::read(fixture("ec-private.pem")).unwrap();
    let ed = std::fs::read(fixture("ed-private.pem")).unwrap();
    let es256 = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec).unwrap(),
        &c,
    );
    let eddsa = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(&ed).unwrap(),
        &c,
    );
    assert_eq!(
        handshake(&server, "/ws/topics/x", Some(&es256)).await.0,
        101
    );
    assert_eq!(
        handshake(&server, "/ws/topics/x", Some(&eddsa)).await.0,
        101
    );
}

#[tokio::test]
async fn two_secrets_are_accepted_during_a_rollover() {
    let old = TempFile::new("old", SECRET);
    let new_secret = "the-new-secret-of-more-than-32-bytes-abcdefgh";
    let new = TempFile::new("new", new_secret);
    let server = Server::serve(&[
        "--jwt-hmac-secret-file",
        old.path(),
        "--jwt-hmac-secret-file",
        new.path(),
    ]);
    let c = claims("dave", &["*"], &[]);
    let by_new = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(new_secret.as_bytes()).unwrap(),
        &c,
    );
    assert_eq!(
        handshake(&server, "/ws/echo", Some(&hs256(&c))).await.0,
        101
    );
    assert_eq!(handshake(&server, "/ws/echo", Some(&by_new)).await.0, 101);
}

#[tokio::test]
async fn a_token_covers_only_its_topics_and_bridges() {
    let (server, _secret) = protected(&["--bridge", "db=tcp://127.0.0.1:9"]);
    let reader = hs256(&claims("bob", &["chat.*"], &[]));
    assert_eq!(
        handshake(&server, "/ws/topics/chat.lobby", Some(&reader))
            .await
            .0,
        101
    );
    let (status, body) = handshake(&server, "/ws/topics/secret.x", Some(&reader)).await;
    assert_eq!(
        (status, body.trim()),
        (403, "this token does not allow subscribing to this topic")
    );
    let (status, body) = handshake(&server, "/ws/bridge/db", Some(&reader)).await;
    assert_eq!(
        (status, body.trim()),
        (403, "this token does not allow this bridge")
    );
    let mut bridge_claims = claims("bob", &[], &[]);
    bridge_claims["ferry"]["bridges"] = json!(["db"]);
    let opener = hs256(&bridge_claims);
    assert_eq!(
        handshake(&server, "/ws/bridge/db", Some(&opener)).await.0,
        101
    );
    // A read-only token on a topic route: messages it sends close it with 1008.
    let url = format!("ws://{}/ws/topics/chat.lobby?token={reader}", server.addr);
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    sender.send("may I?").await.unwrap();
    let close = closed(&mut receiver).await;
    assert_eq!(close.code.as_u16(), 1008);
    assert_eq!(
        &*close.reason,
        "this connection may not publish to this topic"
    );
    let text = metrics(&server).await;
    assert!(
        text.contains(r#"ferry_forbidden_total{op="subscribe"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferry_forbidden_total{op="bridge"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferry_forbidden_total{op="publish"} 1"#),
        "{text}"
    );
}

async fn closed(receiver: &mut ferry::Receiver) -> ferry::CloseInfo {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("closed in time")
        {
            Some(Incoming::Closed(info)) => return info,
            Some(_) => {}
            None => panic!("ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn control_requests_outside_the_token_are_forbidden_and_change_nothing() {
    let (server, _secret) = protected(&[]);
    let token = hs256(&claims("erin", &["chat.*"], &["chat.lobby"]));
    let mut c = Ctl::connect_with_token(&server.addr, &token).await;
    let refused = c
        .request(json!({"op": "subscribe", "topics": ["chat.a", "admin.log"]}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("topics[1]"));
    let ack = c
        .request(json!({"op": "unsubscribe", "topics": ["none"]}))
        .await;
    assert_eq!(
        ack["subscribed"],
        json!([]),
        "the refused request subscribed nothing"
    );
    c.subscribe(&["chat.a"]).await;
    let refused = c.publish("chat.a", "x").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert_eq!(c.publish("chat.lobby", "hello").await["type"], "ack");
}

#[tokio::test]
async fn an_expired_token_closes_its_connection_and_a_refresh_extends_it() {
    let (server, _secret) = protected(&[]);
    let short = |sub: &str, subscribe: &[&str], secs: u64| {
        let mut c = claims(sub, subscribe, &[]);
        c["exp"] = json!(now() + secs);
        hs256(&c)
    };
    // Expiry: closed with 4001 once exp passes.
    let mut c = Ctl::connect_with_token(&server.addr, &short("frank", &["*"], 2)).await;
    let close = c.closed().await.expect("a close frame");
    assert_eq!(close.code.as_u16(), 4001);
    assert_eq!(&*close.reason, "token expired");
    // Refresh before it: the connection outlives the first token.
    let mut c = Ctl::connect_with_token(&server.addr, &short("frank", &["a.*", "b.*"], 2)).await;
    c.subscribe(&["a.x", "b.y"]).await;
    let ack = c
        .request(json!({"op": "refresh", "token": short("frank", &["a.*"], 3600)}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["unsubscribed"], json!(["b.y"]), "narrowed: b.* ended");
    assert_eq!(ack["subscribed"], json!(["a.x"]));
    assert!(ack["expires"].as_u64().unwrap() > now() + 3000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        c.publish("a.x", "still here").await["code"],
        "forbidden",
        "no publish right"
    );
    // A token for someone else, or a bad one, changes nothing.
    let other = c
        .request(json!({"op": "refresh", "token": short("grace", &["*"], 3600)}))
        .await;
    assert_eq!(other["code"], "forbidden", "{other}");
    let bad = c.request(json!({"op": "refresh", "token": "x.y.z"})).await;
    assert_eq!(bad["code"], "bad_token", "{bad}");
    let ack = c
        .request(json!({"op": "unsubscribe", "topics": ["none"]}))
        .await;
    assert_eq!(ack["subscribed"], json!(["a.x"]));
}

#[tokio::test]
async fn an_expired_token_closes_an_echo_connection_with_4001() {
    // The echo route runs on one task of its own (no handles): the expiry reaches it there.
    expiry_closes_after_an_echo("/ws/echo", claims("erin", &[], &[])).await;
}

#[tokio::test]
async fn an_expired_token_closes_a_topic_connection_with_4001() {
    // The topic route's task watches the expiry beside the connection (no timer task). The
    // message comes back as the topic's subscriber hears what it published.
    expiry_closes_after_an_echo("/ws/topics/news", claims("erin", &["news"], &["news"])).await;
}

#[tokio::test]
async fn an_expired_token_closes_a_bridge_connection_with_4001() {
    // The relay watches the expiry beside its two directions (no timer task). The message
    // comes back from a TCP echo target.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = format!("db=tcp://{}", target.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = target.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let mut claims = claims("erin", &[], &[]);
    claims["ferry"]["bridges"] = json!(["db"]);
    let back = ferry::Message::binary(&b"before"[..]);
    expiry_closes_after_an_echo_on("/ws/bridge/db", claims, &["--bridge", &bridge], back).await;
}

/// Connects to `path` with a token of `claims` that expires in two seconds: a message sent
/// comes back, then the server closes with 4001 and counts that close.
async fn expiry_closes_after_an_echo(path: &str, claims: Value) {
    let back = ferry::Message::text("before");
    expiry_closes_after_an_echo_on(path, claims, &[], back).await;
}

/// As `expiry_closes_after_an_echo`, on a server started with `extra` flags, the message
/// coming back as `back` (a bridge carries bytes: binary).
async fn expiry_closes_after_an_echo_on(
    path: &str,
    mut claims: Value,
    extra: &[&str],
    back: ferry::Message,
) {
    let (server, _secret) = protected(extra);
    claims["exp"] = json!(now() + 2);
    let url = format!("ws://{}{path}?token={}", server.addr, hs256(&claims));
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    sender.send("before").await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(back));
    let close = closed(&mut receiver).await;
    assert_eq!(close.code.as_u16(), 4001);
    assert_eq!(&*close.reason, "token expired");
    // The server counts the close once its closing handshake is over, which can be just
    // after the client has seen the close frame.
    let counted = r#"ferry_closes_total{code="4001",initiator="server"} 1"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&server).await;
        if text.contains(counted) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn topic_rules_open_some_topics_to_anyone_and_keep_others_for_the_api() {
    let config = TempFile::new(
        "rules.toml",
        r#"
[[topics.rule]]
pattern = "public.*"
subscribe = "anyone"
publish = "api"

[[topics.rule]]
pattern = "lobby"
subscribe = "anyone"
publish = "anyone"
"#,
    );
    let keys = TempFile::new("keys", "api-key-0123456789abcdef\n");
    let (server, _secret) = protected(&["--config", config.path(), "--api-key-file", keys.path()]);
    // No token: the public topic and the lobby, not the rest.
    assert_eq!(
        handshake(&server, "/ws/topics/public.news", None).await.0,
        101
    );
    assert_eq!(handshake(&server, "/ws/topics/private", None).await.0, 401);
    let mut anon = Ctl::connect(&server.addr).await;
    anon.subscribe(&["public.news"]).await;
    assert_eq!(anon.publish("public.news", "x").await["code"], "forbidden");
    assert_eq!(anon.publish("lobby", "hi").await["type"], "ack");
    let refused = anon
        .request(json!({"op": "subscribe", "topics": ["private"]}))
        .await;
    assert_eq!(refused["code"], "forbidden");
    // The backend publishes through the API.
    let (status, _) = http(
        &server.addr,
        "POST",
        "/api/publish/public.news",
        &[("Authorization", "Bearer api-key-0123456789abcdef")],
        b"breaking",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(anon.take(1).await[0].topic, "public.news");
    // --print-config shows the rules.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", config.path(), "--print-config"])
        .args(["--jwt-hmac-secret-file", _secret.path()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("[[topics.rule]]"), "{printed}");
    assert!(printed.contains(r#"pattern = "public.*""#), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");
}

#[test]
fn bad_rules_and_keys_are_one_line_errors_naming_them() {
    let cases: Vec<(String, &str)> = vec![
        (
            "[[topics.rule]]\npattern = \"a b\"\n".into(),
            "topics.rule[0].pattern",
        ),
        (
            "[[topics.rule]]\npattern = \"x\"\nsubscribe = \"everyone\"\n".into(),
            "everyone",
        ),
        (
            "[[topics.rule]]\npattern = \"x\"\nsubscribe = \"token\"\n".into(),
            "--jwt-hmac-secret-file",
        ),
        (
            "[[topics.rule]]\npattern = \"x\"\nwho = \"token\"\n".into(),
            "who",
        ),
    ];
    for (text, names) in cases {
        let config = TempFile::new("bad.toml", &text);
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--config",
                config.path(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(names), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let short = TempFile::new("short", "too-short\n");
    for (flag, path) in [
        ("--jwt-hmac-secret-file", short.path().to_owned()),
        ("--jwt-public-key", short.path().to_owned()),
        ("--jwt-hmac-secret-file", "/nonexistent".to_owned()),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["serve", "--listen", "127.0.0.1:0", flag, &path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

#[tokio::test]
async fn rate_limits_answer_429_and_rate_limited() {
    let (server, _secret) = protected(&["--handshake-rate", "2/s", "--publish-rate", "3/s"]);
    let token = hs256(&claims("henry", &["*"], &["*"]));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(handshake(&server, "/ws/topics/t", Some(&token)).await.0);
    }
    assert_eq!(statuses[..2], [101, 101]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let headers_and_body = raw_handshake(&server).await;
    assert!(
        headers_and_body.starts_with("http/1.1 429"),
        "{headers_and_body}"
    );
    assert!(
        headers_and_body.contains("retry-after: 1"),
        "{headers_and_body}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Ctl::connect_with_token(&server.addr, &token).await;
    let codes: Vec<Value> = {
        let mut codes = Vec::new();
        for i in 0..5 {
            codes.push(c.publish("t", &format!("m{i}")).await["code"].clone());
        }
        codes
    };
    assert_eq!(
        codes[..3],
        [Value::Null, Value::Null, Value::Null],
        "{codes:?}"
    );
    assert_eq!(codes[3], "rate_limited", "{codes:?}");
    let text = metrics(&server).await;
    assert!(
        text.contains(r#"ferry_rate_limited_total{what="handshake"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferry_rate_limited_total{what="publish"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn tokens_never_reach_logs_metrics_or_error_bodies() {
    let secret = TempFile::new("secret", SECRET);
    let server = Server::start_with_env(
        "serve",
        "127.0.0.1:0",
        "http://",
        &["--jwt-hmac-secret-file", secret.path()],
        &[("RUST_LOG", "debug")],
    );
    let token = hs256(&claims("ivan-the-user", &["t"], &[]));
    let expired = {
        let mut c = claims("ivan-the-user", &["t"], &[]);
        c["exp"] = json!(now() - 100);
        hs256(&c)
    };
    let url = format!("ws://{}/ws/topics/t?token={token}", server.addr);
    let (sender, _receiver, _) = ferry::connect(&url).await.unwrap();
    let (status, body) = handshake(&server, &format!("/ws/topics/t?token={expired}"), None).await;
    assert_eq!(status, 401);
    assert!(!body.contains(&expired));
    let text = metrics(&server).await;
    assert!(!text.contains(&token[..20]), "{text}");
    drop(sender);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(logs.contains("ivan-the-user"), "the sub is logged: {logs}");
    assert!(logs.contains("WebSocket request"), "{logs}");
    for t in [&token, &expired] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token in the logs: {logs}");
    }
}

#[test]
fn ferry_token_signs_what_ferry_serve_accepts() {
    let secret = TempFile::new("secret", &format!("{SECRET}\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["token", "--secret-file", secret.path(), "--sub", "judy"])
        .args([
            "--subscribe",
            "chat.*",
            "--publish",
            "chat.lobby",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "judy");
    assert_eq!(data.claims["ferry"]["subscribe"], json!(["chat.*"]));
    let exp = data.claims["exp"].as_u64().unwrap();
    assert!((now() + 590..=now() + 601).contains(&exp), "{exp}");
    let bad = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "token",
            "--secret-file",
            secret.path(),
            "--sub",
            "x",
            "--subscribe",
            "a b",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--subscribe"));
}

#[test]
fn ferry_connect_sends_its_token() {
    let (server, secret) = protected(&[]);
    let token = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "token",
            "--secret-file",
            secret.path(),
            "--sub",
            "kim",
            "--subscribe",
            "*",
        ])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let url = format!("ws://{}/ws/echo", server.addr);
    let run = |token: Option<&str>| {
        use std::io::Write;
        use std::process::Stdio;
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.args(["connect", "--linger", "300ms", &url]);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let out = run(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn a_topic_connection_over_the_publish_rate_is_closed() {
    let (server, _secret) = protected(&["--publish-rate", "3/s"]);
    let token = hs256(&claims("lena", &["t"], &["t"]));
    let url = format!("ws://{}/ws/topics/t?token={token}", server.addr);
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    for i in 0..6 {
        if sender.send(format!("m{i}")).await.is_err() {
            break;
        }
    }
    let close = closed(&mut receiver).await;
    assert_eq!(close.code.as_u16(), 1008);
    assert_eq!(&*close.reason, "publish rate exceeded");
}
