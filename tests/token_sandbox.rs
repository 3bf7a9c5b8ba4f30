//! The token module against the sandbox's fake Entra ID over HTTPS (its own CA): rotation is
//! persisted and survives a restart after the old refresh token died, single-flight holds over TLS,
//! injected failures are classified and never touch the stored token, app-only tokens work.

use std::sync::Arc;
use std::time::Duration;

use authbridge::secret::SecretString;
use authbridge::token::{
    AccountConfig, DEVICE_CODE_GRANT_TYPE, ErrorKind, Flow, MasterKey, ProviderConfig,
    ProviderKind, TokenManager, TokenSettings, TokenStore, default_scopes, device_authorization,
    exchange,
};
use sandbox::{Sandbox, SandboxOptions, TokenFailure};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_SECRET: &str = "sandbox-client-secret";
const MAILBOX: &str = "tickets@contoso.com";

fn provider(sb: &Sandbox, flow: Flow, secret: &str) -> Arc<ProviderConfig> {
    Arc::new(ProviderConfig {
        name: "m365".to_owned(),
        kind: ProviderKind::Microsoft,
        flow,
        client_id: CLIENT_ID.to_owned(),
        credential: authbridge::token::CredentialKind::ClientSecret,
        client_secret: Some(SecretString::from(secret)),
        assertion: None,
        endpoints: authbridge::token::Endpoints {
            token_url: sb.token_url(),
            authorize_url: Some(sb.authorize_url()),
            device_code_url: Some(sb.device_code_url()),
        },
        scopes: default_scopes(ProviderKind::Microsoft, flow),
        redirect_uri: None,
        http: authbridge::token::HttpClient::new(
            sb.client_config(),
            authbridge::token::ProxySetting::Direct,
        ),
    })
}

fn manager(store: &TokenStore, provider: Arc<ProviderConfig>) -> Arc<TokenManager> {
    let account = AccountConfig {
        name: "tickets".to_owned(),
        mailbox: MAILBOX.to_owned(),
        provider,
    };
    TokenManager::new(store.clone(), vec![account], TokenSettings::default())
}

