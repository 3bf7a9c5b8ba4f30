//! TLS configurations, built once at start-up: the server side toward legacy clients
//! (`tls: starttls | implicit` listeners) and the client side toward the upstream and the token
//! endpoint (certificate and name always verified: webpki roots plus an optional `ca_file`).
//! Only the ring provider is used, passed explicitly, so no process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

mod stream;
pub use stream::MaybeTls;

/// What went wrong loading certificates or keys; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {source} (expected PEM `CERTIFICATE` blocks)")]
    Certs {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate (expected PEM `CERTIFICATE` blocks)")]
    NoCerts { path: PathBuf },
    #[error("cannot read the private key from {path}: {source} (expected a PEM private key)")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate {cert} and key {key} do not fit together or are unusable: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
}

/// The one crypto provider everything uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Read the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Server config for a client-facing listener (TLS 1.2 and 1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let private = load_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|source| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// Client config for upstream mail servers and token endpoints: the webpki roots plus, when
/// given, every certificate in `ca_file` (a private CA, or the sandbox's).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_inner(ca_file, None)
}

/// Like [`client_config`], presenting a client certificate (the whole chain in `cert`, leaf
/// first) — for a certificate-based Exchange Online connector.
pub fn client_config_with_cert(
    ca_file: Option<&Path>,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    client_config_inner(ca_file, Some((chain, private, cert, key)))
}

type ClientAuth<'a> = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    &'a Path,
    &'a Path,
);

fn client_config_inner(
    ca_file: Option<&Path>,
    auth: Option<ClientAuth<'_>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Ca {
                path: path.to_owned(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Ca {
            path: ca_file.map(Path::to_owned).unwrap_or_default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config =
        match auth {
            None => config.with_no_client_auth(),
            Some((chain, private, cert, key)) => config
                .with_client_auth_cert(chain, private)
                .map_err(|source| TlsError::Config {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source,
                })?,
        };
    Ok(Arc::new(config))
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`: (certificate PEM, key PEM).
pub fn self_signed_localhost() -> Result<(String, crate::secret::SecretString), rcgen::Error> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authbridge localhost");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((
        cert.pem(),
        crate::secret::SecretString::new(key.serialize_pem()),
    ))
}
