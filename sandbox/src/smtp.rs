//! Fake Exchange Online SMTP submission (smtp.office365.com:587 with STARTTLS, or implicit TLS),
//! and the fake inbound connector (`<tenant>.mail.protection.outlook.com:25`) in connector mode.
//!
//! Submission replies follow FACTS.md "XOAUTH2 and Exchange Online": AUTH only after TLS and only
//! XOAUTH2 succeeds; MAIL needs AUTH (`530 5.7.57`); the envelope sender must be the authenticated
//! mailbox, checked at the end of DATA (`554 5.2.252 SendAsDenied`). PIPELINING falls out of the
//! connection buffer: replies are queued and flushed before the next read.
//!
//! Connector mode (FACTS.md "Relay connector"): the same EHLO without any AUTH (`504 5.7.4`), a
//! STARTTLS that requests a client certificate (when offered at all), no sender check, and each
//! RCPT TO refused with `550 5.7.64 TenantAttribution; Relay Access Denied [host]` unless the peer
//! IP is allow-listed or the verified client certificate carries an allowed name
//! (`connector.rs`). Without TLS only the IP allow-list applies. The connector reads commands
//! as leniently as many receivers do — white space before the verb, TABs between words, and (as
//! everywhere here) a bare LF ends a line, in DATA too, so `\n.\n` ends a message — so that
//! tests see what such a receiver behind the relay would act on (SMTP smuggling). It counts every
//! MAIL command it reads ([`crate::ConnectorCounters`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::conn::{Conn, Line, Stream};
use crate::connector::{self, ClientCert, PasswordAuth};
use crate::exchange::TokenInfo;
use crate::sasl::{AuthResult, Proto};
use crate::util::{guid, rfc5322_date};
use crate::{Shared, StoredMessage};

/// Longest command line (AUTH XOAUTH2 lines with 3 KB tokens fit easily).
const MAX_LINE: usize = 64 * 1024;
/// Longest line inside DATA.
const MAX_DATA_LINE: usize = 4 * 1024 * 1024;
/// Bad commands before the session is closed.
const MAX_ERRORS: u32 = 20;

struct Txn {
    from: String,
    rcpts: Vec<String>,
    /// BDAT chunks received so far.
    chunks: Option<Vec<u8>>,
}

/// Connector-mode state of a session.
struct ConnectorPeer {
    ip: IpAddr,
    cert: ClientCert,
    /// Set when the connector plays a provider that requires SMTP AUTH (fixed per session).
    auth: Option<PasswordAuth>,
    /// The user name that logged in.
    logged_in: Option<String>,
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    /// Whether STARTTLS may still be offered (the plain submission port before TLS).
    starttls_offered: bool,
    /// Set on the connector listener.
    connector: Option<ConnectorPeer>,
    ehlo: bool,
    user: Option<String>,
    /// The claims of the token the session logged in with (the sender check after DATA).
    token: Option<TokenInfo>,
    txn: Option<Txn>,
    errors: u32,
    peer: String,
}

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, implicit_tls: bool) {
    shared.count_mail_connection();
    let peer = tcp
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    let idle = shared.idle_timeout;
    let conn = if implicit_tls {
        match Conn::accept_tls(tcp, &shared.acceptor, idle).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "sandbox SMTP: TLS handshake failed");
                return;
            }
        }
    } else {
        Conn::new(Stream::Plain(tcp), idle)
    };
    let mut s = Session {
        shared,
        conn,
        starttls_offered: !implicit_tls,
        connector: None,
        ehlo: false,
        user: None,
        token: None,
        txn: None,
        errors: 0,
        peer,
    };
    match s.run().await {
        Ok(()) => s.conn.close().await,
        Err(e) => tracing::debug!(error = %e, "sandbox SMTP session ended"),
    }
}

