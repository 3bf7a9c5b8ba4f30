//! App credentials without a client secret, against the sandbox's fake Entra ID over HTTPS:
//! `client_certificate` (a PS256 assertion the sandbox verifies against the registered
//! certificate; wrong key, wrong audience, expired and replayed assertions are refused with their
//! AADSTS codes) and `client_assertion: { file }` (a federated token re-read for every request,
//! rotated by the test; expired and foreign-subject tokens refused). Neither the assertions nor
//! the key ever appear in the logs, even at trace level.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use authbridge::token::{
    CertificateCredential, ClientAssertion, CredentialKind, ErrorKind, Flow,
    JWT_BEARER_ASSERTION_TYPE, ProviderConfig, ProviderKind, ProxySetting, TokenManager,
    TokenSettings, default_scopes, exchange,
};
use sandbox::{Sandbox, SandboxOptions};

const CLIENT_ID: &str = "99999999-2222-3333-4444-555555555555";
const MAILBOX: &str = "tickets@contoso.com";
const SUBJECT: &str = "system:serviceaccount:mail:authbridge";

fn provider(sb: &Sandbox, kind: CredentialKind, assertion: ClientAssertion) -> Arc<ProviderConfig> {
    common::app_provider(
        sb,
        CLIENT_ID,
        kind,
        None,
        Some(assertion),
        ProxySetting::Direct,
    )
}

fn manager(provider: Arc<ProviderConfig>) -> (Arc<TokenManager>, tempfile::TempDir) {
    common::app_manager(provider, MAILBOX)
}

/// A client-credentials request carrying `assertion` as is.
async fn with_assertion(
    provider: &ProviderConfig,
    assertion: &str,
) -> Result<(), authbridge::token::TokenError> {
    let scope = default_scopes(ProviderKind::Microsoft, Flow::ClientCredentials).join(" ");
    exchange(
        provider,
        "tickets",
        &[
            ("grant_type", "client_credentials"),
            ("scope", &scope),
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
        &TokenSettings::default(),
    )
    .await
    .map(|_| ())
}

fn assert_not_logged(secret: &str) {
    // The signature part is what would identify a leak (header and claims are not secret).
    let tail = secret.rsplit('.').next().unwrap();
    assert!(tail.len() > 20);
    assert!(
        !common::log_capture().text().contains(tail),
        "an assertion reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_assertion_gets_an_app_token_and_bad_ones_are_refused() {
    common::log_capture();
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, cert_pem) = common::test_certificate(dir.path(), "app");
    sb.add_certificate_client(CLIENT_ID, &cert_pem, &[MAILBOX]);
    let credential = Arc::new(CertificateCredential::load(&cert_path, &key_path).unwrap());
    let p = provider(
        &sb,
        CredentialKind::ClientCertificate,
        ClientAssertion::Certificate(credential.clone()),
    );
    assert!(p.describe_credential().starts_with("client certificate"));

    // Through the manager, twice (a fresh jti each time).
    let (m, _store) = manager(p.clone());
    let t = m.access_token("tickets").await.unwrap();
    assert!(!t.token.expose().is_empty());
    m.refresh_now("tickets").await.unwrap();
    assert!(sb.token_requests().total >= 2);

    let now = SystemTime::now();
    // Replayed: the same assertion twice.
    let good = credential.sign(CLIENT_ID, &sb.token_url(), now).unwrap();
    with_assertion(&p, good.expose()).await.unwrap();
    let e = with_assertion(&p, good.expose()).await.unwrap_err();
    assert_eq!(
        (e.kind, e.aadsts),
        (ErrorKind::Permanent, Some(50027)),
        "{e}"
    );
    assert!(
        e.description.as_deref().unwrap_or("").contains("jti"),
        "{e:?}"
    );
    // Wrong audience.
    let wrong_aud = credential
        .sign(
            CLIENT_ID,
            "https://login.microsoftonline.com/other/oauth2/v2.0/token",
            now,
        )
        .unwrap();
    let e = with_assertion(&p, wrong_aud.expose()).await.unwrap_err();
    assert_eq!(e.aadsts, Some(50027), "{e}");
    assert!(
        e.description.as_deref().unwrap_or("").contains("audience"),
        "{e:?}"
    );
    // Expired: signed an hour ago (valid five minutes).
    let old = credential
        .sign(CLIENT_ID, &sb.token_url(), now - Duration::from_secs(3600))
        .unwrap();
    let e = with_assertion(&p, old.expose()).await.unwrap_err();
    assert_eq!(e.aadsts, Some(700024), "{e}");
    assert!(e.hint().contains("clock"), "{}", e.hint());
    // Signed by another key than the registered certificate's.
    let (other_cert, other_key, _) = common::test_certificate(dir.path(), "other");
    let other = CertificateCredential::load(&other_cert, &other_key).unwrap();
    let p_other = provider(
        &sb,
        CredentialKind::ClientCertificate,
        ClientAssertion::Certificate(Arc::new(other)),
    );
    let (m_other, _other_store) = manager(p_other);
    let e = m_other.access_token("tickets").await.unwrap_err();
    assert_eq!(
        (e.kind, e.aadsts),
        (ErrorKind::Permanent, Some(700027)),
        "{e}"
    );
    assert!(e.hint().contains("certificate"), "{}", e.hint());

    for secret in [&good, &wrong_aud, &old] {
        assert_not_logged(secret.expose());
    }
    let key_pem = std::fs::read_to_string(&key_path).unwrap();
    let key_line = key_pem.lines().nth(3).unwrap();
    assert!(
        !common::log_capture().text().contains(key_line),
        "the key reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_token_file_is_reread_when_rotated() {
    common::log_capture();
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.add_federated_client(CLIENT_ID, SUBJECT, &[MAILBOX]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let now = authbridge::token::unix_secs(SystemTime::now());
    let hour = Duration::from_secs(3600);

    // Expired token in the file: refused.
    let expired = sb.issue_federated_token(SUBJECT, now - 7200, hour);
    std::fs::write(&file, &expired).unwrap();
    let p = provider(
        &sb,
        CredentialKind::ClientAssertion,
        ClientAssertion::File(file.clone()),
    );
    assert!(p.describe_credential().contains("azure-identity-token"));
    let (m, _store) = manager(p.clone());
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(e.aadsts, Some(700024), "{e}");

    // Kubernetes rotates the file (atomically, through a symlink swap): the next request reads
    // the new token, no restart.
    let fresh = sb.issue_federated_token(SUBJECT, now, hour);
    let tmp = dir.path().join("..new");
    std::fs::write(&tmp, format!("{fresh}\n")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let (m, _store) = manager(p.clone());
    let t = m.access_token("tickets").await.unwrap();
    assert!(!t.token.expose().is_empty());

    // A token for another service account: no matching federated credential.
    let foreign = sb.issue_federated_token("system:serviceaccount:other:app", now, hour);
    std::fs::write(&file, &foreign).unwrap();
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(
        (e.kind, e.aadsts),
        (ErrorKind::Permanent, Some(700213)),
        "{e}"
    );
    assert!(e.hint().contains("federated credential"), "{}", e.hint());

    // The file vanishes (volume not mounted): a transient error naming the file. (A fresh
    // manager: the one above holds the permanent refusal until the config changes.)
    std::fs::remove_file(&file).unwrap();
    let (m, _store) = manager(p.clone());
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("azure-identity-token"), "{e}");

    for secret in [&expired, &fresh, &foreign] {
        assert_not_logged(secret);
    }
}
