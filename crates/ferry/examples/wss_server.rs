//! A wss:// echo server: TLS with rustls, then the WebSocket on the TLS stream.
//!
//!   cargo run -p ferry --example wss_server -- cert.pem key.pem [127.0.0.1:9443]
//!   ferry connect --ca cert.pem wss://localhost:9443
//!
//! (`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
//! -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem`
//! makes a test certificate.)

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: wss_server CERT.pem KEY.pem [ADDR]".into());
    };
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9443".into());
    let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("wss echo server on wss://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let Ok((sender, mut receiver)) = ferry::accept(stream).await else {
                return;
            };
            while let Some(message) = receiver.recv_message().await {
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
