//! Shared drivers for the fuzz targets: they run authbridge's sans-I/O machines over fuzzer bytes
//! the way the session driver does, and check properties, not only "does not panic":
//!
//! - **chunk-split invariance**: the same bytes fed whole, split in two at a fuzzer-chosen point,
//!   and in small fixed-size chunks give the same replies, the same logins asked for, the same
//!   events and the same leftover bytes;
//! - **bounded buffering**: whenever a client machine asks for more input, the driver's buffer
//!   holds at most one capped line (oversized input is drained, never buffered);
//! - **well-formed output**: every byte a machine writes is a CRLF-terminated line without a bare
//!   CR or LF inside (no reply injection from echoed client bytes);
//! - **no credentials before TLS**: an upstream machine on a STARTTLS port never reports `Ready`
//!   (so never sends the token) before the TLS upgrade;
//! - **progress**: a machine never loops without consuming input.
//!
//! Fuzzer input layout: byte 0 picks the configuration (see [`Config`]), bytes 1–2 the split
//! point, the rest is the byte stream.
//!
//! The relay machine, which talks to both sides at once, has its own driver and a simulated
//! connector in [`relay`].

use authbridge::limits::ProtocolLimits;
use authbridge::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, Step, UpStep,
    UpstreamProtocol,
};
use authbridge::secret::SecretString;
use bytes::BytesMut;

pub mod relay;

/// Exchange Online's pre-auth IMAP capabilities (FACTS.md).
pub const EXCHANGE_IMAP_CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
/// Exchange Online's post-TLS EHLO keywords (FACTS.md).
pub const EXCHANGE_EHLO: &[&str] = &[
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH LOGIN XOAUTH2",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
];
pub const EXCHANGE_POP3_CAPA: &[&str] = &["TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER"];
/// Microsoft Learn's XOAUTH2 test vector (FACTS.md).
pub const MAILBOX: &str = "test@contoso.onmicrosoft.com";
pub const TOKEN: &str = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA";

/// The fuzzer's input, taken apart.
pub struct Input<'a> {
    pub cfg: Config,
    /// Where the two-way split cuts `data` (at most `data.len()`).
    pub split: usize,
    /// Size of the small chunks of the third run (1–16).
    pub chunk: usize,
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(raw: &'a [u8]) -> Option<Input<'a>> {
        let (head, data) = raw.split_at_checked(3)?;
        let split = usize::from(u16::from_le_bytes([head[1], head[2]])) % (data.len() + 1);
        Some(Input {
            cfg: Config(head[0]),
            split,
            chunk: 1 + usize::from(head[1] % 16),
            data,
        })
    }
}

/// Bits of byte 0: 0 = upstream capabilities known (else "upstream unavailable"); 1–2 = client
/// TLS leg; 3 = small limits; 4 = relay mode (SMTP) / upstream STARTTLS; 5–7 = how logins end.
#[derive(Clone, Copy, Debug)]
pub struct Config(pub u8);

impl Config {
    pub fn caps_known(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn tls(self) -> ClientTls {
        match (self.0 >> 1) & 3 {
            0 | 3 => ClientTls::None,
            1 => ClientTls::StartTls,
            _ => ClientTls::Implicit,
        }
    }
    pub fn small_limits(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn bit4(self) -> bool {
        self.0 & 16 != 0
    }
    pub fn limits(self) -> ProtocolLimits {
        if self.small_limits() {
            ProtocolLimits {
                line_max: 64,
                auth_line_max: 96,
                literal_max: 16,
                preauth_commands_max: 12,
                bad_commands_max: 4,
                session_login_failures_max: 2,
            }
        } else {
            ProtocolLimits::default()
        }
    }
    pub fn ctx(self) -> ClientContext {
        ClientContext {
            tls: self.tls(),
            hostname: "authbridge.test".into(),
            limits: self.limits(),
        }
    }
    /// The outcome of the `n`th login of a run.
    pub fn outcome(self, n: usize) -> LoginOutcome {
        match (usize::from(self.0 >> 5) + n) % 6 {
            0 => LoginOutcome::Success {
                untagged: Vec::new(),
                text: "AUTHENTICATE completed.".into(),
            },
            1 | 5 => LoginOutcome::BadCredentials,
            2 => LoginOutcome::Unavailable("token endpoint\r\nsaid 503".into()),
            3 => LoginOutcome::Rejected("5.7.3 Authentication unsuccessful".into()),
            _ => LoginOutcome::Throttled,
        }
    }
}

/// How a client run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The input ran out.
    Input,
    Closed,
    /// Logged in (or relaying without login): the rest goes upstream.
    Pipe {
        leftover: Vec<u8>,
    },
}

/// Everything a client run shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRun {
    pub out: Vec<u8>,
    pub logins: Vec<(String, Vec<u8>)>,
    pub need_upstream: usize,
    pub starttls: usize,
    pub end: End,
}

