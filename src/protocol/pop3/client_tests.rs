//! [`Pop3Client`] against the client bytes of the recorded transcripts
//! (`/work/shared/transcripts/pop3-*.txt`, see FACTS.md) and the edge cases around them.

use std::cell::Cell;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Leg, Pop3Client, client_capa};
use crate::protocol::imap::testkit::{
    End, Env, Run, ctx, exchange_pop3_capa, run as play, run_all_chunkings,
};
use crate::protocol::{ClientProtocol, ClientTls, LoginOutcome, LoginRequest};

const GREETING: &str = "+OK authbridge POP3 proxy ready\r\n";
const PLAIN_CAPA: &str =
    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nUSER\r\n.\r\n";
const TLS_CAPA: &str = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n.\r\n";
const STARTTLS_CAPA: &str =
    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nSTLS\r\n.\r\n";

/// Exchange's POP3 success text (FACTS.md).
fn exchange_ok(_: &LoginRequest) -> LoginOutcome {
    LoginOutcome::Success {
        untagged: Vec::new(),
        text: "User successfully authenticated.".into(),
    }
}

fn bad_credentials(_: &LoginRequest) -> LoginOutcome {
    LoginOutcome::BadCredentials
}

fn env(outcomes: &dyn Fn(&LoginRequest) -> LoginOutcome) -> Env<'_> {
    Env {
        caps: Some(exchange_pop3_capa()),
        outcomes,
    }
}

fn machine(tls: ClientTls) -> impl Fn() -> Box<dyn ClientProtocol> {
    move || Box::new(Pop3Client::new(ctx(tls)))
}

fn plain_b64(user: &str, pw: &[u8]) -> String {
    let mut m = vec![0u8];
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(pw);
    STANDARD.encode(m)
}

fn login(user: &str, pw: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![(user.to_string(), pw.to_vec())]
}

fn pipe(rest: &[u8]) -> End {
    End::Pipe {
        leftover: rest.to_vec(),
    }
}

fn assert_out(run: &Run, want: &str) {
    assert_eq!(run.text(), want);
}

#[test]
fn laminas_glpi10_user_pass() {
    // pop3-laminas-glpi10: no CAPA; USER, PASS (raw to end of line), then STAT.
    let script = b"USER tickets@contoso.test\r\nPASS S3cret pw \"\\\r\nSTAT\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!("{GREETING}+OK Send your password\r\n+OK User successfully authenticated.\r\n"),
    );
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret pw \"\\"));
    assert_eq!(run.end, pipe(b"STAT\r\n"));
    assert_eq!(run.need_upstream, 0);
}

#[test]
fn poplib_user_pass() {
    // pop3-poplib: USER, PASS, STAT, RETR 1, QUIT.
    let script = b"USER tickets@contoso.test\r\nPASS S3cret-pw\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
    assert_eq!(run.end, pipe(b""));
}

#[test]
fn c_client_glpi94_capa_then_auth_plain_two_step() {
    // pop3-c-client-glpi94: CAPA first, two-step AUTH PLAIN (waits for "+ "), CAPA again after
    // login (piped). On a plaintext leg SASL PLAIN is not listed (c-client's SECURITY PROBLEM).
    let mut script = b"CAPA\r\nAUTH PLAIN\r\n".to_vec();
    script.extend_from_slice(plain_b64("tickets@contoso.test", b"S3cret-pw").as_bytes());
    script.extend_from_slice(b"\r\nCAPA\r\n");
    for (tls, capa) in [
        (ClientTls::None, PLAIN_CAPA),
        (ClientTls::Implicit, TLS_CAPA),
    ] {
        let run = run_all_chunkings(&machine(tls), &env(&exchange_ok), &script);
        assert_out(
            &run,
            &format!("{GREETING}{capa}+ \r\n+OK User successfully authenticated.\r\n"),
        );
        assert_eq!(run.need_upstream, 1);
        assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
        assert_eq!(run.end, pipe(b"CAPA\r\n"));
    }
}

