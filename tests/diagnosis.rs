//! Issue 15: `authbridge check` (the real binary) against the sandbox switched into each
//! Microsoft-side failure finds it and prints its fix; the same failure in a real client
//! session gives the documented reply (docs/replies.md) and logs the fix.

mod common;

use std::process::Command;

use common::*;
use sandbox::MailboxSettings;

/// Run `authbridge check --config <env's config> [extra…]`; (exit code, stdout + stderr).
async fn check(env: &Env, extra: &[&str]) -> (Option<i32>, String) {
    let config = env.config_path.clone();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_authbridge"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .args(&extra)
            .output()
            .expect("authbridge runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

/// The lines of `out` about listener `name` (as `listener NAME (…`).
fn lines_of<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("listener {name} (");
    out.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// One line that holds every one of `parts`.
fn assert_line(out: &str, parts: &[&str]) {
    assert!(
        out.lines().any(|l| parts.iter().all(|p| l.contains(p))),
        "no line holds all of {parts:?}:\n{out}"
    );
}

/// Rewrite the provider's requested scopes in the env's config.
fn set_scopes(env: &Env, scopes: &str) {
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = yaml.replace(
        "    ca_file: ca.pem\naccounts:",
        &format!("    ca_file: ca.pem\n    scopes: [{scopes}]\naccounts:"),
    );
    std::fs::write(&env.config_path, yaml).unwrap();
}

fn app_only() -> EnvOptions {
    EnvOptions {
        app_only: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_setup_checks_ok_with_claims_and_first_commands() {
    let env = Env::start().await;
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: token claims:",
            "aud=https://outlook.office.com",
            "scp=IMAP.AccessAsUser.All,POP.AccessAsUser.All,SMTP.Send",
            "upn=tickets@contoso.com",
            "tid=",
            "appid=",
            "exp=",
        ],
    );
    assert_eq!(out.matches("EXAMINE INBOX OK").count(), 3, "{out}");
    assert_eq!(out.matches("STAT OK").count(), 2, "{out}");
    assert_eq!(out.matches("MAIL FROM/RCPT TO/RSET OK").count(), 3, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_auth_disabled_on_the_mailbox() {
    let env = Env::start().await;
    env.sandbox.set_mailbox_settings(
        MAILBOX,
        MailboxSettings {
            smtp_auth_disabled: true,
            ..Default::default()
        },
    );
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    for l in lines_of(&out, "smtp") {
        assert!(
            l.contains("FAILED: SMTP AUTH is disabled for tickets@contoso.com")
                && l.contains("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.")
                && l.contains(
                    "fix: in Exchange Online PowerShell run `Set-CASMailbox -Identity tickets@contoso.com -SmtpClientAuthenticationDisabled $false`"
                ),
            "{out}"
        );
    }
    assert!(
        lines_of(&out, "imap")[0].contains("EXAMINE INBOX OK"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_or_pop_disabled_on_the_mailbox() {
    let env = Env::start().await;
    for (settings, listener, fix) in [
        (
            MailboxSettings {
                imap_disabled: true,
                ..Default::default()
            },
            "imap",
            "Set-CASMailbox -Identity tickets@contoso.com -ImapEnabled $true",
        ),
        (
            MailboxSettings {
                pop_disabled: true,
                ..Default::default()
            },
            "pop3",
            "-PopEnabled $true",
        ),
    ] {
        env.sandbox.set_mailbox_settings(MAILBOX, settings);
        let (code, out) = check(&env, &[]).await;
        assert_eq!(code, Some(1), "{out}");
        let lines = lines_of(&out, listener);
        assert!(
            lines[0].contains("FAILED: IMAP")
                || lines[0].contains("FAILED: POP")
                || lines[0].contains("protocol is turned off for tickets@contoso.com"),
            "{out}"
        );
        assert!(
            lines[0].contains("protocol is turned off for tickets@contoso.com")
                && lines[0].contains(fix),
            "{out}"
        );
        // The other protocols still log in.
        assert!(lines_of(&out, "smtp")[0].contains("RSET OK"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_token_without_the_smtp_scope() {
    let env = Env::start().await;
    set_scopes(
        &env,
        "https://outlook.office.com/IMAP.AccessAsUser.All, offline_access",
    );
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: token claims:",
            "scp=IMAP.AccessAsUser.All ",
        ],
    );
    for l in lines_of(&out, "smtp") {
        assert!(
            l.contains("FAILED: the token does not grant SMTP.Send")
                && l.contains("add the delegated permission SMTP.Send")
                && l.contains("https://outlook.office.com/SMTP.Send")
                && l.contains("authbridge login tickets"),
            "{out}"
        );
    }
    for l in lines_of(&out, "pop3") {
        assert!(l.contains("does not grant POP.AccessAsUser.All"), "{out}");
    }
    assert!(
        lines_of(&out, "imap")[0].contains("EXAMINE INBOX OK"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_audience_tokens_delegated_and_app_only() {
    let env = Env::start().await;
    set_scopes(
        &env,
        "https://graph.microsoft.com/Mail.Send, offline_access",
    );
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: FAILED: the token is for another API (Microsoft Graph",
            "fix: set the provider's `scopes` to `https://outlook.office365.com/.default`",
        ],
    );
    assert_line(&out, &["aud=https://graph.microsoft.com"]);
    // Exchange refuses it too (the sandbox checks the audience).
    assert!(!out.contains("upstream login OK"), "{out}");

    let env = Env::start_with(app_only()).await;
    set_scopes(&env, "https://graph.microsoft.com/.default");
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &["account tickets: FAILED: the token is for another API"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_without_admin_consent() {
    let env = Env::start_with(app_only()).await;
    env.sandbox.set_app_roles(CLIENT_ID, &[]);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: FAILED: the app has no admin consent",
            "API permissions",
            "Grant admin consent",
        ],
    );
    // Only IMAP consented: POP and SMTP say which permission is missing.
    env.sandbox.set_app_roles(CLIENT_ID, &["IMAP.AccessAsApp"]);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        lines_of(&out, "imap")[0].contains("EXAMINE INBOX OK"),
        "{out}"
    );
    assert!(
        lines_of(&out, "smtp")[0].contains("no admin consent for SMTP.SendAsApp"),
        "{out}"
    );
    assert!(
        lines_of(&out, "pop3")[0].contains("no admin consent for POP.AccessAsApp"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_without_mailbox_permission() {
    let env = Env::start_with(app_only()).await;
    env.sandbox
        .set_app_mailbox_permission(CLIENT_ID, MAILBOX, false);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    // Exchange accepts AUTHENTICATE: only the next command shows it. Before issue 15 this was
    // reported as "upstream login OK".
    for l in lines_of(&out, "imap") {
        assert!(
            l.contains(
                "EXAMINE INBOX refused: the token is valid but may not open tickets@contoso.com"
            ) && l.contains("User is authenticated but not connected")
                && l.contains("Add-MailboxPermission -Identity tickets@contoso.com"),
            "{out}"
        );
    }
    for l in lines_of(&out, "pop3") {
        assert!(
            l.contains("STAT refused") && l.contains("Add-MailboxPermission"),
            "{out}"
        );
    }
    for l in lines_of(&out, "smtp") {
        assert!(
            l.contains("5.7.3 Authentication unsuccessful")
                && l.contains("Add-MailboxPermission -Identity tickets@contoso.com"),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_not_registered() {
    let env = Env::start_with(app_only()).await;
    env.sandbox.set_service_principal(CLIENT_ID, false);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    for name in ["imap", "pop3"] {
        assert!(
            lines_of(&out, name)[0].contains(
                "FAILED: the app's service principal is not registered in Exchange Online"
            ) && lines_of(&out, name)[0]
                .contains(&format!("New-ServicePrincipal -AppId {CLIENT_ID}")),
            "{out}"
        );
    }
    assert!(
        lines_of(&out, "smtp")[0].contains("New-ServicePrincipal"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_denied_only_after_data_and_send_test() {
    let env = Env::start().await;
    // A healthy send test (--direct: from check to each upstream): the message arrives.
    let (code, out) = check(&env, &["--send-test", "someone@contoso.com", "--direct"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &[
            "test message to someone@contoso.com accepted by the upstream (--direct: sent from check, not through the local listener): 250",
        ],
    );
    let sent: Vec<_> = env
        .sandbox
        .messages()
        .into_iter()
        .filter(|m| m.text().contains("authbridge check --send-test"))
        .collect();
    // One per distinct SMTP upstream (smtp and smtp-starttls share one).
    assert_eq!(sent.len(), 2, "{out}");
    assert_eq!(sent[0].rcpts, ["someone@contoso.com"]);

    env.sandbox.set_mailbox_settings(
        MAILBOX,
        MailboxSettings {
            send_as_denied: true,
            ..Default::default()
        },
    );
    // Without a message nothing shows it: MAIL FROM and RCPT TO are accepted.
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&env, &["--send-test", "someone@contoso.com", "--direct"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "end of DATA refused: tickets@contoso.com may not send with the message's From address",
            "554 5.2.252 SendAsDenied",
            "Add-RecipientPermission",
        ],
    );
    let (code, out) = check(&env, &["--send-test", "not an address", "--direct"]).await;
    assert_eq!(code, Some(2), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_reported_not_failed() {
    let env = Env::start().await;
    env.sandbox.set_opaque_tokens(true);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &["account tickets: WARNING: token is opaque (not a JWT)"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_connector_without_attribution() {
    let env = Env::start().await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = format!(
        "{yaml}  - name: relay\n    protocol: smtp\n    mode: relay\n    listen: 127.0.0.1:0\n    \
         allowed_senders: [glpi@contoso.com]\n    upstream: {{ host: 127.0.0.1, port: {}, tls: starttls, server_name: localhost, ca_file: ca.pem }}\n",
        env.sandbox.connector_addr().port()
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "listener relay (relay → 127.0.0.1:",
            "RCPT TO refused: the tenant's connector does not recognise this host",
            "550 5.7.64 TenantAttribution",
            "inbound connector",
        ],
    );
    assert_eq!(env.sandbox.connector_counters().connector_accepted, 0);
    env.sandbox
        .set_connector_allowed_ips(&["127.0.0.1".parse().unwrap()]);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &[
            "listener relay",
            "connector reachable, TLS OK, MAIL FROM/RCPT TO/RSET OK",
        ],
    );
    assert_eq!(env.sandbox.connector_counters().connector_accepted, 0);
}

/// The tenant rejects Direct Send and no connector matches: `550 5.7.68 TenantInboundAttribution`
/// at RCPT TO, its own cause and fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_with_reject_direct_send() {
    let env = Env::start().await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = format!(
        "{yaml}  - name: relay\n    protocol: smtp\n    mode: relay\n    listen: 127.0.0.1:0\n    \
         allowed_senders: [glpi@contoso.com]\n    upstream: {{ host: 127.0.0.1, port: {}, tls: starttls, server_name: localhost, ca_file: ca.pem }}\n",
        env.sandbox.connector_addr().port()
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    env.sandbox.set_connector_reject_direct_send(true);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "listener relay (relay → 127.0.0.1:",
            "RCPT TO refused: the tenant rejects Direct Send (`Set-OrganizationConfig -RejectDirectSend $true`)",
            "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources",
            "fix: Exchange admin center > Mail flow > Connectors: add an inbound connector",
        ],
    );
    let (_, json) = check(&env, &["--json"]).await;
    assert!(json.contains("\"id\": \"reject_direct_send\""), "{json}");
    // A sender outside the accepted domains still meets plain TenantAttribution.
    let yaml = std::fs::read_to_string(&env.config_path).unwrap().replace(
        "allowed_senders: [glpi@contoso.com]",
        "allowed_senders: [glpi@fabrikam.com]",
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    let (_, out) = check(&env, &[]).await;
    assert_line(&out, &["listener relay", "550 5.7.64 TenantAttribution"]);
    // With the connector matching this host, Reject Direct Send lets it through.
    env.sandbox
        .set_connector_allowed_ips(&["127.0.0.1".parse().unwrap()]);
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
}

/// The token's `tid` against the configured tenant: equal, another tenant (a multi-tenant app
/// consented elsewhere), and a domain-name tenant (not compared offline, said so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_tenant_compared_with_the_configured_tenant_id() {
    let env = Env::start_with(app_only()).await;
    let tid = env.sandbox.tenant_id();
    // Domain-name tenant (the env's default): not compared, and why.
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: tenant: token tid=",
            "not compared: the provider's tenant is the domain name contoso.onmicrosoft.com",
            "put the tenant id in the provider's `tenant`",
        ],
    );
    // The tenant id in the config (and the token URL): compared, equal.
    let yaml = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace(env.sandbox.tenant(), &tid);
    std::fs::write(&env.config_path, yaml).unwrap();
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_line(
        &out,
        &[&format!(
            "account tickets: tenant: the token's tid is the configured tenant {tid}"
        )],
    );
    // A token from another tenant.
    let other = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    env.sandbox.set_token_tid(Some(other));
    let (code, out) = check(&env, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_line(
        &out,
        &[
            "account tickets: FAILED: the token was issued by another tenant than the one configured for tickets",
            &format!("(token tid={other}, configured tenant {tid})"),
            "fix: put the tenant of tickets@contoso.com in the provider's `tenant`",
            "grant admin consent in the mailbox's tenant",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_one_object_per_account_and_listener() {
    let env = Env::start_with(app_only()).await;
    env.sandbox
        .set_app_mailbox_permission(CLIENT_ID, MAILBOX, false);
    let (code, out) = check(&env, &["--json"]).await;
    assert_eq!(code, Some(1), "{out}");
    // stdout is one JSON document; stderr (appended) says the check failed.
    let json = &out[..out.find("\nauthbridge: ").map_or(out.len(), |i| i + 1)];
    let v: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{out}"));
    assert_eq!(v["ok"], false);
    let account = &v["accounts"][0];
    assert_eq!(account["name"], "tickets");
    assert_eq!(account["token"]["form"], "jwt");
    assert_eq!(account["token"]["aud"], "https://outlook.office365.com");
    assert_eq!(
        account["token"]["roles"],
        serde_json::json!(["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"])
    );
    let listeners = v["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 8);
    let imap = listeners.iter().find(|l| l["name"] == "imap").unwrap();
    assert_eq!(imap["account"], "tickets");
    assert_eq!(imap["ok"], false);
    let f = &imap["findings"][0];
    assert_eq!(f["status"], "failed");
    assert_eq!(f["id"], "not_connected");
    assert!(f["fix"].as_str().unwrap().contains("Add-MailboxPermission"));
    // The token itself is nowhere in the output.
    assert!(!out.contains("eyJ0eXAiOiJKV1Qi"), "{out}");
}

/// `"…"` with `\` and `"` escaped (laminas-mail's LOGIN quoting).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The same failures in real client sessions through the proxy: the reply docs/replies.md
/// documents, and the fix in the log (isolated: it captures this process's logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_replies_and_logged_hints() {
    if run_isolated("session_replies_and_logged_hints", &[]) {
        return;
    }
    let capture = LogCapture::install(tracing::Level::INFO);
    let login = format!("LOGIN {USER} {}", quote(PASSWORD));

    // SMTP AUTH disabled: 535 with Exchange's text, and the Set-CASMailbox fix in the log.
    let env = Env::start().await;
    env.sandbox.set_mailbox_settings(
        MAILBOX,
        MailboxSettings {
            smtp_auth_disabled: true,
            imap_disabled: true,
            ..Default::default()
        },
    );
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.reply().await;
    c.cmd("EHLO glpi").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(r.starts_with("535 5.7.139"), "{r}");
    let logs = capture.text();
    assert!(
        logs.contains(
            "Set-CASMailbox -Identity tickets@contoso.com -SmtpClientAuthenticationDisabled $false"
        ),
        "{logs}"
    );
    // IMAP disabled: NO [AUTHENTICATIONFAILED] and the ImapEnabled fix.
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await;
    let (_, r) = c.imap("a1", &login).await;
    assert!(
        r.starts_with("a1 NO [AUTHENTICATIONFAILED] AUTHENTICATE failed."),
        "{r}"
    );
    assert!(
        capture
            .text()
            .contains("Set-CASMailbox -Identity tickets@contoso.com -ImapEnabled $true"),
        "{}",
        capture.text()
    );

    // App without mailbox permission: Exchange accepts AUTHENTICATE and refuses the client's
    // first command with "authenticated but not connected"; the proxy, watching the first
    // replies (no probe round trip at login), gives the client a temporary-class refusal to
    // that command and ends the session.
    let env = Env::start_with(app_only()).await;
    env.sandbox
        .set_app_mailbox_permission(CLIENT_ID, MAILBOX, false);
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await;
    let (_, r) = c.imap("a1", &login).await;
    assert!(r.starts_with("a1 OK"), "{r}");
    let (untagged, r) = c.imap("a2", "SELECT INBOX").await;
    assert!(
        r.starts_with("a2 NO [UNAVAILABLE]")
            && r.contains("User is authenticated but not connected"),
        "{r}"
    );
    assert!(untagged.is_empty(), "{untagged:?}");
    assert_eq!(
        c.line().await.as_deref(),
        Some("* BYE [UNAVAILABLE] The mailbox cannot be opened; try again later")
    );
    assert!(c.closed().await, "the session ends");
    let mut c = LineClient::connect(env.addr("pop3")).await;
    c.line().await;
    c.send(&format!("USER {USER}")).await;
    c.line().await;
    c.send(&format!("PASS {PASSWORD}")).await;
    let r = c.line().await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    c.send("STAT").await;
    let r = c.line().await.unwrap();
    assert!(
        r.starts_with("-ERR [SYS/TEMP]") && r.contains("User is authenticated but not connected"),
        "{r}"
    );
    assert!(c.closed().await, "the session ends");
    // The session logs its hint as it ends, which may be just after the client saw the close.
    let hint = "upstream accepted the token but cannot open the mailbox";
    for _ in 0..250 {
        if capture.text().matches(hint).count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let logs = capture.text();
    assert_eq!(logs.matches(hint).count(), 2, "{logs}");
    assert!(
        logs.contains("Add-MailboxPermission -Identity tickets@contoso.com"),
        "{logs}"
    );
    // Granted again, the same session form logs in and selects.
    env.sandbox
        .set_app_mailbox_permission(CLIENT_ID, MAILBOX, true);
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await;
    let (_, r) = c.imap("a1", &login).await;
    assert!(r.starts_with("a1 OK"), "{r}");
    let (_, r) = c.imap("a2", "SELECT INBOX").await;
    assert!(r.starts_with("a2 OK"), "{r}");

    // Relay: the connector's TenantAttribution reaches the client unchanged; the log says how to
    // set up the connector.
    let mut env = Env::start().await;
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = format!(
        "{yaml}  - name: relay\n    protocol: smtp\n    mode: relay\n    listen: 127.0.0.1:0\n    \
         upstream: {{ host: 127.0.0.1, port: {}, tls: starttls, server_name: localhost, ca_file: ca.pem }}\n",
        env.sandbox.connector_addr().port()
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    env.stop_proxy().await;
    env.start_proxy().await;
    let mut c = LineClient::connect(env.addr("relay")).await;
    c.reply().await;
    c.cmd("EHLO glpi").await;
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(r.starts_with("235"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<someone@contoso.com>").await;
    assert!(r.starts_with("550 5.7.64 TenantAttribution"), "{r}");
    let logs = capture.text();
    assert!(
        logs.contains("relay: the connector refused") && logs.contains("inbound connector"),
        "{logs}"
    );
    assert_no_secrets(&capture.text(), &[PASSWORD.to_string()]);
}
