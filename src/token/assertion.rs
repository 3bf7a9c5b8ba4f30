//! Client authentication without a client secret: a [`ClientAssertion`] sent as
//! `client_assertion` with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! (RFC 7523 §2.2, OIDC `private_key_jwt`).
//!
//! - [`CertificateCredential`] (`client_certificate: { cert, key }`): a JWT signed PS256 with the
//!   private key of a certificate registered with the app, header `x5t#S256` = base64url SHA-256
//!   of the certificate's DER; claims `aud` = the token endpoint, `iss` = `sub` = client id, a
//!   random `jti`, `nbf`/`iat` now, `exp` five minutes later (Microsoft identity platform,
//!   "certificate credentials"). Signed with ring; the key is read with rustls-pki-types' PEM API
//!   and checked against the certificate when loaded.
//! - `client_assertion: { file }` (workload identity federation): a token another identity
//!   provider wrote (a Kubernetes projected service-account token), read anew for every request
//!   because it is rotated underneath us; bounded in size.
//!
//! Assertions, keys and file contents live only in [`SecretString`]s and are never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::secret::SecretString;

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a signed assertion is valid (Microsoft: 5–10 minutes).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// Largest federated token file read (projected service-account tokens are ~1 KiB).
pub const MAX_ASSERTION_FILE: u64 = 64 * 1024;

/// A client assertion source.
#[derive(Clone, Debug)]
pub enum ClientAssertion {
    /// `client_certificate`: signed here with the certificate's key.
    Certificate(Arc<CertificateCredential>),
    /// `client_assertion: { file }`: read from this file for every request.
    File(PathBuf),
}

impl ClientAssertion {
    /// The credential type, for `check` and `status`.
    pub fn describe(&self) -> String {
        match self {
            ClientAssertion::Certificate(c) => format!(
                "client certificate {} (x5t#S256 {})",
                c.cert_path.display(),
                c.x5t_s256
            ),
            ClientAssertion::File(p) => {
                format!("federated client assertion from {}", p.display())
            }
        }
    }

    /// The `client_assertion` value for a request by `client_id` to `token_url`. The error says
    /// what to fix (never a secret).
    pub async fn value(&self, client_id: &str, token_url: &str) -> Result<SecretString, String> {
        match self {
            ClientAssertion::Certificate(c) => c.sign(client_id, token_url, SystemTime::now()),
            ClientAssertion::File(path) => read_assertion_file(path).await,
        }
    }
}

/// Reads a federated token file: whole content, surrounding whitespace dropped, at most
/// [`MAX_ASSERTION_FILE`] bytes.
pub async fn read_assertion_file(path: &Path) -> Result<SecretString, String> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        format!(
            "cannot read the client assertion file {}: {e}",
            path.display()
        )
    })?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(4096));
    file.take(MAX_ASSERTION_FILE + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| {
            format!(
                "cannot read the client assertion file {}: {e}",
                path.display()
            )
        })?;
    if buf.len() as u64 > MAX_ASSERTION_FILE {
        return Err(format!(
            "the client assertion file {} is larger than {MAX_ASSERTION_FILE} bytes",
            path.display()
        ));
    }
    let text = std::str::from_utf8(&buf).map_err(|_| {
        format!(
            "the client assertion file {} is not UTF-8 text",
            path.display()
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "the client assertion file {} is empty",
            path.display()
        ));
    }
    Ok(SecretString::new(text.to_owned()))
}

/// A certificate registered with the app and its private key.
pub struct CertificateCredential {
    key: RsaKeyPair,
    /// base64url SHA-256 of the certificate's DER.
    x5t_s256: String,
    cert_path: PathBuf,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("cert", &self.cert_path)
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl CertificateCredential {
    /// Loads the first certificate of `cert` and the RSA private key (PKCS#8 or PKCS#1) of `key`,
    /// both PEM, and checks that the key belongs to the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<CertificateCredential, String> {
        let certs = crate::tls::load_certs(cert).map_err(|e| e.to_string())?;
        let leaf = &certs[0];
        let private = crate::tls::load_key(key).map_err(|e| e.to_string())?;
        CertificateCredential::from_der(leaf, &private, cert)
    }