#[test]
fn curl_capa_auth_plain_retr() {
    // pop3-curl: CAPA, two-step AUTH PLAIN, RETR 1.
    let mut script = b"CAPA\r\nAUTH PLAIN\r\n".to_vec();
    script.extend_from_slice(plain_b64("tickets@contoso.test", b"S3cret-pw").as_bytes());
    script.extend_from_slice(b"\r\nRETR 1\r\nQUIT\r\n");
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), &script);
    assert_out(
        &run,
        &format!("{GREETING}{PLAIN_CAPA}+ \r\n+OK User successfully authenticated.\r\n"),
    );
    assert_eq!(run.end, pipe(b"RETR 1\r\nQUIT\r\n"));
}

#[test]
fn laminas_stls_straight_after_greeting() {
    // pop3-laminas-stls-dovecot: STLS at once; on a plaintext listener it is refused.
    let run = run_all_chunkings(
        &machine(ClientTls::StartTls),
        &env(&exchange_ok),
        b"STLS\r\n",
    );
    assert_out(&run, &format!("{GREETING}+OK Begin TLS negotiation\r\n"));
    assert_eq!(run.starttls, 1);
    let run = run_all_chunkings(
        &machine(ClientTls::None),
        &env(&exchange_ok),
        b"STLS\r\nQUIT\r\n",
    );
    assert_out(
        &run,
        &format!(
            "{GREETING}-ERR STLS not available on this port (configure this listener with tls: starttls)\r\n+OK Bye\r\n"
        ),
    );
    assert_eq!(run.end, End::Closed);
}

#[test]
fn c_client_tls_capa_then_stls_then_login() {
    // pop3-c-client-tls-dovecot: CAPA, STLS; after TLS, USER/PASS is allowed.
    let make = machine(ClientTls::StartTls);
    let mut m = make();
    let run1 = play(
        m.as_mut(),
        &env(&exchange_ok),
        &[b"CAPA\r\nUSER u\r\nSTLS\r\n"],
    );
    assert_out(
        &run1,
        &format!("{GREETING}{STARTTLS_CAPA}-ERR Use STLS first\r\n+OK Begin TLS negotiation\r\n"),
    );
    let run2 = play(
        m.as_mut(),
        &env(&exchange_ok),
        &[b"CAPA\r\nUSER u\r\nPASS p\r\n"],
    );
    assert_out(
        &run2,
        &format!(
            "{GREETING}{TLS_CAPA}+OK Send your password\r\n+OK User successfully authenticated.\r\n"
        ),
    );
    assert_eq!(run2.logins, login("u", b"p"));
    // pipelined past STLS: left for the driver, which closes
    let run3 = play(
        make().as_mut(),
        &env(&exchange_ok),
        &[b"STLS\r\nUSER u\r\n"],
    );
    assert_eq!(run3.end, End::PipelinedPastStartTls);
}

#[test]
fn starttls_listener_refuses_login_before_tls() {
    let script = format!(
        "USER u\r\nPASS p\r\nAUTH PLAIN {}\r\nAUTH\r\n",
        plain_b64("u", b"p")
    );
    let run = run_all_chunkings(
        &machine(ClientTls::StartTls),
        &env(&exchange_ok),
        script.as_bytes(),
    );
    assert_out(
        &run,
        &format!(
            "{GREETING}-ERR Use STLS first\r\n-ERR Use STLS first\r\n-ERR Use STLS first\r\n+OK Mechanisms follow\r\n.\r\n"
        ),
    );
    assert!(run.logins.is_empty());
}

