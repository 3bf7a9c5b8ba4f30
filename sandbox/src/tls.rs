//! The sandbox CA and the one server certificate it signs (SAN `localhost`, `127.0.0.1`).
//!
//! Generated once per process (ECDSA P-256) and shared by every [`crate::Sandbox`], so starting a
//! sandbox costs no key generation. rustls configs use the ring provider explicitly, never a
//! process-wide default.

use std::io;
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Material {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

static MATERIAL: OnceLock<Result<Material, String>> = OnceLock::new();

fn generate() -> Result<Material, String> {
    let e = |err: rcgen::Error| err.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "authbridge sandbox CA");
    dn.push(DnType::OrganizationName, "authbridge sandbox");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(e)?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(e)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf_params.distinguished_name = dn;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).map_err(e)?;

    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Material {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    })
}

fn material() -> io::Result<&'static Material> {
    MATERIAL
        .get_or_init(generate)
        .as_ref()
        .map_err(|e| io::Error::other(format!("sandbox certificate generation failed: {e}")))
}

/// PEM of the process-wide sandbox CA.
pub(crate) fn ca_pem() -> io::Result<&'static str> {
    material().map(|m| m.ca_pem.as_str())
}

/// The server config every sandbox listener uses (no ALPN: SMTP, IMAP, POP3 and HTTP/1.1).
pub(crate) fn server_config() -> io::Result<Arc<rustls::ServerConfig>> {
    material().map(|m| m.server.clone())
}

/// A rustls client config (ring provider) that trusts only the CA in `ca_pem`: what a test needs to
/// talk to the sandbox's TLS ports and token service.
pub fn client_config(ca_pem: &str) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
