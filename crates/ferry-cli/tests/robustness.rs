//! Bad input and load against the real `ferry echo` process: a precise answer, nothing lost,
//! nobody else harmed, nothing leaked.

mod common;

use std::time::Duration;

use common::{REQUEST, Server, client_frame};
use ferry::{CloseCode, Incoming, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    out
}

/// One client that echoes `rounds` messages of `size` bytes and closes cleanly.
async fn echo_client(url: String, rounds: usize, size: usize) -> Result<(), String> {
    let (sender, mut receiver, _) = ferry::connect(&url).await.map_err(|e| e.to_string())?;
    for round in 0..rounds {
        let payload = vec![(round % 256) as u8; size];
        sender
            .send(Message::binary(payload.clone()))
            .await
            .map_err(|e| e.to_string())?;
        match receiver.recv().await {
            Some(Incoming::Message(m)) if m.as_bytes() == payload.as_slice() => {}
            other => return Err(format!("round {round}: {other:?}")),
        }
    }
    let close = sender.close(CloseCode::NORMAL, "").await;
    if close.clean {
        Ok(())
    } else {
        Err(format!("unclean close {close:?}"))
    }
}

#[tokio::test]
async fn handshake_one_byte_at_a_time_works() {
    let server = Server::echo(&[]);
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in REQUEST {
        stream.write_all(&[*byte]).await.unwrap();
    }
    let mut response = vec![0u8; 129];
    stream.read_exact(&mut response).await.unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    stream
        .write_all(&client_frame(0x1, true, b"ok"))
        .await
        .unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x81\x02ok");
}

#[tokio::test]
async fn trickling_handshake_is_dropped_after_the_timeout() {
    let server = Server::echo(&["--handshake-timeout", "1s"]);
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 100 ms: it would take seconds to finish, longer than the timeout.
    let mut refused = Vec::new();
    for byte in REQUEST {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            refused.extend_from_slice(&buf[..n]);
            if n == 0 {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never dropped");
    }
    refused.extend(read_to_end(&mut stream).await);
    let text = String::from_utf8_lossy(&refused);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "expected 408, got {text:?}"
    );
}

#[tokio::test]
async fn silent_connection_is_dropped_after_the_timeout() {
    let server = Server::echo(&["--handshake-timeout", "1s"]);
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let response = read_to_end(&mut stream).await;
    assert!(
        response.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn oversized_header_block_gets_431() {
    let server = Server::echo(&["--max-handshake-size", "4KiB"]);
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let filler = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n",
        "a".repeat(8000)
    );
    let _ = stream.write_all(filler.as_bytes()).await;
    let response = read_to_end(&mut stream).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("request header block over 4096 bytes\n"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_handshakes_get_precise_statuses() {
    let server = Server::echo(&[]);
    let request = std::str::from_utf8(REQUEST).unwrap();
    for (bad, status) in [
        (request.replace("GET", "POST"), "405"),
        (request.replace("Version: 13", "Version: 8"), "426"),
        (request.replace("Upgrade: websocket\r\n", ""), "426"),
        (
            request.replace("dGhlIHNhbXBsZSBub25jZQ==", "bm9wZQ=="),
            "400",
        ),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), "400"),
    ] {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        stream.write_all(bad.as_bytes()).await.unwrap();
        let response = String::from_utf8_lossy(&read_to_end(&mut stream).await).into_owned();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "for {bad:?} got {response:?}"
        );
    }
}

#[tokio::test]
async fn two_thousand_concurrent_connections_all_echo() {
    concurrent_connections_all_echo(&[]).await;
}

#[tokio::test]
async fn two_thousand_pooled_connections_all_echo() {
    // Two pool tasks on two worker threads, instead of a task per connection.
    concurrent_connections_all_echo(&["--pool-connections", "--threads", "2"]).await;
}