#[test]
fn auth_forms() {
    let ok = env(&exchange_ok);
    let tls = machine(ClientTls::Implicit);
    let script = format!(
        "AUTH\r\nAUTH PLAIN {}\r\n",
        STANDARD.encode("glpi\0glpi\0pw")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{GREETING}+OK Mechanisms follow\r\nPLAIN\r\n.\r\n+OK User successfully authenticated.\r\n"
        ),
    );
    assert_eq!(run.logins, login("glpi", b"pw"));
    let script = format!(
        "AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n{}\r\n{}\r\n",
        STANDARD.encode("glpi"),
        STANDARD.encode("p w")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{GREETING}+ \r\n-ERR AUTH cancelled\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK User successfully authenticated.\r\n"
        ),
    );
    assert_eq!(run.logins, login("glpi", b"p w"));
    let script = format!(
        "AUTH PLAIN !!\r\nAUTH PLAIN =\r\nAUTH PLAIN {}\r\nAUTH XOAUTH2\r\nAUTH CRAM-MD5\r\n",
        STANDARD.encode("admin\0glpi\0pw")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{GREETING}-ERR Invalid base64 in SASL response\r\n-ERR Malformed PLAIN response\r\n\
             -ERR [AUTH] Authorization identity must be empty or equal to the user name\r\n\
             -ERR Unsupported authentication mechanism\r\n-ERR Unsupported authentication mechanism\r\n"
        ),
    );
    assert!(run.logins.is_empty());
    // plaintext: AUTH lists nothing, AUTH PLAIN still works (curl)
    let script = format!("AUTH\r\nAUTH PLAIN {}\r\n", plain_b64("u", b"p"));
    let run = run_all_chunkings(&machine(ClientTls::None), &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{GREETING}+OK Mechanisms follow\r\n.\r\n+OK User successfully authenticated.\r\n"
        ),
    );
}

#[test]
fn other_commands_before_login() {
    let script =
        b"NOOP\r\nSTAT\r\nAPOP u 0123\r\nPASS x\r\nUSER\r\nXYZZY\r\n\r\nCAPA x\r\nQUIT\r\nNOOP\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{GREETING}-ERR Command not valid before login\r\n-ERR Command not valid before login\r\n\
             -ERR APOP not supported\r\n-ERR Send USER first\r\n-ERR Syntax: USER name\r\n\
             -ERR Unknown command\r\n-ERR Unknown command\r\n-ERR CAPA takes no arguments\r\n+OK Bye\r\n"
        ),
    );
    assert_eq!(run.end, End::Closed);
}

#[test]
fn limits() {
    // bad commands
    let run = run_all_chunkings(
        &machine(ClientTls::None),
        &env(&exchange_ok),
        "XYZZY\r\n".repeat(11).as_bytes(),
    );
    assert!(
        run.text()
            .ends_with("-ERR Unknown command\r\n-ERR Too many invalid commands\r\n")
    );
    assert_eq!(run.text().matches("-ERR Unknown command").count(), 11);
    assert_eq!(run.end, End::Closed);
    // commands
    let script = "USER u\r\n".repeat(101);
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert!(
        run.text()
            .ends_with("+OK Send your password\r\n-ERR Too many commands before login\r\n")
    );
    assert_eq!(run.end, End::Closed);
    // line length: PASS is held to line_max, AUTH responses to auth_line_max
    let script = format!("USER u\r\nPASS {}\r\nQUIT\r\n", "p".repeat(5000));
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &run,
        &format!("{GREETING}+OK Send your password\r\n-ERR Line too long\r\n+OK Bye\r\n"),
    );
    let pw = vec![b'p'; 6000];
    let script = format!("AUTH PLAIN\r\n{}\r\n", plain_b64("u", &pw));
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_eq!(run.logins, login("u", &pw));
    let script = format!("AUTH PLAIN\r\n{}\r\nQUIT\r\n", "A".repeat(13000));
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &run,
        &format!("{GREETING}+ \r\n-ERR Line too long, closing connection\r\n"),
    );
    // No newline at all: answered as soon as the cap (auth_line_max) is crossed, then closed.
    let unended = format!("USER {}", "u".repeat(12300));
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[unended.as_bytes()],
    );
    assert_out(
        &run,
        &format!("{GREETING}-ERR Line too long, closing connection\r\n"),
    );
    assert_eq!(run.end, End::Closed);
}

