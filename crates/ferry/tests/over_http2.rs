//! The same conversations over the two transports a WebSocket can ride: an HTTP/1.1 connection
//! of its own (RFC 6455) and a stream of an HTTP/2 connection (RFC 8441). The server is hyper
//! (HTTP/1.1 and HTTP/2 on one port, as `ferry serve` and axum run) with `ferry::upgrade`; the
//! client is `ferry::connect_with` or `ferry::http2::Http2Connection`. Every check runs on
//! both transports, each against the server's two ways of holding a WebSocket (handles with a
//! connection task; a single-task `WebSocket`), so a difference between them fails here:
//! message sizes around the length encodings, fragmentation, compression, closing, limits, and
//! protocol violations written as raw bytes.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::masked_frame as frame;
use ferry::http2::Http2Connection;
use ferry::upgrade::{Upgrade, refusal_response};
use ferry::{CloseCode, Config, Incoming, Limits, Message};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a test reaches the echo: the way, and how the server holds the WebSocket
/// (handles with a connection task, or a single-task `WebSocket`: `ferry serve`'s echo route).
#[derive(Clone, Copy, Debug)]
enum Way {
    Http1,
    Http2,
    Http1Task,
    Http2Task,
}

const WAYS: [Way; 4] = [Way::Http1, Way::Http2, Way::Http1Task, Way::Http2Task];

impl Way {
    fn is_http2(self) -> bool {
        matches!(self, Way::Http2 | Way::Http2Task)
    }

    /// The server's echo for this way: `/echo` on handles, `/task/echo` on a single task.
    fn path(self) -> &'static str {
        match self {
            Way::Http1 | Way::Http2 => "/echo",
            Way::Http1Task | Way::Http2Task => "/task/echo",
        }
    }
}

/// An echo server: hyper's version-sniffing server with extended CONNECT enabled, ferry
/// behind it with `config`.
async fn server(config: Config) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let config = config.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req| {
                    let config = config.clone();
                    async move {
                        let upgrade = match Upgrade::from_request(&mut req) {
                            Ok(upgrade) => upgrade,
                            Err(err) => {
                                return Ok::<_, Infallible>(refusal_response::<Full<Bytes>>(
                                    &err.refusal(),
                                    req.version(),
                                ));
                            }
                        };
                        let single_task = upgrade.request().path().starts_with("/task/");
                        let (response, pending) = upgrade.accept(&config);
                        tokio::spawn(async move {
                            if single_task {
                                let Ok(mut ws) = pending.into_websocket().await else {
                                    return;
                                };
                                while let Some(message) = ws.recv_message().await {
                                    if ws.send(message).await.is_err() {
                                        break;
                                    }
                                }
                                return;
                            }
                            let Ok((sender, mut receiver)) = pending.websocket().await else {
                                return;
                            };
                            while let Some(message) = receiver.recv_message().await {
                                if sender.send(message).await.is_err() {
                                    break;
                                }
                            }
                        });
                        Ok(response)
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("ws://{addr}")
}

async fn open(
    way: Way,
    base: &str,
    config: &Config,
) -> (ferry::Sender, ferry::Receiver, ferry::Response) {
    if way.is_http2() {
        Http2Connection::connect(base, config)
            .await
            .unwrap()
            .websocket(way.path())
            .await
            .unwrap()
    } else {
        ferry::connect_with(format!("{base}{}", way.path()), config)
            .await
            .unwrap()
    }
}

/// Deterministic bytes that compress a little (xorshift over a small alphabet).
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"abcdefgh"[(state % 8) as usize]
        })
        .collect()
}

#[tokio::test]
async fn messages_of_every_length_encoding_echo_whole() {
    let base = server(Config::default()).await;
    for way in WAYS {
        let (sender, mut receiver, response) = open(way, &base, &Config::default()).await;
        assert!(response.deflate.is_some(), "{way:?}: deflate negotiated");
        // 7-bit, 16-bit and 64-bit lengths, at and around their edges (RFC 6455 §5.2).
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let data = payload(len);
            sender.send(Message::binary(data.clone())).await.unwrap();
            let text = String::from_utf8(data.clone()).unwrap();
            sender.send(Message::text(text.clone())).await.unwrap();
            let binary = receiver.recv_message().await.unwrap();
            assert_eq!(binary.as_bytes(), &data[..], "{way:?} binary {len}");
            let echoed = receiver.recv_message().await.unwrap();
            assert_eq!(echoed.as_text(), Some(&text[..]), "{way:?} text {len}");
        }
        let info = sender.close(CloseCode::NORMAL, "done").await;
        assert_eq!(info.code, CloseCode::NORMAL, "{way:?}");
        assert!(info.clean, "{way:?}: both close frames exchanged");
    }
}

#[tokio::test]
async fn fragmented_and_uncompressed_sends_arrive_the_same() {
    let base = server(Config::default()).await;
    let fragmenting = Config {
        fragment_size: Some(1000),
        ..Config::default().without_deflate()
    };
    for way in WAYS {
        let (sender, mut receiver, response) = open(way, &base, &fragmenting).await;
        assert!(response.deflate.is_none(), "{way:?}: no deflate offered");
        let data = payload(100_000);
        sender.send(Message::binary(data.clone())).await.unwrap();
        let echoed = receiver.recv_message().await.unwrap();
        assert_eq!(echoed.as_bytes(), &data[..], "{way:?}");
        sender.close(CloseCode::NORMAL, "").await;
    }
}

