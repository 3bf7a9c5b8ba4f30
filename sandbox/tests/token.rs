//! The fake Entra ID token service over real HTTPS on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::{Sandbox, SandboxOptions, TokenFailure};

const CID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "sandbox-client-secret";
const MBX: &str = "tickets@contoso.com";

async fn sandbox(grace: Duration) -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        refresh_grace: grace,
        ..Default::default()
    })
    .await
    .unwrap();
    sb.add_client(CID, SECRET, &[MBX]);
    sb
}

#[tokio::test]
async fn refresh_token_rotates_and_old_one_dies_after_grace() {
    let sb = sandbox(Duration::from_millis(300)).await;
    assert!(sb.token_url().starts_with("https://127.0.0.1:"));
    assert!(
        sb.token_url()
            .ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
    let rt1 = sb.issue_refresh_token(CID, MBX);

    let r = refresh(&sb, CID, SECRET, &rt1).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["ext_expires_in"], 3600);
    assert!(v["access_token"].as_str().unwrap().len() >= 1500);
    let rt2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);

    // The old token still works inside the grace period...
    assert_eq!(refresh(&sb, CID, SECRET, &rt1).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ...and not after it.
    let r = refresh(&sb, CID, SECRET, &rt1).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(v["error_codes"][0], 70008);
    let desc = v["error_description"].as_str().unwrap();
    assert!(desc.starts_with("AADSTS70008: "), "{desc}");
    assert!(desc.contains("Trace ID: ") && desc.contains("Correlation ID: "));
    for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(v[k].is_string(), "{k} missing: {v}");
    }
    // The rotated one works.
    assert_eq!(refresh(&sb, CID, SECRET, &rt2).await.status, 200);

    // Revocation covers the whole family.
    sb.revoke_refresh_token(&rt1);
    let v = refresh(&sb, CID, SECRET, &rt2).await.json();
    assert_eq!(v["error_codes"][0], 50173);

    let c = sb.token_requests();
    assert_eq!(c.refresh_token, 5);
    assert_eq!(c.total, 5);
}

#[tokio::test]
async fn client_errors_and_tenant() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let rt = sb.issue_refresh_token(CID, MBX);
    let r = refresh(&sb, CID, "wrong", &rt).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert_eq!(r.json()["error_codes"][0], 7000215);

    let r = refresh(&sb, "unknown-client", SECRET, &rt).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_codes"][0], 700016);

    let r = request(
        &sb,
        "POST",
        "/fabrikam.onmicrosoft.com/oauth2/v2.0/token",
        &form(&[("grant_type", "refresh_token")]),
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_codes"][0], 90002);
}

#[tokio::test]
async fn client_credentials() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let r = token_request(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CID),
            ("client_secret", SECRET),
            ("scope", "https://outlook.office365.com/.default"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["access_token"].is_string());
    assert!(v.get("refresh_token").is_none());
    assert_eq!(v["expires_in"], 3600);

    let r = token_request(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CID),
            ("client_secret", SECRET),
            ("scope", "https://outlook.office.com/SMTP.Send"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_scope");
    assert_eq!(r.json()["error_codes"][0], 70011);
    assert_eq!(sb.token_requests().client_credentials, 2);
}

#[tokio::test]
async fn injected_failures() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let rt = sb.issue_refresh_token(CID, MBX);

    sb.inject(TokenFailure::Http500);
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "server_error");

    sb.inject(TokenFailure::Throttle429 {
        retry_after_secs: 7,
    });
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "7");

    sb.inject(TokenFailure::InvalidGrant70008);
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(r.json()["error_codes"][0], 70008);

    sb.inject(TokenFailure::TemporarilyUnavailable);
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "temporarily_unavailable");

    sb.inject(TokenFailure::GarbageJson);
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());

    sb.inject(TokenFailure::ResetConnection);
    assert!(
        token_request(&sb, &[("grant_type", "refresh_token")])
            .await
            .is_err()
    );

    sb.inject(TokenFailure::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        token_request(&sb, &[("grant_type", "refresh_token")]),
    )
    .await;
    assert!(hung.is_err(), "a hanging token endpoint answered");

    sb.inject(TokenFailure::Slow(Duration::from_millis(250)));
    let t0 = Instant::now();
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(250));

    sb.clear_failures();
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 200);

    // One-shot injection.
    sb.inject_times(TokenFailure::Http500, 1);
    assert_eq!(refresh(&sb, CID, SECRET, &rt).await.status, 500);
    let rt2 = refresh(&sb, CID, SECRET, &rt).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!rt2.is_empty());

    let c = sb.token_requests();
    assert_eq!(c.total, 11);
    assert_eq!(c.refresh_token, 11);
}

