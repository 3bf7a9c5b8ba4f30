//! Shared mailboxes (`token_from`, and app-only `mailbox:`), against the sandbox's model of
//! Exchange's FullAccess and SendAs grants: a delegate's token reads the shared mailbox over IMAP
//! and POP3 (`user=<shared mailbox>`) only with FullAccess, and sends as it over SMTP
//! (`user=<delegate>`, `From: <shared mailbox>`) only with SendAs; an app-only token likewise
//! with the grants made to the app. Exchange's own replies come back for the wrong combinations,
//! `check` names the missing grant with its PowerShell fix, one token serves both accounts, and
//! the config refuses a `token_from` that cannot work.

mod common;

use authbridge::config::Config;
use common::{CLIENT_ID, Env, EnvOptions, LineClient, MAILBOX, PASSWORD, USER, b64, password_hash};

const SHARED: &str = "helpdesk@contoso.com";
const SHARED_USER: &str = "helpdesk-glpi";

/// The harness config with a second account `helpdesk` that opens the shared mailbox with the
/// token of `tickets` (the delegate, or the app).
fn with_shared_account(yaml: String) -> String {
    let account = format!(
        "  - name: helpdesk\n    token_from: tickets\n    mailbox: {SHARED}\n    logins:\n      \
         - {{ username: {SHARED_USER}, password_hash: \"{}\" }}\n",
        password_hash()
    );
    let at = yaml.find("listeners:\n").expect("listeners section");
    let mut out = yaml;
    out.insert_str(at, &account);
    out
}

async fn env(app_only: bool) -> Env {
    let opts = EnvOptions {
        app_only,
        ..EnvOptions::default()
    };
    Env::start_with_yaml(opts, |_, yaml| with_shared_account(yaml)).await
}

/// IMAP `LOGIN` as `user`; the tagged reply.
async fn imap_login(env: &Env, user: &str) -> (LineClient<tokio::net::TcpStream>, String) {
    let mut c = LineClient::connect(env.addr("imap")).await;
    assert!(c.line().await.unwrap().starts_with("* OK"));
    let (_, tagged) = c
        .imap(
            "a1",
            &format!("LOGIN {user} {{{}+}}\r\n{PASSWORD}", PASSWORD.len()),
        )
        .await;
    (c, tagged)
}

/// POP3 `USER`/`PASS` as `user`; the reply to PASS.
async fn pop3_login(env: &Env, user: &str) -> (LineClient<tokio::net::TcpStream>, String) {
    let mut c = LineClient::connect(env.addr("pop3")).await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(c.cmd(&format!("USER {user}")).await.starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD}")).await;
    (c, r)
}

/// IMAP `LOGIN` as `user`, then `SELECT INBOX`: Exchange's "authenticated but not connected"
/// shows on the first command after the login (the login itself succeeds); the SELECT's reply.
async fn imap_select_reply(env: &Env, user: &str) -> String {
    let (mut c, tagged) = imap_login(env, user).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    let (_, tagged) = c.imap("a2", "SELECT INBOX").await;
    tagged
}

/// POP3 login as `user`, then `STAT` (see [`imap_select_reply`]); the reply to STAT.
async fn pop3_stat_reply(env: &Env, user: &str) -> String {
    let (mut c, r) = pop3_login(env, user).await;
    assert!(r.starts_with("+OK"), "{r}");
    c.cmd("STAT").await
}