/// Run a client machine over `chunks` (each one socket read). STARTTLS is modelled as an
/// upgrade that keeps the buffered bytes (as if they arrived over TLS), so that the run does
/// not depend on read boundaries; the real driver closes instead when bytes are buffered.
pub fn run_client(
    machine: &mut dyn ClientProtocol,
    cfg: Config,
    caps: &[String],
    chunks: &[&[u8]],
) -> ClientRun {
    let cap = {
        let l = cfg.limits();
        l.line_max.max(l.auth_line_max) + 1
    };
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut out = Vec::new();
    machine.greeting(&mut out);
    let mut logins = Vec::new();
    let (mut need_upstream, mut starttls) = (0, 0);
    let mut input = BytesMut::new();
    let mut chunks = chunks.iter();
    let mut steps = 0usize;
    let end = loop {
        steps += 1;
        assert!(
            steps <= 8 * (total + 16),
            "machine makes no progress ({steps} steps for {total} bytes)"
        );
        match machine.step(&mut input, &mut out) {
            Step::NeedInput => {
                assert!(
                    input.len() <= cap,
                    "{} bytes buffered while waiting for input (cap {cap}): oversized input must be drained",
                    input.len()
                );
                match chunks.next() {
                    Some(c) => input.extend_from_slice(c),
                    None => break End::Input,
                }
            }
            Step::Continue => {}
            Step::NeedUpstream => {
                need_upstream += 1;
                assert!(need_upstream <= total + 16, "NeedUpstream loop");
                machine.upstream_ready(cfg.caps_known().then_some(caps));
            }
            Step::StartTls => {
                starttls += 1;
                machine.tls_started();
            }
            Step::Login(req) => {
                logins.push((req.username.clone(), req.password.expose().clone()));
                match machine.login_finished(cfg.outcome(logins.len() - 1), &mut out) {
                    AfterLogin::Pipe => {
                        break End::Pipe {
                            leftover: rest(&input, chunks),
                        };
                    }
                    AfterLogin::Continue => {}
                    AfterLogin::Close => break End::Closed,
                }
            }
            Step::ProceedWithoutLogin => {
                break End::Pipe {
                    leftover: rest(&input, chunks),
                };
            }
            Step::Close => break End::Closed,
        }
    };
    ClientRun {
        out,
        logins,
        need_upstream,
        starttls,
        end,
    }
}

fn rest(input: &BytesMut, chunks: std::slice::Iter<'_, &[u8]>) -> Vec<u8> {
    let mut v = input.to_vec();
    for c in chunks {
        v.extend_from_slice(c);
    }
    v
}

/// The same bytes whole, split in two, and in small chunks.
pub fn chunkings<'a>(input: &Input<'a>) -> [Vec<&'a [u8]>; 3] {
    let (a, b) = input.data.split_at(input.split);
    [
        vec![input.data],
        vec![a, b],
        input.data.chunks(input.chunk).collect(),
    ]
}

/// Run a fresh machine over every chunking; assert the runs agree and the output is well formed.
pub fn check_client(
    make: &dyn Fn() -> Box<dyn ClientProtocol>,
    input: &Input<'_>,
    caps: &[String],
) -> ClientRun {
    let [whole, split, small] = chunkings(input);
    let a = run_client(make().as_mut(), input.cfg, caps, &whole);
    let b = run_client(make().as_mut(), input.cfg, caps, &split);
    assert_eq!(a, b, "whole vs split at {}", input.split);
    let c = run_client(make().as_mut(), input.cfg, caps, &small);
    assert_eq!(a, c, "whole vs chunks of {}", input.chunk);
    assert_lines(&a.out);
    a
}

