//! `ferry serve` configuration: the file, the flags over it, `--print-config`, start-up errors
//! that name the key, and the limits a config sets (per-IP connections, idle timeout).

mod common;

use std::process::Command;
use std::time::Duration;

use common::Server;
use ferry::{CloseCode, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ferry(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ferry-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn print_config_shows_file_then_flags() {
    let path = write_config(
        "print",
        "listen = \"127.0.0.1:9999\"\nallow_origins = [\"https://a.example\"]\n\
         [limits]\nmax_message_size = \"64KiB\"\nping_interval = \"20s\"\n\
         [bridges.vnc]\nto = \"tcp://127.0.0.1:5900\"\ntoken = \"hunter2\"\n",
    );
    let (ok, out, err) = ferry(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--print-config",
        "--ping-interval",
        "5s",
        "--allow-origin",
        "https://b.example",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:9999\""), "{out}");
    assert!(out.contains("max_message_size = \"64KiB\""), "{out}");
    assert!(
        out.contains("ping_interval = \"5s\""),
        "a flag given overrides: {out}"
    );
    assert!(
        out.contains("ping_timeout = \"30s\""),
        "defaults fill in: {out}"
    );
    assert!(out.contains("https://a.example") && out.contains("https://b.example"));
    assert!(out.contains("[bridges.vnc]"), "{out}");
    assert!(!out.contains("hunter2"), "tokens are redacted: {out}");
    // What is printed is a valid config file.
    let again = write_config("print-again", &out);
    let (ok, out2, err) = ferry(&[
        "serve",
        "--config",
        again.to_str().unwrap(),
        "--print-config",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, out2, "printing is stable");
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(again).unwrap();
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    for (text, wants) in [
        ("[limits]\nmax_conections = 5\n", "max_conections"),
        ("[limits]\nidle_timeout = \"soon\"\n", "idle_timeout"),
        ("[bridges.x]\nto = \"10.0.0.1:22\"\n", "bridges.x.to"),
        ("ws_prefix = \"ws\"\n", "ws_prefix"),
        ("threads = 200000\n", "threads (--threads) 200000"),
        ("allow_origins = [\"example.com\"]\n", "allow_origins"),
        ("[topics]\nallowed = [\"a b\"]\n", "topics.allowed"),
        (
            "[tls]\ncert = \"/nope/cert.pem\"\nkey = \"/nope/key.pem\"\n",
            "tls.cert",
        ),
    ] {
        let path = write_config("bad", text);
        let (ok, _, err) = ferry(&["serve", "--config", path.to_str().unwrap()]);
        assert!(!ok, "{text} must be refused");
        assert!(err.contains(wants), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (ok, _, err) = ferry(&["serve", "--config", "/nonexistent/ferry.toml"]);
    assert!(!ok);
    assert!(err.contains("--config /nonexistent/ferry.toml"), "{err}");
}

#[tokio::test]
async fn a_topic_allow_list_from_the_file() {
    let path = write_config("topics", "[topics]\nallowed = [\"chat\"]\n");
    let server = Server::serve(&["--config", path.to_str().unwrap()]);
    assert!(
        ferry::connect(&format!("ws://{}/ws/topics/chat", server.addr))
            .await
            .is_ok()
    );
    let err = ferry::connect(&format!("ws://{}/ws/topics/other", server.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let server = Server::serve(&["--max-connections-per-ip", "2"]);
    let url = format!("ws://{}/ws/echo", server.addr);
    let first = ferry::connect(&url).await.unwrap();
    let second = ferry::connect(&url).await.unwrap();
    let mut third = TcpStream::connect(&server.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too many connections from your address"));
    // A slot comes back when a connection ends.
    first.0.close(CloseCode::NORMAL, "").await;
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = ferry::connect(&url).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot is reused");
    drop(second);
}

/// On the echo route (one task) and on a topic (the handles): messages keep the connection
/// open; 300 ms without one close it with 1001. On the topic a message sent comes back as its
/// own subscriber's delivery.
#[tokio::test]
async fn an_idle_connection_is_closed_with_1001() {
    let server = Server::serve(&["--idle-timeout", "300ms"]);
    for path in ["/ws/echo", "/ws/topics/quiet"] {
        let (sender, mut receiver, _) = ferry::connect(&format!("ws://{}{path}", server.addr))
            .await
            .unwrap();
        // Activity keeps it open.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            sender.send("still here").await.unwrap();
            assert!(receiver.recv_message().await.is_some(), "{path}");
        }
        let closed = tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await;
        let Ok(Some(Incoming::Closed(info))) = closed else {
            panic!("{path}: expected a close within 10 s, got {closed:?}");
        };
        assert_eq!(info.code, CloseCode::GOING_AWAY, "{path}");
        assert_eq!(info.reason.as_str(), "idle timeout", "{path}");
    }
}

#[test]
fn json_logs() {
    let (ok, _, err) = ferry(&["--log-format", "json", "serve", "--listen", "256.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("--listen 256.0.0.1:1"), "{err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with('{') && line.trim_end().ends_with('}'),
        "{line}"
    );
    assert!(line.contains("\"level\":\"INFO\""), "{line}");
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[test]
fn broker_settings_print_without_passwords_and_bad_ones_name_the_flag() {
    let (ok, out, err) = ferry(&[
        "serve",
        "--print-config",
        "--broker",
        "redis://app:s3cret-pw@127.0.0.1:6379/2",
        "--broker",
        "rediss://127.0.0.1:6380",
        "--history-size",
        "50",
        "--history-ttl",
        "90s",
    ]);
    assert!(ok, "{err}");
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(
        out.contains(r#"urls = ["redis://app:***@127.0.0.1:6379/2", "rediss://127.0.0.1:6380"]"#),
        "{out}"
    );
    assert!(out.contains("history_size = 50"), "{out}");
    assert!(out.contains(r#"history_ttl = "90s""#), "{out}");
    for (flags, names) in [
        (vec!["--broker", "http://h:1"], "--broker"),
        (
            vec!["--broker", "memory", "--broker", "redis://h:1"],
            "--broker",
        ),
        (vec!["--history-ttl", "0s"], "--history-ttl"),
        (vec!["--broker-timeout", "0s"], "--broker-timeout"),
        (vec!["--broker-probe", "0s"], "--broker-probe"),
        (
            vec!["--api-key-file", "/nonexistent/keys"],
            "--api-key-file",
        ),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(flags.iter().copied());
        let (ok, _, err) = ferry(&args);
        assert!(!ok, "{flags:?} must be refused");
        assert!(err.contains(names), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // A key file with a short key is refused: it would be easy to guess.
    let keys = write_config("short-keys", "abc\n");
    let (ok, _, err) = ferry(&["serve", "--api-key-file", keys.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("--api-key-file") && err.contains("16"),
        "{err}"
    );
}
