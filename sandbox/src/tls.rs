//! The sandbox CA and the one server certificate it signs (SAN `localhost`, `127.0.0.1`), plus an
//! intermediate CA (signed by the root) that issues TLS client certificates for the fake connector.
//!
//! Generated once per process (ECDSA P-256) and shared by every [`crate::Sandbox`], so starting a
//! sandbox costs no key generation. rustls configs use the ring provider explicitly, never a
//! process-wide default.
//!
//! The connector's server config *requests* a client certificate and trusts only the root, so a
//! client certificate verifies only when the client sends the intermediate along with its leaf
//! (as Exchange Online wants the full chain). rustls would abort the handshake on a certificate
//! that does not verify; the connector instead wants to carry on and treat it as "no
//! certificate" (then `550 5.7.64` at RCPT TO). So the handshake uses [`LenientClientVerifier`],
//! which checks the proof of key possession but accepts any chain, and the session verifies the
//! chain itself afterwards with [`verify_client_chain`].

use std::io;
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

struct Material {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
    /// The connector's server config: same certificate, client certificate requested.
    connector: Arc<rustls::ServerConfig>,
    /// Verifies a client chain against the root only.
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// The intermediate CA that signs client certificates.
    intermediate: Issuer<'static, KeyPair>,
    intermediate_pem: String,
}

/// A TLS client certificate issued by the sandbox (for a certificate-based connector).
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// PEM certificates: the leaf, then (unless issued without chain) the intermediate CA.
    /// The sandbox root is never included: the server has it.
    pub chain_pem: String,
    /// PKCS#8 PEM private key of the leaf.
    pub key_pem: String,
}

impl ClientCert {
    /// The certificates of [`ClientCert::chain_pem`], leaf first.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    }

    /// The private key of [`ClientCert::key_pem`].
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        // Produced by this crate from a PKCS#8 key: parsing cannot fail.
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("sandbox key PEM is valid")
    }

    /// A rustls client config (ring provider) trusting `ca_pem` and presenting this certificate.
    pub fn client_config(&self, ca_pem: &str) -> io::Result<Arc<rustls::ClientConfig>> {
        let roots = root_store(ca_pem)?;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| io::Error::other(e.to_string()))?
                .with_root_certificates(roots)
                .with_client_auth_cert(self.chain_der(), self.key_der())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Arc::new(config))
    }
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

    let inter_key = KeyPair::generate().map_err(e)?;
    let mut inter_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "authbridge sandbox client CA");
    dn.push(DnType::OrganizationName, "authbridge sandbox");
    inter_params.distinguished_name = dn;
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    inter_params.use_authority_key_identifier_extension = true;
    let inter_cert = inter_params.signed_by(&inter_key, &issuer).map_err(e)?;
    let intermediate = Issuer::new(inter_params, inter_key);

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
    let provider = Arc::new(ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| e.to_string())?;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_cert.der().clone())
        .map_err(|e| e.to_string())?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let lenient = Arc::new(LenientClientVerifier {
        inner: client_verifier.clone(),
    });
    let connector = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(lenient)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Material {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
        connector: Arc::new(connector),
        client_verifier,
        intermediate,
        intermediate_pem: inter_cert.pem(),
    })
}

/// Requests a client certificate, checks the handshake signature made with its key, and accepts
/// any chain (or none): the session decides afterwards with [`verify_client_chain`].
#[derive(Debug)]
struct LenientClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LenientClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

/// The connector's server config (client certificate requested, not required).
pub(crate) fn connector_config() -> io::Result<Arc<rustls::ServerConfig>> {
    material().map(|m| m.connector.clone())
}

/// Verify a client's chain (leaf first, then what else it sent) against the sandbox root only.
pub(crate) fn verify_client_chain(chain: &[CertificateDer<'_>]) -> Result<(), String> {
    let m = material().map_err(|e| e.to_string())?;
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    m.client_verifier
        .verify_client_cert(leaf, rest, UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Issue a client certificate for `name` (CN and DNS SAN) signed by the sandbox's intermediate
/// CA; `with_chain` appends the intermediate to [`ClientCert::chain_pem`].
pub fn issue_client_cert(name: &str, with_chain: bool) -> io::Result<ClientCert> {
    let m = material()?;
    let e = |err: rcgen::Error| io::Error::other(format!("client certificate for {name:?}: {err}"));
    let key = KeyPair::generate().map_err(e)?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(e)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &m.intermediate).map_err(e)?;
    let mut chain_pem = cert.pem();
    if with_chain {
        chain_pem.push_str(&m.intermediate_pem);
    }
    Ok(ClientCert {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

fn root_store(ca_pem: &str) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    Ok(roots)
}

/// A rustls client config (ring provider) that trusts only the CA in `ca_pem`: what a test needs to
/// talk to the sandbox's TLS ports and token service.
pub fn client_config(ca_pem: &str) -> io::Result<Arc<rustls::ClientConfig>> {
    let roots = root_store(ca_pem)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