#[tokio::test]
async fn introspection_and_expiry() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let at = sb.issue_access_token(CID, MBX);
    let r = request(
        &sb,
        "POST",
        "/introspect",
        &form(&[("token", &at)]),
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    let v = r.json();
    assert_eq!(v["active"], true);
    assert_eq!(v["username"], MBX);
    sb.expire_access_tokens();
    let r = request(
        &sb,
        "POST",
        "/introspect",
        &form(&[("token", &at)]),
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    assert_eq!(r.json()["active"], false);
    let c = sb.token_requests();
    assert_eq!((c.introspect, c.introspect_active, c.total), (2, 1, 0));
}

#[tokio::test]
async fn control_revokes_and_expires_a_refresh_token_family() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let control = |path: &'static str, body: String| {
        let sb = &sb;
        async move {
            request(sb, "POST", path, &body, "application/json")
                .await
                .unwrap()
        }
    };
    // Revoking the first token of a family also kills its rotations.
    let rt1 = sb.issue_refresh_token(CID, MBX);
    let r = refresh(&sb, CID, SECRET, &rt1).await;
    assert_eq!(r.status, 200);
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    let other = sb.issue_refresh_token(CID, "helpdesk@contoso.com");
    let r = control(
        "/_sandbox/revoke_refresh_token",
        format!(r#"{{"refresh_token":"{rt1}"}}"#),
    )
    .await;
    assert_eq!((r.status, r.json()["ok"].clone()), (200, true.into()));
    let r = refresh(&sb, CID, SECRET, &rt2).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_codes"][0], 50173);
    // Another family is untouched.
    assert_eq!(refresh(&sb, CID, SECRET, &other).await.status, 200);
    // Expiry answers 70008.
    let r = control(
        "/_sandbox/expire_refresh_token",
        format!(r#"{{"refresh_token":"{other}"}}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = refresh(&sb, CID, SECRET, &other).await;
    assert_eq!(r.json()["error_codes"][0], 70008);
    // Unknown token, missing field.
    let r = control(
        "/_sandbox/revoke_refresh_token",
        r#"{"refresh_token":"nope"}"#.to_string(),
    )
    .await;
    assert_eq!((r.status, r.json()["ok"].clone()), (404, false.into()));
    assert_eq!(
        control("/_sandbox/revoke_refresh_token", "{}".to_string())
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn control_endpoints() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let r = request(
        &sb,
        "POST",
        "/_sandbox/fail",
        r#"{"mode":"throttle429","retry_after_secs":3}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let rt = sb.issue_refresh_token(CID, MBX);
    assert_eq!(refresh(&sb, CID, SECRET, &rt).await.status, 429);
    request(&sb, "POST", "/_sandbox/clear", "", "application/json")
        .await
        .unwrap();
    assert_eq!(refresh(&sb, CID, SECRET, &rt).await.status, 200);
    let v = request(&sb, "GET", "/_sandbox/counters", "", "application/json")
        .await
        .unwrap()
        .json();
    assert_eq!(v["token_requests"]["refresh_token"], 2);
    assert_eq!(v["mail_auth"]["smtp_ok"], 0);
}

#[tokio::test]
async fn per_account_failures_and_device_polling_errors() {
    let sb = sandbox(Duration::from_secs(2)).await;
    let other = "alerts@contoso.com";
    let rt = sb.issue_refresh_token(CID, MBX);
    let rt_other = sb.issue_refresh_token(CID, other);
    sb.add_client("app-client", "app-secret", &[MBX]);

    // Only this mailbox's refreshes fail, twice; the other account and app-only requests are fine.
    sb.inject_for(MBX, TokenFailure::InvalidGrant70008, Some(2));
    let r = refresh(&sb, CID, SECRET, &rt).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_codes"][0], 70008);
    assert_eq!(refresh(&sb, CID, SECRET, &rt_other).await.status, 200);
    let app = [
        ("grant_type", "client_credentials"),
        ("client_id", "app-client"),
        ("client_secret", "app-secret"),
        ("scope", "https://outlook.office365.com/.default"),
    ];
    assert_eq!(token_request(&sb, &app).await.unwrap().status, 200);
    assert_eq!(refresh(&sb, CID, SECRET, &rt).await.status, 400);
    assert_eq!(
        refresh(&sb, CID, SECRET, &rt).await.status,
        200,
        "two times only"
    );

    // An app-only client by its client id, through the control endpoint; clear removes it.
    let r = request(
        &sb,
        "POST",
        "/_sandbox/fail",
        r#"{"mode":"http500","account":"app-client"}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(token_request(&sb, &app).await.unwrap().status, 500);
    assert_eq!(refresh(&sb, CID, SECRET, &rt_other).await.status, 200);
    sb.clear_failures();
    assert_eq!(token_request(&sb, &app).await.unwrap().status, 200);

    // Device-code polling answers on demand.
    for (failure, error) in [
        (TokenFailure::SlowDown, "slow_down"),
        (TokenFailure::AuthorizationPending, "authorization_pending"),
    ] {
        sb.inject_times(failure, 1);
        let r = token_request(
            &sb,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", CID),
                ("device_code", "x"),
            ],
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some(error)));
    }
    assert_eq!(
        TokenFailure::parse("slow_down"),
        Some(TokenFailure::SlowDown)
    );
}
