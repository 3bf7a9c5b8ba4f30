//! `check`'s conversations with the upstream: log in with XOAUTH2 and run the first command the
//! real client will run (IMAP `EXAMINE INBOX`, POP3 `STAT`, SMTP `MAIL FROM`/`RCPT TO`/`RSET`),
//! probe a relay connector (EHLO, STARTTLS, `MAIL FROM`/`RCPT TO`, `RSET`), and send one test
//! message (`--send-test`). Each returns what happened; `mod.rs` turns it into findings.

use std::time::{Duration, SystemTime};

use crate::config::{Config, Listener, Protocol};
use crate::protocol::probe::{ProbeReply, ReplyKind};
use crate::secret::SecretString;
use crate::upstream::{self, AuthResult, Connected};

/// Tag of `check`'s IMAP command.
const TAG: &str = "C1";

/// How a login-and-first-command probe ended.
#[derive(Debug)]
pub enum Outcome {
    /// Logged in and the first command(s) succeeded; what was run, for the report.
    Ok(String),
    /// The upstream refused the XOAUTH2 login with this text.
    LoginRefused(String),
    /// Logged in, then `command` was refused with `text`.
    CommandRefused { command: String, text: String },
    /// Could not get that far (connect, TLS, timeout): the error.
    Broken(String),
}

/// Optional test message: recipient.
pub struct SendTest<'a> {
    pub to: &'a str,
}

/// Connect, log in with XOAUTH2 `user=` `user`, run the protocol's first command(s), and for
/// SMTP (`MAIL FROM:<mailbox>`, which differs from `user` for a shared mailbox sent as by a
/// delegate) with `send` a whole test message.
pub async fn login_and_probe(
    config: &Config,
    l: &Listener,
    user: &str,
    mailbox: &str,
    token: &SecretString,
    send: Option<&SendTest<'_>>,
) -> Outcome {
    let t = &config.limits.timeouts;
    let mut conn =
        match upstream::connect(&l.upstream, l.protocol, false, &config.hostname, t).await {
            Ok(c) => c,
            Err(e) => return Outcome::Broken(e.to_string()),
        };
    match conn.authenticate(user, token, t.upstream_auth).await {
        Ok(AuthResult::Ok { .. }) => {}
        Ok(AuthResult::Rejected(text)) => return Outcome::LoginRefused(text),
        Err(e) => return Outcome::Broken(e.to_string()),
    }
    let limit = t.relay_reply;
    match l.protocol {
        Protocol::Imap => {
            let line = format!("{TAG} EXAMINE INBOX\r\n");
            let kind = ReplyKind::Imap { tag: TAG.into() };
            step(
                &mut conn,
                "EXAMINE INBOX",
                &line,
                kind,
                limit,
                "upstream login OK, EXAMINE INBOX OK",
            )
            .await
        }
        Protocol::Pop3 => {
            step(
                &mut conn,
                "STAT",
                "STAT\r\n",
                ReplyKind::Pop3,
                limit,
                "upstream login OK, STAT OK",
            )
            .await
        }
        Protocol::Smtp => {
            smtp_transaction(
                &mut conn,
                mailbox,
                mailbox,
                send,
                limit,
                "upstream login OK",
            )
            .await
        }
    }
}

/// A relay listener: EHLO and STARTTLS happen in `connect`; then `MAIL FROM:<sender>`,
/// `RCPT TO:<rcpt>`, `RSET` (or the whole test message).
pub async fn relay_probe(
    config: &Config,
    l: &Listener,
    sender: &str,
    rcpt: &str,
    send: Option<&SendTest<'_>>,
) -> Outcome {
    let t = &config.limits.timeouts;
    let mut conn =
        match upstream::connect(&l.upstream, Protocol::Smtp, true, &config.hostname, t).await {
            Ok(c) => c,
            Err(e) => return Outcome::Broken(e.to_string()),
        };
    smtp_transaction(
        &mut conn,
        sender,
        rcpt,
        send,
        t.relay_reply,
        "connector reachable, TLS OK",
    )
    .await
}

async fn step(
    conn: &mut Connected,
    name: &str,
    line: &str,
    kind: ReplyKind,
    limit: Duration,
    ok_text: &str,
) -> Outcome {
    match conn.command(line.as_bytes(), kind, limit).await {
        Ok(r) if r.ok => Outcome::Ok(ok_text.to_string()),
        Ok(r) => Outcome::CommandRefused {
            command: name.to_string(),
            text: r.text,
        },
        Err(e) => Outcome::Broken(e.to_string()),
    }
}

async fn smtp(conn: &mut Connected, line: &str, limit: Duration) -> Result<ProbeReply, String> {
    conn.command(line.as_bytes(), ReplyKind::Smtp, limit)
        .await
        .map_err(|e| e.to_string())
}

/// `MAIL FROM`, `RCPT TO`, then `RSET` — or with `send`, `DATA` and a test message to
/// `send.to` — then `QUIT`.
async fn smtp_transaction(
    conn: &mut Connected,
    from: &str,
    rcpt: &str,
    send: Option<&SendTest<'_>>,
    limit: Duration,
    prefix: &str,
) -> Outcome {
    let rcpt = send.map(|s| s.to).unwrap_or(rcpt);
    let mut commands = vec![
        ("MAIL FROM", format!("MAIL FROM:<{from}>\r\n")),
        ("RCPT TO", format!("RCPT TO:<{rcpt}>\r\n")),
    ];
    if send.is_some() {
        commands.push(("DATA", "DATA\r\n".to_string()));
    } else {
        commands.push(("RSET", "RSET\r\n".to_string()));
    }
    for (name, line) in &commands {
        match smtp(conn, line, limit).await {
            Ok(r) if r.ok => {}
            Ok(r) => {
                return Outcome::CommandRefused {
                    command: name.to_string(),
                    text: r.text,
                };
            }
            Err(e) => return Outcome::Broken(e),
        }
    }
    let result = match send {
        None => Outcome::Ok(format!("{prefix}, MAIL FROM/RCPT TO/RSET OK")),
        Some(s) => match smtp(conn, &test_message(from, s.to), limit).await {
            Ok(r) if r.ok => Outcome::Ok(format!(
                "test message to {} accepted by the upstream (--direct: sent from check, not \
                 through the local listener): {}",
                s.to, r.text
            )),
            Ok(r) => Outcome::CommandRefused {
                command: "end of DATA".to_string(),
                text: r.text,
            },
            Err(e) => Outcome::Broken(e),
        },
    };
    let _ = smtp(conn, "QUIT\r\n", limit).await;
    result
}

/// A short plain-text message, its final `.` line included (no line starts with a dot).
pub(super) fn test_message(from: &str, to: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let date = httpdate(now);
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: authbridge check --send-test\r\nDate: {date}\r\n\
         Message-ID: <authbridge-check-{now}-{pid}@authbridge.invalid>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         This is a test message sent by `authbridge check --send-test`.\r\n\
         It went through the same upstream path as your application's mail.\r\n.\r\n",
        pid = std::process::id()
    )
}

/// RFC 5322 date (UTC) for Unix seconds.
fn httpdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = crate::token::civil(secs);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday_from_thursday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::httpdate(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            super::httpdate(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
    }
}
