//! Test driver for client machines (IMAP and POP3): runs a machine over a client byte script the
//! way the session driver would, answering [`Step::NeedUpstream`] with fixed upstream
//! capabilities and [`Step::Login`] with a chosen outcome, and records everything observable.

use bytes::BytesMut;

use crate::limits::ProtocolLimits;
use crate::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, LoginRequest, Step,
};

/// Exchange Online's pre-auth IMAP capabilities (FACTS.md).
pub const EXCHANGE_IMAP_CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";

/// Exchange Online's POP3 CAPA lines (outlook.office365.com:995, as logged in kisli/vmime#267).
pub const EXCHANGE_POP3_CAPA: &[&str] = &["TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER"];

pub fn exchange_imap_caps() -> Vec<String> {
    EXCHANGE_IMAP_CAPS.split(' ').map(String::from).collect()
}

pub fn exchange_pop3_capa() -> Vec<String> {
    EXCHANGE_POP3_CAPA.iter().map(|s| s.to_string()).collect()
}

pub fn ctx(tls: ClientTls) -> ClientContext {
    ClientContext {
        tls,
        hostname: "authbridge.test".into(),
        limits: ProtocolLimits::default(),
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The script ran out.
    Input,
    /// `Step::Close` / `AfterLogin::Close`.
    Closed,
    /// Logged in; the bytes still buffered go to the upstream.
    Pipe { leftover: Vec<u8> },
    /// STARTTLS with bytes pipelined after it: the driver closes.
    PipelinedPastStartTls,
}

/// Everything a run shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Greeting and every reply, in order.
    pub out: Vec<u8>,
    /// `(username, password bytes)` of every login asked for.
    pub logins: Vec<(String, Vec<u8>)>,
    /// How often the machine asked for upstream capabilities / a TLS upgrade.
    pub need_upstream: usize,
    pub starttls: usize,
    pub end: End,
}

impl Run {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

/// A scripted environment.
pub struct Env<'a> {
    /// What `upstream_ready` reports.
    pub caps: Option<Vec<String>>,
    /// The outcome of each login, in order (the last one repeats).
    pub outcomes: &'a dyn Fn(&LoginRequest) -> LoginOutcome,
}

/// The Exchange capabilities and every login succeeding.
pub fn success(_: &LoginRequest) -> LoginOutcome {
    LoginOutcome::Success {
        untagged: Vec::new(),
        text: String::new(),
    }
}

/// Run `machine` over `chunks` (each one read from the socket).
pub fn run(machine: &mut dyn ClientProtocol, env: &Env<'_>, chunks: &[&[u8]]) -> Run {
    let mut out = Vec::new();
    machine.greeting(&mut out);
    let mut logins = Vec::new();
    let mut need_upstream = 0;
    let mut starttls = 0;
    let mut input = BytesMut::new();
    let mut chunks = chunks.iter();
    let mut steps = 0usize;
    let end = loop {
        steps += 1;
        assert!(steps < 1_000_000, "machine does not make progress");
        match machine.step(&mut input, &mut out) {
            Step::NeedInput => match chunks.next() {
                Some(c) => input.extend_from_slice(c),
                None => break End::Input,
            },
            Step::Continue => {}
            Step::NeedUpstream => {
                need_upstream += 1;
                machine.upstream_ready(env.caps.as_deref());
            }
            Step::StartTls => {
                starttls += 1;
                if !input.is_empty() {
                    break End::PipelinedPastStartTls;
                }
                machine.tls_started();
            }
            Step::Login(req) => {
                logins.push((req.username.clone(), req.password.expose().clone()));
                let outcome = (env.outcomes)(&req);
                match machine.login_finished(outcome, &mut out) {
                    AfterLogin::Pipe => {
                        // Whatever the client sent after its login is forwarded upstream.
                        let mut leftover = input.to_vec();
                        for c in chunks.by_ref() {
                            leftover.extend_from_slice(c);
                        }
                        break End::Pipe { leftover };
                    }
                    AfterLogin::Continue => {}
                    AfterLogin::Close => break End::Closed,
                }
            }
            Step::ProceedWithoutLogin => {
                let mut leftover = input.to_vec();
                for c in chunks.by_ref() {
                    leftover.extend_from_slice(c);
                }
                break End::Pipe { leftover };
            }
            Step::Close => break End::Closed,
        }
    };
    Run {
        out,
        logins,
        need_upstream,
        starttls,
        end,
    }
}

