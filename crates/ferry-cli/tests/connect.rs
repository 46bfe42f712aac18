//! `ferry connect` as a user runs it: the real binary, stdin and stdout through pipes, against
//! `ferry echo` and against small servers written here that misbehave on purpose.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};

use common::Server;

fn ferry_connect(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(name);
    }
    command
        .arg("connect")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `ferry connect` with `input` on stdin (closed at once) and returns its output.
fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = ferry_connect(args).spawn().expect("start ferry connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for ferry connect");
    writer.join().expect("writer thread");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The lines of the round-trip test: ASCII, unicode in several scripts, an empty line, and one
/// line of 100 KB.
fn test_lines() -> Vec<String> {
    let mut lines: Vec<String> = (0..1000)
        .map(|i| match i % 5 {
            0 => format!("line {i}"),
            1 => format!("ünïcödé {i}: 日本語 ✓ 🚀"),
            2 => format!("{i} Ελληνικά — עברית — हिन्दी"),
            3 => String::new(),
            _ => format!("{i} {}", "tab\tand spaces  ".repeat(i % 17)),
        })
        .collect();
    lines[500] = "0123456789".repeat(10_000);
    lines
}

/// Sends the lines, reads until as many lines came back, then closes stdin: the close happens
/// after every echo arrived, so none can be cut off by the close handshake.
fn round_trip(url: &str, extra: &[&str]) {
    let lines = test_lines();
    let mut args = vec!["--quiet"];
    args.extend_from_slice(extra);
    args.push(url);
    let mut child: Child = ferry_connect(&args).spawn().expect("start ferry connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let to_send = lines.clone();
    let writer = std::thread::spawn(move || {
        for line in &to_send {
            stdin.write_all(line.as_bytes()).expect("write a line");
            stdin.write_all(b"\n").expect("write a newline");
        }
        stdin
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut received = Vec::new();
    for _ in 0..lines.len() {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        assert_eq!(line.pop(), Some('\n'));
        received.push(line);
    }
    // Closing stdin starts the close handshake.
    drop(writer.join().expect("writer thread"));
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(received.len(), lines.len(), "lines back; stderr: {err}");
    for (i, (got, sent)) in received.iter().zip(&lines).enumerate() {
        assert_eq!(got, sent, "line {i} differs");
    }
    assert!(status.success(), "exit {status}; stderr: {err}");
    assert!(err.is_empty(), "--quiet printed: {err}");
}

#[test]
fn a_thousand_lines_with_unicode_and_100_kb_come_back_identical() {
    let server = Server::echo(&[]);
    round_trip(&server.url(), &[]);
}

#[test]
fn round_trip_without_compression_and_in_small_frames() {
    let server = Server::echo(&[]);
    round_trip(&server.url(), &["--no-deflate", "--fragment", "1000"]);
}

#[test]
fn stdin_eof_closes_cleanly_and_says_so() {
    let server = Server::echo(&[]);
    let output = run(&[&server.url()], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("connected to"), "{err}");
    assert!(err.contains("closed cleanly (1000)"), "{err}");
}

#[test]
fn binary_mode_carries_raw_bytes() {
    let server = Server::echo(&[]);
    // Not UTF-8, with newlines and zero bytes: only --binary can carry it.
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut child = ferry_connect(&["--binary", "--quiet", &server.url()])
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&data).expect("write");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut back = vec![0; data.len()];
    stdout.read_exact(&mut back).expect("read the echo");
    drop(stdin);
    assert!(child.wait().expect("wait").success());
    assert_eq!(back, data);
}

#[test]
fn base64_lines_become_binary_messages() {
    let server = Server::echo(&[]);
    let output = run(&["--base64", "--quiet", &server.url()], b"AAEC/w==\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, b"AAEC/w==\n");
    let output = run(&["--base64", &server.url()], b"not base64!\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("line 1 is not base64"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn invalid_utf8_in_line_mode_names_the_fix() {
    let server = Server::echo(&[]);
    let output = run(&[&server.url()], b"ok\n\xff\xfe\n");
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("line 2 is not UTF-8"), "{err}");
    assert!(err.contains("--binary"), "{err}");
}

#[test]
fn exec_connects_a_program() {
    let server = Server::echo(&[]);
    // The program sends two lines, then reads the two echoes and prints them on stderr.
    let output = run(
        &[
            "--quiet",
            "--exec",
            "echo one; echo two; read a; read b; echo \"got $a $b\" >&2",
            &server.url(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("got one two"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn refused_connection_exits_3() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let output = run(&[&format!("ws://127.0.0.1:{port}/")], b"");
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is the server running"), "{err}");
}

/// A server that answers every request with `response` and closes.
fn http_server(response: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response);
        }
    });
    format!("ws://{addr}/")
}

#[test]
fn http_status_exits_4_with_the_status() {
    let url = http_server(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    let output = run(&[&url], b"");
    assert_eq!(output.status.code(), Some(4));
    let err = stderr(&output);
    assert!(err.contains("HTTP 403 Forbidden"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn peer_close_code_exits_6_with_the_code() {
    // A 2 KB line is over this server's limit: it closes with 1009.
    let server = Server::echo(&["--max-message-size", "1KiB"]);
    let line = "x".repeat(2048) + "\n";
    let output = run(&["--quiet", &server.url()], line.as_bytes());
    assert_eq!(output.status.code(), Some(6));
    let err = stderr(&output);
    assert!(err.contains("1009"), "{err}");
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, needle) in [
        (vec!["--close-code", "1006"], "--close-code 1006"),
        (vec!["--fragment", "0"], "--fragment 0"),
        (vec!["-H", "NoColon"], "-H \"NoColon\""),
        (vec!["--ping-interval", "0s"], "--ping-interval 0"),
    ] {
        let mut all = args.clone();
        all.push("ws://127.0.0.1:9/");
        let output = run(&all, b"");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = run(&["http://example.invalid/"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("scheme"), "{}", stderr(&output));
}

#[test]
fn close_code_and_reason_reach_the_server() {
    // A one-shot server that reads the handshake, answers 101, and reports the close frame.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || -> Vec<u8> {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        let mut buf = [0; 1];
        while !request.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut buf).expect("read the request");
            request.push(buf[0]);
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key")
            .trim()
            .to_owned();
        let accept = ferry::proto::handshake::accept_key(key.as_bytes());
        write!(
            stream,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .expect("answer");
        // The close frame: 2 header bytes, 4 mask bytes, then the masked payload.
        let mut header = [0; 2];
        stream.read_exact(&mut header).expect("close header");
        assert_eq!(header[0], 0x88, "a close frame");
        let len = usize::from(header[1] & 0x7f);
        let mut rest = vec![0; 4 + len];
        stream.read_exact(&mut rest).expect("close payload");
        let (mask, payload) = rest.split_at(4);
        let payload: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        // Answer with the same code, then end.
        let mut reply = vec![0x88, payload.len() as u8];
        reply.extend_from_slice(&payload);
        let _ = stream.write_all(&reply);
        payload
    });
    let output = run(
        &[
            "--quiet",
            "--no-deflate",
            "--close-code",
            "4001",
            "--close-reason",
            "bye now",
            &format!("ws://{addr}/"),
        ],
        b"",
    );
    let payload = server.join().expect("server thread");
    assert_eq!(&payload[..2], &4001u16.to_be_bytes());
    assert_eq!(&payload[2..], b"bye now");
    // The server echoed 4001: the close was clean and this end started it.
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A wss echo server (rustls, certificate for localhost from a CA made here), on its own
/// thread; returns the port and the directory with `ca.pem`.
fn wss_echo_server(name: &str) -> (u16, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!("ferry-connect-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok((sender, mut receiver)) = ferry::accept(tls).await else {
                        return;
                    };
                    while let Some(ferry::Incoming::Message(message)) = receiver.recv().await {
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    (port, dir)
}

#[test]
fn wss_with_ca_round_trips_and_without_it_exits_5() {
    let (port, dir) = wss_echo_server("wss");
    let url = format!("wss://localhost:{port}/");
    let ca = dir.join("ca.pem");
    round_trip(&url, &["--ca", ca.to_str().expect("utf-8 path")]);
    let output = run(&[&url], b"");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("--ca FILE"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The platform store, here pointed at the test CA the way OpenSSL's variable does.
    let output = ferry_connect(&["--quiet", "--platform-roots", &url])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    // --insecure: no CA at all, and a warning.
    let output = run(&["--insecure", &url], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: --insecure"),
        "{}",
        stderr(&output)
    );
    let output = run(&["--ca", "/nonexistent/ca.pem", &url], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--ca"), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reconnect_survives_a_killed_server_and_delivers_what_was_typed_meanwhile() {
    let mut server = Server::echo(&[]);
    let addr = server.addr.clone();
    let url = server.url();
    let mut child = ferry_connect(&[
        "--reconnect",
        "--reconnect-delay",
        "50ms",
        "--reconnect-max-delay",
        "200ms",
        &url,
    ])
    .spawn()
    .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // stderr lines, as they come: the client's events.
    let (events_tx, events) = std::sync::mpsc::channel::<String>();
    let stderr_pipe = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if events_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_event = |needle: &str| -> String {
        loop {
            let line = events
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    let mut read_line = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        line
    };
    wait_event("connected");
    writeln!(stdin, "before").expect("write");
    assert_eq!(read_line(), "before\n");

    // Kill the server (SIGKILL: no close frame), and type while it is down.
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");
    wait_event("disconnected: 1006");
    wait_event("attempt failed (1 in a row)");
    for i in 0..50 {
        writeln!(stdin, "while down {i}").expect("write");
    }
    wait_event("attempt failed (2 in a row)");

    let _back = Server::echo_at(&addr, &[]);
    wait_event("connected (after");
    for i in 0..50 {
        assert_eq!(read_line(), format!("while down {i}\n"));
    }
    writeln!(stdin, "after").expect("write");
    assert_eq!(read_line(), "after\n");
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    // Exactly what was sent, once: nothing more on stdout.
    assert_eq!(read_line(), "");
}

/// A one-connection HTTP CONNECT proxy on a thread; returns its port and the request line it
/// received.
fn one_shot_connect_proxy() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).expect("read");
            head.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let _ = tx.send(line);
        let upstream = std::net::TcpStream::connect(target).expect("upstream");
        client
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .expect("answer");
        let (mut c2, mut u2) = (
            client.try_clone().expect("clone"),
            upstream.try_clone().expect("clone"),
        );
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(std::net::Shutdown::Write);
        });
        let (mut u3, mut c3) = (upstream, client);
        let _ = std::io::copy(&mut u3, &mut c3);
        let _ = c3.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    });
    (port, rx)
}

#[test]
fn proxy_from_http_proxy_variable_and_from_the_flag() {
    let server = Server::echo(&[]);
    let (port, seen) = one_shot_connect_proxy();
    let mut child = ferry_connect(&["--quiet", &server.url()])
        .env("http_proxy", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"via env\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        seen.recv().expect("the proxy saw a request"),
        format!("CONNECT {} HTTP/1.1", server.addr)
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let (port, seen) = one_shot_connect_proxy();
    let output = run(
        &[
            "--quiet",
            "--proxy",
            &format!("http://127.0.0.1:{port}"),
            &server.url(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(seen.recv().expect("request").starts_with("CONNECT "));

    // NO_PROXY covers the host: the variable's proxy (nothing listens there) is not used.
    let dead = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut command = ferry_connect(&["--quiet", &server.url()]);
    command
        .env("http_proxy", format!("http://{dead}"))
        .env("NO_PROXY", "localhost,127.0.0.1");
    let output = command.output().expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    let output = ferry_connect(&["--quiet", &server.url()])
        .env("http_proxy", format!("http://{dead}"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("proxy"), "{}", stderr(&output));
}
