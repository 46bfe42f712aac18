//! `ferry serve` over TLS: https and wss on one port, with a certificate made at test time, and
//! the certificate reloaded on SIGHUP.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use ferry::{CloseCode, Config, Message};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

/// A self-signed certificate for localhost, written as PEM files; returns its DER.
fn make_cert(dir: &Path) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

fn connector(trusted: &[CertificateDer<'static>]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: &str,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_tls_server(dir: &Path) -> Server {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    Server::start(
        "serve",
        "https://",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
}

#[tokio::test]
async fn https_and_wss_on_one_port() {
    let dir = temp_dir("tls");
    let cert = make_cert(&dir);
    let server = start_tls_server(&dir);
    let connector = connector(&[cert]);

    let mut https = tls_connect(&server.addr, &connector).await.unwrap();
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    https.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("ok\n"), "{body}");

    let wss = tls_connect(&server.addr, &connector).await.unwrap();
    let url = format!(
        "ws://localhost:{}/ws/echo",
        server.addr.rsplit(':').next().unwrap()
    );
    let (sender, mut receiver, _) = ferry::connect_stream(wss, &url, &Config::default())
        .await
        .unwrap();
    for size in [5, 70_000, 300_000] {
        let message = Message::binary(vec![7u8; size]);
        sender.send(message.clone()).await.unwrap();
        assert_eq!(receiver.recv_message().await, Some(message));
    }
    assert_eq!(
        sender.close(CloseCode::NORMAL, "").await.code,
        CloseCode::NORMAL
    );

    // Plain HTTP on the TLS port is a failed TLS handshake, counted, and harms nobody.
    let mut plain = TcpStream::connect(&server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut junk = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut junk)).await;
    assert!(!String::from_utf8_lossy(&junk).contains("200 OK"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let dir = temp_dir("reload");
    let first = make_cert(&dir);
    let server = start_tls_server(&dir);
    let trusts_first = connector(std::slice::from_ref(&first));
    tls_connect(&server.addr, &trusts_first).await.unwrap();

    let second = make_cert(&dir);
    let trusts_second = connector(std::slice::from_ref(&second));
    assert!(
        tls_connect(&server.addr, &trusts_second).await.is_err(),
        "before SIGHUP the old certificate is served"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if tls_connect(&server.addr, &trusts_second).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "after SIGHUP the new certificate is served");
    assert!(tls_connect(&server.addr, &trusts_first).await.is_err());

    // A broken file on SIGHUP keeps the working certificate.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls_connect(&server.addr, &trusts_second).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_tls_files_are_refused_at_start() {
    let dir = temp_dir("badtls");
    std::fs::write(dir.join("cert.pem"), "nothing here").unwrap();
    std::fs::write(dir.join("key.pem"), "nothing here").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--tls-cert", "x.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    std::fs::remove_dir_all(&dir).unwrap();
}