fn stored(store: &TokenStore) -> String {
    store
        .load("tickets")
        .unwrap()
        .unwrap()
        .refresh_token
        .expose()
        .clone()
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        refresh_grace: Duration::ZERO,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    sb.add_client(CLIENT_ID, CLIENT_SECRET, &[MAILBOX]);
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_persisted_and_survives_a_restart() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let open = || {
        let key = MasterKey::load_or_create(Some(&key_file), None, dir.path()).unwrap();
        TokenStore::open(&dir.path().join("state"), key).unwrap()
    };
    let store = open();
    let rt0 = sb.issue_refresh_token(CLIENT_ID, MAILBOX);
    store
        .save("tickets", &SecretString::from(rt0.as_str()))
        .unwrap();

    let m1 = manager(
        &store,
        provider(&sb, Flow::AuthorizationCode, CLIENT_SECRET),
    );
    let t1 = m1.access_token("tickets").await.unwrap();
    assert!(!t1.token.expose().is_empty());
    let rt1 = stored(&store);
    assert_ne!(rt1, rt0, "the rotated refresh token was stored");
    assert_eq!(sb.token_requests().refresh_token, 1);

    // The old refresh token is dead now (no grace): only the persisted one can work.
    let old = exchange(
        &provider(&sb, Flow::AuthorizationCode, CLIENT_SECRET),
        "tickets",
        &[("grant_type", "refresh_token"), ("refresh_token", &rt0)],
        &TokenSettings::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(old.kind, ErrorKind::Permanent);
    assert_eq!(old.aadsts, Some(70008));

    // Restart: a new store and manager over the same state_dir and key file, after every access
    // token issued so far expired.
    drop(m1);
    sb.expire_access_tokens();
    let store2 = open();
    let m2 = manager(
        &store2,
        provider(&sb, Flow::AuthorizationCode, CLIENT_SECRET),
    );
    let t2 = m2.access_token("tickets").await.unwrap();
    assert_ne!(t2.token.expose(), t1.token.expose());
    let rt2 = stored(&store2);
    assert_ne!(rt2, rt1);

    // The upstream refuses t2: one refresh, and the token text is nowhere under state_dir.
    let t3 = m2.refresh_after_rejection("tickets", &t2).await.unwrap();
    assert!(t3.generation > t2.generation);
    assert_eq!(sb.token_requests().refresh_token, 4);
    for entry in std::fs::read_dir(dir.path().join("state/tokens")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for rt in [&rt0, &rt1, &rt2, &stored(&store2)] {
            assert!(!text.contains(rt.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_over_tls() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), MasterKey::from_bytes([1; 32], "test")).unwrap();
    let rt0 = sb.issue_refresh_token(CLIENT_ID, MAILBOX);
    store
        .save("tickets", &SecretString::from(rt0.as_str()))
        .unwrap();
    let m = manager(&store, provider(&sb, Flow::DeviceCode, CLIENT_SECRET));
    sb.inject_times(TokenFailure::Slow(Duration::from_millis(300)), 1);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move { m.access_token("tickets").await }));
    }
    let mut generation = None;
    for t in tasks {
        let token = t.await.unwrap().unwrap();
        assert_eq!(
            *generation.get_or_insert(token.generation),
            token.generation
        );
    }
    assert_eq!(sb.token_requests().total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_classified_and_keep_the_stored_token() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), MasterKey::from_bytes([2; 32], "test")).unwrap();
    let rt0 = sb.issue_refresh_token(CLIENT_ID, MAILBOX);
    store
        .save("tickets", &SecretString::from(rt0.as_str()))
        .unwrap();
    let account = AccountConfig {
        name: "tickets".to_owned(),
        mailbox: MAILBOX.to_owned(),
        provider: provider(&sb, Flow::AuthorizationCode, CLIENT_SECRET),
    };
    let settings = TokenSettings {
        request_timeout: Duration::from_millis(700),
        ..TokenSettings::default()
    };
    let m = TokenManager::new(store.clone(), vec![account], settings);

    let cases = [
        (TokenFailure::Http500, Some(500), None, "HTTP 500"),
        (
            TokenFailure::Throttle429 {
                retry_after_secs: 7,
            },
            Some(429),
            Some(Duration::from_secs(7)),
            "HTTP 429",
        ),
        (TokenFailure::GarbageJson, Some(200), None, "unreadable"),
        (TokenFailure::TemporarilyUnavailable, Some(400), None, ""),
        (TokenFailure::Hang, None, None, "timed out"),
        (TokenFailure::ResetConnection, None, None, "cannot reach"),
    ];
    for (failure, status, retry_after, text) in cases {
        sb.inject_times(failure.clone(), 1);
        let e = m.refresh_now("tickets").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient, "{failure:?}: {e}");
        assert_eq!(e.status, status, "{failure:?}: {e}");
        assert_eq!(e.retry_after, retry_after, "{failure:?}");
        assert!(e.message.contains(text), "{failure:?}: {e}");
        assert_eq!(stored(&store), rt0, "{failure:?} touched the stored token");
        assert!(m.status()[0].needs_login.is_none(), "{failure:?}");
    }

    // The sandbox's AADSTS70008: permanent, the stored token stays until replaced.
    sb.inject_times(TokenFailure::InvalidGrant70008, 1);
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!((e.kind, e.aadsts), (ErrorKind::Permanent, Some(70008)));
    assert!(e.to_string().contains("authbridge login tickets"), "{e}");
    assert_eq!(stored(&store), rt0);
    assert!(m.status()[0].needs_login.is_some());

    // Revocation (AADSTS50173) of a newly imported token.
    let rt1 = sb.issue_refresh_token(CLIENT_ID, MAILBOX);
    store
        .save("tickets", &SecretString::from(rt1.as_str()))
        .unwrap();
    sb.revoke_refresh_token(&rt1);
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!((e.kind, e.aadsts), (ErrorKind::Permanent, Some(50173)));
    assert_eq!(stored(&store), rt1);

    // A good token again: works at once, needs_login clears.
    let rt2 = sb.issue_refresh_token(CLIENT_ID, MAILBOX);
    store
        .save("tickets", &SecretString::from(rt2.as_str()))
        .unwrap();
    m.refresh_now("tickets").await.unwrap();
    assert!(m.status()[0].needs_login.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_against_the_sandbox() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), MasterKey::from_bytes([3; 32], "test")).unwrap();
    let m = manager(
        &store,
        provider(&sb, Flow::ClientCredentials, CLIENT_SECRET),
    );
    let t = m.access_token("tickets").await.unwrap();
    assert!(!t.token.expose().is_empty());
    assert_eq!(sb.token_requests().client_credentials, 1);
    assert!(store.load("tickets").unwrap().is_none());

    let wrong = manager(
        &store,
        provider(&sb, Flow::ClientCredentials, "not-the-secret"),
    );
    let e = wrong.access_token("tickets").await.unwrap_err();
    assert_eq!((e.kind, e.aadsts), (ErrorKind::Permanent, Some(7000215)));
    assert!(e.to_string().contains("client_secret"), "{e}");
    assert!(!e.to_string().contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_stores_the_refresh_token() {
    let sb = Sandbox::start(SandboxOptions {
        device_code_interval: Duration::ZERO,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    sb.add_client(CLIENT_ID, CLIENT_SECRET, &[]);
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), MasterKey::from_bytes([4; 32], "test")).unwrap();
    let p = provider(&sb, Flow::DeviceCode, CLIENT_SECRET);
    let m = manager(&store, p.clone());
    assert!(m.status()[0].needs_login.is_some());

    let d = device_authorization(&p, "tickets", &TokenSettings::default())
        .await
        .unwrap();
    assert!(!d.user_code.is_empty() && d.verification_uri.starts_with("https://"));
    let poll = [
        ("grant_type", DEVICE_CODE_GRANT_TYPE),
        ("device_code", d.device_code.expose().as_str()),
    ];
    let e = m.exchange_and_store("tickets", &poll).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.error.as_deref(), Some("authorization_pending"));
    assert!(store.load("tickets").unwrap().is_none());

    assert!(sb.approve_device_code(&d.user_code, MAILBOX));
    let t = m.exchange_and_store("tickets", &poll).await.unwrap();
    assert!(store.load("tickets").unwrap().is_some());
    assert!(m.status()[0].needs_login.is_none());
    assert_eq!(
        m.access_token("tickets").await.unwrap().generation,
        t.generation
    );
    // The stored refresh token works for the next refresh.
    let next = m.refresh_now("tickets").await.unwrap();
    assert!(next.generation > t.generation);
    assert_eq!(sb.token_requests().device_code, 2);
    assert_eq!(sb.token_requests().refresh_token, 1);
}