/// Run a fresh machine over `script` whole, in every 2-way split and byte by byte; assert the
/// runs are identical and return it.
pub fn run_all_chunkings(
    make: &dyn Fn() -> Box<dyn ClientProtocol>,
    env: &Env<'_>,
    script: &[u8],
) -> Run {
    let whole = run(make().as_mut(), env, &[script]);
    for i in 1..script.len() {
        let (a, b) = script.split_at(i);
        let split = run(make().as_mut(), env, &[a, b]);
        assert_eq!(
            split,
            whole,
            "split at {i}:\n{}\nvs\n{}",
            split.text(),
            whole.text()
        );
    }
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    let one = run(make().as_mut(), env, &bytes);
    assert_eq!(
        one,
        whole,
        "byte by byte:\n{}\nvs\n{}",
        one.text(),
        whole.text()
    );
    whole
}

// ---- upstream machines ----

/// Microsoft Learn's XOAUTH2 test vector (FACTS.md).
pub const MS_MAILBOX: &str = "test@contoso.onmicrosoft.com";
pub const MS_TOKEN: &str = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA";
pub const MS_XOAUTH2: &str = "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";
/// Dovecot's XOAUTH2 error challenge (FACTS.md).
pub const DOVECOT_CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

/// What an upstream machine reported (every `UpStep` but `NeedInput`/`Continue`).
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
    /// Everything the machine sent upstream.
    pub out: Vec<u8>,
    pub events: Vec<UpEv>,
    /// Input left after the run (after AuthOk: bytes for the pipe).
    pub leftover: Vec<u8>,
}

impl UpRun {
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

/// Drive an upstream machine over the server's bytes. `phases` are the bytes before the first
/// TLS upgrade, after it, …, each as chunks; on `StartTls` buffered input is discarded (as the
/// driver does) and the next phase starts. After `Ready`, and after each `AuthRejected`,
/// `authenticate` is called with the Microsoft test vector until `attempts` calls were made.
pub fn run_upstream(
    m: &mut dyn crate::protocol::UpstreamProtocol,
    phases: &[Vec<&[u8]>],
    attempts: usize,
) -> UpRun {
    use crate::protocol::UpStep;
    use crate::secret::SecretString;
    let token = SecretString::from(MS_TOKEN);
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut input = BytesMut::new();
    let mut phase = 0;
    let mut chunks = phases.first().map(|p| p.iter()).unwrap_or_default();
    let mut made = 0;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "machine does not make progress");
        match m.step(&mut input, &mut out) {
            UpStep::NeedInput => match chunks.next() {
                Some(c) => input.extend_from_slice(c),
                None => break,
            },
            UpStep::Continue => {}
            UpStep::StartTls => {
                events.push(UpEv::StartTls);
                input.clear();
                phase += 1;
                chunks = phases.get(phase).map(|p| p.iter()).unwrap_or_default();
                m.tls_started(&mut out);
            }
            UpStep::Ready { capabilities } => {
                events.push(UpEv::Ready(capabilities));
                if made < attempts {
                    made += 1;
                    m.authenticate(MS_MAILBOX, &token, &mut out);
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
                    m.authenticate(MS_MAILBOX, &token, &mut out);
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
    let mut leftover = input.to_vec();
    for c in chunks {
        leftover.extend_from_slice(c);
    }
    UpRun {
        out,
        events,
        leftover,
    }
}

/// [`run_upstream`] with each phase whole, split in two at every point, and byte by byte; all
/// runs must agree.
pub fn run_upstream_all_chunkings(
    make: &dyn Fn() -> Box<dyn crate::protocol::UpstreamProtocol>,
    phases: &[&[u8]],
    attempts: usize,
) -> UpRun {
    let whole_phases: Vec<Vec<&[u8]>> = phases.iter().map(|p| vec![*p]).collect();
    let whole = run_upstream(make().as_mut(), &whole_phases, attempts);
    for (i, p) in phases.iter().enumerate() {
        for cut in 1..p.len() {
            let mut split = whole_phases.clone();
            let (a, b) = p.split_at(cut);
            split[i] = vec![a, b];
            let got = run_upstream(make().as_mut(), &split, attempts);
            assert_eq!(got, whole, "phase {i} split at {cut}");
        }
    }
    let bytes: Vec<Vec<&[u8]>> = phases.iter().map(|p| p.chunks(1).collect()).collect();
    let got = run_upstream(make().as_mut(), &bytes, attempts);
    assert_eq!(got, whole, "byte by byte");
    whole
}
