//! Fake Exchange Online POP3 (outlook.office365.com:995 implicit TLS, or plaintext + STLS).
//!
//! `AUTH XOAUTH2` (continuation `+ ` or initial response) is the only login that works; USER/PASS
//! and AUTH PLAIN fail as they do with basic auth off. The transaction state works on a snapshot
//! of the user's mailbox taken at login; DELE marks, QUIT removes (RFC 1939 §6).

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::Shared;
use crate::conn::{Conn, Line, Stream};
use crate::sasl::{AuthResult, Proto};
use crate::util::b64;

const MAX_LINE: usize = 64 * 1024;
const AUTH_FAILED: &str = "-ERR Authentication failure: unknown user name or bad password.";

struct Entry {
    uid: u32,
    size: usize,
    deleted: bool,
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    starttls_offered: bool,
    user: Option<String>,
    connected: bool,
    /// This session's entry in the login traces, once logged in.
    trace: Option<usize>,
    uid_validity: u32,
    entries: Vec<Entry>,
}

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, implicit_tls: bool) {
    shared.count_mail_connection();
    let idle = shared.idle_timeout;
    let conn = if implicit_tls {
        match Conn::accept_tls(tcp, &shared.acceptor, idle).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "sandbox POP3: TLS handshake failed");
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
        user: None,
        connected: false,
        trace: None,
        uid_validity: 0,
        entries: Vec::new(),
    };
    match s.run().await {
        Ok(()) => s.conn.close().await,
        Err(e) => tracing::debug!(error = %e, "sandbox POP3 session ended"),
    }
}

