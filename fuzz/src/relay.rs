//! The relay machine (`authbridge::protocol::smtp::relay`) against a simulated connector.
//!
//! The simulated connector reads what the relay sends as leniently as the receivers SMTP
//! smuggling aims at (Postfix ≤ 3.8.4 with its defaults, the sandbox connector): a line ends at
//! a bare LF, a CR before it is dropped, words are separated by any run of spaces and TABs, and
//! a line holding only `.` ends a message body. It answers every command from a reply script
//! taken from the fuzzer input, so the machine also sees refusals, multi-line replies, garbage
//! and a connector that closes. Properties, on top of "no panic":
//!
//! - **split invariance**: the client bytes fed whole, split in two and in small chunks (and
//!   the connector's replies whole or in small chunks) give the same bytes to each side, the
//!   same end and the same connector observations;
//! - **bounded buffering**: whenever the machine asks for client input, the client buffer holds
//!   at most one capped line; whenever it asks for connector input, at most one capped reply
//!   line;
//! - **well-formed replies**: everything sent to the client is CRLF-terminated lines;
//! - **no unchecked MAIL**: every MAIL FROM the connector acts on names a sender that
//!   `allowed_senders` admits, read the way an RFC 5321 receiver reads it (quoted local parts
//!   and source routes included), with the rule applied independently of authbridge's code;
//! - **only listed commands**: every line the connector reads as a command starts with one of
//!   the relay's verbs (EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, HELP) followed by a
//!   space or the line end, and holds no control character;
//! - **no bare CR or LF** ever reaches the connector (SMTP smuggling), and a connection the
//!   relay drops delivers nothing it had not finished;
//! - **no connection unasked** (bit 2 of the configuration byte: the machine starts without a
//!   connector connection, as a relay with `upstream.auth` does for a client without a local
//!   login): nothing is sent before the machine asked for a connection and got one.

use authbridge::config::{Relay, SenderRule};
use authbridge::limits::ProtocolLimits;
use authbridge::protocol::smtp::relay::{RelayEnd, RelayMachine, RelayOut, RelayStep};
use bytes::BytesMut;

use crate::{Config, Input, assert_lines};

/// The commands the relay may pass on.
const LISTED: &[&[u8]] = &[
    b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT", b"HELP",
];

/// The longest connector reply line the machine buffers (its reply parser's cap).
const CONNECTOR_LINE_MAX: usize = 16 * 1024;

/// The relay input: byte 0 of the data gives the reply script's length (low 4 bits), then the
/// script, then the client's bytes.
pub struct RelayInput<'a> {
    pub cfg: Config,
    pub script: &'a [u8],
    pub client: &'a [u8],
    pub split: usize,
    pub chunk: usize,
}

impl<'a> RelayInput<'a> {
    pub fn parse(input: &Input<'a>) -> Option<RelayInput<'a>> {
        let (&n, rest) = input.data.split_first()?;
        let (script, client) = rest.split_at_checked(usize::from(n & 15))?;
        Some(RelayInput {
            cfg: input.cfg,
            script,
            client,
            split: input.split % (client.len() + 1),
            chunk: input.chunk,
        })
    }

    /// Bits 0–1 of the configuration byte pick `allowed_senders`.
    pub fn settings(&self) -> Relay {
        let rules: &[&str] = match self.cfg.0 & 3 {
            0 => &[],
            1 => &["tickets@contoso.com", "@glpi.contoso.com"],
            2 => &["@contoso.com"],
            _ => &["tickets@contoso.com"],
        };
        Relay {
            require_login: true,
            allow_from: Vec::new(),
            allowed_senders: rules
                .iter()
                .map(|r| match r.strip_prefix('@') {
                    Some(d) => SenderRule::Domain(d.to_string()),
                    None => SenderRule::Address(r.to_string()),
                })
                .collect(),
        }
    }

    pub fn limits(&self) -> ProtocolLimits {
        self.cfg.limits()
    }

    /// Bit 2 of the configuration byte: the machine starts without a connection.
    pub fn unconnected(&self) -> bool {
        self.cfg.0 & 4 != 0
    }
}

/// A message the simulated connector delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub from: Option<String>,
    pub body: Vec<u8>,
}

