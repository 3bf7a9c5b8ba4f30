//! Fake Exchange Online IMAP (outlook.office365.com:993 implicit TLS, or plaintext + STARTTLS).
//!
//! Pre-auth behaviour follows FACTS.md: Exchange's greeting and capability list, only
//! `AUTHENTICATE XOAUTH2` succeeds (SASL-IR or continuation), LOGIN and AUTHENTICATE PLAIN fail
//! (basic auth off), and a live token without rights on the mailbox gets `OK` and then
//! `BAD User is authenticated but not connected.` for every command.
//!
//! After login: one INBOX (the store's mailbox of the authenticated user) with the IMAP4rev1
//! subset GLPI's collectors and the tests use. Each session keeps its own sequence-number view
//! (`Sel::view`, UIDs in order) and reports store changes as `* n EXISTS` / `* n EXPUNGE`.
//!
//! Framing: a command is a line plus any literals (`{N}` answered with `+ Ready`, `{N+}` without);
//! literals are capped at 64 KiB except APPEND's (the sandbox's max message size), which are
//! read into one buffer of exactly the announced size.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::Shared;
use crate::conn::{Conn, Line, Stream};
use crate::mime;
use crate::sasl::{AuthResult, Proto};
use crate::store::MailboxMessage;
use crate::util::{b64, day_of, imap_date, parse_imap_date_time, parse_imap_day};

const MAX_LINE: usize = 64 * 1024;
const MAX_LITERAL: usize = 64 * 1024;
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
const CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
const FLAGS: &str = "\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent";

/// A token of a command.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Atom(String),
    Str(Bytes),
    List(Vec<Tok>),
}

impl Tok {
    /// An atom or a string as text.
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Tok::Atom(a) => Some(Cow::Borrowed(a)),
            Tok::Str(s) => Some(String::from_utf8_lossy(s)),
            Tok::List(_) => None,
        }
    }

    fn atom_upper(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }
}

/// Split a command (literals replaced by NUL markers) into tokens (RFC 3501 §9, leniently:
/// brackets keep `BODY[HEADER.FIELDS (A B)]<0.10>` in one atom).
fn tokenize(buf: &[u8], lits: Vec<Bytes>) -> Option<Vec<Tok>> {
    let mut lits = lits.into_iter();
    let mut stack: Vec<Vec<Tok>> = vec![Vec::new()];
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b' ' => i += 1,
            b'(' => {
                stack.push(Vec::new());
                i += 1;
            }
            b')' => {
                let list = stack.pop()?;
                stack.last_mut()?.push(Tok::List(list));
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match *buf.get(i)? {
                        b'\\' => {
                            s.push(*buf.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b => {
                            s.push(b);
                            i += 1;
                        }
                    }
                }
                stack.last_mut()?.push(Tok::Str(Bytes::from(s)));
            }
            0 => {
                stack.last_mut()?.push(Tok::Str(lits.next()?));
                i += 1;
            }
            _ => {
                let start = i;
                let mut depth = 0u32;
                while i < buf.len() {
                    match buf[i] {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | 0 if depth == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                let atom = String::from_utf8_lossy(&buf[start..i]).into_owned();
                stack.last_mut()?.push(Tok::Atom(atom));
            }
        }
    }
    if stack.len() != 1 {
        return None;
    }
    stack.pop()
}

/// `{N}` / `{N+}` at the end of a line: (position of `{`, N, non-synchronising).
fn literal_marker(line: &[u8]) -> Option<(usize, usize, bool)> {
    if !line.ends_with(b"}") {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, plus) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 12 {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((open, n, plus))
}

/// A parsed sequence set (RFC 3501 §9 `sequence-set`); `u32::MAX` stands for `*`.
#[derive(Debug, Clone)]
struct SeqSet(Vec<(u32, u32)>);

impl SeqSet {
    fn parse(s: &str) -> Option<SeqSet> {
        let num = |p: &str| -> Option<u32> {
            if p == "*" {
                Some(u32::MAX)
            } else {
                p.parse().ok().filter(|n| *n > 0)
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            ranges.push((a.min(b), a.max(b)));
        }
        Some(SeqSet(ranges))
    }

    /// Whether `n` is in the set, `*` being `star`.
    fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = if a == u32::MAX { star } else { a };
            let b = if b == u32::MAX { star } else { b };
            let (a, b) = (a.min(b), a.max(b));
            (a..=b).contains(&n)
        })
    }
}

/// The selected mailbox of a session.
struct Sel {
    read_only: bool,
    /// UIDs in sequence-number order, as this session knows them.
    view: Vec<u32>,
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    starttls_offered: bool,
    user: Option<String>,
    /// False for a live token without rights on the mailbox.
    connected: bool,
    /// This session's entry in the login traces, once logged in.
    trace: Option<usize>,
    sel: Option<Sel>,
}

#[derive(Debug)]
struct Command {
    tag: String,
    name: String,
    args: Vec<Tok>,
}

enum Next {
    Command(Command),
    /// Reply `<tag> BAD <text>` (or `* BAD` without a tag) and go on.
    Bad(Option<String>, String),
    Eof,
}

/// `A1` → `A2`: the tag after `tag` for a client that numbers its tags (else `tag` itself).
fn next_tag(tag: &str) -> String {
    let digits = tag.len() - tag.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, num) = tag.split_at(tag.len() - digits);
    match num.parse::<u64>() {
        Ok(n) => format!("{head}{}", n.saturating_add(1)),
        Err(_) => tag.to_string(),
    }
}

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, implicit_tls: bool) {
    shared.count_mail_connection();
    let idle = shared.idle_timeout;
    let conn = if implicit_tls {
        match Conn::accept_tls(tcp, &shared.acceptor, idle).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "sandbox IMAP: TLS handshake failed");
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
        sel: None,
    };
    match s.run().await {
        Ok(()) => s.conn.close().await,
        Err(e) => tracing::debug!(error = %e, "sandbox IMAP session ended"),
    }
}