/// SMTP: log in as `user`, send from `from` to alerts@; the final reply (after DATA, or the
/// first refusal).
async fn smtp_send_as(env: &Env, user: &str, from: &str, subject: &str) -> String {
    let mut c = LineClient::connect(env.addr("smtp")).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO test.local").await.starts_with("250"));
    let blob = b64(format!("\0{user}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    if !r.starts_with("235") {
        return r;
    }
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<alerts@contoso.com>").await;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(
        format!(
            "From: {from}\r\nTo: alerts@contoso.com\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = c.code().await;
    let _ = c.cmd("QUIT").await;
    r
}

/// A delegate (`tickets`' delegated token) reads the shared mailbox over IMAP and POP3 only
/// once it holds FullAccess on it; before, Exchange's "authenticated but not connected" comes
/// back as a temporary refusal (the collector retries) and the log names the grant.
#[tokio::test]
async fn delegate_reads_the_shared_mailbox_only_with_full_access() {
    let env = env(false).await;
    env.sandbox
        .deliver(SHARED, b"From: a@b.c\r\nSubject: ticket 1\r\n\r\nhelp\r\n");

    let tagged = imap_select_reply(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a2 NO [UNAVAILABLE]"), "{tagged}");
    assert!(tagged.contains(SHARED), "{tagged}");
    let r = pop3_stat_reply(&env, SHARED_USER).await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");

    env.sandbox.grant_full_access(SHARED, MAILBOX);
    let (mut c, tagged) = imap_login(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    let (untagged, tagged) = c.imap("a2", "SELECT INBOX").await;
    assert!(tagged.starts_with("a2 OK"), "{tagged}");
    assert!(untagged.iter().any(|l| l == "* 1 EXISTS"), "{untagged:?}");
    let (lines, _) = c.imap("a3", "FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]").await;
    assert!(lines.iter().any(|l| l.contains("ticket 1")), "{lines:?}");

    let (mut c, r) = pop3_login(&env, SHARED_USER).await;
    assert!(r.starts_with("+OK"), "{r}");
    assert!(c.cmd("STAT").await.starts_with("+OK 1 "));

    // The delegate's own account still opens its own mailbox.
    let (_, tagged) = imap_login(&env, USER).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
}

/// SMTP with a delegated token authenticates as the delegate (XOAUTH2 `user=` the delegate)
/// and sends with the shared mailbox as sender: Exchange refuses it after DATA with
/// `554 5.2.252 SendAsDenied` until the delegate holds SendAs, FullAccess or not.
#[tokio::test]
async fn delegate_sends_as_the_shared_mailbox_only_with_send_as() {
    let env = env(false).await;
    env.sandbox.grant_full_access(SHARED, MAILBOX);
    let r = smtp_send_as(&env, SHARED_USER, SHARED, "no send as").await;
    assert!(r.starts_with("554 5.2.252 SendAsDenied"), "{r}");

    env.sandbox.grant_send_as(SHARED, MAILBOX);
    let r = smtp_send_as(&env, SHARED_USER, SHARED, "with send as").await;
    assert!(r.starts_with("250"), "{r}");
    let sent = env.sandbox.messages();
    let m = sent.last().expect("a message");
    assert_eq!(m.auth_user, MAILBOX, "XOAUTH2 user= is the delegate");
    assert_eq!(m.from, SHARED);
    // SendAs on the shared mailbox is not SendAs on anyone else.
    let r = smtp_send_as(&env, SHARED_USER, "boss@contoso.com", "not granted").await;
    assert!(r.starts_with("554 5.2.252"), "{r}");
}

/// App-only: the account's mailbox is the XOAUTH2 `user=` on every protocol; the app needs
/// FullAccess on the shared mailbox (`Add-MailboxPermission` for its service principal) to read
/// it and to log in to SMTP as it.
#[tokio::test]
async fn app_only_token_opens_the_shared_mailbox_with_the_apps_grant() {
    let env = env(true).await;
    env.sandbox
        .deliver(SHARED, b"From: a@b.c\r\nSubject: ticket 2\r\n\r\nhelp\r\n");
    let tagged = imap_select_reply(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a2 NO [UNAVAILABLE]"), "{tagged}");
    let r = smtp_send_as(&env, SHARED_USER, SHARED, "app, no grant").await;
    assert!(r.starts_with("535 5.7.3"), "{r}");

    env.sandbox.grant_full_access(SHARED, CLIENT_ID);
    let (mut c, tagged) = imap_login(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    let (untagged, _) = c.imap("a2", "SELECT INBOX").await;
    assert!(untagged.iter().any(|l| l == "* 1 EXISTS"), "{untagged:?}");
    let (_, r) = pop3_login(&env, SHARED_USER).await;
    assert!(r.starts_with("+OK"), "{r}");
    let r = smtp_send_as(&env, SHARED_USER, SHARED, "app as shared").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(env.sandbox.messages().last().unwrap().auth_user, SHARED);
    // Logged in as the shared mailbox, the app may not send as another one without SendAs.
    let r = smtp_send_as(&env, SHARED_USER, "boss@contoso.com", "app as boss").await;
    assert!(r.starts_with("554 5.2.252"), "{r}");
    env.sandbox.grant_send_as("boss@contoso.com", CLIENT_ID);
    let r = smtp_send_as(&env, SHARED_USER, "boss@contoso.com", "app as boss").await;
    assert!(r.starts_with("250"), "{r}");
}

/// One token, one refresh: logins of both accounts on every protocol cause exactly one token
/// request, and the status of the shared account is that of the token it borrows.
#[tokio::test]
async fn both_accounts_share_one_token_request() {
    let env = env(false).await;
    env.sandbox.grant_full_access(SHARED, MAILBOX);
    env.sandbox.grant_send_as(SHARED, MAILBOX);
    let before = env.sandbox.token_requests().total;
    for user in [USER, SHARED_USER, USER, SHARED_USER] {
        let (_, tagged) = imap_login(&env, user).await;
        assert!(tagged.starts_with("a1 OK"), "{user}: {tagged}");
        let (_, r) = pop3_login(&env, user).await;
        assert!(r.starts_with("+OK"), "{user}: {r}");
    }
    assert!(
        smtp_send_as(&env, SHARED_USER, SHARED, "one token")
            .await
            .starts_with("250")
    );
    assert!(
        smtp_send_as(&env, USER, MAILBOX, "one token")
            .await
            .starts_with("250")
    );
    let requests = env.sandbox.token_requests();
    assert_eq!(requests.total - before, 1, "{requests:?}");
    assert_eq!(requests.refresh_token, 1, "{requests:?}");

    let config = env.config();
    let lines =
        authbridge::cli::status::report(&config, &authbridge::cli::status::Judge::now(&config));
    let shared = lines.iter().find(|l| l.account == "helpdesk").unwrap();
    assert!(
        shared.text.starts_with(&format!(
            "helpdesk  mailbox={SHARED}  token_from=tickets (signed in as {MAILBOX})  \
             flow=authorization_code"
        )),
        "{}",
        shared.text
    );
    assert!(!shared.needs_action, "{}", shared.text);
}

/// `check` logs in as each account the way sessions do, fetching one token for both; a missing
/// FullAccess is named with the PowerShell that grants it, for the delegate.
#[tokio::test]
async fn check_names_the_missing_full_access_with_its_fix() {
    let env = env(false).await;
    let config = env.config();
    let before = env.sandbox.token_requests().total;
    let report = authbridge::cli::check::check_report(
        &config,
        &authbridge::cli::check::Options {
            json: false,
            send_test: None,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(env.sandbox.token_requests().total - before, 1);
    let shared = report
        .accounts
        .iter()
        .find(|a| a.name == "helpdesk")
        .unwrap();
    assert_eq!(shared.token_from.as_deref(), Some("tickets"));
    assert!(
        shared.findings[0]
            .what
            .contains(&format!("signed in as {MAILBOX}")),
        "{:?}",
        shared.findings
    );
    let imap = report
        .listeners
        .iter()
        .find(|l| l.name == "imap" && l.account.as_deref() == Some("helpdesk"))
        .unwrap();
    let f = imap.findings.last().unwrap();
    assert_eq!(f.id, Some("shared_full_access_missing"), "{f:?}");
    let fix = f.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains(&format!(
            "Add-MailboxPermission -Identity {SHARED} -User {MAILBOX} -AccessRights FullAccess"
        )),
        "{fix}"
    );
    // The delegate's own IMAP login is fine.
    let own = report
        .listeners
        .iter()
        .find(|l| l.name == "imap" && l.account.as_deref() == Some("tickets"))
        .unwrap();
    assert!(own.ok, "{own:?}");

    env.sandbox.grant_full_access(SHARED, MAILBOX);
    let report = authbridge::cli::check::check_report(
        &config,
        &authbridge::cli::check::Options {
            json: false,
            send_test: None,
            ..Default::default()
        },
    )
    .await;
    let imap = report
        .listeners
        .iter()
        .find(|l| l.name == "imap" && l.account.as_deref() == Some("helpdesk"))
        .unwrap();
    assert!(imap.ok, "{imap:?}");
}

/// `check --send-test` sends as the shared mailbox; without SendAs Exchange's `554 5.2.252`
/// comes back named as the delegate's missing SendAs, with its fix.
#[tokio::test]
async fn check_send_test_names_the_missing_send_as_with_its_fix() {
    let env = env(false).await;
    env.sandbox.grant_full_access(SHARED, MAILBOX);
    let config = env.config();
    let report = authbridge::cli::check::check_report(
        &config,
        &authbridge::cli::check::Options {
            json: false,
            send_test: Some("alerts@contoso.com".into()),
            direct: true,
            ..Default::default()
        },
    )
    .await;
    let smtp = report
        .listeners
        .iter()
        .find(|l| l.name == "smtp" && l.account.as_deref() == Some("helpdesk"))
        .unwrap();
    let f = smtp.findings.last().unwrap();
    assert_eq!(f.id, Some("shared_send_as_missing"), "{f:?}");
    let fix = f.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains(&format!(
            "Add-RecipientPermission -Identity {SHARED} -Trustee {MAILBOX} -AccessRights SendAs"
        )),
        "{fix}"
    );
}

/// A reload that adds the shared account (or changes its mailbox) takes effect for new
/// sessions, without a token request.
#[tokio::test]
async fn reload_adds_a_shared_account_without_a_token_request() {
    let mut env = Env::start().await;
    env.sandbox.grant_full_access(SHARED, MAILBOX);
    let (_, tagged) = imap_login(&env, USER).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    let (_, tagged) = imap_login(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a1 NO"), "{tagged}");
    let before = env.sandbox.token_requests().total;

    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, with_shared_account(yaml)).unwrap();
    let running = env.running.as_ref().unwrap();
    running.reload(env.config()).await.expect("reload applies");
    let (_, tagged) = imap_login(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    assert_eq!(env.sandbox.token_requests().total, before);

    // The shared account's mailbox changes: new sessions open the new one.
    let yaml = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace(SHARED, "other-shared@contoso.com");
    std::fs::write(&env.config_path, yaml).unwrap();
    running.reload(env.config()).await.expect("reload applies");
    let tagged = imap_select_reply(&env, SHARED_USER).await;
    assert!(tagged.starts_with("a2 NO [UNAVAILABLE]"), "{tagged}");
    assert!(tagged.contains("other-shared@contoso.com"), "{tagged}");
    env.stop_proxy().await;
}

fn parse(accounts: &str) -> Result<Config, String> {
    let yaml = format!(
        "providers:\n  m365:\n    type: microsoft\n    tenant: t\n    client_id: c\n    \
         client_secret: s\n  other:\n    type: microsoft\n    tenant: t\n    client_id: d\n    \
         client_secret: s\naccounts:\n{accounts}"
    );
    Config::parse(std::path::Path::new("/etc/authbridge/a.yaml"), &yaml).map_err(|e| e.to_string())
}

/// Every `token_from` that cannot work is refused at load, naming the key and what to do.
#[test]
fn token_from_mistakes_are_refused_at_load() {
    let owner = "  - { name: tickets, provider: m365, mailbox: tickets@contoso.com }\n";
    let ok = parse(&format!(
        "  - {{ name: helpdesk, token_from: tickets, mailbox: {SHARED} }}\n{owner}"
    ))
    .expect("token_from may name an account defined further down");
    let shared = ok.account("helpdesk").unwrap();
    assert_eq!(shared.token_account(), "tickets");
    assert_eq!(shared.identity, "tickets@contoso.com");
    assert_eq!(shared.provider.name, "m365");
    use authbridge::config::Protocol;
    assert_eq!(shared.xoauth2_user(Protocol::Imap), SHARED);
    assert_eq!(shared.xoauth2_user(Protocol::Pop3), SHARED);
    assert_eq!(shared.xoauth2_user(Protocol::Smtp), "tickets@contoso.com");
    assert_eq!(ok.token_accounts().count(), 1);

    let cases = [
        (
            format!("{owner}  - {{ name: helpdesk, token_from: ticket, mailbox: {SHARED} }}\n"),
            "accounts[1].token_from: no account named `ticket` (defined: tickets, helpdesk)",
        ),
        (
            format!("  - {{ name: helpdesk, token_from: helpdesk, mailbox: {SHARED} }}\n"),
            "accounts[0].token_from: account `helpdesk` cannot take the token from itself",
        ),
        (
            "  - { name: a, token_from: b, mailbox: a@contoso.com }\n  \
             - { name: b, token_from: a, mailbox: b@contoso.com }\n"
                .to_string(),
            "accounts[0].token_from: accounts `a` and `b` take their tokens from each other",
        ),
        (
            format!(
                "{owner}  - {{ name: helpdesk, token_from: tickets, mailbox: {SHARED} }}\n  \
                 - {{ name: sales, token_from: helpdesk, mailbox: sales@contoso.com }}\n"
            ),
            "accounts[2].token_from: account `helpdesk` itself takes its token from `tickets`; \
             write `token_from: tickets` here",
        ),
        (
            format!(
                "{owner}  - {{ name: helpdesk, provider: other, token_from: tickets, mailbox: \
                 {SHARED} }}\n"
            ),
            "accounts[1].provider: provider `other` differs from the provider `m365` of account \
             `tickets`",
        ),
        (
            format!("  - {{ name: helpdesk, mailbox: {SHARED} }}\n"),
            "accounts[0].provider: expected `provider: <name of a provider>` (or `token_from: \
             <account>`",
        ),
    ];
    for (accounts, want) in cases {
        let e = parse(&accounts).unwrap_err();
        assert!(e.contains(want), "{accounts}\n→ {e}\nwanted: {want}");
    }
}

/// `login` and `import-token` refuse an account that borrows its token, naming the owner.
#[test]
fn login_of_a_borrowing_account_points_at_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n  m365:\n    type: microsoft\n    tenant: t\n    client_id: c\n    \
             client_secret: s\naccounts:\n  - {{ name: tickets, provider: m365, mailbox: \
             tickets@contoso.com }}\n  - {{ name: helpdesk, token_from: tickets, mailbox: \
             {SHARED} }}\nlisteners:\n  - {{ name: imap, protocol: imap, listen: 127.0.0.1:0, \
             upstream: {{ host: outlook.office365.com, port: 993, tls: implicit }} }}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .args(["login", "helpdesk", "--paste", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "account `helpdesk` opens helpdesk@contoso.com with the token of account `tickets`"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("authbridge login tickets"), "{stderr}");
}
