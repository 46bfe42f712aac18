//! `wss://` against a TLS server run here, with certificates made at test time: a CA, a server
//! certificate for localhost and 127.0.0.1, and a client certificate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry::tls::TlsOptions;
use ferry::{Config, Error, Incoming, Message};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// A CA and what it signed, with PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Pki {
    fn new(name: &str, server_names: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("ferry-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let server_key = KeyPair::generate().expect("server key");
        let names: Vec<String> = server_names.iter().map(|n| n.to_string()).collect();
        let server = CertificateParams::new(names)
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("client key");
        let client = CertificateParams::new(vec!["ferry-client".to_string()])
            .expect("client params")
            .signed_by(&client_key, &ca)
            .expect("client cert");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        std::fs::write(dir.join("client.pem"), client.pem()).expect("write client cert");
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).expect("write key");
        Pki {
            dir,
            ca: ca.der().clone(),
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    fn ca_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: Some(self.dir.join("ca.pem")),
            only_ca_file: true,
            ..TlsOptions::default()
        }
    }

    fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.clone()).expect("root");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        builder
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server config")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A wss echo server on a free loopback port; returns the port.
async fn wss_echo(config: rustls::ServerConfig) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
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

async fn echo_once(url: &str, config: &Config) -> Result<(), Error> {
    let (sender, mut receiver, _) = ferry::connect_with(url, config).await?;
    sender.send("over TLS ✓").await?;
    let big = Message::binary(vec![7u8; 300_000]);
    sender.send(big.clone()).await?;
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("over TLS ✓"))
    );
    assert_eq!(receiver.recv_message().await, Some(big));
    let info = sender.close(ferry::CloseCode::NORMAL, "").await;
    assert!(info.clean, "{info:?}");
    Ok(())
}

#[tokio::test]
async fn wss_with_a_private_ca_by_name_and_by_ip() {
    let pki = Pki::new("ca", &["localhost", "127.0.0.1"]);
    let port = wss_echo(pki.server_config(false)).await;
    let config = Config {
        tls: Some(pki.ca_options().client_config().expect("tls config")),
        ..Config::default()
    };
    echo_once(&format!("wss://localhost:{port}/"), &config)
        .await
        .expect("by name");
    echo_once(&format!("wss://127.0.0.1:{port}/"), &config)
        .await
        .expect("by IP");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let pki = Pki::new("untrusted", &["localhost"]);
    let port = wss_echo(pki.server_config(false)).await;
    // The built-in roots do not know the test CA.
    let err = ferry::connect(&format!("wss://localhost:{port}/"))
        .await
        .expect_err("untrusted");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn insecure_skip_verify_takes_an_untrusted_certificate() {
    let pki = Pki::new("insecure", &["elsewhere.test"]);
    let port = wss_echo(pki.server_config(false)).await;
    let options = TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    };
    let config = Config {
        tls: Some(options.client_config().expect("tls config")),
        ..Config::default()
    };
    // Unknown issuer and the wrong name: both ignored.
    echo_once(&format!("wss://localhost:{port}/"), &config)
        .await
        .expect("insecure");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_tls_error() {
    let pki = Pki::new("name", &["elsewhere.test"]);
    let port = wss_echo(pki.server_config(false)).await;
    let config = Config {
        tls: Some(pki.ca_options().client_config().expect("tls config")),
        ..Config::default()
    };
    let err = ferry::connect_with(&format!("wss://localhost:{port}/"), &config)
        .await
        .expect_err("wrong name");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn client_certificate_when_the_server_requires_one() {
    let pki = Pki::new("client", &["localhost"]);
    let port = wss_echo(pki.server_config(true)).await;
    let url = format!("wss://localhost:{port}/");
    let with_cert = TlsOptions {
        client_cert: Some(pki.dir.join("client.pem")),
        client_key: Some(pki.dir.join("client.key")),
        ..pki.ca_options()
    };
    let config = Config {
        tls: Some(with_cert.client_config().expect("tls config")),
        ..Config::default()
    };
    echo_once(&url, &config).await.expect("with a client cert");
    let config = Config {
        tls: Some(pki.ca_options().client_config().expect("tls config")),
        ..Config::default()
    };
    // TLS 1.3: the server's refusal may arrive after the client's handshake is done, so it
    // can surface in the WebSocket handshake instead; either way, no connection.
    let result = ferry::connect_with(&url, &config).await;
    assert!(result.is_err(), "connected without a client certificate");
}

#[tokio::test]
async fn a_server_that_never_speaks_tls_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let connection = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(connection);
    });
    let config = Config {
        tls_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let err = ferry::connect_with(&format!("wss://127.0.0.1:{port}/"), &config)
        .await
        .expect_err("silent server");
    assert!(matches!(err, Error::TlsTimeout), "{err:?}");
    held.abort();
}

#[test]
fn bad_tls_files_are_named() {
    let pki = Pki::new("files", &["localhost"]);
    let missing = TlsOptions {
        ca_file: Some(pki.dir.join("nope.pem")),
        ..TlsOptions::default()
    };
    assert!(
        missing
            .client_config()
            .unwrap_err()
            .to_string()
            .contains("nope.pem")
    );
    let not_pem = pki.dir.join("junk.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let junk = TlsOptions {
        ca_file: Some(not_pem),
        ..TlsOptions::default()
    };
    assert!(
        junk.client_config()
            .unwrap_err()
            .to_string()
            .contains("junk.pem")
    );
    let half = TlsOptions {
        client_cert: Some(pki.dir.join("client.pem")),
        ..TlsOptions::default()
    };
    assert!(
        half.client_config()
            .unwrap_err()
            .to_string()
            .contains("both")
    );
}

/// The provider the build has: ring, or aws-lc-rs when that is the only one (CI runs this file
/// both ways).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "ring")]
    return Arc::new(rustls::crypto::ring::default_provider());
    #[cfg(not(feature = "ring"))]
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
