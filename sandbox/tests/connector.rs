//! The fake Exchange Online inbound connector (`<tenant>.mail.protection.outlook.com:25`) over real
//! loopback sockets. FACTS.md "Relay connector": mail only from an allow-listed IP or from a
//! sender whose TLS client certificate names a tenant domain, full chain sent in STARTTLS; else
//! `550 5.7.64 TenantAttribution; Relay Access Denied`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::*;
use rustls::crypto::ring;
use rustls::pki_types::ServerName;
use sandbox::{ClientCert, ConnectorCounters, Sandbox, SandboxOptions};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "SB1PR01MB0001.sandbox.outlook.test";
const DENIED: &str =
    "550 5.7.64 TenantAttribution; Relay Access Denied [SB1PR01MB0001.sandbox.outlook.test]";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn sandbox(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(opts).await.unwrap()
}

/// A rustls client (ring provider) trusting the sandbox CA and presenting `cert`, built the way a
/// relay client does it.
fn client_with_cert(sb: &Sandbox, cert: &ClientCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(sb.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(cert.chain_der(), cert.key_der())
        .unwrap();
    Arc::new(config)
}

/// Greeting and EHLO on the connector; returns the client and the EHLO lines.
async fn connect(sb: &Sandbox) -> (LineClient<TcpStream>, Vec<String>) {
    let mut c = plain(sb.connector_addr()).await;
    let g = c.line().await;
    assert!(
        g.starts_with(&format!(
            "220 {HOST} Microsoft ESMTP MAIL Service ready at "
        )),
        "{g}"
    );
    c.send("EHLO relay.contoso.com").await;
    let ehlo = c.smtp_reply().await;
    assert!(ehlo[0].starts_with(&format!("250-{HOST} Hello [127.0.0.1]")));
    for cap in [
        "SIZE 157286400",
        "PIPELINING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "BINARYMIME",
        "CHUNKING",
        "SMTPUTF8",
    ] {
        assert!(
            ehlo.iter().any(|l| &l[4..] == cap),
            "{cap} missing: {ehlo:?}"
        );
    }
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    (c, ehlo)
}

/// STARTTLS (optionally with a client certificate), then EHLO again.
async fn starttls(
    sb: &Sandbox,
    mut c: LineClient<TcpStream>,
    cert: Option<&ClientCert>,
) -> LineClient<Tls> {
    c.cmd("STARTTLS", "220 2.0.0").await;
    let config = match cert {
        Some(cert) => client_with_cert(sb, cert),
        None => sb.client_config(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(T, TlsConnector::from(config).connect(name, c.into_inner()))
        .await
        .unwrap()
        .unwrap();
    let mut c = LineClient::new(tls);
    c.send("EHLO relay.contoso.com").await;
    let ehlo = c.smtp_reply().await;
    assert!(ehlo.iter().any(|l| l.ends_with("CHUNKING")), "{ehlo:?}");
    assert!(
        !ehlo
            .iter()
            .any(|l| l.contains("STARTTLS") || l.contains("AUTH")),
        "{ehlo:?}"
    );
    c
}

/// MAIL, RCPT, DATA (with a dot-stuffed line) and the final 250.
async fn send_one<S>(c: &mut LineClient<S>, rcpt: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.cmd("MAIL FROM:<glpi@contoso.com> SIZE=64", "250 2.1.0")
        .await;
    c.cmd(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5").await;
    c.cmd("DATA", "354 ").await;
    c.send_raw(b"Subject: relayed\r\n\r\n..dot\r\nbody\r\n.\r\n")
        .await;
    let l = c.line().await;
    assert!(l.starts_with("250 2.0.0 OK"), "{l}");
}

/// MAIL is taken, RCPT refused with 5.7.64, DATA has no recipient.
async fn refused<S>(c: &mut LineClient<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.cmd("MAIL FROM:<glpi@contoso.com>", "250 2.1.0").await;
    let l = c.cmd("RCPT TO:<someone@fabrikam.com>", "550 ").await;
    assert_eq!(l, DENIED);
    c.cmd("DATA", "503 5.5.2").await;
    c.cmd("RSET", "250 ").await;
}

#[tokio::test]
async fn ip_allow_listed_plain_session_delivers() {
    let sb = sandbox(SandboxOptions {
        connector_allowed_ips: vec![LOCALHOST],
        ..Default::default()
    })
    .await;
    let (mut c, ehlo) = connect(&sb).await;
    assert!(ehlo.iter().any(|l| l == "250-STARTTLS"), "{ehlo:?}");
    c.cmd("NOOP", "250 ").await;
    send_one(&mut c, "Helpdesk@Contoso.com").await;
    c.cmd("QUIT", "221 ").await;

    let msgs = sb.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.via_connector && !m.tls);
    assert_eq!(m.auth_user, "");
    assert!(m.client_cert_names.is_empty());
    assert_eq!(m.from, "glpi@contoso.com");
    assert_eq!(m.rcpts, vec!["Helpdesk@Contoso.com"]);
    assert_eq!(&m.raw[..], b"Subject: relayed\r\n\r\n.dot\r\nbody\r\n");
    assert_eq!(sb.mailbox("helpdesk@contoso.com").len(), 1);
    assert_eq!(
        sb.connector_counters(),
        ConnectorCounters {
            connector_connections: 1,
            connector_tls: 0,
            connector_mail: 1,
            connector_accepted: 1,
            connector_refused: 0,
            ..Default::default()
        }
    );
    assert_eq!(sb.mail_auth_attempts().total(), 0);
}

#[tokio::test]
async fn certificate_with_full_chain_over_starttls_delivers() {
    let sb = sandbox(SandboxOptions::default()).await;
    let cert = sb.issue_client_cert("contoso.com");
    assert_eq!(cert.chain_der().len(), 2, "leaf + intermediate");
    let (c, ehlo) = connect(&sb).await;
    assert!(ehlo.iter().any(|l| l == "250-STARTTLS"), "{ehlo:?}");
    let mut c = starttls(&sb, c, Some(&cert)).await;
    send_one(&mut c, "helpdesk@contoso.com").await;

    // CHUNKING is advertised, so BDAT works too.
    c.cmd("MAIL FROM:<glpi@contoso.com>", "250 ").await;
    c.cmd("RCPT TO:<helpdesk@contoso.com>", "250 ").await;
    c.send_raw(b"BDAT 9 LAST\r\nSubject: ").await;
    let l = c.line().await;
    assert!(l.starts_with("250 2.0.0 OK"), "{l}");
    c.cmd("QUIT", "221 ").await;

    let msgs = sb.messages();
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert!(m.via_connector && m.tls);
        assert_eq!(m.client_cert_names, vec!["contoso.com"]);
        assert_eq!(m.auth_user, "");
    }
    assert_eq!(&msgs[1].raw[..], b"Subject: ");
    assert_eq!(sb.mailbox("helpdesk@contoso.com").len(), 2);
    let n = sb.connector_counters();
    assert_eq!((n.connector_tls, n.connector_accepted), (1, 2));
    assert_eq!(n.connector_refused, 0);
}

#[tokio::test]
async fn leaf_only_chain_is_refused() {
    let sb = sandbox(SandboxOptions::default()).await;
    let cert = sb.issue_client_cert_without_chain("contoso.com");
    assert_eq!(cert.chain_der().len(), 1);
    let (c, _) = connect(&sb).await;
    // The handshake succeeds; the certificate just does not count.
    let mut c = starttls(&sb, c, Some(&cert)).await;
    refused(&mut c).await;
    c.cmd("QUIT", "221 ").await;
    assert!(sb.messages().is_empty());
    let n = sb.connector_counters();
    assert_eq!((n.connector_tls, n.connector_refused), (1, 1));
    assert_eq!(n.connector_accepted, 0);
}

#[tokio::test]
async fn certificate_with_wrong_name_is_refused() {
    let sb = sandbox(SandboxOptions::default()).await;
    let cert = sb.issue_client_cert("fabrikam.com");
    let (c, _) = connect(&sb).await;
    let mut c = starttls(&sb, c, Some(&cert)).await;
    refused(&mut c).await;
    assert!(sb.messages().is_empty());

    // Allowing the name at run time takes effect on the next RCPT TO of the same session.
    sb.set_connector_allowed_cert_names(&["*.example.test", "Fabrikam.com"]);
    send_one(&mut c, "helpdesk@contoso.com").await;
    assert_eq!(sb.messages()[0].client_cert_names, vec!["fabrikam.com"]);
    let n = sb.connector_counters();
    assert_eq!((n.connector_refused, n.connector_accepted), (1, 1));
}

#[tokio::test]
async fn no_certificate_from_a_non_allowed_ip_is_refused() {
    let sb = sandbox(SandboxOptions {
        connector_allowed_ips: vec!["192.0.2.7".parse().unwrap()],
        ..Default::default()
    })
    .await;
    // In plaintext.
    let (mut c, _) = connect(&sb).await;
    refused(&mut c).await;
    // Over TLS without a client certificate.
    let mut c = starttls(&sb, c, None).await;
    refused(&mut c).await;
    c.cmd("QUIT", "221 ").await;
    assert!(sb.messages().is_empty());
    let n = sb.connector_counters();
    assert_eq!((n.connector_refused, n.connector_accepted), (2, 0));

    // Once 127.0.0.1 is allow-listed the same client gets through.
    sb.set_connector_allowed_ips(&[LOCALHOST]);
    let (mut c, _) = connect(&sb).await;
    send_one(&mut c, "helpdesk@contoso.com").await;
    assert_eq!(sb.connector_counters().connector_accepted, 1);
}

#[tokio::test]
async fn connector_without_starttls_offers_none() {
    let sb = sandbox(SandboxOptions {
        connector_starttls: false,
        connector_allowed_ips: vec![LOCALHOST],
        ..Default::default()
    })
    .await;
    let (mut c, ehlo) = connect(&sb).await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    c.cmd("STARTTLS", "500 5.3.3 Unrecognized command").await;
    send_one(&mut c, "helpdesk@contoso.com").await;
    assert!(!sb.messages()[0].tls);
    assert_eq!(sb.connector_counters().connector_tls, 0);

    // Turned back on for new sessions.
    sb.set_connector_starttls(true);
    let (_, ehlo) = connect(&sb).await;
    assert!(ehlo.iter().any(|l| l == "250-STARTTLS"), "{ehlo:?}");
}

#[tokio::test]
async fn auth_is_refused() {
    let sb = sandbox(SandboxOptions::default()).await;
    let (mut c, _) = connect(&sb).await;
    let bad = "504 5.7.4 Unrecognized authentication type";
    c.cmd("AUTH LOGIN", bad).await;
    c.cmd("AUTH PLAIN AGdscGkAc2VjcmV0", bad).await;
    let cert = sb.issue_client_cert("contoso.com");
    let mut c = starttls(&sb, c, Some(&cert)).await;
    let token = sb.issue_access_token("app", "tickets@contoso.com");
    c.cmd(
        &format!("AUTH XOAUTH2 {}", xoauth2("tickets@contoso.com", &token)),
        bad,
    )
    .await;
    assert_eq!(sb.mail_auth_attempts().total(), 0);
}

#[tokio::test]
async fn mail_needs_hello_and_submission_is_not_connector() {
    let sb = sandbox(SandboxOptions {
        connector_allowed_ips: vec![LOCALHOST],
        ..Default::default()
    })
    .await;
    let mut c = plain(sb.connector_addr()).await;
    c.line().await;
    c.cmd("MAIL FROM:<glpi@contoso.com>", "503 5.5.2 Send hello first")
        .await;
    c.cmd("HELO relay.contoso.com", &format!("250 {HOST} Hello"))
        .await;
    send_one(&mut c, "helpdesk@contoso.com").await;

    // A message submitted with XOAUTH2 is not marked as connector mail.
    let mut s = smtp_starttls(&sb).await;
    let at = sb.issue_access_token("app", "tickets@contoso.com");
    s.cmd(
        &format!("AUTH XOAUTH2 {}", xoauth2("tickets@contoso.com", &at)),
        "235 ",
    )
    .await;
    s.cmd("MAIL FROM:<tickets@contoso.com>", "250 ").await;
    s.cmd("RCPT TO:<helpdesk@contoso.com>", "250 ").await;
    s.cmd("DATA", "354 ").await;
    s.send_raw(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    s.until("250 ").await;
    let msgs = sb.messages();
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].via_connector);
    assert!(!msgs[1].via_connector && msgs[1].tls);
    assert_eq!(msgs[1].auth_user, "tickets@contoso.com");
    assert_eq!(sb.connector_counters().connector_accepted, 1);
}

#[tokio::test]
async fn control_endpoint_sets_the_allow_lists() {
    let sb = sandbox(SandboxOptions::default()).await;
    let r = request(
        &sb,
        "POST",
        "/_sandbox/connector",
        r#"{"allowed_ips":["127.0.0.1"],"allowed_cert_names":["fabrikam.com"],"starttls":false}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(sb.connector_allowed_ips(), vec![LOCALHOST]);
    assert_eq!(sb.connector_allowed_cert_names(), vec!["fabrikam.com"]);
    let (mut c, ehlo) = connect(&sb).await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    send_one(&mut c, "helpdesk@contoso.com").await;

    let r = request(&sb, "GET", "/_sandbox/counters", "", "text/plain")
        .await
        .unwrap();
    let v = r.json();
    assert_eq!(v["connector"]["connector_accepted"], 1);
    assert_eq!(v["connector"]["connector_connections"], 1);
    let r = request(&sb, "GET", "/_sandbox/messages", "", "text/plain")
        .await
        .unwrap();
    assert_eq!(r.json()[0]["via_connector"], true);
    let r = request(
        &sb,
        "POST",
        "/_sandbox/connector",
        r#"{"allowed_ips":["not-an-ip"]}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
}
