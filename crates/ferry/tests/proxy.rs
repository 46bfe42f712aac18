//! Connecting through proxies that run here on loopback: an HTTP CONNECT proxy (with and
//! without Basic auth) and a SOCKS5 proxy (with and without username/password), each
//! recording the targets it was asked for.

use std::sync::{Arc, Mutex};

use ferry::proxy::{Proxy, ProxySetting};
use ferry::{Config, Error, Incoming, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((sender, mut receiver)) = ferry::accept(stream).await else {
                    return;
                };
                while let Some(Incoming::Message(message)) = receiver.recv().await {
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

type Log = Arc<Mutex<Vec<String>>>;

/// An HTTP CONNECT proxy; with `credentials`, it wants `Proxy-Authorization: Basic` with them
/// (base64 of "user:password") and answers 407 otherwise.
async fn connect_proxy(credentials: Option<&'static str>) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(byte) = client.read_u8().await else {
                        return;
                    };
                    head.push(byte);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                seen.lock().expect("log").push(request_line.clone());
                if let Some(token) = credentials {
                    let wanted = format!("proxy-authorization: basic {}", token.to_lowercase());
                    if !head.to_lowercase().contains(&wanted) {
                        let _ = client
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                }
                let target = request_line
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_default()
                    .to_owned();
                let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, log)
}

/// A SOCKS5 proxy (RFC 1928, CONNECT only); with `credentials`, it insists on RFC 1929
/// username/password authentication with them.
async fn socks5_proxy(credentials: Option<(&'static str, &'static str)>) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = socks5_session(&mut client, credentials, &seen).await;
            });
        }
    });
    (port, log)
}

async fn socks5_session(
    client: &mut TcpStream,
    credentials: Option<(&str, &str)>,
    seen: &Log,
) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, wanted]).await?;
    if let Some((user, password)) = credentials {
        let mut version_len = [0u8; 2];
        client.read_exact(&mut version_len).await?;
        let mut got_user = vec![0u8; usize::from(version_len[1])];
        client.read_exact(&mut got_user).await?;
        let len = client.read_u8().await?;
        let mut got_password = vec![0u8; usize::from(len)];
        client.read_exact(&mut got_password).await?;
        if got_user != user.as_bytes() || got_password != password.as_bytes() {
            client.write_all(&[1, 1]).await?;
            return Ok(());
        }
        client.write_all(&[1, 0]).await?;
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let len = client.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => {
            client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    let port = client.read_u16().await?;
    seen.lock().expect("log").push(format!("{host}:{port}"));
    let Ok(mut upstream) = TcpStream::connect((host.as_str(), port)).await else {
        client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
    tokio::io::copy_bidirectional(client, &mut upstream).await?;
    Ok(())
}

fn via(proxy: &str) -> Config {
    Config {
        proxy: ProxySetting::Use(Proxy::parse(proxy).expect("proxy URL")),
        ..Config::default()
    }
}

async fn echo_through(url: &str, config: &Config) -> Result<(), Error> {
    let (sender, mut receiver, _) = ferry::connect_with(url, config).await?;
    sender.send("through the proxy").await?;
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("through the proxy"))
    );
    sender.close(ferry::CloseCode::NORMAL, "").await;
    Ok(())
}

#[tokio::test]
async fn http_connect() {
    let echo = echo_server().await;
    let (proxy, log) = connect_proxy(None).await;
    echo_through(
        &format!("ws://127.0.0.1:{echo}/"),
        &via(&format!("http://127.0.0.1:{proxy}")),
    )
    .await
    .expect("through CONNECT");
    assert_eq!(
        *log.lock().expect("log"),
        vec![format!("CONNECT 127.0.0.1:{echo} HTTP/1.1")]
    );
}

#[tokio::test]
async fn http_connect_with_basic_auth() {
    let echo = echo_server().await;
    // base64("alice:s3cret/!")
    let (proxy, _) = connect_proxy(Some("YWxpY2U6czNjcmV0LyE=")).await;
    let url = format!("ws://127.0.0.1:{echo}/");
    echo_through(
        &url,
        &via(&format!("http://alice:s3cret%2F!@127.0.0.1:{proxy}")),
    )
    .await
    .expect("right credentials");
    let err = ferry::connect_with(&url, &via(&format!("http://127.0.0.1:{proxy}")))
        .await
        .expect_err("no credentials");
    assert!(err.to_string().contains("407"), "{err}");
    assert!(err.to_string().contains("user:password@"), "{err}");
    let err = ferry::connect_with(&url, &via(&format!("http://alice:wrong@127.0.0.1:{proxy}")))
        .await
        .expect_err("wrong credentials");
    assert!(err.to_string().contains("refused the credentials"), "{err}");
}

#[tokio::test]
async fn socks5_local_and_remote_name_resolution() {
    let echo = echo_server().await;
    let (proxy, log) = socks5_proxy(None).await;
    // socks5://: ferry resolves localhost and sends an address.
    echo_through(
        &format!("ws://localhost:{echo}/"),
        &via(&format!("socks5://127.0.0.1:{proxy}")),
    )
    .await
    .expect("socks5");
    // socks5h://: the proxy gets the name.
    echo_through(
        &format!("ws://localhost:{echo}/"),
        &via(&format!("socks5h://127.0.0.1:{proxy}")),
    )
    .await
    .expect("socks5h");
    let log = log.lock().expect("log").clone();
    assert_eq!(log.len(), 2);
    assert!(log[0].ends_with(&format!(":{echo}")) && !log[0].starts_with("localhost"));
    assert_eq!(log[1], format!("localhost:{echo}"));
}

#[tokio::test]
async fn socks5_with_username_and_password() {
    let echo = echo_server().await;
    let (proxy, _) = socks5_proxy(Some(("bob", "hunter2"))).await;
    let url = format!("ws://127.0.0.1:{echo}/");
    echo_through(
        &url,
        &via(&format!("socks5://bob:hunter2@127.0.0.1:{proxy}")),
    )
    .await
    .expect("right credentials");
    let err = ferry::connect_with(&url, &via(&format!("socks5://127.0.0.1:{proxy}")))
        .await
        .expect_err("no credentials");
    assert!(err.to_string().contains("wants credentials"), "{err}");
    let err = ferry::connect_with(&url, &via(&format!("socks5://bob:nope@127.0.0.1:{proxy}")))
        .await
        .expect_err("wrong credentials");
    assert!(err.to_string().contains("refused the username"), "{err}");
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy_from_the_environment_settings() {
    let echo = echo_server().await;
    let (proxy, log) = connect_proxy(None).await;
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let vars = |no_proxy: &'static str| {
        let proxy_url = proxy_url.clone();
        move |name: &str| match name {
            "http_proxy" => Some(proxy_url.clone()),
            "NO_PROXY" => Some(no_proxy.to_owned()),
            _ => None,
        }
    };
    let url = format!("ws://127.0.0.1:{echo}/");
    // Covered by NO_PROXY: direct.
    let chosen = Proxy::from_vars("127.0.0.1", false, vars("example.com, 127.0.0.1")).expect("env");
    assert_eq!(chosen, None);
    echo_through(&url, &Config::default())
        .await
        .expect("direct");
    // Not covered: through the proxy.
    let chosen = Proxy::from_vars("127.0.0.1", false, vars("example.com")).expect("env");
    let config = Config {
        proxy: chosen.map(ProxySetting::Use).unwrap_or_default(),
        ..Config::default()
    };
    echo_through(&url, &config)
        .await
        .expect("through the proxy");
    assert_eq!(
        log.lock().expect("log").len(),
        1,
        "one CONNECT, for the second"
    );
}