#[test]
fn login_outcomes() {
    let script = b"USER u\r\nPASS a\r\nPASS b\r\nUSER u\r\nPASS b\r\nUSER u\r\nPASS c\r\nUSER u\r\nPASS d\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&bad_credentials), script);
    assert_out(
        &run,
        &format!(
            "{GREETING}+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n\
             -ERR Send USER first\r\n+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n\
             +OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n"
        ),
    );
    assert_eq!(run.logins.len(), 3);
    assert_eq!(run.end, End::Closed);

    let n = Cell::new(0);
    let outcomes = |_: &LoginRequest| {
        n.set(n.get() + 1);
        match n.get() {
            1 => LoginOutcome::Unavailable("token endpoint unreachable\r\n+OK forged".into()),
            2 => LoginOutcome::Rejected(
                "[AUTH] Authentication failure: unknown user name or bad password.".into(),
            ),
            _ => LoginOutcome::Throttled,
        }
    };
    let script = b"USER u\r\nPASS p\r\nUSER u\r\nPASS p\r\nUSER u\r\nPASS p\r\n";
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&outcomes),
        &[script],
    );
    assert_out(
        &run,
        &format!(
            "{GREETING}+OK Send your password\r\n-ERR [SYS/TEMP] token endpoint unreachable  +OK forged\r\n\
             +OK Send your password\r\n-ERR [AUTH] Authentication failure: unknown user name or bad password.\r\n\
             +OK Send your password\r\n-ERR [SYS/TEMP] Too many failed logins, try again later\r\n"
        ),
    );
    assert_eq!(run.end, End::Closed);
    let e = Env {
        caps: None,
        outcomes: &crate::protocol::imap::testkit::success,
    };
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &e,
        &[b"USER u\r\nPASS p\r\n"],
    );
    assert_out(
        &run,
        &format!("{GREETING}+OK Send your password\r\n+OK Logged in.\r\n"),
    );
}

#[test]
fn capa_without_upstream_and_junk_filtering() {
    let e = Env {
        caps: None,
        outcomes: &exchange_ok,
    };
    let run = run_all_chunkings(&machine(ClientTls::None), &e, b"CAPA\r\n");
    assert_out(
        &run,
        &format!(
            "{GREETING}+OK Capability list follows\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nUSER\r\n.\r\n"
        ),
    );
    let up: Vec<String> = [
        "CAPA",
        "TOP",
        "top",
        "SASL PLAIN XOAUTH2",
        "STLS",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        ".",
        ".X",
        "",
        "BAD\r\nLINE",
        "IMPLEMENTATION Microsoft",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        client_capa(Some(&up), Leg::Tls).join("|"),
        "CAPA|TOP|PIPELINING|IMPLEMENTATION Microsoft|RESP-CODES|AUTH-RESP-CODE|USER|SASL PLAIN"
    );
}

#[test]
fn goodbyes_and_greeting_without_apop_timestamp() {
    let mut m = Pop3Client::new(ctx(ClientTls::None));
    let mut out = Vec::new();
    m.greeting(&mut out);
    assert!(!out.contains(&b'<'));
    let mut out = Vec::new();
    m.shutting_down(&mut out);
    assert_eq!(
        out,
        b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
    );
    let mut out = Vec::new();
    m.timed_out(&mut out);
    assert_eq!(out, b"-ERR Autologout; idle for too long\r\n");
}

#[test]
fn garbage_never_panics() {
    let alphabet: &[u8] = b"USER PASS AUTH PLAIN LOGIN CAPA STLS *=\r\n\x00\xff+ AGdscGkAcHc=";
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let cut = if bytes.is_empty() {
            0
        } else {
            (next() as usize) % bytes.len()
        };
        let (a, b) = bytes.split_at(cut);
        for tls in [ClientTls::None, ClientTls::StartTls, ClientTls::Implicit] {
            let whole = play(machine(tls)().as_mut(), &env(&bad_credentials), &[&bytes]);
            let split = play(machine(tls)().as_mut(), &env(&bad_credentials), &[a, b]);
            assert_eq!(whole, split);
        }
    }
}