/// The simulated lenient connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    script: Vec<u8>,
    next: usize,
    line: Vec<u8>,
    in_data: bool,
    body: Vec<u8>,
    from: Option<String>,
    closed: bool,
    /// Bytes it sent that the relay has not read yet.
    pub pending: Vec<u8>,
    /// Every command line it read, without the line end.
    pub commands: Vec<Vec<u8>>,
    /// The sender of every MAIL command it read, as it understood it.
    pub mails: Vec<String>,
    pub delivered: Vec<Delivered>,
}

impl Connector {
    pub fn new(script: &[u8]) -> Self {
        Connector {
            script: script.to_vec(),
            next: 0,
            line: Vec::new(),
            in_data: false,
            body: Vec::new(),
            from: None,
            closed: false,
            pending: Vec::new(),
            commands: Vec::new(),
            mails: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// The relay dropped the connection: an unfinished message is lost, not delivered.
    pub fn drop_connection(&mut self) {
        self.reconnect();
        self.closed = true;
    }

    /// A fresh connection, set up and past EHLO (same script position, same records). Fails
    /// when the script says so (variant 6).
    pub fn reconnect_ok(&mut self) -> bool {
        if self.variant() == 6 {
            return false;
        }
        self.reconnect();
        true
    }

    /// A fresh connection (same script position, same records).
    fn reconnect(&mut self) {
        self.line.clear();
        self.in_data = false;
        self.body.clear();
        self.from = None;
        self.closed = false;
        self.pending.clear();
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn variant(&mut self) -> u8 {
        let v = self.script.get(self.next).copied().unwrap_or(0);
        if !self.script.is_empty() {
            self.next = (self.next + 1) % self.script.len();
        }
        v % 8
    }

    fn say(&mut self, s: &str) {
        self.pending.extend_from_slice(s.as_bytes());
    }

    /// Bytes the relay wrote to the connector.
    pub fn receive(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.closed {
                return;
            }
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.on_line(line);
            } else {
                self.line.push(b);
            }
        }
    }

    fn on_line(&mut self, line: Vec<u8>) {
        if self.in_data {
            if line == b"." {
                self.in_data = false;
                let body = std::mem::take(&mut self.body);
                let from = self.from.take();
                match self.variant() {
                    1 => self.say("451 4.3.0 Try again later\r\n"),
                    2 => self.say("554 5.6.0 Message refused\r\n"),
                    4 => self.say("250 2.0.0 Queued\r\ngarbage\r\n"),
                    5 => self.closed = true,
                    _ => {
                        self.delivered.push(Delivered { from, body });
                        self.say("250 2.0.0 OK queued\r\n");
                    }
                }
            } else {
                let content = line.strip_prefix(b".").unwrap_or(&line);
                self.body.extend_from_slice(content);
                self.body.extend_from_slice(b"\r\n");
            }
            return;
        }
        let words: Vec<&[u8]> = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty())
            .collect();
        let verb = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        self.commands.push(line.clone());
        let variant = self.variant();
        match variant {
            1 => return self.say("451 4.3.0 Try again later\r\n"),
            2 => return self.say("550 5.7.64 TenantAttribution; Relay Access Denied\r\n"),
            4 => return self.say("bogus reply\r\n"),
            5 => {
                self.closed = true;
                return;
            }
            7 if verb != b"DATA" => return self.say("354 Go ahead\r\n"),
            _ => {}
        }
        let multi = variant == 3;
        match verb.as_slice() {
            b"EHLO" => self.say("250-connector.test Hello\r\n250-SIZE 1000000\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-CHUNKING\r\n250 8BITMIME\r\n"),
            b"HELO" => self.say("250 connector.test\r\n"),
            b"MAIL" => {
                let sender = mail_sender(&line);
                self.mails.push(sender.clone().unwrap_or_else(|| "<unparsed>".into()));
                match sender {
                    Some(s) => {
                        self.from = Some(s);
                        if multi {
                            self.say("250-Sender\r\n250 2.1.0 OK\r\n");
                        } else {
                            self.say("250 2.1.0 Sender OK\r\n");
                        }
                    }
                    None => self.say("501 5.5.4 Invalid arguments\r\n"),
                }
            }
            b"RCPT" => self.say("250 2.1.5 Recipient OK\r\n"),
            b"DATA" => {
                self.in_data = true;
                self.say("354 Start mail input; end with <CRLF>.<CRLF>\r\n");
            }
            b"RSET" => {
                self.from = None;
                self.say("250 2.0.0 Resetting\r\n");
            }
            b"NOOP" => self.say("250 2.0.0 OK\r\n"),
            b"HELP" => self.say("214-Commands:\r\n214 HELO EHLO MAIL RCPT DATA RSET NOOP QUIT\r\n"),
            b"QUIT" => {
                self.say("221 2.0.0 Bye\r\n");
                self.closed = true;
            }
            _ => self.say("500 5.3.3 Unrecognized command\r\n"),
        }
    }
}

