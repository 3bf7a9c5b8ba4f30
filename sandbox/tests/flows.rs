//! Authorization-code (PKCE) and device-code flows over HTTPS, and the `authbridge-sandbox` binary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use sandbox::{Sandbox, SandboxOptions};
use sha2::{Digest, Sha256};

const CID: &str = "public-client";
const MBX: &str = "tickets@contoso.com";

fn query_of(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.add_client(CID, "", &[]);
    sb.set_authorize_user(MBX);
    let verifier = "a-long-random-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let path = format!(
        "/{}/oauth2/v2.0/authorize?{}",
        sb.tenant(),
        form(&[
            ("client_id", CID),
            ("response_type", "code"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            (
                "scope",
                "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
            ),
            ("state", "st4te"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
    );
    assert!(sb.authorize_url().ends_with("/oauth2/v2.0/authorize"));
    let r = request(&sb, "GET", &path, "", "text/plain").await.unwrap();
    assert_eq!(r.status, 302);
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://127.0.0.1:9/callback?code="),
        "{loc}"
    );
    let q = query_of(&loc);
    assert_eq!(q["state"], "st4te");
    let code = q["code"].clone();

    let redeem = |verifier: &'static str| {
        let code = code.clone();
        let sb = &sb;
        async move {
            token_request(
                sb,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", CID),
                    ("code", &code),
                    ("redirect_uri", "http://127.0.0.1:9/callback"),
                    ("code_verifier", verifier),
                ],
            )
            .await
            .unwrap()
        }
    };
    let r = redeem("wrong-verifier").await;
    assert_eq!(r.json()["error_codes"][0], 50148);
    let r = redeem(verifier).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["scope"],
        "https://outlook.office.com/IMAP.AccessAsUser.All"
    );
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    // The code is single use.
    let r = redeem(verifier).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(r.json()["error_codes"][0], 54005);
    // The refresh token from the code works (public client: no secret).
    assert_eq!(refresh(&sb, CID, "", &rt).await.status, 200);
    let c = sb.token_requests();
    assert_eq!(
        (c.authorization_code, c.refresh_token, c.authorize),
        (3, 1, 1)
    );
}

async fn device_code(sb: &Sandbox) -> serde_json::Value {
    let path = format!("/{}/oauth2/v2.0/devicecode", sb.tenant());
    let r = request(
        sb,
        "POST",
        &path,
        &form(&[
            ("client_id", CID),
            (
                "scope",
                "https://outlook.office.com/SMTP.Send offline_access",
            ),
        ]),
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    r.json()
}

async fn poll(sb: &Sandbox, device_code: &str) -> HttpReply {
    token_request(
        sb,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CID),
            ("device_code", device_code),
        ],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn device_code_flow() {
    let sb = Sandbox::start(SandboxOptions {
        device_code_interval: Duration::from_millis(200),
        device_code_lifetime: Duration::from_millis(600),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.add_client(CID, "", &[]);

    let d = device_code(&sb).await;
    let dc = d["device_code"].as_str().unwrap().to_string();
    let uc = d["user_code"].as_str().unwrap().to_string();
    assert_eq!(d["interval"], 1);
    assert!(d["message"].as_str().unwrap().contains(&uc));
    assert_eq!(sb.pending_device_codes(), std::slice::from_ref(&uc));

    assert_eq!(
        poll(&sb, &dc).await.json()["error"],
        "authorization_pending"
    );
    assert_eq!(poll(&sb, &dc).await.json()["error"], "slow_down");
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert!(sb.approve_device_code(&uc, MBX));
    let r = poll(&sb, &dc).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["refresh_token"].is_string());
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert_eq!(poll(&sb, &dc).await.json()["error_codes"][0], 54005);
    assert_eq!(
        poll(&sb, "no-such-code").await.json()["error"],
        "bad_verification_code"
    );

    // Declined.
    let d = device_code(&sb).await;
    assert!(sb.deny_device_code(d["user_code"].as_str().unwrap()));
    let r = poll(&sb, d["device_code"].as_str().unwrap()).await;
    assert_eq!(r.json()["error"], "authorization_declined");

    // Expired.
    let d = device_code(&sb).await;
    tokio::time::sleep(Duration::from_millis(650)).await;
    let r = poll(&sb, d["device_code"].as_str().unwrap()).await;
    assert_eq!(r.json()["error"], "expired_token");

    let c = sb.token_requests();
    assert_eq!((c.device_code, c.device_authorizations), (7, 3));
}

#[test]
fn binary_serves_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("authbridge-sandbox-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge-sandbox"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .args(["--token-lifetime", "120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let info_path = dir.join("sandbox.json");
    let mut info = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&info_path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            info = Some(v);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let info = info.expect("sandbox.json not written");
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let rt = std::fs::read_to_string(dir.join("refresh_token")).unwrap();
    assert_eq!(info["client_id"], "11111111-2222-3333-4444-555555555555");

    let rt_ = rt.trim().to_string();
    let token_url = info["token_url"].as_str().unwrap().to_string();
    let rest = token_url.strip_prefix("https://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt_runtime.block_on(async {
        request_to(
            addr,
            &ca,
            "POST",
            &format!("/{path}"),
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "11111111-2222-3333-4444-555555555555"),
                ("client_secret", "sandbox-client-secret"),
                ("refresh_token", &rt_),
            ]),
        )
        .await
        .unwrap()
    });
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["expires_in"], 120);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("sandbox did not stop on SIGTERM")
    });
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
