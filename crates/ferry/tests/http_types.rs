//! The `http` crate's types at ferry's edges: a client connects with an `http::Request` or
//! `http::Uri`, and a server checks the request as `http::request::Parts`.

use ferry::{Config, Error, Incoming, Message, Refusal};
use tokio::net::{TcpListener, TcpStream};

/// A server that accepts only requests with `Authorization: Bearer ok`, answering each
/// message with the request's path and a header it saw.
async fn server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let config = Config {
                    protocols: vec!["feed.v2".into()],
                    ..Config::default()
                };
                let accepted = ferry::accept_with_parts(stream, &config, |parts| {
                    match parts.headers.get(http::header::AUTHORIZATION) {
                        Some(value) if value == "Bearer ok" => Ok(()),
                        _ => Err(Refusal::new(401, "a bearer token is needed")),
                    }
                })
                .await;
                let Ok((sender, mut receiver, parts)) = accepted else {
                    return;
                };
                assert_eq!(parts.method, http::Method::GET);
                assert_eq!(parts.version, http::Version::HTTP_11);
                let origin = parts
                    .headers
                    .get(http::header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let reply = format!("{} {origin}", parts.uri);
                while let Some(Incoming::Message(_)) = receiver.recv().await {
                    sender.send(Message::text(reply.clone())).await.unwrap();
                }
            });
        }
    });
    addr
}

async fn first_reply(receiver: &mut ferry::Receiver) -> String {
    match receiver.recv().await {
        Some(Incoming::Message(message)) => message.as_text().unwrap().to_owned(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_request_carries_its_headers_to_a_parts_check() {
    let addr = server().await;
    let request = http::Request::get(format!("ws://{addr}/feed?since=7"))
        .header("Authorization", "Bearer ok")
        .header("Origin", "https://app.example")
        .header("Sec-WebSocket-Protocol", "feed.v2")
        .body(())
        .unwrap();
    let (sender, mut receiver, response) = ferry::connect(request).await.unwrap();
    assert_eq!(response.protocol.as_deref(), Some("feed.v2"));
    sender.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        first_reply(&mut receiver).await,
        "/feed?since=7 https://app.example"
    );
}

#[tokio::test]
async fn the_parts_check_refuses_with_its_status() {
    let addr = server().await;
    let uri: http::Uri = format!("ws://{addr}/feed").parse().unwrap();
    let err = ferry::connect(uri).await.unwrap_err();
    match err {
        Error::Handshake(err) => assert!(err.to_string().contains("401"), "{err}"),
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_that_is_not_a_get_never_leaves_the_client() {
    let request = http::Request::post("ws://127.0.0.1:1/").body(()).unwrap();
    let err = ferry::connect(request).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
}

#[tokio::test]
async fn connect_stream_takes_a_request_too() {
    let addr = server().await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = http::Request::get(format!("ws://{addr}/over-a-stream"))
        .header("Authorization", "Bearer ok")
        .body(())
        .unwrap();
    let (sender, mut receiver, _) = ferry::connect_stream(stream, request, &Config::default())
        .await
        .unwrap();
    sender.send(Message::text("hi")).await.unwrap();
    assert_eq!(first_reply(&mut receiver).await, "/over-a-stream -");
}