/// The reverse-path of a MAIL line as an RFC 5321 receiver reads it, leniently about white
/// space: `FROM:` then `<…>` up to the first `>` outside a quoted string (or up to white space
/// without brackets); a source route (`@a,@b:`) is dropped. Lower-cased; `""` for `<>`.
pub fn mail_sender(line: &[u8]) -> Option<String> {
    let line = trim_ws(line);
    let rest = trim_ws(line.get(4..)?);
    if !rest.get(..5)?.eq_ignore_ascii_case(b"FROM:") {
        return None;
    }
    let rest = trim_ws(&rest[5..]);
    let path: Vec<u8> = if let Some(inner) = rest.strip_prefix(b"<") {
        let (mut quoted, mut escaped) = (false, false);
        let mut end = None;
        for (i, &b) in inner.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b'>' && !quoted {
                end = Some(i);
                break;
            }
        }
        inner[..end?].to_vec()
    } else {
        rest.split(|b| *b == b' ' || *b == b'\t')
            .next()
            .unwrap_or_default()
            .to_vec()
    };
    let path = if path.first() == Some(&b'@') {
        let colon = path.iter().position(|b| *b == b':')?;
        path[colon + 1..].to_vec()
    } else {
        path
    };
    Some(String::from_utf8_lossy(&path).to_lowercase())
}

fn trim_ws(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    &s[start..]
}

/// Does `allowed_senders` admit `sender` (as [`mail_sender`] returns it)? Written apart from
/// authbridge's own check on purpose: an empty list admits everyone; otherwise the null sender
/// is refused, an address rule matches the whole address, a domain rule the part after the
/// last `@`.
pub fn oracle_allows(rules: &[SenderRule], sender: &str) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Some((_, domain)) = sender.rsplit_once('@') else {
        return false;
    };
    rules.iter().any(|r| match r {
        SenderRule::Address(a) => a == sender,
        SenderRule::Domain(d) => d == domain,
    })
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The client's bytes ran out.
    Input,
    /// The machine ended the session.
    Machine(RelayEnd),
    /// The machine waited for a connector that had nothing more to say.
    ConnectorGone,
}

/// Everything a run shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRun {
    pub to_client: Vec<u8>,
    pub to_connector: Vec<u8>,
    pub end: RunEnd,
    /// What the connector read (its pending output depends on how replies were handed over,
    /// so it is not part of the run).
    pub commands: Vec<Vec<u8>>,
    pub mails: Vec<String>,
    pub delivered: Vec<Delivered>,
    /// Connections dropped by the relay, and new ones it asked for.
    pub drops: usize,
    pub reconnects: usize,
}