/// Two thousand clients at once each echo five messages and close cleanly, and every
/// descriptor is given back, on `ferry echo` with `flags`.
async fn concurrent_connections_all_echo(flags: &[&str]) {
    let server = Server::echo(flags);
    let baseline = server.fds();
    let url = server.url();
    let clients: Vec<_> = (0..2000)
        .map(|_| tokio::spawn(echo_client(url.clone(), 5, 100)))
        .collect();
    let mut failures = Vec::new();
    for client in clients {
        if let Err(err) = client.await.unwrap() {
            failures.push(err);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let fds = server.wait_fds_at_most(baseline).await;
    assert!(
        fds <= baseline,
        "descriptors leaked: {baseline} before, {fds} after"
    );
}

#[tokio::test]
async fn burst_of_500_simultaneous_handshakes() {
    let server = Server::echo(&[]);
    let url = server.url();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(500));
    let clients: Vec<_> = (0..500)
        .map(|_| {
            let url = url.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                echo_client(url, 1, 10).await
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn clients_vanishing_mid_message_leak_nothing() {
    let server = Server::echo(&[]);
    let baseline_fds = server.fds();
    // Warm up so the allocator's first growth is not counted as a leak.
    vanish_round(&server, 200).await;
    assert!(server.wait_fds_at_most(baseline_fds).await <= baseline_fds);
    let rss_after_first = server.rss_kib();
    for _ in 0..4 {
        vanish_round(&server, 200).await;
    }
    let fds = server.wait_fds_at_most(baseline_fds).await;
    assert!(
        fds <= baseline_fds,
        "descriptors leaked: {baseline_fds} before, {fds} after"
    );
    let rss = server.rss_kib();
    // 800 more vanished clients, each of which made the server buffer 64 KiB: a leak of those
    // buffers would show as tens of MiB.
    assert!(
        rss < rss_after_first + 8 * 1024,
        "memory grew from {rss_after_first} KiB to {rss} KiB"
    );
    // And the server still serves.
    echo_client(server.url(), 3, 1000).await.unwrap();
}

async fn vanish_round(server: &Server, clients: usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.unwrap();
                stream.write_all(REQUEST).await.unwrap();
                let mut response = vec![0u8; 129];
                stream.read_exact(&mut response).await.unwrap();
                // Half of a 128 KiB binary frame, then a TCP reset.
                let frame = client_frame(0x2, true, &vec![0xAB; 128 * 1024]);
                stream.write_all(&frame[..64 * 1024]).await.unwrap();
                stream.set_zero_linger().unwrap();
                drop(stream);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn misbehaving_clients_do_not_break_the_others() {
    misbehaving_clients_leave_the_others_alone(&[]).await;
}

#[tokio::test]
async fn misbehaving_clients_do_not_break_the_others_in_their_pool() {
    // One pool task holds every connection, the misbehaving ones among them.
    misbehaving_clients_leave_the_others_alone(&["--pool-connections"]).await;
}

/// Clients that break the protocol in four ways, beside well-behaved ones on the same
/// `ferry echo` (with `flags`): the well-behaved all echo and close cleanly.
async fn misbehaving_clients_leave_the_others_alone(flags: &[&str]) {
    let server = Server::echo(flags);
    let addr = server.addr.clone();
    // Misbehavers: garbage after the handshake, unmasked frames, a huge frame trickled slowly,
    // and idle connections that never finish their handshake.
    let mut bad = Vec::new();
    for kind in 0..40 {
        let addr = addr.clone();
        bad.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            match kind % 4 {
                0 => {
                    stream.write_all(REQUEST).await.unwrap();
                    let _ = stream.write_all(&[0xFF; 64]).await;
                    read_to_end(&mut stream).await
                }
                1 => {
                    stream.write_all(REQUEST).await.unwrap();
                    let _ = stream.write_all(b"\x81\x02hi").await;
                    read_to_end(&mut stream).await
                }
                2 => {
                    stream.write_all(REQUEST).await.unwrap();
                    let frame = client_frame(0x2, true, &vec![1; 1 << 20]);
                    for chunk in frame.chunks(1024).take(100) {
                        if stream.write_all(chunk).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Vec::new()
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Vec::new()
                }
            }
        }));
    }
    // Meanwhile well-behaved clients are all served.
    let good: Vec<_> = (0..100)
        .map(|_| tokio::spawn(echo_client(server.url(), 20, 512)))
        .collect();
    for client in good {
        client.await.unwrap().unwrap();
    }
    for (kind, task) in bad.into_iter().enumerate() {
        let response = task.await.unwrap();
        match kind % 4 {
            // Reserved opcode 0xF (the garbage's first byte): close 1002.
            0 | 1 => {
                let close = response
                    .iter()
                    .position(|&b| b == 0x88)
                    .map(|i| &response[i + 2..i + 4]);
                assert_eq!(
                    close,
                    Some(&[0x03, 0xEA][..]),
                    "kind {kind}: close 1002 expected in {response:?}"
                );
            }
            _ => {}
        }
    }
}

/// A decompression bomb: frames of about 1 KiB that each inflate to 1 MiB, 1 GiB in all if the
/// server kept going. `ferry echo --max-message-size 1MiB` stops it with 1009 at the limit, and
/// its memory does not grow by anything like the bomb's size.
#[tokio::test]
async fn decompression_bomb_is_stopped_with_1009_and_memory_stays_bounded() {
    use zlib_rs::{Deflate, DeflateConfig, DeflateFlush};
    let server = Server::echo(&["--max-message-size", "1MiB", "--max-frame-size", "1MiB"]);
    let rss_before = server.rss_kib();
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let request = std::str::from_utf8(REQUEST).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate"),
        "{head}"
    );

    let mut bomb = Deflate::new_with_config(DeflateConfig {
        level: 9,
        window_bits: -15,
        ..DeflateConfig::default()
    });
    let zeros = vec![0u8; 1 << 20];
    let mut out = vec![0u8; 1 << 20];
    let mut sent_frames = 0;
    for i in 0..1024 {
        let before = bomb.total_out();
        bomb.compress(&zeros, &mut out, DeflateFlush::SyncFlush)
            .unwrap();
        let chunk = &out[..(bomb.total_out() - before) as usize];
        let mut frame = client_frame(if i == 0 { 0x2 } else { 0x0 }, i == 1023, chunk);
        if i == 0 {
            frame[0] |= 0x40; // RSV1: compressed
        }
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent_frames += 1;
    }
    let reply = read_to_end(&mut stream).await;
    let close = reply
        .iter()
        .position(|&b| b == 0x88)
        .map(|i| &reply[i + 2..i + 4]);
    assert_eq!(
        close,
        Some(&[0x03, 0xF1][..]),
        "expected close 1009 after {sent_frames} frames, got {reply:?}"
    );
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Frames announced at the size limit and never sent hold no memory: 100 connections each
/// announce a 16 MiB frame (ferry echo's limit) and send nothing more. The buffer for each
/// frame is reserved, not written, so the server's resident memory hardly moves (1.6 GB if
/// it were filled); the announced frames count against nothing else.
#[tokio::test]
async fn frames_announced_but_never_sent_hold_no_memory() {
    let server = Server::echo(&[]);
    let rss_before = server.rss_kib();
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        // FIN binary, masked, 64-bit length of 16 MiB, the mask key, and no payload.
        let mut header = vec![0x82, 0xFF];
        header.extend_from_slice(&(16u64 << 20).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        stream.write_all(&header).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB for 100 announced frames"
    );
    assert!(server.fds() >= 100, "the connections are still open");
}

/// Regression: with --max-connections 50, a burst of 200 handshakes let 51 through, because the
/// limit was checked at the handshake and counted only once the upgrade completed.
#[tokio::test]
async fn a_burst_of_handshakes_never_exceeds_max_connections() {
    let server = Server::serve(&["--max-connections", "50"]);
    let attempts = (0..200).map(|_| {
        let addr = server.addr.clone();
        // Each keeps its connection open until every attempt is answered.
        tokio::spawn(async move { handshake_with(&addr, "").await })
    });
    let mut answers = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        answers.push(attempt.await.unwrap());
    }
    let upgraded = answers.iter().filter(|(s, _)| s == "101").count();
    let refused = answers.iter().filter(|(s, _)| s == "503").count();
    assert_eq!(upgraded, 50, "upgraded {upgraded}, refused {refused}");
    assert_eq!(upgraded + refused, 200);
}

/// Regression: out of file descriptors, `ferry serve` logged "accept failed" about twenty times
/// a second for as long as it lasted. Now: one line when it starts, one when it ends (with the
/// count), a growing pause between attempts, and a metric.
#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_once_per_episode() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 40 && exec \"$0\" serve --listen 127.0.0.1:0 --max-connections 10")
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut startup = Vec::new();
    let addr = loop {
        let line = lines.next().expect("ferry exited").unwrap();
        startup.push(line.clone());
        if let Some(at) = line.find("http://") {
            break line[at + 7..].trim().to_owned();
        }
    };
    assert!(
        startup
            .iter()
            .any(|l| l.contains("needs about 74 file descriptors")),
        "a warning that --max-connections cannot fit: {startup:?}"
    );
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    // Far more connections than descriptors, held for two seconds.
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Accepting again: /metrics answers and counts the failures.
    let mut metrics = String::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        metrics.clear();
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
        metrics = String::from_utf8_lossy(&body).into_owned();
        if metrics.contains("ferry_accept_errors_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An accept well after the last failure ends the episode.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let _ = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.lock().unwrap().clone();
    let failures = logs.matches("accept failed").count();
    assert_eq!(failures, 1, "one line for the episode: {logs}");
    assert!(logs.contains("accepting again"), "{logs}");
    assert!(
        metrics.contains(r#"ferry_accept_errors_total{kind="no_file_descriptors"}"#),
        "{metrics}"
    );
}

/// Sends a WebSocket handshake to /ws/echo with extra header lines; the status and the open
/// stream (kept, so the connection counts).
async fn handshake_with(addr: &str, extra: &str) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    let status = String::from_utf8_lossy(&head[..n])
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned();
    (status, stream)
}

/// Regression: behind a reverse proxy every client had the proxy's address. With
/// --trusted-proxy, the per-IP limit counts the client the proxy names; from anyone else the
/// forwarding headers are ignored.
#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_counted_by_their_own_address() {
    let behind = Server::serve(&[
        "--trusted-proxy",
        "127.0.0.0/8",
        "--max-connections-per-ip",
        "1",
    ]);
    let a = "X-Forwarded-For: 198.51.100.1\r\n";
    let (first, _held_a) = handshake_with(&behind.addr, a).await;
    let (second, _) = handshake_with(&behind.addr, a).await;
    let (other, _held_b) = handshake_with(&behind.addr, "Forwarded: for=198.51.100.2\r\n").await;
    assert_eq!(
        (first.as_str(), second.as_str(), other.as_str()),
        ("101", "503", "101")
    );
    // Without trust the header means nothing: one connection from 127.0.0.1 is the limit.
    let direct = Server::serve(&["--max-connections-per-ip", "1"]);
    let (first, _held) = handshake_with(&direct.addr, a).await;
    let (second, _) = handshake_with(&direct.addr, "X-Forwarded-For: 198.51.100.9\r\n").await;
    assert_eq!((first.as_str(), second.as_str()), ("101", "503"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/99",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--trusted-proxy"));
}
