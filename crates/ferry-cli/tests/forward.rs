//! `ferry forward` (the real binary) in front of a small bridge built with the ferry library in
//! this test (and the real `ferry bridge`), in front of a TCP echo server: bytes must arrive
//! intact both ways.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use ferry::{Config, Incoming, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP echo server on a thread; each connection echoes until end-of-file, then half-closes.
fn tcp_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().expect("clone");
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A WebSocket-to-TCP bridge: each WebSocket connection opens a TCP connection to `target`;
/// binary messages become bytes and bytes become binary messages. Returns its ws:// URL and
/// the subprotocols clients offered.
fn bridge(target: String) -> (String, std::sync::mpsc::Receiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "ws://{}/ws/bridge/echo",
        listener.local_addr().expect("addr")
    );
    listener.set_nonblocking(true).expect("nonblocking");
    let (offered_tx, offered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config = Config {
                protocols: vec!["binary".into()],
                ..Config::default()
            };
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (config, target, offered_tx) =
                    (config.clone(), target.clone(), offered_tx.clone());
                tokio::spawn(async move {
                    let Ok((sender, mut receiver, request)) =
                        ferry::accept_with_request(stream, &config, |_| Ok(())).await
                    else {
                        return;
                    };
                    let _ = offered_tx.send(request.protocols().first().cloned());
                    let Ok(tcp) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut read, mut write) = tcp.into_split();
                    let back = sender.clone();
                    let down = tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if back.send(Message::binary(buf[..n].to_vec())).await.is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                        back.close(ferry::CloseCode::NORMAL, "").await;
                    });
                    while let Some(Incoming::Message(message)) = receiver.recv().await {
                        if write.write_all(message.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    let _ = write.shutdown().await;
                    let _ = down.await;
                });
            }
        });
    });
    (url, offered)
}

struct Forward {
    child: Child,
    addr: String,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_forward(to: &str) -> Forward {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "forward",
            "--listen",
            "127.0.0.1:0",
            "--no-proxy",
            "--to",
            to,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry forward");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("ferry forward exited").expect("stderr");
        if let Some(rest) = line.strip_prefix("ferry forward: listening on ") {
            break rest.split(',').next().expect("addr").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Forward { child, addr }
}

/// Bytes that are not all alike, so a reordering or a dropped chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn ten_megabytes_through_forward_bridge_and_tcp_echo_come_back_intact() {
    let (url, offered) = bridge(tcp_echo());
    let forward = start_forward(&url);
    let data = pattern(10 << 20);
    let mut stream = TcpStream::connect(&forward.addr).expect("connect to forward");
    let mut writer = stream.try_clone().expect("clone");
    let to_send = data.clone();
    let sending = std::thread::spawn(move || {
        writer.write_all(&to_send).expect("send 10 MB");
        writer
    });
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("read 10 MB back");
    let writer = sending.join().expect("writer");
    assert!(back == data, "the echoed bytes differ");
    // Half-close: stop sending; the far end finishes and the local side reads end-of-file.
    writer.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("read to the end");
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    assert_eq!(
        offered.recv().expect("the bridge saw a connection"),
        Some("binary".to_owned()),
        "forward offers websockify's binary subprotocol"
    );
}

#[test]
fn the_server_side_ending_reaches_the_local_connection_as_end_of_file() {
    // A bridge whose target answers one line and closes.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target_addr = target.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in target.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(b"hello from the far side\n");
        }
    });
    let (url, _) = bridge(target_addr);
    let forward = start_forward(&url);
    let mut stream = TcpStream::connect(&forward.addr).expect("connect");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read to the end");
    assert_eq!(got, b"hello from the far side\n");
}

#[test]
fn several_connections_at_once_stay_apart() {
    let (url, _) = bridge(tcp_echo());
    let forward = start_forward(&url);
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let addr = forward.addr.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                let data = vec![i; 200_000];
                let mut writer = stream.try_clone().expect("clone");
                let sent = data.clone();
                let w = std::thread::spawn(move || writer.write_all(&sent).expect("write"));
                let mut back = vec![0u8; data.len()];
                stream.read_exact(&mut back).expect("read");
                w.join().expect("writer");
                back == data
            })
        })
        .collect();
    for handle in handles {
        assert!(handle.join().expect("thread"));
    }
}

#[test]
fn bad_flags_name_the_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["forward", "--listen", "127.0.0.1:0", "--to", "http://x/"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--to"), "{err}");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "forward",
            "--listen",
            "nowhere",
            "--to",
            "ws://127.0.0.1:9/",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--listen nowhere"), "{err}");
}

#[test]
fn ten_megabytes_through_forward_and_the_real_ferry_bridge() {
    let echo = tcp_echo();
    let bridge = common::Server::bridge(&["--to", &format!("tcp://{echo}")]);
    let forward = start_forward(&format!("ws://{}/ws/bridge/echo", bridge.addr));
    let data = pattern(10 << 20);
    let mut stream = TcpStream::connect(&forward.addr).expect("connect to forward");
    let mut writer = stream.try_clone().expect("clone");
    let to_send = data.clone();
    let sending = std::thread::spawn(move || {
        writer.write_all(&to_send).expect("send 10 MB");
        writer
    });
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("read 10 MB back");
    let writer = sending.join().expect("writer");
    assert!(back == data, "the echoed bytes differ");
    writer.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("read to the end");
    assert!(rest.is_empty());
}