/// Every byte is part of a CRLF-terminated line with no other CR or LF.
pub fn assert_lines(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
            panic!(
                "output ends without CRLF: {:?}",
                String::from_utf8_lossy(rest)
            );
        };
        let (line, tail) = rest.split_at(lf + 1);
        let body = &line[..line.len() - 1];
        assert!(
            body.last() == Some(&b'\r'),
            "bare LF in output line {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(
            !body[..body.len() - 1].contains(&b'\r'),
            "bare CR in output line {:?}",
            String::from_utf8_lossy(line)
        );
        rest = tail;
    }
}

// ---- upstream machines ----

/// What an upstream machine reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpEv {
    StartTls,
    Ready(Vec<String>),
    AuthOk { untagged: Vec<u8>, text: String },
    AuthRejected(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpRun {
    pub out: Vec<u8>,
    pub events: Vec<UpEv>,
    pub leftover: Vec<u8>,
}

/// Drive an upstream machine over the server's bytes; on `Ready` (and after a rejection, up to
/// `attempts` in all) call `authenticate` with the Microsoft test vector. A TLS upgrade keeps
/// the buffered bytes (see [`run_client`]).
pub fn run_upstream(m: &mut dyn UpstreamProtocol, chunks: &[&[u8]], attempts: usize) -> UpRun {
    let token = SecretString::from(TOKEN);
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut input = BytesMut::new();
    let mut chunks = chunks.iter();
    let mut made = 0;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(
            steps <= 8 * (total + 16),
            "upstream machine makes no progress"
        );
        match m.step(&mut input, &mut out) {
            UpStep::NeedInput => match chunks.next() {
                Some(c) => input.extend_from_slice(c),
                None => break,
            },
            UpStep::Continue => {}
            UpStep::StartTls => {
                events.push(UpEv::StartTls);
                m.tls_started(&mut out);
            }
            UpStep::Ready { capabilities } => {
                events.push(UpEv::Ready(capabilities));
                if made < attempts {
                    made += 1;
                    m.authenticate(MAILBOX, &token, &mut out);
                } else {
                    break;
                }
            }
            UpStep::AuthOk { untagged, text } => {
                events.push(UpEv::AuthOk { untagged, text });
                break;
            }
            UpStep::AuthRejected { text } => {
                events.push(UpEv::AuthRejected(text));
                if made < attempts {
                    made += 1;
                    m.authenticate(MAILBOX, &token, &mut out);
                } else {
                    break;
                }
            }
            UpStep::Failed(why) => {
                events.push(UpEv::Failed(why));
                break;
            }
        }
    }
    UpRun {
        out,
        events,
        leftover: rest(&input, chunks),
    }
}

/// [`run_upstream`] over every chunking; the runs must agree, the output must be lines, and
/// on a STARTTLS port nothing may be `Ready` before the upgrade.
pub fn check_upstream(
    make: &dyn Fn() -> Box<dyn UpstreamProtocol>,
    input: &Input<'_>,
    starttls: bool,
    attempts: usize,
) -> UpRun {
    let [whole, split, small] = chunkings(input);
    let a = run_upstream(make().as_mut(), &whole, attempts);
    let b = run_upstream(make().as_mut(), &split, attempts);
    assert_eq!(a, b, "whole vs split at {}", input.split);
    let c = run_upstream(make().as_mut(), &small, attempts);
    assert_eq!(a, c, "whole vs chunks of {}", input.chunk);
    assert_lines(&a.out);
    if starttls {
        let tls_at = a.events.iter().position(|e| *e == UpEv::StartTls);
        let ready_at = a.events.iter().position(|e| matches!(e, UpEv::Ready(_)));
        if let Some(r) = ready_at {
            assert!(
                tls_at.is_some_and(|t| t < r),
                "Ready before STARTTLS: {:?}",
                a.events
            );
        }
    }
    // At most one TLS upgrade.
    assert!(a.events.iter().filter(|e| **e == UpEv::StartTls).count() <= 1);
    a
}

pub fn imap_caps() -> Vec<String> {
    EXCHANGE_IMAP_CAPS.split(' ').map(String::from).collect()
}

pub fn smtp_caps() -> Vec<String> {
    EXCHANGE_EHLO.iter().map(|s| s.to_string()).collect()
}

pub fn pop3_caps() -> Vec<String> {
    EXCHANGE_POP3_CAPA.iter().map(|s| s.to_string()).collect()
}