    fn from_der(
        leaf: &CertificateDer<'_>,
        private: &PrivateKeyDer<'_>,
        cert_path: &Path,
    ) -> Result<CertificateCredential, String> {
        let key = match private {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(
                    "the key is not an RSA key (Microsoft accepts RSA certificates for client \
                     assertions): create an RSA 2048+ key"
                        .to_owned(),
                );
            }
        }
        .map_err(|e| format!("the key is not a usable RSA private key ({e})"))?;
        let credential = CertificateCredential {
            key,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(leaf.as_ref())),
            cert_path: cert_path.to_owned(),
        };
        // The key must be the certificate's: sign something and verify it with the certificate.
        let probe = b"authbridge key check";
        let signature = credential.sign_bytes(probe)?;
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("the certificate cannot be read ({e})"))?;
        end_entity
            .verify_signature(
                webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
                probe,
                &signature,
            )
            .map_err(|_| "the key does not belong to the certificate".to_owned())?;
        Ok(credential)
    }

    /// The base64url SHA-256 thumbprint of the certificate (what Entra lists, in hex, under
    /// Certificates & secrets).
    pub fn thumbprint(&self) -> &str {
        &self.x5t_s256
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(signature)
    }

    /// A signed assertion for `client_id` towards `audience` (the token endpoint), valid from
    /// `now` for [`ASSERTION_LIFETIME`].
    pub fn sign(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<SecretString, String> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": random_jti()?,
            "nbf": now,
            "iat": now,
            "exp": now.saturating_add(ASSERTION_LIFETIME.as_secs()),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign_bytes(signing_input.as_bytes())?;
        Ok(SecretString::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// A random GUID-formatted `jti` (version 4).
fn random_jti() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for the assertion id ({e})"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for a test key of `tests/data/assertion` (ring cannot generate
    /// RSA keys) and the key.
    fn pair(name: &str) -> (String, String) {
        let pem = std::fs::read_to_string(format!(
            "{}/tests/data/assertion/{name}.key",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let key = rcgen::KeyPair::from_pem(&pem).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["authbridge".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), pem)
    }

    fn load(cert: &str, key: &str) -> Result<CertificateCredential, String> {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        CertificateCredential::load(&c, &k)
    }

    #[test]
    fn signs_a_verifiable_ps256_assertion() {
        let (cert, key) = pair("app");
        let c = load(&cert, &key).unwrap();
        let jwt = c
            .sign(
                "cid",
                "https://login.example/t/oauth2/v2.0/token",
                SystemTime::now(),
            )
            .unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["x5t#S256"], c.thumbprint());
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "cid");
        assert_eq!(claims["sub"], "cid");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            300
        );
        let again = c.sign("cid", "aud", SystemTime::now()).unwrap();
        let claims2: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(again.expose().split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_ne!(claims["jti"], claims2["jti"], "jti is unique");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = pair("app");
        let (_, other_key) = pair("other");
        let e = load(&cert, &other_key).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn a_non_rsa_key_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let e = load(&cert.pem(), &key.serialize_pem()).unwrap_err();
        assert!(e.contains("RSA"), "{e}");
    }

    #[tokio::test]
    async fn assertion_file_is_bounded_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  eyJabc.def.ghi\n").unwrap();
        assert_eq!(
            read_assertion_file(&p).await.unwrap().expose(),
            "eyJabc.def.ghi"
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_assertion_file(&p).await.unwrap_err().contains("empty"));
        std::fs::write(&p, vec![b'a'; MAX_ASSERTION_FILE as usize + 1]).unwrap();
        assert!(
            read_assertion_file(&p)
                .await
                .unwrap_err()
                .contains("larger than")
        );
        let e = read_assertion_file(&dir.path().join("missing"))
            .await
            .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