/// One session of the fake inbound connector (plain TCP, STARTTLS if offered).
pub(crate) async fn serve_connector(shared: Arc<Shared>, tcp: TcpStream) {
    shared.count_connector(|c| c.connector_connections += 1);
    let ip = tcp
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let idle = shared.idle_timeout;
    let settings = shared.connector_settings();
    let starttls = settings.starttls;
    let mut s = Session {
        shared,
        conn: Conn::new(Stream::Plain(tcp), idle),
        starttls_offered: starttls,
        connector: Some(ConnectorPeer {
            ip,
            cert: ClientCert::None,
            auth: settings.auth,
            logged_in: None,
        }),
        ehlo: false,
        user: None,
        token: None,
        txn: None,
        errors: 0,
        peer: ip.to_string(),
    };
    match s.run().await {
        Ok(()) => s.conn.close().await,
        Err(e) => tracing::debug!(error = %e, "sandbox connector session ended"),
    }
}

impl Session {
    fn host(&self) -> &str {
        &self.shared.host
    }

    fn reply(&mut self, text: &str) {
        self.conn.send(text.as_bytes());
        self.conn.send(b"\r\n");
    }

    fn ehlo_reply(&mut self) {
        let mut lines = vec![
            format!("{} Hello [{}]", self.host(), self.peer),
            format!("SIZE {}", self.shared.max_message_size),
            "PIPELINING".into(),
            "DSN".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.conn.is_tls() {
            match self.connector.as_ref().map(|p| p.auth.as_ref()) {
                None => lines.push("AUTH LOGIN XOAUTH2".into()),
                Some(Some(auth)) if !auth.mechanisms.is_empty() => {
                    lines.push(format!("AUTH {}", auth.mechanisms.join(" ")));
                }
                Some(_) => {}
            }
        } else if self.starttls_offered {
            lines.push("STARTTLS".into());
        }
        lines.extend(["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"].map(String::from));
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.send(format!("250{sep}{l}\r\n").as_bytes());
        }
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let greeting = format!(
            "220 {} Microsoft ESMTP MAIL Service ready at {}",
            self.host(),
            rfc5322_date(SystemTime::now())
        );
        self.reply(&greeting);
        loop {
            if self.errors >= MAX_ERRORS {
                self.reply(
                    "421 4.7.0 Too many errors on this connection, closing transmission channel",
                );
                return Ok(());
            }
            let line = match self.conn.read_line(MAX_LINE).await? {
                Line::Eof => return Ok(()),
                Line::TooLong => {
                    self.errors += 1;
                    self.reply("500 5.5.6 Line too long");
                    continue;
                }
                Line::Text(l) => l,
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = if self.connector.is_some() {
                let line = line.trim_start_matches([' ', '\t']);
                match line.split_once([' ', '\t']) {
                    Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                    None => (line.trim().to_ascii_uppercase(), String::new()),
                }
            } else {
                match line.split_once(' ') {
                    Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                    None => (line.trim().to_ascii_uppercase(), String::new()),
                }
            };
            match verb.as_str() {
                "EHLO" | "HELO" => {
                    if arg.is_empty() {
                        self.errors += 1;
                        self.reply("501 5.5.4 Invalid domain name");
                        continue;
                    }
                    self.ehlo = true;
                    self.txn = None;
                    if verb == "EHLO" {
                        self.ehlo_reply();
                    } else {
                        let r = format!("250 {} Hello [{}]", self.host(), self.peer);
                        self.reply(&r);
                    }
                }
                "STARTTLS" => {
                    if !self.conn.is_tls() && !self.starttls_offered {
                        // A connector that does not offer STARTTLS does not know it either.
                        self.errors += 1;
                        self.reply("500 5.3.3 Unrecognized command");
                        continue;
                    }
                    if self.conn.is_tls() {
                        self.errors += 1;
                        self.reply("503 5.5.1 TLS already active");
                        continue;
                    }
                    self.reply("220 2.0.0 SMTP server ready");
                    if self.connector.is_none() && self.shared.forge_after_starttls() {
                        self.reply("250-forged.invalid Hello\r\n250-SIZE 1234\r\n250 AUTH XOAUTH2");
                    }
                    let acceptor = if self.connector.is_some() {
                        self.shared.connector_acceptor.clone()
                    } else {
                        self.shared.acceptor.clone()
                    };
                    self.conn.starttls(&acceptor).await?;
                    self.ehlo = false;
                    self.user = None;
                    self.token = None;
                    self.txn = None;
                    if self.connector.is_some() {
                        let chain = self.conn.peer_certificates();
                        let cert = ClientCert::evaluate(chain.as_deref());
                        tracing::debug!(?cert, "sandbox connector: TLS established");
                        self.shared.count_connector(|c| c.connector_tls += 1);
                        if let Some(peer) = self.connector.as_mut() {
                            peer.cert = cert;
                            peer.logged_in = None;
                        }
                    }
                }
                "AUTH" if self.connector.as_ref().is_some_and(|p| p.auth.is_some()) => {
                    self.provider_auth(&arg).await?;
                }
                "AUTH" if self.connector.is_some() => {
                    self.errors += 1;
                    self.reply("504 5.7.4 Unrecognized authentication type");
                }
                "AUTH" => self.auth(&arg).await?,
                "MAIL" => self.mail(&arg),
                "RCPT" => self.rcpt(&arg),
                "DATA" => self.data().await?,
                "BDAT" => self.bdat(&arg).await?,
                "RSET" => {
                    self.txn = None;
                    self.reply("250 2.0.0 Resetting");
                }
                "NOOP" => self.reply("250 2.0.0 OK"),
                "VRFY" => self.reply("252 2.1.5 Cannot VRFY user"),
                "HELP" => self.reply("214-This server supports the following commands:\r\n214 HELO EHLO STARTTLS RCPT DATA RSET MAIL QUIT HELP AUTH BDAT"),
                "QUIT" => {
                    self.reply("221 2.0.0 Service closing transmission channel");
                    return Ok(());
                }
                _ => {
                    self.errors += 1;
                    self.reply("500 5.3.3 Unrecognized command");
                }
            }
        }
    }

    async fn auth(&mut self, arg: &str) -> std::io::Result<()> {
        if !self.conn.is_tls() {
            self.reply("530 5.7.0 Must issue a STARTTLS command first");
            return Ok(());
        }
        if !self.ehlo {
            self.reply("503 5.5.2 Send hello first");
            return Ok(());
        }
        if self.user.is_some() {
            self.reply("503 5.5.2 Already authenticated");
            return Ok(());
        }
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        match mech.as_str() {
            "XOAUTH2" => {
                let blob = match initial {
                    Some(i) if i != "=" => i.into_bytes(),
                    _ => {
                        self.reply("334 ");
                        match self.conn.read_line(MAX_LINE).await? {
                            Line::Text(l) => l.to_vec(),
                            Line::TooLong => {
                                self.reply("500 5.5.6 Line too long");
                                return Ok(());
                            }
                            Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        }
                    }
                };
                if blob == b"*" {
                    self.reply("501 5.7.0 Authentication cancelled");
                    return Ok(());
                }
                let (result, token) = self.shared.xoauth2_with_token(Proto::Smtp, &blob);
                match result {
                    AuthResult::Ok(user) => {
                        self.user = Some(user);
                        self.token = token;
                        self.reply("235 2.7.0 Authentication successful");
                    }
                    AuthResult::SmtpAuthDisabled => {
                        let r = format!(
                            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. [{}]",
                            self.host()
                        );
                        self.reply(&r);
                    }
                    AuthResult::NoRights(_) | AuthResult::Failed => {
                        let r = format!("535 5.7.3 Authentication unsuccessful [{}]", self.host());
                        self.reply(&r);
                    }
                }
            }
            "LOGIN" => {
                // Basic authentication is off: ask for both values, then refuse.
                if initial.is_none() {
                    self.reply("334 VXNlcm5hbWU6");
                    if !matches!(self.conn.read_line(MAX_LINE).await?, Line::Text(_)) {
                        return Ok(());
                    }
                }
                self.reply("334 UGFzc3dvcmQ6");
                if !matches!(self.conn.read_line(MAX_LINE).await?, Line::Text(_)) {
                    return Ok(());
                }
                let r = format!(
                    "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [{}]",
                    self.host()
                );
                self.reply(&r);
            }
            _ => {
                self.errors += 1;
                self.reply("504 5.7.4 Unrecognized authentication type");
            }
        }
        Ok(())
    }

    /// AUTH on the connector when it plays a transactional provider: PLAIN (RFC 4616, with or
    /// without an initial response) or LOGIN, whichever it offers, against its one login.
    async fn provider_auth(&mut self, arg: &str) -> std::io::Result<()> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let Some(auth) = self.connector.as_ref().and_then(|p| p.auth.clone()) else {
            return Ok(());
        };
        if !self.conn.is_tls() {
            self.reply("530 5.7.0 Must issue a STARTTLS command first");
            return Ok(());
        }
        if !self.ehlo {
            self.reply("503 5.5.2 Send hello first");
            return Ok(());
        }
        if self
            .connector
            .as_ref()
            .is_some_and(|p| p.logged_in.is_some())
        {
            self.reply("503 5.5.1 Already authenticated");
            return Ok(());
        }
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.trim().to_ascii_uppercase(), None),
        };
        if !auth.offers(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            self.errors += 1;
            self.reply("504 5.7.4 Unrecognized authentication type");
            return Ok(());
        }
        // One answer to a prompt; `None`: cancelled (`*`), or the line was no answer.
        let mut prompts = Vec::new();
        match (mech.as_str(), initial) {
            ("PLAIN", Some(i)) if i != "=" => prompts.push(i.into_bytes()),
            ("PLAIN", _) => prompts.push(Vec::new()),
            (_, Some(user)) => {
                prompts.push(user.into_bytes());
                prompts.push(Vec::new());
            }
            (_, None) => {
                prompts.push(Vec::new());
                prompts.push(Vec::new());
            }
        }
        let mut answers = Vec::new();
        for (i, given) in prompts.into_iter().enumerate() {
            if !given.is_empty() {
                answers.push(given);
                continue;
            }
            let prompt = match (mech.as_str(), i) {
                ("PLAIN", _) => "334 ",
                (_, 0) => "334 VXNlcm5hbWU6",
                _ => "334 UGFzc3dvcmQ6",
            };
            self.reply(prompt);
            match self.conn.read_line(MAX_LINE).await? {
                Line::Text(l) => answers.push(l.to_vec()),
                Line::TooLong => {
                    self.reply("500 5.5.6 Line too long");
                    return Ok(());
                }
                Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            }
        }
        if answers.iter().any(|a| a.as_slice() == b"*") {
            self.reply("501 5.7.0 Authentication cancelled");
            return Ok(());
        }
        let decoded: Option<Vec<Vec<u8>>> = answers
            .iter()
            .map(|a| STANDARD.decode(a.trim_ascii()).ok())
            .collect();
        let Some(decoded) = decoded else {
            self.errors += 1;
            self.reply("501 5.5.2 Cannot decode response");
            return Ok(());
        };
        let ok = match decoded.as_slice() {
            [plain] => auth.check_plain(plain),
            [user, pass] => auth.check(user, pass),
            _ => false,
        };
        if ok {
            if let Some(p) = self.connector.as_mut() {
                p.logged_in = Some(auth.username.clone());
            }
            self.shared.count_connector(|c| c.connector_auth_ok += 1);
            self.reply("235 2.7.0 Authentication successful");
        } else {
            self.errors += 1;
            self.shared
                .count_connector(|c| c.connector_auth_failed += 1);
            self.reply("535 5.7.8 Authentication credentials invalid");
        }
        Ok(())
    }

    fn mail(&mut self, arg: &str) {
        if self.connector.is_some() {
            self.shared.count_connector(|c| c.connector_mail += 1);
        }
        if self.connector.is_some() && !self.ehlo {
            self.reply("503 5.5.2 Send hello first");
            return;
        }
        if self
            .connector
            .as_ref()
            .is_some_and(|p| p.auth.is_some() && p.logged_in.is_none())
        {
            self.reply("530 5.7.0 Authentication required");
            return;
        }
        if self.user.is_none() && self.connector.is_none() {
            let r = format!(
                "530 5.7.57 Client not authenticated to send mail. [{}]",
                self.host()
            );
            self.reply(&r);
            return;
        }
        if self.txn.is_some() {
            self.reply("503 5.5.1 Sender already specified");
            return;
        }
        let Some((from, params)) = path_arg(arg, "FROM:") else {
            self.errors += 1;
            self.reply("501 5.5.4 Invalid arguments");
            return;
        };
        for p in params.split_ascii_whitespace() {
            if let Some(size) = p.to_ascii_uppercase().strip_prefix("SIZE=")
                && size
                    .parse::<usize>()
                    .is_ok_and(|s| s > self.shared.max_message_size)
            {
                self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                return;
            }
        }
        self.txn = Some(Txn {
            from,
            rcpts: Vec::new(),
            chunks: None,
        });
        self.reply("250 2.1.0 Sender OK");
    }

    fn rcpt(&mut self, arg: &str) {
        if self.txn.is_none() {
            self.reply("503 5.5.1 Need mail command");
            return;
        }
        match path_arg(arg, "TO:") {
            Some((to, _)) if !to.is_empty() => {
                if let Some(peer) = self.connector.as_ref().filter(|p| p.logged_in.is_none()) {
                    let settings = self.shared.connector_settings();
                    if let Err(why) = connector::attribute(&settings, peer.ip, &peer.cert) {
                        tracing::debug!(rcpt = %to, %why, "sandbox connector: relay denied");
                        self.shared.count_connector(|c| c.connector_refused += 1);
                        let from = self.txn.as_ref().map(|t| t.from.as_str()).unwrap_or("");
                        let r =
                            format!("{} [{}]", connector::refusal(&settings, from), self.host());
                        self.reply(&r);
                        return;
                    }
                }
                if let Some(t) = self.txn.as_mut() {
                    t.rcpts.push(to);
                }
                self.reply("250 2.1.5 Recipient OK");
            }
            _ => {
                self.errors += 1;
                self.reply("501 5.1.3 Invalid address");
            }
        }
    }

    fn ready_for_data(&mut self) -> bool {
        match &self.txn {
            None => {
                self.reply("503 5.5.1 Need mail command");
                false
            }
            Some(t) if t.rcpts.is_empty() => {
                self.reply("503 5.5.2 Need rcpt command");
                false
            }
            Some(_) => true,
        }
    }

    async fn data(&mut self) -> std::io::Result<()> {
        if !self.ready_for_data() {
            return Ok(());
        }
        if self.txn.as_ref().is_some_and(|t| t.chunks.is_some()) {
            self.reply("503 5.5.1 BDAT in progress");
            return Ok(());
        }
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
        let max = self.shared.max_message_size;
        let mut msg: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut too_big = false;
        loop {
            let line = match self.conn.read_line(MAX_DATA_LINE).await? {
                Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Line::TooLong => {
                    too_big = true;
                    continue;
                }
                Line::Text(l) => l,
            };
            if &line[..] == b"." {
                break;
            }
            if too_big {
                continue;
            }
            let content = line.strip_prefix(b".").unwrap_or(&line);
            if msg.len() + content.len() + 2 > max {
                too_big = true;
                msg = Vec::new();
                continue;
            }
            msg.extend_from_slice(content);
            msg.extend_from_slice(b"\r\n");
        }
        if too_big {
            self.txn = None;
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(());
        }
        self.finish(msg);
        Ok(())
    }

    async fn bdat(&mut self, arg: &str) -> std::io::Result<()> {
        let mut parts = arg.split_ascii_whitespace();
        let size = parts.next().and_then(|s| s.parse::<usize>().ok());
        let last = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("LAST"));
        let Some(size) = size else {
            self.errors += 1;
            self.reply("501 5.5.4 Invalid arguments");
            return Ok(());
        };
        let max = self.shared.max_message_size;
        if size > max {
            // Cannot keep the session in sync without reading the chunk; close instead.
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let mut chunk = Vec::with_capacity(size);
        self.conn.read_exact_into(size, &mut chunk).await?;
        if !self.ready_for_data() {
            return Ok(());
        }
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        let buf = txn.chunks.get_or_insert_with(Vec::new);
        if buf.len() + chunk.len() > max {
            self.txn = None;
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(());
        }
        if buf.is_empty() {
            *buf = chunk;
        } else {
            buf.extend_from_slice(&chunk);
        }
        if last {
            let msg = txn.chunks.take().unwrap_or_default();
            self.finish(msg);
        } else {
            let r = format!("250 2.0.0 {size} bytes received");
            self.reply(&r);
        }
        Ok(())
    }

    /// End of DATA / BDAT LAST: the SendAs check, then delivery.
    fn finish(&mut self, raw: Vec<u8>) {
        let Some(txn) = self.txn.take() else { return };
        let via_connector = self.connector.is_some();
        // Via a provider-like connector: the relay login that sent it.
        let user = self
            .user
            .clone()
            .or_else(|| self.connector.as_ref().and_then(|p| p.logged_in.clone()))
            .unwrap_or_default();
        // The sender must be one the token may send as: its own user's mailbox or one with
        // SendAs; an app-only token the mailbox it logged in as (FullAccess) or one with SendAs.
        let denied = !via_connector
            && !self.token.as_ref().is_some_and(|t| {
                let ex = self.shared.exchange();
                ex.may_send_as(t, &txn.from)
                    || (t.user.is_none()
                        && txn.from.eq_ignore_ascii_case(&user)
                        && !ex.mailbox(&user).send_as_denied)
            });
        if denied {
            let r = format!(
                "554 5.2.252 SendAsDenied; {user} not allowed to send as {}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.",
                txn.from
            );
            self.reply(&r);
            return;
        }
        let mailboxes: Vec<String> = txn.rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
        let size = raw.len();
        let client_cert_names = self
            .connector
            .as_ref()
            .map(|p| p.cert.names().to_vec())
            .unwrap_or_default();
        self.shared.record_submission(StoredMessage {
            mailboxes,
            auth_user: user,
            via_connector,
            tls: self.conn.is_tls(),
            client_cert_names,
            from: txn.from,
            rcpts: txn.rcpts,
            raw: Bytes::from(raw),
        });
        if via_connector {
            self.shared.count_connector(|c| c.connector_accepted += 1);
        }
        tracing::debug!(size, via_connector, "sandbox SMTP: message accepted");
        let r = format!(
            "250 2.0.0 OK <{}@{}> [Hostname={}]",
            guid(),
            self.host(),
            self.host()
        );
        self.reply(&r);
    }
}

/// Parse `FROM:<addr> params` / `TO:<addr> params` (RFC 5321 §4.1.1.2-3), lenient about spaces and
/// missing angle brackets. Returns (address, parameters).
fn path_arg(arg: &str, keyword: &str) -> Option<(String, String)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((
            inner[..end].trim().to_string(),
            inner[end + 1..].trim().to_string(),
        ))
    } else {
        let (addr, params) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((addr.to_string(), params.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::path_arg;

    #[test]
    fn paths() {
        assert_eq!(
            path_arg("FROM:<a@b.c> SIZE=10", "FROM:"),
            Some(("a@b.c".into(), "SIZE=10".into()))
        );
        assert_eq!(
            path_arg("from: <a@b.c>", "FROM:"),
            Some(("a@b.c".into(), "".into()))
        );
        assert_eq!(path_arg("TO:x@y", "TO:"), Some(("x@y".into(), "".into())));
        assert_eq!(path_arg("FROM <a>", "FROM:"), None);
    }
}