/// Dot-stuff a message for a multi-line response (RFC 1939 §3), ending with `.\r\n`.
fn dot_stuff(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !data.is_empty() && !data.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

impl Session {
    fn line(&mut self, text: &str) {
        self.conn.send(text.as_bytes());
        self.conn.send(b"\r\n");
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let greeting = format!(
            "+OK The Microsoft Exchange POP3 service is ready. [{}]",
            b64(self.shared.host.as_bytes())
        );
        self.line(&greeting);
        loop {
            let line = match self.conn.read_line(MAX_LINE).await? {
                Line::Eof => return Ok(()),
                Line::TooLong => {
                    self.line("-ERR Protocol error. Line too long.");
                    continue;
                }
                Line::Text(l) => String::from_utf8_lossy(&l).into_owned(),
            };
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            if let Some(i) = self.trace {
                self.shared.trace_first_command(i, &verb);
            }
            if self.user.is_some() && !self.connected && verb != "QUIT" {
                self.line("-ERR User is authenticated but not connected.");
                continue;
            }
            match (verb.as_str(), self.user.is_some()) {
                ("CAPA", _) => {
                    let mut caps = String::from("+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER");
                    if self.starttls_offered && !self.conn.is_tls() && self.user.is_none() {
                        caps.push_str("\r\nSTLS");
                    }
                    caps.push_str("\r\n.");
                    self.line(&caps);
                }
                ("QUIT", _) => {
                    self.quit();
                    return Ok(());
                }
                ("NOOP", true) => self.line("+OK"),
                ("STLS", false) => {
                    if !self.starttls_offered || self.conn.is_tls() {
                        self.line("-ERR Command is not valid in this state.");
                    } else {
                        self.line("+OK Begin TLS negotiation.");
                        if self.shared.forge_after_starttls() {
                            self.line("+OK\r\nXFORGED\r\nSASL XOAUTH2\r\n.");
                        }
                        let acceptor = self.shared.acceptor.clone();
                        self.conn.starttls(&acceptor).await?;
                    }
                }
                ("USER", false) => self.line("+OK"),
                ("PASS", false) => {
                    self.line("-ERR Logon failure: unknown user name or bad password.")
                }
                ("AUTH", false) => self.auth(&arg).await?,
                ("STAT", true) => {
                    let live = self.entries.iter().filter(|e| !e.deleted);
                    let (n, size) = live.fold((0, 0), |(n, s), e| (n + 1, s + e.size));
                    self.line(&format!("+OK {n} {size}"));
                }
                ("LIST", true) => self.listing(&arg, false),
                ("UIDL", true) => self.listing(&arg, true),
                ("RETR", true) => self.retr(&arg, None).await?,
                ("TOP", true) => {
                    let mut it = arg.split_ascii_whitespace();
                    let n = it.next().unwrap_or("").to_string();
                    match it.next().and_then(|k| k.parse::<usize>().ok()) {
                        Some(k) => self.retr(&n, Some(k)).await?,
                        None => self.line("-ERR Protocol error. 14"),
                    }
                }
                ("DELE", true) => match self.entry(&arg) {
                    Some(i) => {
                        self.entries[i].deleted = true;
                        self.line("+OK");
                    }
                    None => self.line("-ERR The specified message is out of range."),
                },
                ("RSET", true) => {
                    self.entries.iter_mut().for_each(|e| e.deleted = false);
                    self.line("+OK");
                }
                (
                    "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "NOOP" | "USER"
                    | "PASS" | "AUTH" | "STLS",
                    _,
                ) => self.line("-ERR Command is not valid in this state."),
                _ => self.line("-ERR Protocol error. 14"),
            }
        }
    }

    async fn auth(&mut self, arg: &str) -> std::io::Result<()> {
        if arg.is_empty() {
            self.line("+OK\r\nPLAIN\r\nXOAUTH2\r\n.");
            return Ok(());
        }
        if !self.conn.is_tls() {
            self.line("-ERR Command is not valid in this state.");
            return Ok(());
        }
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        if mech != "XOAUTH2" && mech != "PLAIN" {
            self.line("-ERR Unrecognized authentication type.");
            return Ok(());
        }
        let blob = match initial {
            Some(i) if i != "=" => i.into_bytes(),
            _ => {
                self.line("+ ");
                match self.conn.read_line(MAX_LINE).await? {
                    Line::Text(l) => l.to_vec(),
                    Line::TooLong => {
                        self.line(AUTH_FAILED);
                        return Ok(());
                    }
                    Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        if blob == b"*" {
            self.line("-ERR Authentication cancelled.");
            return Ok(());
        }
        if mech == "PLAIN" {
            self.line(AUTH_FAILED);
            return Ok(());
        }
        match self.shared.xoauth2(Proto::Pop3, &blob) {
            AuthResult::Ok(user) => {
                let msgs = self.shared.store.messages(&user);
                self.uid_validity = self.shared.store.status(&user, false).uid_validity;
                self.entries = msgs
                    .iter()
                    .map(|m| Entry {
                        uid: m.uid,
                        size: m.raw.len(),
                        deleted: false,
                    })
                    .collect();
                self.user = Some(user);
                self.connected = true;
                self.trace = Some(self.shared.trace_login("pop3", self.conn.turns()));
                self.line("+OK User successfully authenticated.");
            }
            AuthResult::NoRights(user) => {
                self.user = Some(user);
                self.connected = false;
                self.trace = Some(self.shared.trace_login("pop3", self.conn.turns()));
                self.line("+OK User successfully authenticated.");
            }
            AuthResult::Failed | AuthResult::SmtpAuthDisabled => self.line(AUTH_FAILED),
        }
        Ok(())
    }

    /// Index of a live message by its 1-based number.
    fn entry(&self, arg: &str) -> Option<usize> {
        let n: usize = arg.split_ascii_whitespace().next()?.parse().ok()?;
        let i = n.checked_sub(1)?;
        (i < self.entries.len() && !self.entries[i].deleted).then_some(i)
    }

    fn uid_string(&self, uid: u32) -> String {
        format!("{:08x}{:08x}", self.uid_validity, uid)
    }

    fn listing(&mut self, arg: &str, uidl: bool) {
        let value = |s: &Session, i: usize| {
            if uidl {
                s.uid_string(s.entries[i].uid)
            } else {
                s.entries[i].size.to_string()
            }
        };
        if !arg.is_empty() {
            match self.entry(arg) {
                Some(i) => {
                    let l = format!("+OK {} {}", i + 1, value(self, i));
                    self.line(&l);
                }
                None => self.line("-ERR The specified message is out of range."),
            }
            return;
        }
        let mut out = String::from("+OK\r\n");
        for i in 0..self.entries.len() {
            if !self.entries[i].deleted {
                out.push_str(&format!("{} {}\r\n", i + 1, value(self, i)));
            }
        }
        out.push('.');
        self.line(&out);
    }

    /// RETR (lines = None) or TOP n lines.
    async fn retr(&mut self, arg: &str, lines: Option<usize>) -> std::io::Result<()> {
        let Some(i) = self.entry(arg) else {
            self.line("-ERR The specified message is out of range.");
            return Ok(());
        };
        let user = self.user.clone().unwrap_or_default();
        let Some(msg) = self.shared.store.get(&user, self.entries[i].uid) else {
            self.line("-ERR The message was deleted by another session.");
            return Ok(());
        };
        let raw = &msg.raw[..];
        let data = match lines {
            None => raw,
            Some(k) => {
                let (header, body) = crate::mime::split(raw);
                let mut end = 0;
                for _ in 0..k {
                    match body[end..].iter().position(|&b| b == b'\n') {
                        Some(p) => end += p + 1,
                        None => {
                            end = body.len();
                            break;
                        }
                    }
                }
                &raw[..header.len() + end]
            }
        };
        let mut out = format!("+OK {} octets\r\n", raw.len()).into_bytes();
        dot_stuff(data, &mut out);
        self.conn.send_bytes(&out).await
    }

    fn quit(&mut self) {
        if let Some(user) = self.user.clone()
            && self.connected
        {
            let gone: Vec<u32> = self
                .entries
                .iter()
                .filter(|e| e.deleted)
                .map(|e| e.uid)
                .collect();
            if !gone.is_empty() {
                self.shared.store.remove(&user, &gone);
            }
        }
        self.line("+OK Microsoft Exchange Server POP3 server signing off.");
    }
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        dot_stuff(b".a\r\nb\r\n..c", &mut out);
        assert_eq!(out, b"..a\r\nb\r\n...c\r\n.\r\n");
    }
}
