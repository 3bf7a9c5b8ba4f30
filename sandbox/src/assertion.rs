//! Client assertions as the fake Entra ID checks them (pure logic, no I/O): a JWT signed with the
//! key of a certificate registered with the app (`x5t#S256`, PS256 or RS256, `aud` = the token
//! endpoint, `iss` = `sub` = client id, a `jti` seen once, `nbf`/`exp` around now), and federated
//! tokens from a fake Kubernetes issuer ([`Issuer`], ES256) matched against a federated credential
//! (issuer, subject, audience `api://AzureADTokenExchange`).
//!
//! Refusals carry Microsoft's AADSTS codes (FACTS.md, "Certificate credentials and federated
//! assertions"): 700027 signature / no matching key, 700024 outside the valid time range,
//! 700213 no matching federated identity record, 50027 an invalid JWT (malformed, wrong
//! audience or subject, replayed `jti`).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The audience Entra expects in a federated token.
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The fake Kubernetes issuer's URL.
pub const FEDERATED_ISSUER: &str = "https://kubernetes.sandbox.invalid";
/// Clock skew tolerated on `nbf`/`exp`.
const SKEW_SECS: u64 = 60;

/// A refusal: AADSTS code and text.
pub(crate) type Refusal = (u32, String);

/// A JWT split and decoded (signature not yet checked).
struct Jwt {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn parse(jwt: &str) -> Result<Jwt, Refusal> {
    let bad = || {
        (
            50027,
            "Invalid JWT token. The token is malformed.".to_owned(),
        )
    };
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| bad());
    let header = serde_json::from_slice(&decode(h)?).map_err(|_| bad())?;
    let claims = serde_json::from_slice(&decode(c)?).map_err(|_| bad())?;
    Ok(Jwt {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature: decode(s)?,
    })
}

fn time_range(claims: &Value, now: u64) -> Result<(), Refusal> {
    let exp = claims["exp"].as_u64();
    let nbf = claims["nbf"].as_u64().or(claims["iat"].as_u64());
    let outside = || {
        (
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, \
                 assertion valid from {}, expiry time of assertion {}.",
                nbf.unwrap_or(0),
                exp.unwrap_or(0)
            ),
        )
    };
    match (nbf, exp) {
        (_, None) => Err(outside()),
        (_, Some(e)) if e.saturating_add(SKEW_SECS) < now => Err(outside()),
        (Some(n), _) if n > now.saturating_add(SKEW_SECS) => Err(outside()),
        _ => Ok(()),
    }
}

/// base64url SHA-256 of a certificate's DER (the `x5t#S256` header).
pub(crate) fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// Checks a certificate-signed client assertion. `seen` holds used `jti`s with their expiry.
pub(crate) fn verify_certificate_assertion(
    jwt: &str,
    cert_der: &[u8],
    client_id: &str,
    token_url: &str,
    now: u64,
    seen: &mut HashMap<String, u64>,
) -> Result<(), Refusal> {
    let t = parse(jwt)?;
    let no_key = |why: &str| {
        (
            700027,
            format!("Client assertion failed signature validation. {why}"),
        )
    };
    if t.header["x5t#S256"].as_str() != Some(thumbprint(cert_der).as_str()) {
        return Err(no_key(
            "The key identified by x5t#S256 was not found among the app's credentials.",
        ));
    }
    let alg: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match t.header["alg"].as_str()
    {
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(no_key("Unsupported signing algorithm.")),
    };
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| no_key("Bad certificate."))?;
    cert.verify_signature(alg, t.signing_input.as_bytes(), &t.signature)
        .map_err(|_| no_key("The signature does not match the registered certificate."))?;
    let c = &t.claims;
    if c["aud"].as_str().map(str::to_ascii_lowercase) != Some(token_url.to_ascii_lowercase()) {
        return Err((
            50027,
            format!("Invalid JWT token. The audience of the client assertion is not {token_url}."),
        ));
    }
    if c["iss"].as_str() != Some(client_id) || c["sub"].as_str() != Some(client_id) {
        return Err((
            50027,
            "Invalid JWT token. The client assertion's iss and sub must be the client id."
                .to_owned(),
        ));
    }
    time_range(c, now)?;
    let Some(jti) = c["jti"].as_str().filter(|j| !j.is_empty()) else {
        return Err((
            50027,
            "Invalid JWT token. The client assertion has no jti.".to_owned(),
        ));
    };
    seen.retain(|_, exp| exp.saturating_add(SKEW_SECS) >= now);
    if seen.contains_key(jti) {
        return Err((
            50027,
            "Invalid JWT token. The client assertion's jti was already used (replay).".to_owned(),
        ));
    }
    seen.insert(jti.to_owned(), c["exp"].as_u64().unwrap_or(now));
    Ok(())
}

/// The fake Kubernetes service-account token issuer (ES256).
pub(crate) struct Issuer {
    key: EcdsaKeyPair,
}

impl Issuer {
    pub(crate) fn new() -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("ECDSA key generation");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("generated key loads");
        Issuer { key }
    }

    /// A projected service-account token for `subject`, issued at `iat`, valid until `exp`.
    pub(crate) fn token(&self, subject: &str, iat: u64, exp: u64) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "sandbox"});
        let claims = json!({
            "iss": FEDERATED_ISSUER,
            "sub": subject,
            "aud": [FEDERATED_AUDIENCE],
            "iat": iat,
            "nbf": iat,
            "exp": exp,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Checks a federated token against the federated credential `subject`.
    pub(crate) fn verify(&self, jwt: &str, subject: &str, now: u64) -> Result<(), Refusal> {
        let t = parse(jwt)?;
        ring::signature::UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(t.signing_input.as_bytes(), &t.signature)
        .map_err(|_| {
            (
                700027,
                "Client assertion failed signature validation. The issuer's key did not sign it."
                    .to_owned(),
            )
        })?;
        let c = &t.claims;
        let aud_ok = match &c["aud"] {
            Value::String(a) => a == FEDERATED_AUDIENCE,
            Value::Array(a) => a.iter().any(|x| x == FEDERATED_AUDIENCE),
            _ => false,
        };
        if c["iss"] != FEDERATED_ISSUER || c["sub"].as_str() != Some(subject) || !aud_ok {
            return Err((
                700213,
                format!(
                    "No matching federated identity record found for presented assertion \
                     subject '{}'. Check your federated identity credential Subject, Audience \
                     and Issuer against the presented assertion.",
                    c["sub"].as_str().unwrap_or("")
                ),
            ));
        }
        time_range(c, now)
    }
}