fn ok_done(name: &str) -> String {
    format!("OK {name} completed.")
}

impl Session {
    fn line(&mut self, text: &str) {
        self.conn.send(text.as_bytes());
        self.conn.send(b"\r\n");
    }

    fn tagged(&mut self, tag: &str, text: &str) {
        let l = format!("{tag} {text}");
        self.line(&l);
    }

    fn user(&self) -> String {
        self.user.clone().unwrap_or_default()
    }

    async fn read_command(&mut self) -> std::io::Result<Next> {
        let mut buf: Vec<u8> = Vec::new();
        let mut lits: Vec<Bytes> = Vec::new();
        let mut first = true;
        loop {
            let line = match self.conn.read_line(MAX_LINE).await? {
                Line::Eof => return Ok(Next::Eof),
                Line::TooLong => return Ok(Next::Bad(None, "Command Error. 10".into())),
                Line::Text(l) => l,
            };
            if line.contains(&0) {
                return Ok(Next::Bad(None, "Command Error. 10".into()));
            }
            if first && line.is_empty() {
                continue;
            }
            let Some((open, n, plus)) = literal_marker(&line) else {
                buf.extend_from_slice(&line);
                break;
            };
            buf.extend_from_slice(&line[..open]);
            buf.push(0);
            let mut words = buf.split(|&b| b == b' ');
            let tag = words
                .next()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_else(|| "*".into());
            let verb = words.next().unwrap_or_default().to_ascii_uppercase();
            let limit = if verb == b"APPEND" {
                self.shared.max_message_size
            } else {
                MAX_LITERAL
            };
            if n > limit {
                if plus {
                    // The client is already sending it; there is no way back in sync.
                    let l = format!("{tag} BAD Literal too large.");
                    self.line(&l);
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                return Ok(Next::Bad(Some(tag), "[TOOBIG] Literal too large.".into()));
            }
            if !plus {
                self.line("+ Ready for additional command text.");
            }
            lits.push(self.conn.read_exact_bytes(n).await?);
            first = false;
        }
        let Some(mut toks) = tokenize(&buf, lits) else {
            let tag = buf
                .split(|&b| b == b' ')
                .next()
                .map(|t| String::from_utf8_lossy(t).into_owned());
            return Ok(Next::Bad(tag, "Command Error. 10".into()));
        };
        if toks.len() < 2 {
            let tag = toks.first().and_then(|t| t.text()).map(|t| t.into_owned());
            return Ok(Next::Bad(tag, "Command Error. 10".into()));
        }
        let args = toks.split_off(2);
        let tag = match &toks[0] {
            Tok::Atom(a) => a.clone(),
            _ => return Ok(Next::Bad(None, "Command Error. 10".into())),
        };
        let Some(name) = toks[1].atom_upper() else {
            return Ok(Next::Bad(Some(tag), "Command Error. 10".into()));
        };
        Ok(Next::Command(Command { tag, name, args }))
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let host = b64(self.shared.host.as_bytes());
        let greeting = format!("* OK The Microsoft Exchange IMAP4 service is ready. [{host}]");
        self.line(&greeting);
        loop {
            let cmd = match self.read_command().await? {
                Next::Eof => return Ok(()),
                Next::Bad(tag, text) => {
                    let tag = tag.unwrap_or_else(|| "*".into());
                    self.tagged(&tag, &format!("BAD {text}"));
                    continue;
                }
                Next::Command(c) => c,
            };
            if !self.dispatch(cmd).await? {
                return Ok(());
            }
        }
    }

    /// Handle one command; false ends the session.
    async fn dispatch(&mut self, cmd: Command) -> std::io::Result<bool> {
        let tag = cmd.tag.clone();
        let authed = self.user.is_some();
        if let Some(i) = self.trace {
            self.shared.trace_first_command(i, &cmd.name);
        }
        if authed && !self.connected && cmd.name != "LOGOUT" {
            self.tagged(&tag, "BAD User is authenticated but not connected.");
            return Ok(true);
        }
        let selected = self.sel.is_some();
        match (cmd.name.as_str(), authed, selected) {
            ("CAPABILITY", ..) => {
                let caps = self.capabilities();
                self.line(&format!("* CAPABILITY {caps}"));
                self.tagged(&tag, &ok_done("CAPABILITY"));
            }
            ("NOOP", ..) | ("CHECK", ..) => {
                self.sync(true);
                self.tagged(&tag, &ok_done(&cmd.name));
            }
            ("LOGOUT", ..) => {
                self.line("* BYE Microsoft Exchange Server IMAP4 server signing off.");
                self.tagged(&tag, &ok_done("LOGOUT"));
                return Ok(false);
            }
            ("ID", ..) => {
                self.line("* ID (\"name\" \"Microsoft.Exchange.Imap4.Imap4Server\" \"version\" \"15.20\")");
                self.tagged(&tag, &ok_done("ID"));
            }
            ("STARTTLS", false, _) => {
                if self.conn.is_tls() || !self.starttls_offered {
                    self.tagged(&tag, "BAD Command received in Invalid state.");
                } else {
                    self.tagged(&tag, "OK Begin TLS negotiation now.");
                    if self.shared.forge_after_starttls() {
                        // The answer to the CAPABILITY a client sends next, under the tag a
                        // client that numbers its tags would give it.
                        self.line("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR XFORGED");
                        let next = next_tag(&tag);
                        self.tagged(&next, "OK CAPABILITY completed.");
                    }
                    let acceptor = self.shared.acceptor.clone();
                    self.conn.starttls(&acceptor).await?;
                }
            }
            ("AUTHENTICATE", false, _) => self.authenticate(&tag, &cmd.args).await?,
            ("LOGIN", false, _) => self.tagged(&tag, "NO LOGIN failed."),
            ("SELECT" | "EXAMINE", true, _) => self.select(&tag, &cmd.name, &cmd.args),
            ("LIST" | "LSUB", true, _) => self.list(&tag, &cmd.name, &cmd.args),
            ("STATUS", true, _) => self.status(&tag, &cmd.args),
            ("NAMESPACE", true, _) => {
                self.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.tagged(&tag, &ok_done("NAMESPACE"));
            }
            ("APPEND", true, _) => self.append(&tag, &cmd.args),
            ("IDLE", true, _) => self.idle(&tag).await?,
            ("CREATE" | "DELETE" | "RENAME" | "SUBSCRIBE" | "UNSUBSCRIBE", true, _) => {
                self.tagged(&tag, "NO Command is not supported by this sandbox.")
            }
            ("FETCH", true, true) => self.fetch(&tag, &cmd.args, false).await?,
            ("STORE", true, true) => self.store(&tag, &cmd.args, false),
            ("SEARCH", true, true) => self.search(&tag, &cmd.args, false),
            ("COPY" | "MOVE", true, true) => self.tagged(
                &tag,
                "NO [TRYCREATE] The requested item could not be found.",
            ),
            ("EXPUNGE", true, true) => self.expunge(&tag, None),
            ("CLOSE", true, true) => {
                if let Some(sel) = self.sel.take()
                    && !sel.read_only
                {
                    self.shared.store.expunge(&self.user(), None);
                }
                self.tagged(&tag, &ok_done("CLOSE"));
            }
            ("UNSELECT", true, true) => {
                self.sel = None;
                self.tagged(&tag, &ok_done("UNSELECT"));
            }
            ("UID", true, true) => {
                let sub = cmd
                    .args
                    .first()
                    .and_then(Tok::atom_upper)
                    .unwrap_or_default();
                let rest = &cmd.args[cmd.args.len().min(1)..];
                match sub.as_str() {
                    "FETCH" => self.fetch(&tag, rest, true).await?,
                    "STORE" => self.store(&tag, rest, true),
                    "SEARCH" => self.search(&tag, rest, true),
                    "EXPUNGE" => {
                        let set = rest
                            .first()
                            .and_then(Tok::text)
                            .and_then(|s| SeqSet::parse(&s));
                        match set {
                            Some(set) => self.expunge(&tag, Some(set)),
                            None => self.tagged(&tag, "BAD Command Argument Error. 11"),
                        }
                    }
                    "COPY" | "MOVE" => self.tagged(
                        &tag,
                        "NO [TRYCREATE] The requested item could not be found.",
                    ),
                    _ => self.tagged(&tag, "BAD Command Error. 10"),
                }
            }
            (
                "SELECT" | "EXAMINE" | "LIST" | "LSUB" | "STATUS" | "NAMESPACE" | "APPEND" | "IDLE"
                | "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "EXPUNGE" | "CLOSE" | "UNSELECT"
                | "UID" | "CREATE" | "DELETE" | "RENAME" | "SUBSCRIBE" | "UNSUBSCRIBE" | "STARTTLS"
                | "AUTHENTICATE" | "LOGIN",
                ..,
            ) => self.tagged(&tag, "BAD Command received in Invalid state."),
            _ => self.tagged(&tag, "BAD Command Error. 10"),
        }
        Ok(true)
    }

    fn capabilities(&self) -> String {
        let caps = self
            .shared
            .imap_capabilities()
            .unwrap_or_else(|| CAPS.to_string());
        if !self.conn.is_tls() && self.starttls_offered && self.user.is_none() {
            format!("{caps} STARTTLS LOGINDISABLED")
        } else {
            caps
        }
    }

    fn offers(&self, capability: &str) -> bool {
        self.capabilities()
            .split(' ')
            .any(|c| c.eq_ignore_ascii_case(capability))
    }

    async fn authenticate(&mut self, tag: &str, args: &[Tok]) -> std::io::Result<()> {
        let mech = args
            .first()
            .and_then(Tok::text)
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !self.conn.is_tls() {
            self.tagged(
                tag,
                "NO [PRIVACYREQUIRED] Must issue a STARTTLS command first.",
            );
            return Ok(());
        }
        if mech != "XOAUTH2" && mech != "PLAIN" || !self.offers(&format!("AUTH={mech}")) {
            self.tagged(tag, "NO AUTHENTICATE failed.");
            return Ok(());
        }
        if args.get(1).is_some() && !self.offers("SASL-IR") {
            self.tagged(tag, "BAD Command Argument Error. 12");
            return Ok(());
        }
        let blob = match args.get(1).and_then(Tok::text) {
            Some(ir) if ir != "=" => ir.into_owned().into_bytes(),
            _ => {
                self.line("+ ");
                match self.conn.read_line(MAX_LINE).await? {
                    Line::Text(l) => l.to_vec(),
                    Line::TooLong => {
                        self.tagged(tag, "BAD Command Argument Error. 12");
                        return Ok(());
                    }
                    Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        if blob == b"*" {
            self.tagged(tag, "BAD AUTHENTICATE aborted.");
            return Ok(());
        }
        if mech == "PLAIN" {
            // Basic authentication is off for the tenant.
            self.tagged(tag, "NO AUTHENTICATE failed.");
            return Ok(());
        }
        match self.shared.xoauth2(Proto::Imap, &blob) {
            AuthResult::Ok(user) => {
                self.user = Some(user);
                self.connected = true;
                self.trace = Some(self.shared.trace_login("imap", self.conn.turns()));
                self.tagged(tag, "OK AUTHENTICATE completed.");
            }
            AuthResult::NoRights(user) => {
                self.user = Some(user);
                self.connected = false;
                self.trace = Some(self.shared.trace_login("imap", self.conn.turns()));
                self.tagged(tag, "OK AUTHENTICATE completed.");
            }
            AuthResult::Failed | AuthResult::SmtpAuthDisabled => {
                self.tagged(tag, "NO AUTHENTICATE failed.")
            }
        }
        Ok(())
    }

    fn is_inbox(t: Option<&Tok>) -> bool {
        t.and_then(Tok::text)
            .is_some_and(|m| m.eq_ignore_ascii_case("INBOX"))
    }

    fn select(&mut self, tag: &str, name: &str, args: &[Tok]) {
        self.sel = None;
        if !Self::is_inbox(args.first()) {
            self.tagged(tag, "NO The requested item could not be found.");
            return;
        }
        let read_only = name == "EXAMINE";
        let st = self.shared.store.status(&self.user(), !read_only);
        self.line(&format!("* {} EXISTS", st.uids.len()));
        self.line(&format!("* {} RECENT", st.recent));
        self.line(&format!("* FLAGS ({FLAGS})"));
        self.line(&format!("* OK [PERMANENTFLAGS ({FLAGS})] Permanent flags"));
        if let Some(i) = st.first_unseen {
            self.line(&format!(
                "* OK [UNSEEN {}] Is the first unseen message",
                i + 1
            ));
        }
        self.line(&format!(
            "* OK [UIDVALIDITY {}] UIDVALIDITY value",
            st.uid_validity
        ));
        self.line(&format!(
            "* OK [UIDNEXT {}] The next unique identifier value",
            st.uid_next
        ));
        self.sel = Some(Sel {
            read_only,
            view: st.uids,
        });
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.tagged(tag, &format!("OK [{mode}] {name} completed."));
    }

    fn list(&mut self, tag: &str, name: &str, args: &[Tok]) {
        let pattern = args
            .get(1)
            .and_then(Tok::text)
            .unwrap_or_default()
            .into_owned();
        if pattern.is_empty() {
            self.line(&format!("* {name} (\\Noselect \\HasChildren) \"/\" \"\""));
        } else if glob(&pattern.to_ascii_uppercase(), "INBOX") {
            self.line(&format!("* {name} (\\Marked \\HasNoChildren) \"/\" INBOX"));
        }
        self.tagged(tag, &ok_done(name));
    }

    fn status(&mut self, tag: &str, args: &[Tok]) {
        if !Self::is_inbox(args.first()) {
            self.tagged(tag, "NO The requested item could not be found.");
            return;
        }
        let items = match args.get(1) {
            Some(Tok::List(l)) => l.iter().filter_map(Tok::atom_upper).collect::<Vec<_>>(),
            _ => {
                self.tagged(tag, "BAD Command Argument Error. 11");
                return;
            }
        };
        let msgs = self.shared.store.messages(&self.user());
        let st = self.shared.store.status(&self.user(), false);
        let mut parts = Vec::new();
        for it in items {
            let v = match it.as_str() {
                "MESSAGES" => msgs.len() as u64,
                "RECENT" => st.recent as u64,
                "UIDNEXT" => u64::from(st.uid_next),
                "UIDVALIDITY" => u64::from(st.uid_validity),
                "UNSEEN" => msgs.iter().filter(|m| !m.has_flag("\\Seen")).count() as u64,
                _ => continue,
            };
            parts.push(format!("{it} {v}"));
        }
        self.line(&format!("* STATUS INBOX ({})", parts.join(" ")));
        self.tagged(tag, &ok_done("STATUS"));
    }

    fn append(&mut self, tag: &str, args: &[Tok]) {
        if !Self::is_inbox(args.first()) {
            self.tagged(tag, "NO [TRYCREATE] The requested item could not be found.");
            return;
        }
        let mut flags = Vec::new();
        let mut date = None;
        let mut message = None;
        for t in &args[1..] {
            match t {
                Tok::List(l) => {
                    flags = l
                        .iter()
                        .filter_map(Tok::text)
                        .map(|f| canonical_flag(&f))
                        .collect()
                }
                Tok::Str(s) if message.is_none() && date.is_none() && looks_like_date(s) => {
                    date = parse_imap_date_time(&String::from_utf8_lossy(s));
                }
                Tok::Str(s) => message = Some(s.clone()),
                Tok::Atom(_) => {}
            }
        }
        let Some(raw) = message else {
            self.tagged(tag, "BAD Command Argument Error. 11");
            return;
        };
        flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
        let user = self.user();
        let uid = self
            .shared
            .store
            .append(&user, raw, flags, date.unwrap_or_else(SystemTime::now));
        let validity = self.shared.store.status(&user, false).uid_validity;
        self.sync(false);
        self.tagged(
            tag,
            &format!("OK [APPENDUID {validity} {uid}] APPEND completed."),
        );
    }

    async fn idle(&mut self, tag: &str) -> std::io::Result<()> {
        let mut rx = self.shared.store.watch(&self.user());
        rx.borrow_and_update();
        self.line("+ idling");
        self.sync(true);
        self.conn.flush().await?;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.sync(true);
                    self.conn.flush().await?;
                }
                line = self.conn.read_line_within(MAX_LINE, IDLE_LIMIT) => {
                    match line? {
                        Line::Text(l) if l.eq_ignore_ascii_case(b"DONE") => {
                            self.tagged(tag, &ok_done("IDLE"));
                        }
                        Line::Text(_) | Line::TooLong => {
                            self.tagged(tag, "BAD Command Argument Error. 11");
                        }
                        Line::Eof => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Report store changes to this session: `* n EXPUNGE` (when allowed) and `* n EXISTS`.
    fn sync(&mut self, expunges: bool) {
        let user = self.user();
        let Some(sel) = self.sel.as_mut() else {
            return;
        };
        let current = self.shared.store.uids(&user);
        let mut out = Vec::new();
        if expunges {
            let mut i = 0;
            while i < sel.view.len() {
                if current.binary_search(&sel.view[i]).is_err() {
                    out.push(format!("* {} EXPUNGE", i + 1));
                    sel.view.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let last = sel.view.last().copied().unwrap_or(0);
        let before = sel.view.len();
        sel.view.extend(current.iter().filter(|u| **u > last));
        if sel.view.len() != before {
            out.push(format!("* {} EXISTS", sel.view.len()));
        }
        for l in out {
            self.line(&l);
        }
    }

    /// Resolve a set to (sequence number, UID) pairs of this session's view.
    fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<(usize, u32)> {
        let Some(sel) = &self.sel else {
            return Vec::new();
        };
        let star_uid = sel.view.last().copied().unwrap_or(0);
        let n = sel.view.len() as u32;
        sel.view
            .iter()
            .enumerate()
            .filter(|(i, u)| {
                if uid {
                    set.contains(**u, star_uid)
                } else {
                    set.contains(*i as u32 + 1, n)
                }
            })
            .map(|(i, u)| (i + 1, *u))
            .collect()
    }

    fn expunge(&mut self, tag: &str, only: Option<SeqSet>) {
        if self.sel.as_ref().is_some_and(|s| s.read_only) {
            self.tagged(tag, "NO EXPUNGE failed: mailbox is read-only.");
            return;
        }
        let user = self.user();
        let restrict: Option<Vec<u32>> = only.map(|set| {
            self.resolve(&set, true)
                .into_iter()
                .map(|(_, u)| u)
                .collect()
        });
        self.shared.store.expunge(&user, restrict.as_deref());
        self.sync(true);
        self.tagged(tag, &ok_done("EXPUNGE"));
    }

    fn store(&mut self, tag: &str, args: &[Tok], uid: bool) {
        let name = if uid { "UID STORE" } else { "STORE" };
        let set = args
            .first()
            .and_then(Tok::text)
            .and_then(|s| SeqSet::parse(&s));
        let item = args.get(1).and_then(Tok::atom_upper);
        let (Some(set), Some(item)) = (set, item) else {
            self.tagged(tag, "BAD Command Argument Error. 11");
            return;
        };
        if self.sel.as_ref().is_some_and(|s| s.read_only) {
            self.tagged(tag, "NO STORE failed: mailbox is read-only.");
            return;
        }
        let flags: Vec<String> = match args.get(2) {
            Some(Tok::List(l)) => l
                .iter()
                .filter_map(Tok::text)
                .map(|f| canonical_flag(&f))
                .collect(),
            Some(_) => args[2..]
                .iter()
                .filter_map(Tok::text)
                .map(|f| canonical_flag(&f))
                .collect(),
            None => Vec::new(),
        };
        let silent = item.ends_with(".SILENT");
        let op = item.trim_end_matches(".SILENT");
        if !matches!(op, "FLAGS" | "+FLAGS" | "-FLAGS") {
            self.tagged(tag, "BAD Command Argument Error. 11");
            return;
        }
        let user = self.user();
        for (seq, u) in self.resolve(&set, uid) {
            let new = self.shared.store.update_flags(&user, u, |cur| match op {
                "FLAGS" => *cur = flags.clone(),
                "+FLAGS" => {
                    for f in &flags {
                        if !cur.iter().any(|c| c.eq_ignore_ascii_case(f)) {
                            cur.push(f.clone());
                        }
                    }
                }
                _ => cur.retain(|c| !flags.iter().any(|f| f.eq_ignore_ascii_case(c))),
            });
            if let (Some(new), false) = (new, silent) {
                let uid_part = if uid {
                    format!("UID {u} ")
                } else {
                    String::new()
                };
                self.line(&format!(
                    "* {seq} FETCH ({uid_part}FLAGS ({}))",
                    new.join(" ")
                ));
            }
        }
        self.tagged(tag, &ok_done(name));
    }

    fn search(&mut self, tag: &str, args: &[Tok], uid: bool) {
        let mut toks: &[Tok] = args;
        if toks.first().and_then(Tok::atom_upper).as_deref() == Some("CHARSET") {
            toks = &toks[toks.len().min(2)..];
        }
        let mut crits = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match parse_criterion(toks, &mut i) {
                Some(c) => crits.push(c),
                None => {
                    self.tagged(tag, "BAD Command Argument Error. 11");
                    return;
                }
            }
        }
        if crits.is_empty() {
            self.tagged(tag, "BAD Command Argument Error. 11");
            return;
        }
        let crit = Crit::And(crits);
        let user = self.user();
        let msgs = self.shared.store.messages(&user);
        let Some(sel) = &self.sel else { return };
        let max_uid = sel.view.last().copied().unwrap_or(0);
        let n = sel.view.len() as u32;
        let mut hits = Vec::new();
        for (i, u) in sel.view.iter().enumerate() {
            let Ok(pos) = msgs.binary_search_by_key(u, |m| m.uid) else {
                continue;
            };
            let ctx = MatchCtx {
                msg: &msgs[pos],
                seq: i as u32 + 1,
                n,
                max_uid,
            };
            if crit.matches(&ctx) {
                hits.push(if uid { *u } else { i as u32 + 1 });
            }
        }
        let mut line = String::from("* SEARCH");
        for h in hits {
            line.push(' ');
            line.push_str(&h.to_string());
        }
        self.line(&line);
        self.tagged(tag, &ok_done(if uid { "UID SEARCH" } else { "SEARCH" }));
    }

    async fn fetch(&mut self, tag: &str, args: &[Tok], uid: bool) -> std::io::Result<()> {
        let name = if uid { "UID FETCH" } else { "FETCH" };
        let set = args
            .first()
            .and_then(Tok::text)
            .and_then(|s| SeqSet::parse(&s));
        let items = args.get(1).and_then(parse_fetch_items);
        let (Some(set), Some(mut items)) = (set, items) else {
            self.tagged(tag, "BAD Command Argument Error. 11");
            return Ok(());
        };
        if uid && !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        let read_only = self.sel.as_ref().is_none_or(|s| s.read_only);
        let user = self.user();
        let targets = self.resolve(&set, uid);
        for (seq, u) in targets {
            let Some(mut msg) = self.shared.store.get(&user, u) else {
                continue;
            };
            let sets_seen =
                !read_only && !msg.has_flag("\\Seen") && items.iter().any(FetchItem::sets_seen);
            if sets_seen
                && let Some(flags) = self.shared.store.update_flags(&user, u, |f| {
                    f.push("\\Seen".into());
                })
            {
                msg.flags = flags;
            }
            let mut segs = FetchWriter::default();
            segs.text(format!("* {seq} FETCH (").as_bytes());
            let mut first = true;
            let mut wrote_flags = false;
            for it in &items {
                if !first {
                    segs.text(b" ");
                }
                first = false;
                if *it == FetchItem::Flags {
                    wrote_flags = true;
                }
                it.write(&msg, &mut segs);
            }
            if sets_seen && !wrote_flags {
                segs.text(b" ");
                FetchItem::Flags.write(&msg, &mut segs);
            }
            segs.text(b")\r\n");
            for seg in segs.segs {
                match seg {
                    Seg::Text(t) => self.conn.send(&t),
                    Seg::Data(d) => self.conn.send_bytes(&d).await?,
                }
            }
        }
        self.tagged(tag, &ok_done(name));
        Ok(())
    }
}

/// Flags with their system-flag spelling normalised.
fn canonical_flag(f: &str) -> String {
    for sys in [
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Draft",
        "\\Recent",
    ] {
        if f.eq_ignore_ascii_case(sys) {
            return sys.to_string();
        }
    }
    f.to_string()
}

fn looks_like_date(s: &[u8]) -> bool {
    s.len() < 40 && parse_imap_date_time(&String::from_utf8_lossy(s)).is_some()
}

/// LIST pattern match (`*` and `%` wildcards; one level of hierarchy so they are equal here).
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*' | b'%') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

// ---- SEARCH ----

#[derive(Debug)]
enum Crit {
    All,
    Flag(String, bool),
    Recent(bool),
    New,
    Header(String, String),
    Body(String),
    Text(String),
    Larger(usize),
    Smaller(usize),
    Since(i64),
    Before(i64),
    On(i64),
    Uid(SeqSet),
    Seq(SeqSet),
    Not(Box<Crit>),
    Or(Box<Crit>, Box<Crit>),
    And(Vec<Crit>),
}

struct MatchCtx<'a> {
    msg: &'a MailboxMessage,
    seq: u32,
    n: u32,
    max_uid: u32,
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

impl Crit {
    fn matches(&self, c: &MatchCtx<'_>) -> bool {
        let m = c.msg;
        match self {
            Crit::All => true,
            Crit::Flag(f, has) => m.has_flag(f) == *has,
            Crit::Recent(r) => m.recent == *r,
            Crit::New => m.recent && !m.has_flag("\\Seen"),
            Crit::Header(name, v) => {
                let (h, _) = mime::split(&m.raw);
                match mime::header_value(h, name) {
                    Some(val) => contains_ci(val.as_bytes(), v),
                    None => false,
                }
            }
            Crit::Body(v) => contains_ci(mime::split(&m.raw).1, v),
            Crit::Text(v) => contains_ci(&m.raw, v),
            Crit::Larger(n) => m.raw.len() > *n,
            Crit::Smaller(n) => m.raw.len() < *n,
            Crit::Since(d) => day_of(m.internal_date) >= *d,
            Crit::Before(d) => day_of(m.internal_date) < *d,
            Crit::On(d) => day_of(m.internal_date) == *d,
            Crit::Uid(s) => s.contains(m.uid, c.max_uid),
            Crit::Seq(s) => s.contains(c.seq, c.n),
            Crit::Not(x) => !x.matches(c),
            Crit::Or(a, b) => a.matches(c) || b.matches(c),
            Crit::And(v) => v.iter().all(|x| x.matches(c)),
        }
    }
}

/// One search key (RFC 3501 §6.4.4).
fn parse_criterion(toks: &[Tok], i: &mut usize) -> Option<Crit> {
    let t = toks.get(*i)?;
    *i += 1;
    if let Tok::List(l) = t {
        let mut v = Vec::new();
        let mut j = 0;
        while j < l.len() {
            v.push(parse_criterion(l, &mut j)?);
        }
        return Some(Crit::And(v));
    }
    let key = t.text()?.to_ascii_uppercase();
    let arg = |i: &mut usize| -> Option<String> {
        let s = toks.get(*i)?.text()?.into_owned();
        *i += 1;
        Some(s)
    };
    Some(match key.as_str() {
        "ALL" => Crit::All,
        "SEEN" => Crit::Flag("\\Seen".into(), true),
        "UNSEEN" => Crit::Flag("\\Seen".into(), false),
        "DELETED" => Crit::Flag("\\Deleted".into(), true),
        "UNDELETED" => Crit::Flag("\\Deleted".into(), false),
        "FLAGGED" => Crit::Flag("\\Flagged".into(), true),
        "UNFLAGGED" => Crit::Flag("\\Flagged".into(), false),
        "ANSWERED" => Crit::Flag("\\Answered".into(), true),
        "UNANSWERED" => Crit::Flag("\\Answered".into(), false),
        "DRAFT" => Crit::Flag("\\Draft".into(), true),
        "UNDRAFT" => Crit::Flag("\\Draft".into(), false),
        "RECENT" => Crit::Recent(true),
        "OLD" => Crit::Recent(false),
        "NEW" => Crit::New,
        "SUBJECT" | "FROM" | "TO" | "CC" | "BCC" => {
            let name = key[..1].to_string() + &key[1..].to_ascii_lowercase();
            Crit::Header(name, arg(i)?)
        }
        "HEADER" => {
            let name = arg(i)?;
            Crit::Header(name, arg(i)?)
        }
        "BODY" => Crit::Body(arg(i)?),
        "TEXT" => Crit::Text(arg(i)?),
        "LARGER" => Crit::Larger(arg(i)?.parse().ok()?),
        "SMALLER" => Crit::Smaller(arg(i)?.parse().ok()?),
        "SINCE" | "SENTSINCE" => Crit::Since(parse_imap_day(&arg(i)?)?),
        "BEFORE" | "SENTBEFORE" => Crit::Before(parse_imap_day(&arg(i)?)?),
        "ON" | "SENTON" => Crit::On(parse_imap_day(&arg(i)?)?),
        "UID" => Crit::Uid(SeqSet::parse(&arg(i)?)?),
        "KEYWORD" => Crit::Flag(arg(i)?, true),
        "UNKEYWORD" => Crit::Flag(arg(i)?, false),
        "NOT" => Crit::Not(Box::new(parse_criterion(toks, i)?)),
        "OR" => {
            let a = parse_criterion(toks, i)?;
            let b = parse_criterion(toks, i)?;
            Crit::Or(Box::new(a), Box::new(b))
        }
        _ => Crit::Seq(SeqSet::parse(&key)?),
    })
}

// ---- FETCH ----

#[derive(Debug, Clone, PartialEq)]
enum SectionText {
    Full,
    Header,
    Text,
    Mime,
    Fields(Vec<String>, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum FetchItem {
    Flags,
    Uid,
    Size,
    InternalDate,
    Envelope,
    BodyStructure(bool),
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Body {
        peek: bool,
        path: Vec<usize>,
        text: SectionText,
        partial: Option<(usize, usize)>,
        label: String,
    },
}

enum Seg {
    Text(Vec<u8>),
    Data(Bytes),
}

#[derive(Default)]
struct FetchWriter {
    segs: Vec<Seg>,
}

impl FetchWriter {
    fn text(&mut self, t: &[u8]) {
        if let Some(Seg::Text(last)) = self.segs.last_mut() {
            last.extend_from_slice(t);
        } else {
            self.segs.push(Seg::Text(t.to_vec()));
        }
    }

    /// A literal `{n}\r\n<data>`.
    fn literal(&mut self, data: Bytes) {
        self.text(format!("{{{}}}\r\n", data.len()).as_bytes());
        self.segs.push(Seg::Data(data));
    }
}

fn parse_fetch_items(t: &Tok) -> Option<Vec<FetchItem>> {
    let atoms: Vec<String> = match t {
        Tok::Atom(a) => match a.to_ascii_uppercase().as_str() {
            "ALL" => vec!["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
                .into_iter()
                .map(String::from)
                .collect(),
            "FAST" => vec!["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
                .into_iter()
                .map(String::from)
                .collect(),
            "FULL" => vec!["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
                .into_iter()
                .map(String::from)
                .collect(),
            _ => vec![a.clone()],
        },
        Tok::List(l) => l
            .iter()
            .map(|x| match x {
                Tok::Atom(a) => Some(a.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        Tok::Str(_) => return None,
    };
    atoms.iter().map(|a| parse_fetch_item(a)).collect()
}

fn parse_fetch_item(a: &str) -> Option<FetchItem> {
    let upper = a.to_ascii_uppercase();
    Some(match upper.as_str() {
        "FLAGS" => FetchItem::Flags,
        "UID" => FetchItem::Uid,
        "RFC822.SIZE" => FetchItem::Size,
        "INTERNALDATE" => FetchItem::InternalDate,
        "ENVELOPE" => FetchItem::Envelope,
        "BODYSTRUCTURE" => FetchItem::BodyStructure(true),
        "BODY" => FetchItem::BodyStructure(false),
        "RFC822" => FetchItem::Rfc822,
        "RFC822.HEADER" => FetchItem::Rfc822Header,
        "RFC822.TEXT" => FetchItem::Rfc822Text,
        _ => {
            let (peek, rest) = if let Some(r) = upper.strip_prefix("BODY.PEEK[") {
                (true, r)
            } else if let Some(r) = upper.strip_prefix("BODY[") {
                (false, r)
            } else {
                return None;
            };
            let close = rest.rfind(']')?;
            let section = &rest[..close];
            let after = &rest[close + 1..];
            let partial = if after.is_empty() {
                None
            } else {
                let inner = after.strip_prefix('<')?.strip_suffix('>')?;
                let (o, l) = inner.split_once('.')?;
                Some((o.parse().ok()?, l.parse().ok()?))
            };
            let (path, text) = parse_section(section)?;
            FetchItem::Body {
                peek,
                path,
                text,
                partial,
                label: section.to_string(),
            }
        }
    })
}

/// `1.2.HEADER.FIELDS (A B)` → ([1, 2], Fields([A, B], false)).
fn parse_section(s: &str) -> Option<(Vec<usize>, SectionText)> {
    let mut path = Vec::new();
    let mut rest = s.trim();
    loop {
        let end = rest.find('.').unwrap_or(rest.len());
        let head = &rest[..end];
        if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
            path.push(head.parse().ok()?);
            rest = rest.get(end + 1..).unwrap_or("");
        } else {
            break;
        }
    }
    let text = if rest.is_empty() {
        SectionText::Full
    } else if rest == "HEADER" {
        SectionText::Header
    } else if rest == "TEXT" {
        SectionText::Text
    } else if rest == "MIME" && !path.is_empty() {
        SectionText::Mime
    } else if let Some(list) = rest.strip_prefix("HEADER.FIELDS") {
        let (not, list) = match list.strip_prefix(".NOT") {
            Some(l) => (true, l),
            None => (false, list),
        };
        let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
        let names = inner
            .split_ascii_whitespace()
            .map(|n| n.trim_matches('"').to_string())
            .collect();
        SectionText::Fields(names, not)
    } else {
        return None;
    };
    Some((path, text))
}

impl FetchItem {
    fn sets_seen(&self) -> bool {
        matches!(
            self,
            FetchItem::Rfc822 | FetchItem::Rfc822Text | FetchItem::Body { peek: false, .. }
        )
    }

    fn write(&self, m: &MailboxMessage, w: &mut FetchWriter) {
        let raw = &m.raw;
        match self {
            FetchItem::Flags => {
                // \Recent is session-specific and dropped by IMAP4rev2; it is not reported.
                w.text(format!("FLAGS ({})", m.flags.join(" ")).as_bytes());
            }
            FetchItem::Uid => w.text(format!("UID {}", m.uid).as_bytes()),
            FetchItem::Size => w.text(format!("RFC822.SIZE {}", raw.len()).as_bytes()),
            FetchItem::InternalDate => {
                w.text(format!("INTERNALDATE \"{}\"", imap_date(m.internal_date)).as_bytes())
            }
            FetchItem::Envelope => {
                let mut out = b"ENVELOPE ".to_vec();
                mime::envelope(raw, &mut out);
                w.text(&out);
            }
            FetchItem::BodyStructure(ext) => {
                let mut out = if *ext {
                    b"BODYSTRUCTURE ".to_vec()
                } else {
                    b"BODY ".to_vec()
                };
                mime::body_structure(raw, &mut out, *ext, 0);
                w.text(&out);
            }
            FetchItem::Rfc822 => {
                w.text(b"RFC822 ");
                w.literal(raw.clone());
            }
            FetchItem::Rfc822Header => {
                w.text(b"RFC822.HEADER ");
                w.literal(raw.slice_ref(mime::split(raw).0));
            }
            FetchItem::Rfc822Text => {
                w.text(b"RFC822.TEXT ");
                w.literal(raw.slice_ref(mime::split(raw).1));
            }
            FetchItem::Body {
                path,
                text,
                partial,
                label,
                ..
            } => {
                let data = section_data(raw, path, text);
                let mut head = format!("BODY[{label}]");
                let data = match partial {
                    Some((origin, len)) => {
                        head.push_str(&format!("<{origin}>"));
                        let start = (*origin).min(data.len());
                        let end = start.saturating_add(*len).min(data.len());
                        data.slice(start..end)
                    }
                    None => data,
                };
                head.push(' ');
                w.text(head.as_bytes());
                w.literal(data);
            }
        }
    }
}

fn section_data(raw: &Bytes, path: &[usize], text: &SectionText) -> Bytes {
    let sub = |s: &[u8]| raw.slice_ref(s);
    if path.is_empty() {
        let (h, b) = mime::split(raw);
        return match text {
            SectionText::Full => raw.clone(),
            SectionText::Header | SectionText::Mime => sub(h),
            SectionText::Text => sub(b),
            SectionText::Fields(names, not) => Bytes::from(mime::filter_fields(h, names, *not)),
        };
    }
    let Some((h, b)) = mime::part(raw, path) else {
        return Bytes::new();
    };
    match text {
        SectionText::Full => sub(b),
        SectionText::Mime => sub(h),
        // HEADER/TEXT of a message/rfc822 part: that message's own header and body.
        SectionText::Header => sub(mime::split(b).0),
        SectionText::Text => sub(mime::split(b).1),
        SectionText::Fields(names, not) => {
            Bytes::from(mime::filter_fields(mime::split(b).0, names, *not))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = tokenize(
            b"a1 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (From Subject)]<0.10> FLAGS)",
            vec![],
        )
        .unwrap();
        assert_eq!(t[0], Tok::Atom("a1".into()));
        let Tok::List(items) = &t[3] else { panic!() };
        assert_eq!(
            items[1],
            Tok::Atom("BODY.PEEK[HEADER.FIELDS (From Subject)]<0.10>".into())
        );
        let t = tokenize(b"a LOGIN \"u\\\"x\" \0", vec![Bytes::from_static(b"p w")]).unwrap();
        assert_eq!(t[2], Tok::Str(Bytes::from_static(b"u\"x")));
        assert_eq!(t[3], Tok::Str(Bytes::from_static(b"p w")));
        assert!(tokenize(b"a (b", vec![]).is_none());
    }

    #[test]
    fn markers_and_sets() {
        assert_eq!(
            literal_marker(b"A APPEND INBOX {12}"),
            Some((15, 12, false))
        );
        assert_eq!(
            literal_marker(b"A APPEND INBOX {12+}"),
            Some((15, 12, true))
        );
        assert_eq!(literal_marker(b"A NOOP"), None);
        let s = SeqSet::parse("2,4:6").unwrap();
        assert!(s.contains(5, 10) && !s.contains(3, 10));
        let s = SeqSet::parse("3:*").unwrap();
        assert!(s.contains(9, 9) && !s.contains(2, 9));
        assert!(SeqSet::parse("0").is_none());
    }

    #[test]
    fn fetch_items() {
        let i = parse_fetch_item("BODY.PEEK[1.2.MIME]").unwrap();
        assert!(
            matches!(i, FetchItem::Body { peek: true, ref path, text: SectionText::Mime, .. } if path == &[1, 2])
        );
        let i = parse_fetch_item("BODY[HEADER.FIELDS.NOT (A B)]<5.7>").unwrap();
        assert!(matches!(
            i,
            FetchItem::Body {
                partial: Some((5, 7)),
                text: SectionText::Fields(_, true),
                ..
            }
        ));
        assert!(parse_fetch_item("BODY[BOGUS]").is_none());
        assert!(glob("*", "INBOX") && glob("IN%", "INBOX") && !glob("X*", "INBOX"));
    }
}