/// Run the machine over `chunks` of client bytes; the connector's replies are handed over in
/// pieces of `reply_chunk` bytes (0: all that is pending).
pub fn run_relay(input: &RelayInput<'_>, chunks: &[&[u8]], reply_chunk: usize) -> RelayRun {
    let limits = input.limits();
    let mut machine = if input.unconnected() {
        RelayMachine::unconnected(input.settings(), &limits)
    } else {
        RelayMachine::new(input.settings(), &limits)
    };
    let mut connector = Connector::new(input.script);
    let mut connected = !input.unconnected();
    if !connected {
        connector.drop_connection();
    }
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut chunks = chunks.iter();
    let (mut client_in, mut connector_in) = (BytesMut::new(), BytesMut::new());
    let mut out = RelayOut::default();
    let (mut to_client, mut to_connector) = (Vec::new(), Vec::new());
    let mut steps = 0usize;
    let (mut drops, mut reconnects) = (0, 0);
    let end = loop {
        steps += 1;
        assert!(
            steps <= 64 * (total + 16),
            "relay machine makes no progress ({steps} steps for {total} bytes)"
        );
        let step = machine.step(&mut client_in, &mut connector_in, &mut out);
        assert!(
            connected || out.to_connector.is_empty(),
            "sent to the connector before asking for a connection: {:?}",
            String::from_utf8_lossy(&out.to_connector)
        );
        connector.receive(&out.to_connector);
        to_connector.append(&mut out.to_connector);
        to_client.append(&mut out.to_client);
        match step {
            RelayStep::Continue => {}
            RelayStep::End(e) => break RunEnd::Machine(e),
            RelayStep::NeedClient => {
                assert!(
                    client_in.len() <= limits.line_max + 1,
                    "{} client bytes buffered while waiting for input (line cap {})",
                    client_in.len(),
                    limits.line_max
                );
                match chunks.next() {
                    Some(c) => client_in.extend_from_slice(c),
                    None => break RunEnd::Input,
                }
            }
            RelayStep::NeedConnector => {
                assert!(
                    connector_in.len() <= CONNECTOR_LINE_MAX + 1,
                    "{} connector bytes buffered while waiting for a reply",
                    connector_in.len()
                );
                let n = match reply_chunk {
                    0 => connector.pending.len(),
                    c => c.min(connector.pending.len()),
                };
                if n == 0 {
                    machine.connector_failed(&mut out);
                    to_client.append(&mut out.to_client);
                    break RunEnd::ConnectorGone;
                }
                connector_in.extend_from_slice(&connector.pending[..n]);
                connector.pending.drain(..n);
            }
            RelayStep::DropConnector => {
                drops += 1;
                connector.drop_connection();
                connector_in.clear();
            }
            RelayStep::Reconnect => {
                reconnects += 1;
                let result = if connector.reconnect_ok() {
                    connected = true;
                    Ok(())
                } else {
                    Err("refused".to_string())
                };
                machine.reconnected(result, &mut out);
            }
        }
    };
    RelayRun {
        to_client,
        to_connector,
        end,
        commands: connector.commands,
        mails: connector.mails,
        delivered: connector.delivered,
        drops,
        reconnects,
    }
}

/// [`run_relay`] over three chunkings; the runs must agree and hold the properties above.
pub fn check_relay(input: &RelayInput<'_>) -> RelayRun {
    let (a, b) = input.client.split_at(input.split);
    let whole = run_relay(input, &[input.client], 0);
    let split = run_relay(input, &[a, b], 0);
    assert_eq!(whole, split, "whole vs split at {}", input.split);
    let small: Vec<&[u8]> = input.client.chunks(input.chunk).collect();
    let small = run_relay(input, &small, input.chunk);
    assert_eq!(whole, small, "whole vs chunks of {}", input.chunk);
    assert_lines(&whole.to_client);
    let sent = &whole.to_connector;
    for (i, b) in sent.iter().enumerate() {
        let clean = match b {
            b'\r' => sent.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && sent[i - 1] == b'\r',
            _ => true,
        };
        assert!(
            clean,
            "bare CR or LF sent to the connector at {i}: {:?}",
            String::from_utf8_lossy(&sent[i.saturating_sub(40)..(i + 40).min(sent.len())])
        );
    }
    for line in &whole.commands {
        let shown = String::from_utf8_lossy(line);
        assert!(
            !line.iter().any(|b| b.is_ascii_control()),
            "the connector read a command with a control character: {shown:?}"
        );
        let verb = line.split(|b| *b == b' ').next().unwrap_or_default();
        assert!(
            LISTED.iter().any(|v| v.eq_ignore_ascii_case(verb)),
            "the connector read a command that is not on the relay's list: {shown:?}"
        );
    }
    let rules = input.settings().allowed_senders;
    for sender in &whole.mails {
        assert!(
            oracle_allows(&rules, sender),
            "the connector took MAIL FROM {sender:?}, which allowed_senders {rules:?} does not admit"
        );
    }
    whole
}

