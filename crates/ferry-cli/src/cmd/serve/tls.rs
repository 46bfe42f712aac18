//! TLS for `ferry serve`: https and wss on the listening port, with rustls. The certificate and
//! key are PEM files, read again on SIGHUP so a renewed certificate takes effect without a
//! restart; connections already open keep the certificate they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use super::config::TlsConfig;

/// The server's current TLS configuration.
// Only SIGHUP reloads, so elsewhere the files' names are kept for nothing.
#[cfg_attr(not(unix), allow(dead_code))]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Whether ALPN offers h2 (`--http2`).
    http2: bool,
    current: RwLock<TlsAcceptor>,
}

impl Tls {
    /// Loads the certificate chain and key; errors name the flag and what is wrong. With
    /// `http2`, ALPN offers h2 before http/1.1.
    pub fn load(config: &TlsConfig, http2: bool) -> Result<Tls, String> {
        let acceptor = acceptor(&config.cert, &config.key, http2)?;
        Ok(Tls {
            cert: config.cert.clone(),
            key: config.key.clone(),
            http2,
            current: RwLock::new(acceptor),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again. On error the previous certificate stays in use.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn reload(&self) -> Result<(), String> {
        let acceptor = acceptor(&self.cert, &self.key, self.http2)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }
}

fn acceptor(cert: &Path, key: &Path, http2: bool) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "--tls-cert {}: cannot read a PEM certificate chain ({e})",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE block in it; give the PEM certificate chain",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "--tls-key {}: cannot read a PEM private key ({e}); give PKCS#8, PKCS#1 or SEC1 PEM",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            format!(
                "--tls-cert/--tls-key: the key does not fit the certificate, or is unusable ({e})"
            )
        })?;
    // RFC 7301: the client picks from its own list in its order of preference, and browsers put
    // h2 first; their WebSockets then ride that connection (RFC 8441) when the server's
    // SETTINGS allow extended CONNECT.
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}
