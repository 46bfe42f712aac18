//! TLS for `wss://` clients, with rustls.
//!
//! By default the server's certificate is checked against the Mozilla root store compiled in
//! (`webpki-roots`), so a build behaves the same on every machine. [`TlsOptions`] adds the
//! platform's store (`platform_roots`: /etc/ssl/certs and the like, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`), roots from a PEM file (a private CA, a test CA) and a client certificate; for anything else
//! (session resumption settings, a custom verifier, ALPN) build a `rustls::ClientConfig`
//! yourself and put it in [`Config::tls`](crate::Config::tls).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;

pub use rustls::ClientConfig;
pub use tokio_rustls::client::TlsStream;

/// How a `wss://` client checks the server and presents itself.
///
/// ```
/// use ferry::tls::TlsOptions;
/// let options = TlsOptions { ca_file: Some("ca.pem".into()), ..TlsOptions::default() };
/// // Fails here only because the file does not exist; the error names it.
/// let err = options.client_config().unwrap_err().to_string();
/// assert!(err.contains("ca.pem"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of CA certificates to trust, in addition to the built-in roots (or instead of
    /// them, with `only_ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Trust only the certificates in `ca_file`, not the built-in roots.
    pub only_ca_file: bool,
    /// Also trust the platform's certificate store (with `rustls-native-certs`: the system
    /// bundle, or the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name).
    pub platform_roots: bool,
    /// A client certificate chain (PEM), for servers that ask for one. Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate: no check of issuer, name or dates (curl's `-k`). The
    /// connection is encrypted but anyone on the path can impersonate the server. For tests
    /// and for debugging only; the roots above are then unused.
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Builds the rustls configuration: roots, client certificate, and ALPN `http/1.1` (a
    /// WebSocket handshake is an HTTP/1.1 request).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(feature = "webpki-roots")]
        if !self.only_ca_file {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        #[cfg(not(feature = "native-roots"))]
        if self.platform_roots && !self.only_ca_file {
            return Err(Error::TlsConfig(
                "platform_roots needs ferry built with the `native-roots` feature".into(),
            ));
        }
        #[cfg(feature = "native-roots")]
        if self.platform_roots && !self.only_ca_file {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|err| format!(": {err}"))
                    .unwrap_or_default();
                return Err(Error::TlsConfig(format!(
                    "the platform's certificate store has no usable certificate{why}"
                )));
            }
        }
        if let Some(path) = &self.ca_file {
            let certs = read_certs(path)?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_config(path, "holds no usable CA certificate"));
            }
        } else if self.only_ca_file {
            return Err(Error::TlsConfig(
                "only_ca_file is set but no ca_file is given".into(),
            ));
        }
        if roots.is_empty() && !self.insecure_skip_verify {
            return Err(Error::TlsConfig(
                "no root certificates to check servers with: build ferry with the `webpki-roots` \
                 feature, or set platform_roots or ca_file"
                    .into(),
            ));
        }
        let provider = crypto_provider()?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::TlsConfig(err.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| tls_config(key, &format!("is not a PEM private key: {err}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| tls_config(cert, &format!("cannot be used: {err}")))?
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::TlsConfig(
                    "a client certificate needs both the certificate and its key".into(),
                ));
            }
        };
        if self.insecure_skip_verify {
            let provider = config.crypto_provider().clone();
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(NoVerification(provider)));
        }
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The crypto provider: the process's default if one is installed
/// (`rustls::crypto::CryptoProvider::install_default`), else the one compiled in, ring before
/// aws-lc-rs when both features are on.
fn crypto_provider() -> Result<Arc<rustls::crypto::CryptoProvider>, Error> {
    if let Some(provider) = rustls::crypto::CryptoProvider::get_default() {
        return Ok(provider.clone());
    }
    #[cfg(feature = "ring")]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[allow(unreachable_code)]
    Err(Error::TlsConfig(
        "no TLS crypto provider: build ferry with the `ring` or `aws-lc-rs` feature, or install \
         one with rustls::crypto::CryptoProvider::install_default"
            .into(),
    ))
}

/// `insecure_skip_verify`: takes any certificate, but still checks that the server holds its
/// key (the handshake signatures), so the session keys are the server's.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(path: &Path, what: &str) -> Error {
    Error::TlsConfig(format!("{}: {what}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| tls_config(path, &format!("cannot be read: {err}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| tls_config(path, &format!("is not PEM: {err}")))?;
    if certs.is_empty() {
        return Err(tls_config(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Runs the TLS handshake over `stream` for `host` (a DNS name or an IP literal).
pub(crate) async fn handshake<S>(
    stream: S,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::TlsConfig(format!("{host:?} is not a valid TLS server name")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "webpki-roots"))]
    #[test]
    fn without_built_in_roots_a_client_needs_roots_of_its_own() {
        let err = TlsOptions::default().client_config().unwrap_err();
        assert!(err.to_string().contains("`webpki-roots`"), "{err}");
    }

    #[cfg(not(feature = "native-roots"))]
    #[test]
    fn platform_roots_need_their_feature() {
        let options = TlsOptions {
            platform_roots: true,
            ..TlsOptions::default()
        };
        let err = options.client_config().unwrap_err();
        assert!(err.to_string().contains("`native-roots`"), "{err}");
    }

    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    #[test]
    fn without_a_provider_the_error_says_how_to_get_one() {
        let options = TlsOptions {
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let err = options.client_config().unwrap_err();
        assert!(err.to_string().contains("install_default"), "{err}");
    }

    #[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
    #[test]
    fn a_build_with_a_provider_makes_a_config() {
        let options = TlsOptions {
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let config = options.client_config().expect("config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
