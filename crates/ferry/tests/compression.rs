//! permessage-deflate through the tokio layer: negotiation as configured on each side, and
//! messages from 1 byte to 16 MiB intact with compression on.

use std::time::Duration;

use ferry::{CloseCode, Config, DeflateConfig, Incoming, Limits, Message, Receiver, Sender};
use tokio::net::TcpListener;

fn big_limits() -> Limits {
    Limits {
        max_message_size: 16 << 20,
        max_frame_size: 16 << 20,
        send_queue_bytes: 32 << 20,
        recv_queue_bytes: 32 << 20,
        ..Limits::default()
    }
}

/// An echo server with `config`; returns its URL and a channel reporting each connection's
/// negotiated parameters.
async fn echo_server(
    config: Config,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (config, tx) = (config.clone(), tx.clone());
            tokio::spawn(async move {
                let (sender, mut receiver) = ferry::accept_with(stream, &config).await.unwrap();
                let _ = tx.send(sender.deflate().map(|p| p.to_header()));
                while let Some(Incoming::Message(m)) = receiver.recv().await {
                    if sender.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, rx)
}

async fn roundtrip(sender: &Sender, receiver: &mut Receiver, message: Message) {
    sender.send(message.clone()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(30), receiver.recv())
        .await
        .unwrap()
    {
        Some(Incoming::Message(got)) => assert!(
            got == message,
            "{} bytes came back different",
            message.len()
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn defaults_negotiate_a_shared_compressor_and_small_windows() {
    let (url, mut negotiated) = echo_server(Config::default()).await;
    let (sender, _receiver, response) = ferry::connect(&url).await.unwrap();
    let expected = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                    server_max_window_bits=12; client_max_window_bits=12";
    assert_eq!(
        response.deflate.map(|p| p.to_header()).as_deref(),
        Some(expected)
    );
    assert_eq!(
        sender.deflate().map(|p| p.to_header()).as_deref(),
        Some(expected)
    );
    assert_eq!(negotiated.recv().await.unwrap().as_deref(), Some(expected));
}

#[tokio::test]
async fn compression_off_on_either_side_means_none() {
    let (url, mut negotiated) = echo_server(Config::default().without_deflate()).await;
    let (_, _, response) = ferry::connect(&url).await.unwrap();
    assert_eq!(response.deflate, None);
    assert_eq!(negotiated.recv().await.unwrap(), None);

    let (url, mut negotiated) = echo_server(Config::default()).await;
    let (_, _, response) = ferry::connect_with(&url, &Config::default().without_deflate())
        .await
        .unwrap();
    assert_eq!(response.deflate, None);
    assert_eq!(negotiated.recv().await.unwrap(), None);
}

#[tokio::test]
async fn messages_from_1_byte_to_16_mib_round_trip_compressed() {
    for takeover in [false, true] {
        let deflate = DeflateConfig {
            own_no_context_takeover: !takeover,
            threshold: 0,
            ..DeflateConfig::default()
        };
        let config = Config {
            limits: big_limits(),
            deflate: Some(deflate),
            ..Config::default()
        };
        let (url, _) = echo_server(config.clone()).await;
        let (sender, mut receiver, response) = ferry::connect_with(&url, &config).await.unwrap();
        assert!(response.deflate.is_some());
        let json = r#"{"user":"alice","text":"hello world","n":12345}"#;
        for size in [1usize, 125, 126, 65535, 65536, 1 << 20, (16 << 20) - 1024] {
            let text: String = json.chars().cycle().take(size).collect();
            roundtrip(&sender, &mut receiver, Message::text(text)).await;
            let noise: Vec<u8> = (0..size as u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
                .collect();
            roundtrip(&sender, &mut receiver, Message::binary(noise)).await;
        }
        sender
            .send_uncompressed(Message::text(json.repeat(100)))
            .await
            .unwrap();
        assert_eq!(
            receiver.recv_message().await,
            Some(Message::text(json.repeat(100)))
        );
        assert!(sender.close(CloseCode::NORMAL, "").await.clean);
    }
}