/// How one run of the relay's upstream AUTH exchange went: what it sent and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthRun {
    pub sent: Vec<u8>,
    pub end: Option<String>,
}

/// The relay's AUTH PLAIN/LOGIN towards a transactional provider
/// (`authbridge::protocol::smtp::relay_auth`), the provider's replies taken from `replies`:
/// no panic, the same lines sent and the same end whether the replies come whole or in
/// `chunk`-byte reads, only CRLF-terminated lines sent, at most three of them (the command and
/// LOGIN's two answers), and the password never sent in clear.
pub fn check_relay_auth(cfg: Config, replies: &[u8], chunk: usize) -> AuthRun {
    use authbridge::protocol::smtp::relay_auth::Mechanism;
    let mechanism = match cfg.0 >> 6 {
        0 => None,
        1 => Some(Mechanism::Plain),
        _ => Some(Mechanism::Login),
    };
    let caps: Vec<String> = match (cfg.0 >> 4) & 3 {
        0 => vec!["AUTH PLAIN LOGIN".into()],
        1 => vec!["AUTH=LOGIN".into()],
        2 => vec!["AUTH PLAIN".into()],
        _ => vec!["SIZE 10".into()],
    };
    let whole = run_relay_auth(&caps, mechanism, &[replies]);
    let chunks: Vec<&[u8]> = replies.chunks(chunk.max(1)).collect();
    let split = run_relay_auth(&caps, mechanism, &chunks);
    assert_eq!(whole, split, "whole vs chunks of {chunk}");
    assert_lines(&whole.sent);
    let lines = whole.sent.iter().filter(|b| **b == b'\n').count();
    assert!(lines <= 3, "{lines} lines sent in one AUTH exchange");
    let sent = String::from_utf8_lossy(&whole.sent);
    assert!(
        !sent.contains(AUTH_PASSWORD),
        "the password was sent in clear: {sent:?}"
    );
    whole
}

const AUTH_PASSWORD: &str = "fuzz-password";

fn run_relay_auth(
    caps: &[String],
    mechanism: Option<authbridge::protocol::smtp::relay_auth::Mechanism>,
    chunks: &[&[u8]],
) -> AuthRun {
    use authbridge::protocol::smtp::relay_auth::{RelayAuth, RelayAuthStep};
    use authbridge::secret::SecretString;
    let user = SecretString::from("fuzz-user");
    let pass = SecretString::from(AUTH_PASSWORD);
    let mut sent = Vec::new();
    let mut machine = match RelayAuth::start(caps, &user, &pass, mechanism, &mut sent) {
        Ok(m) => m,
        Err(why) => {
            return AuthRun {
                sent,
                end: Some(format!("not started: {why}")),
            };
        }
    };
    let mut input = BytesMut::new();
    let mut chunks = chunks.iter();
    loop {
        let before = sent.len();
        match machine.step(&mut input, &mut sent) {
            RelayAuthStep::NeedInput if sent.len() == before => {
                assert!(
                    input.len() <= CONNECTOR_LINE_MAX + 2,
                    "{} provider bytes buffered while waiting for more",
                    input.len()
                );
                match chunks.next() {
                    Some(c) => input.extend_from_slice(c),
                    None => return AuthRun { sent, end: None },
                }
            }
            RelayAuthStep::NeedInput => {}
            done => {
                return AuthRun {
                    sent,
                    end: Some(format!("{done:?}")),
                };
            }
        }
    }
}