#[tokio::test]
async fn a_close_code_and_reason_travel_both_ways() {
    let base = server(Config::default()).await;
    for way in WAYS {
        let (sender, mut receiver, _) = open(way, &base, &Config::default()).await;
        let info = sender.close(CloseCode::from(4000), "see you").await;
        // The echo server's ferry answers the close with the same code (RFC 6455 §5.5.1).
        assert_eq!(u16::from(info.code), 4000, "{way:?}");
        assert!(info.clean, "{way:?}");
        match receiver.recv().await {
            Some(Incoming::Closed(info)) => assert_eq!(u16::from(info.code), 4000),
            other => panic!("{way:?}: expected the close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_over_the_servers_limit_closes_with_1009() {
    let small = Config {
        limits: Limits {
            max_message_size: 1000,
            ..Limits::default()
        },
        ..Config::default()
    };
    let base = server(small).await;
    for way in WAYS {
        let (sender, mut receiver, _) = open(way, &base, &Config::default()).await;
        sender.send(Message::binary(vec![7u8; 2000])).await.unwrap();
        match receiver.recv().await {
            Some(Incoming::Closed(info)) => {
                assert_eq!(info.code, CloseCode::MESSAGE_TOO_BIG, "{way:?}")
            }
            other => panic!("{way:?}: expected a 1009 close, got {other:?}"),
        }
    }
}

/// A raw way after the handshake: an HTTP/1.1 connection whose 101 has been read, or an
/// HTTP/2 stream whose 200 has.
async fn open_raw(way: Way, base: &str) -> Box<dyn RawStream> {
    // No deflate: the frames below are plain.
    let config = Config::default().without_deflate();
    if way.is_http2() {
        let connection = Http2Connection::connect(base, &config).await.unwrap();
        let (stream, response) = connection.websocket_stream(way.path()).await.unwrap();
        assert_eq!(response.status, 200);
        Box::new(stream)
    } else {
        let addr = base.trim_start_matches("ws://");
        Box::new(common::upgraded_tcp(addr, way.path()).await)
    }
}

trait RawStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawStream for T {}

/// Writes `frame` and returns the close code of the server's first frame, which must be a
/// close.
async fn close_code_after(way: Way, base: &str, frame: &[u8]) -> u16 {
    let mut stream = open_raw(way, base).await;
    stream.write_all(frame).await.unwrap();
    stream.flush().await.unwrap();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], 0x88, "{way:?}: a final close frame first");
    assert!(header[1] >= 2, "{way:?}: the close has a code");
    u16::from_be_bytes([header[2], header[3]])
}

#[tokio::test]
async fn protocol_violations_close_with_the_same_code_every_way() {
    let base = server(Config::default()).await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "invalid UTF-8 in a text message",
            frame(0x81, &[0xc3, 0x28]),
            1007,
        ),
        ("a reserved opcode", frame(0x83, b""), 1002),
        (
            "an unmasked client frame",
            vec![0x81, 0x02, b'h', b'i'],
            1002,
        ),
        ("RSV1 without an extension", frame(0xc1, b"hi"), 1002),
    ];
    for way in WAYS {
        for (what, bytes, code) in &cases {
            let got = close_code_after(way, &base, bytes).await;
            assert_eq!(got, *code, "{way:?}: {what}");
        }
    }
}

#[tokio::test]
async fn many_websockets_share_one_http2_connection() {
    let base = server(Config::default()).await;
    let connection = Arc::new(
        Http2Connection::connect(&base, &Config::default())
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let (sender, mut receiver, _) = connection.websocket("/echo").await.unwrap();
            for j in 0..10 {
                let text = format!("stream {i} message {j}");
                sender.send(Message::text(text.clone())).await.unwrap();
                let echoed = receiver.recv_message().await.unwrap();
                assert_eq!(echoed.as_text(), Some(&text[..]));
            }
            sender.close(CloseCode::NORMAL, "").await
        }));
    }
    for task in tasks {
        let info = task.await.unwrap();
        assert!(info.clean);
    }
    assert!(
        connection.is_open(),
        "closing WebSockets leaves the connection open"
    );
}

/// Every size limit holds per WebSocket, every way, with the same close code.
#[tokio::test]
async fn frame_and_fragment_limits_close_with_1009_every_way() {
    let limited = Config {
        limits: Limits {
            max_frame_size: 100,
            max_fragments: 3,
            ..Limits::default()
        },
        ..Config::default()
    };
    let base = server(limited).await;
    // A 126-byte payload: the 16-bit length form.
    let big_frame = frame(0x82, &[1; 126]);
    let many_fragments: Vec<u8> = [
        frame(0x01, b"a"),
        frame(0x00, b"b"),
        frame(0x00, b"c"),
        frame(0x00, b"d"),
        frame(0x80, b"e"),
    ]
    .concat();
    for way in WAYS {
        let got = close_code_after(way, &base, &big_frame).await;
        assert_eq!(got, 1009, "{way:?}: a frame over max_frame_size");
        let got = close_code_after(way, &base, &many_fragments).await;
        assert_eq!(got, 1009, "{way:?}: a message over max_fragments");
    }
}

/// A client may send its first frame in the same packet as the upgrade: hyper reads it with
/// the request, and both server models must take it over with the stream.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_is_not_lost() {
    let base = server(Config::default().without_deflate()).await;
    let addr = base.trim_start_matches("ws://");
    for way in [Way::Http1, Way::Http1Task] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut bytes = common::upgrade_request(addr, way.path()).into_bytes();
        bytes.extend_from_slice(&frame(0x81, b"early"));
        stream.write_all(&bytes).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{way:?}");
        let mut echoed = [0u8; 7];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"\x81\x05early", "{way:?}");
    }
}
