//! [`ImapClient`] against the client bytes of the recorded transcripts
//! (`/work/shared/transcripts/imap-*.txt`, see FACTS.md) and the edge cases around them.
//! Redacted passwords are replaced by test ones with the same special bytes.

use std::cell::Cell;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::ImapClient;
use super::testkit::{End, Env, Run, ctx, exchange_imap_caps, run as play, run_all_chunkings};
use crate::protocol::{ClientProtocol, ClientTls, LoginOutcome, LoginRequest};

const PLAIN_GREETING: &str =
    "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] authbridge IMAP4rev1 proxy ready\r\n";
const TLS_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN] authbridge IMAP4rev1 proxy ready\r\n";
const STARTTLS_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS LOGINDISABLED] authbridge IMAP4rev1 proxy ready\r\n";

/// A 10-byte password with `"` and `\` (`<pw:2>"<pw:2>\<pw:4>` in the transcripts).
const SPECIAL_PW: &[u8] = b"ab\"cd\\efgh";
/// An 11-byte password with a LF (`<pw:5>\x0a<pw:5>`).
const LF_PW: &[u8] = b"abcde\nfghij";

fn exchange_ok(_: &LoginRequest) -> LoginOutcome {
    LoginOutcome::Success {
        untagged: Vec::new(),
        text: "AUTHENTICATE completed.".into(),
    }
}

fn bad_credentials(_: &LoginRequest) -> LoginOutcome {
    LoginOutcome::BadCredentials
}

fn env(outcomes: &dyn Fn(&LoginRequest) -> LoginOutcome) -> Env<'_> {
    Env {
        caps: Some(exchange_imap_caps()),
        outcomes,
    }
}

fn machine(tls: ClientTls) -> impl Fn() -> Box<dyn ClientProtocol> {
    move || Box::new(ImapClient::new(ctx(tls)))
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

// ---- laminas-mail (GLPI 9.5 / 10 / 11) ----

#[test]
fn laminas_glpi10_quoted_login() {
    // imap-laminas-glpi10: no CAPABILITY, `TAG1 LOGIN "user" "pass"`, then `TAG2 SELECT "INBOX"`.
    let script = b"TAG1 LOGIN \"tickets@contoso.test\" \"S3cret-pw\"\r\nTAG2 SELECT \"INBOX\"\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}TAG1 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
    assert_eq!(run.end, pipe(b"TAG2 SELECT \"INBOX\"\r\n"));
    assert_eq!(run.need_upstream, 0);
}

#[test]
fn laminas_special_password_escapes_are_undone() {
    // imap-laminas-special-password: `\"` and `\\` inside the quoted string; on NO laminas LOGOUTs.
    let script = b"TAG1 LOGIN \"alerts@contoso.test\" \"ab\\\"cd\\\\efgh\"\r\nTAG2 LOGOUT\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&bad_credentials), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}TAG1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n\
             * BYE authbridge logging out\r\nTAG2 OK LOGOUT completed\r\n"
        ),
    );
    assert_eq!(run.logins, login("alerts@contoso.test", SPECIAL_PW));
    assert_eq!(run.end, End::Closed);
}

#[test]
fn laminas_lf_password_literal_gets_plus_space() {
    // imap-laminas-lf-password-literal: `{11}`, needs a line starting "+ ", payload + CRLF in one
    // write; the user name before it stays a quoted string.
    let mut script = b"TAG1 LOGIN \"sink@contoso.test\" {11}\r\n".to_vec();
    script.extend_from_slice(LF_PW);
    script.extend_from_slice(b"\r\n");
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), &script);
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}+ Ready\r\nTAG1 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(run.logins, login("sink@contoso.test", LF_PW));
    assert_eq!(run.end, pipe(b""));
}

#[test]
fn laminas_starttls_on_plain_listener_is_refused() {
    // imap-laminas-starttls-on-plain-listener: `TAG1 STARTTLS` at once, then LOGOUT.
    let script = b"TAG1 STARTTLS\r\nTAG2 LOGOUT\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}TAG1 BAD STARTTLS not available on this port (configure this listener with tls: starttls)\r\n\
             * BYE authbridge logging out\r\nTAG2 OK LOGOUT completed\r\n"
        ),
    );
    assert_eq!(run.starttls, 0);
    assert_eq!(run.end, End::Closed);
}

#[test]
fn laminas_starttls_listener_upgrades_then_logs_in() {
    // imap-laminas-starttls-dovecot: `TAG1 STARTTLS` straight after the greeting. After TLS
    // laminas logs in (not recorded: encrypted); we replay its usual LOGIN.
    let make = machine(ClientTls::StartTls);
    let e = env(&exchange_ok);
    let mut m = make();
    let first = play(m.as_mut(), &e, &[b"TAG1 STARTTLS\r\n"]);
    assert_out(
        &first,
        &format!("{STARTTLS_GREETING}TAG1 OK Begin TLS negotiation now\r\n"),
    );
    assert_eq!(first.starttls, 1);
    // the harness called tls_started; go on in TLS
    m.upstream_ready(Some(&exchange_imap_caps()));
    let mut out = Vec::new();
    let mut input = bytes::BytesMut::from(&b"TAG2 CAPABILITY\r\nTAG3 LOGIN \"u\" \"p\"\r\n"[..]);
    assert!(matches!(
        m.step(&mut input, &mut out),
        crate::protocol::Step::Continue
    ));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "* CAPABILITY IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID SASL-IR AUTH=PLAIN\r\n\
         TAG2 OK CAPABILITY completed\r\n"
    );
    match m.step(&mut input, &mut out) {
        crate::protocol::Step::Login(req) => {
            assert_eq!(req.username, "u");
            assert_eq!(req.password.expose(), b"p");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn starttls_pipelined_input_is_left_for_the_driver_to_refuse() {
    let run = play(
        machine(ClientTls::StartTls)().as_mut(),
        &env(&exchange_ok),
        &[b"A1 STARTTLS\r\nA2 LOGIN u p\r\n"],
    );
    assert_eq!(run.end, End::PipelinedPastStartTls);
    assert!(run.logins.is_empty());
}

#[test]
fn login_before_tls_on_a_starttls_listener_is_refused() {
    // Also a synchronising literal: refused at once, without "+".
    let script = b"A1 LOGIN u p\r\nA2 AUTHENTICATE PLAIN\r\nA3 LOGIN u {3}\r\nA4 CAPABILITY\r\n";
    let run = run_all_chunkings(&machine(ClientTls::StartTls), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{STARTTLS_GREETING}A1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n\
             A2 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n\
             A3 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n\
             * CAPABILITY IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID STARTTLS LOGINDISABLED\r\n\
             A4 OK CAPABILITY completed\r\n"
        ),
    );
    assert!(run.logins.is_empty());
}

// ---- PHP c-client (GLPI ≤ 9.4) ----

#[test]
fn c_client_glpi94_authenticate_plain_two_step() {
    // imap-c-client-glpi94: hex tags, no CAPABILITY (the greeting has it), `AUTHENTICATE PLAIN`,
    // waits for "+ ", then the blob; then SELECT INBOX. On a TLS leg we advertise AUTH=PLAIN.
    let mut script = b"00000000 AUTHENTICATE PLAIN\r\n".to_vec();
    script.extend_from_slice(plain_b64("tickets@contoso.test", b"S3cret-pw").as_bytes());
    script.extend_from_slice(b"\r\n00000001 SELECT INBOX\r\n");
    for tls in [ClientTls::Implicit, ClientTls::None] {
        let run = run_all_chunkings(&machine(tls), &env(&exchange_ok), &script);
        let greeting = if tls == ClientTls::Implicit {
            TLS_GREETING
        } else {
            PLAIN_GREETING
        };
        assert_out(
            &run,
            &format!("{greeting}+ \r\n00000000 OK AUTHENTICATE completed.\r\n"),
        );
        assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
        assert_eq!(run.end, pipe(b"00000001 SELECT INBOX\r\n"));
    }
}

#[test]
fn c_client_login_with_atoms() {
    // imap-c-client-login-no-auth-plain: `00000000 LOGIN user pass`, unquoted.
    let script = b"00000000 LOGIN tickets@contoso.test S3cret-pw\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}00000000 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
}

#[test]
fn c_client_special_password_literal_in_two_writes() {
    // imap-c-client-login-special-password: `{10}` although LITERAL+ is advertised; waits for
    // "+ ", then writes the 10 payload bytes and the CRLF separately.
    let line: &[u8] = b"00000000 LOGIN alerts@contoso.test {10}\r\n";
    let e = env(&exchange_ok);
    let run3 = play(
        machine(ClientTls::None)().as_mut(),
        &e,
        &[line, SPECIAL_PW, b"\r\n"],
    );
    let script = [line, SPECIAL_PW, b"\r\n"].concat();
    let all = run_all_chunkings(&machine(ClientTls::None), &e, &script);
    assert_eq!(run3, all);
    assert_out(
        &all,
        &format!("{PLAIN_GREETING}+ Ready\r\n00000000 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(all.logins, login("alerts@contoso.test", SPECIAL_PW));
}

#[test]
fn c_client_special_password_authenticate_plain() {
    // imap-c-client-authenticate-plain-special-password: the specials hide in the base64 blob.
    let mut script = b"00000000 AUTHENTICATE PLAIN\r\n".to_vec();
    script.extend_from_slice(plain_b64("alerts@contoso.test", SPECIAL_PW).as_bytes());
    script.extend_from_slice(b"\r\n");
    let run = run_all_chunkings(&machine(ClientTls::Implicit), &env(&exchange_ok), &script);
    assert_eq!(run.logins, login("alerts@contoso.test", SPECIAL_PW));
}

#[test]
fn c_client_greeting_without_capability_asks_first() {
    // imap-c-client-greeting-without-capability: `00000000 CAPABILITY`, then the login at
    // `00000001`. The reply is built from the upstream's list (NeedUpstream once).
    let mut script = b"00000000 CAPABILITY\r\n00000001 AUTHENTICATE PLAIN\r\n".to_vec();
    script.extend_from_slice(plain_b64("tickets@contoso.test", b"S3cret-pw").as_bytes());
    script.extend_from_slice(b"\r\n");
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), &script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}* CAPABILITY IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID\r\n\
             00000000 OK CAPABILITY completed\r\n+ \r\n00000001 OK AUTHENTICATE completed.\r\n"
        ),
    );
    assert_eq!(run.need_upstream, 1);
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
}

#[test]
fn c_client_wrong_password_both_connections() {
    // imap-c-client-wrong-password: connection 1 AUTHENTICATE PLAIN → NO → LOGOUT; connection 2
    // LOGIN with atoms → NO → LOGOUT.
    let mut first = b"00000000 AUTHENTICATE PLAIN\r\n".to_vec();
    first.extend_from_slice(plain_b64("tickets@contoso.test", b"wrong").as_bytes());
    first.extend_from_slice(b"\r\n00000001 LOGOUT\r\n");
    let run1 = run_all_chunkings(&machine(ClientTls::None), &env(&bad_credentials), &first);
    assert_out(
        &run1,
        &format!(
            "{PLAIN_GREETING}+ \r\n00000000 NO [AUTHENTICATIONFAILED] Authentication failed\r\n\
             * BYE authbridge logging out\r\n00000001 OK LOGOUT completed\r\n"
        ),
    );
    let second = b"00000000 LOGIN tickets@contoso.test wrong\r\n00000001 LOGOUT\r\n";
    let run2 = run_all_chunkings(&machine(ClientTls::None), &env(&bad_credentials), second);
    assert_out(
        &run2,
        &format!(
            "{PLAIN_GREETING}00000000 NO [AUTHENTICATIONFAILED] Authentication failed\r\n\
             * BYE authbridge logging out\r\n00000001 OK LOGOUT completed\r\n"
        ),
    );
    assert_eq!(run2.logins, login("tickets@contoso.test", b"wrong"));
}

#[test]
fn c_client_tls_starttls_first() {
    // imap-c-client-tls-dovecot: `00000000 STARTTLS` straight after the greeting.
    let run = run_all_chunkings(
        &machine(ClientTls::StartTls),
        &env(&exchange_ok),
        b"00000000 STARTTLS\r\n",
    );
    assert_out(
        &run,
        &format!("{STARTTLS_GREETING}00000000 OK Begin TLS negotiation now\r\n"),
    );
    assert_eq!(run.starttls, 1);
    assert_eq!(run.end, End::Input);
}

// ---- curl ----

#[test]
fn curl_capability_then_sasl_ir() {
    // imap-curl: `A001 CAPABILITY`, one-line `A002 AUTHENTICATE PLAIN <ir>`, `A003 SELECT INBOX`.
    let mut script = b"A001 CAPABILITY\r\nA002 AUTHENTICATE PLAIN ".to_vec();
    script.extend_from_slice(plain_b64("tickets@contoso.test", b"S3cret-pw").as_bytes());
    script.extend_from_slice(b"\r\nA003 SELECT INBOX\r\n");
    let outcome = |_: &LoginRequest| LoginOutcome::Success {
        untagged: b"* CAPABILITY IMAP4rev1 IDLE\r\n".to_vec(),
        text: "AUTHENTICATE completed.".into(),
    };
    let run = run_all_chunkings(&machine(ClientTls::Implicit), &env(&outcome), &script);
    assert_out(
        &run,
        &format!(
            "{TLS_GREETING}* CAPABILITY IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID SASL-IR AUTH=PLAIN\r\n\
             A001 OK CAPABILITY completed\r\n\
             * CAPABILITY IMAP4rev1 IDLE\r\nA002 OK AUTHENTICATE completed.\r\n"
        ),
    );
    assert_eq!(run.logins, login("tickets@contoso.test", b"S3cret-pw"));
    assert_eq!(run.end, pipe(b"A003 SELECT INBOX\r\n"));
}

// ---- literals ----

#[test]
fn literal_plus_needs_no_continuation() {
    let script = b"A1 LOGIN {4+}\r\nuser {4+}\r\np\r\nw\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}A1 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(run.logins, login("user", b"p\r\nw"));
}

#[test]
fn oversized_synchronising_literals_are_refused_without_plus() {
    for size in [
        "8193",
        "4294967295",
        "18446744073709551616",
        "99999999999999999999999999",
    ] {
        let script = format!("A1 LOGIN u {{{size}}}\r\nA2 NOOP\r\n");
        let run = run_all_chunkings(
            &machine(ClientTls::None),
            &env(&exchange_ok),
            script.as_bytes(),
        );
        assert_out(
            &run,
            &format!(
                "{PLAIN_GREETING}A1 BAD Literal too large (at most 8192 octets before login)\r\n\
                 A2 OK NOOP completed\r\n"
            ),
        );
        assert!(run.logins.is_empty());
    }
    // exactly the limit is fine
    let mut script = b"A1 LOGIN u {8192}\r\n".to_vec();
    script.extend_from_slice(&[b'x'; 8192]);
    script.extend_from_slice(b"\r\n");
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[&script],
    );
    assert_eq!(run.logins.len(), 1);
    assert_eq!(run.logins[0].1.len(), 8192);
}

#[test]
fn oversized_non_synchronising_literal_closes() {
    let script = b"A1 LOGIN u {9000+}\r\nxxxxxxxx";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}A1 BAD Literal too large (at most 8192 octets before login)\r\n"),
    );
    assert_eq!(run.end, End::Closed);
}

#[test]
fn malformed_literals_are_bad_syntax() {
    let script = b"A1 LOGIN u {-1}\r\nA2 LOGIN u {1x}\r\nA3 LOGIN u {}\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}A1 BAD Invalid literal\r\nA2 BAD Invalid literal\r\nA3 BAD Invalid literal\r\n"
        ),
    );
}

#[test]
fn literals_on_commands_that_cannot_take_them_are_refused_early() {
    let script = b"A1 SELECT {5}\r\nA2 FOO {5}\r\nA3 ID ({4}\r\nname NIL)\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}A1 BAD Command not valid before login\r\nA2 BAD Unexpected literal\r\n\
             + Ready\r\n* ID NIL\r\nA3 OK ID completed\r\n"
        ),
    );
}

// ---- AUTHENTICATE forms ----

#[test]
fn authenticate_forms() {
    let ok = env(&exchange_ok);
    let tls = machine(ClientTls::Implicit);
    // cancel
    let run = run_all_chunkings(&tls, &ok, b"A1 AUTHENTICATE PLAIN\r\n*\r\nA2 NOOP\r\n");
    assert_out(
        &run,
        &format!("{TLS_GREETING}+ \r\nA1 BAD AUTHENTICATE cancelled\r\nA2 OK NOOP completed\r\n"),
    );
    // LOGIN with prompts
    let script = format!(
        "A1 AUTHENTICATE LOGIN\r\n{}\r\n{}\r\n",
        STANDARD.encode("glpi"),
        STANDARD.encode("pa ss")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{TLS_GREETING}+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\nA1 OK AUTHENTICATE completed.\r\n"
        ),
    );
    assert_eq!(run.logins, login("glpi", b"pa ss"));
    // LOGIN with initial response (the user name)
    let script = format!(
        "A1 AUTHENTICATE LOGIN {}\r\n{}\r\n",
        STANDARD.encode("glpi"),
        STANDARD.encode("pw")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!("{TLS_GREETING}+ UGFzc3dvcmQ6\r\nA1 OK AUTHENTICATE completed.\r\n"),
    );
    assert_eq!(run.logins, login("glpi", b"pw"));
    // authzid equal to the user is fine, another one is not
    let script = format!(
        "A1 AUTHENTICATE PLAIN {}\r\nA2 AUTHENTICATE PLAIN {}\r\n",
        STANDARD.encode("admin\0glpi\0pw"),
        STANDARD.encode("glpi\0glpi\0pw")
    );
    let run = run_all_chunkings(&tls, &ok, script.as_bytes());
    assert_out(
        &run,
        &format!(
            "{TLS_GREETING}A1 NO [AUTHORIZATIONFAILED] Authorization identity must be empty or equal to the user name\r\n\
             A2 OK AUTHENTICATE completed.\r\n"
        ),
    );
    assert_eq!(run.logins, login("glpi", b"pw"));
    // bad base64, malformed PLAIN, empty initial response, other mechanisms
    let script = b"A1 AUTHENTICATE PLAIN !!!\r\nA2 AUTHENTICATE PLAIN\r\nZ2xwaQ==\r\nA3 AUTHENTICATE PLAIN =\r\nA4 AUTHENTICATE XOAUTH2 abc\r\nA5 AUTHENTICATE CRAM-MD5\r\n";
    let run = run_all_chunkings(&tls, &ok, script);
    assert_out(
        &run,
        &format!(
            "{TLS_GREETING}A1 BAD Invalid base64 in SASL response\r\n+ \r\nA2 BAD Malformed PLAIN response\r\n\
             A3 BAD Malformed PLAIN response\r\n\
             A4 NO [CANNOT] Unsupported authentication mechanism\r\n\
             A5 NO [CANNOT] Unsupported authentication mechanism\r\n"
        ),
    );
    assert!(run.logins.is_empty());
}

#[test]
fn long_authenticate_lines_are_allowed_up_to_the_auth_limit() {
    let pw = vec![b'p'; 6000];
    let script = format!("A1 AUTHENTICATE PLAIN {}\r\n", plain_b64("glpi", &pw));
    assert!(script.len() > 4096 && script.len() < 12288);
    let run = play(
        machine(ClientTls::Implicit)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_eq!(run.logins, login("glpi", &pw));
    // the same length as a LOGIN line is too long (line_max 4096)
    let script = format!("A1 LOGIN glpi {}\r\nA2 NOOP\r\n", "p".repeat(6000));
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &run,
        &format!("{PLAIN_GREETING}A1 BAD Line too long\r\nA2 OK NOOP completed\r\n"),
    );
    // a long line before a literal is refused before the "+"
    let script = format!("A1 LOGIN {} {{3}}\r\nA2 NOOP\r\n", "u".repeat(5000));
    let r = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &r,
        &format!("{PLAIN_GREETING}A1 BAD Line too long\r\nA2 OK NOOP completed\r\n"),
    );
    // beyond auth_line_max the line is dropped unread (no tag), answered as soon as the cap is
    // crossed, and the session closes: the same whatever the read boundaries
    let script = format!("A1 LOGIN glpi {}\r\nA2 NOOP\r\n", "p".repeat(13000));
    let whole = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &whole,
        &format!(
            "{PLAIN_GREETING}* BAD Line too long\r\n* BYE Line too long, closing connection\r\n"
        ),
    );
    // no newline at all: the answer comes once the cap is crossed
    let unended = "A1 LOGIN glpi ".to_string() + &"p".repeat(12300);
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[unended.as_bytes()],
    );
    assert_eq!(run.out, whole.out);
    for cut in [1, 5000, 12289, 12290, 13014, 13015, 13016] {
        let (a, b) = script.as_bytes().split_at(cut);
        let split = play(
            machine(ClientTls::None)().as_mut(),
            &env(&exchange_ok),
            &[a, b],
        );
        assert_eq!(split, whole, "split at {cut}");
    }
    // a too-long SASL response
    let script = format!(
        "A1 AUTHENTICATE PLAIN\r\n{}\r\nA2 NOOP\r\n",
        "A".repeat(13000)
    );
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}+ \r\nA1 BAD Line too long\r\n* BYE Line too long, closing connection\r\n"
        ),
    );
}

// ---- other commands, limits, outcomes ----

#[test]
fn other_commands_before_login() {
    let script = b"a1 noop\r\nA2 ID (\"name\" \"curl\")\r\nA3 SELECT INBOX\r\nA4 XYZZY\r\n\r\nbad line\r\n(x\r\nA5 CAPABILITY extra\r\nA6 LOGOUT\r\nA7 NOOP\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}a1 OK NOOP completed\r\n* ID NIL\r\nA2 OK ID completed\r\n\
             A3 BAD Command not valid before login\r\nA4 BAD Unknown command\r\n\
             * BAD Invalid tag or command\r\nbad BAD Unknown command\r\n* BAD Invalid tag or command\r\n\
             A5 BAD Unexpected arguments\r\n* BYE authbridge logging out\r\nA6 OK LOGOUT completed\r\n"
        ),
    );
    assert_eq!(run.end, End::Closed);
}

#[test]
fn capability_without_upstream_uses_the_base_set() {
    let e = Env {
        caps: None,
        outcomes: &exchange_ok,
    };
    let run = run_all_chunkings(
        &machine(ClientTls::None),
        &e,
        b"A1 CAPABILITY\r\nA2 CAPABILITY\r\n",
    );
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}* CAPABILITY IMAP4rev1 LITERAL+ ID\r\nA1 OK CAPABILITY completed\r\n\
             * CAPABILITY IMAP4rev1 LITERAL+ ID\r\nA2 OK CAPABILITY completed\r\n"
        ),
    );
    assert_eq!(run.need_upstream, 1);
}

#[test]
fn too_many_bad_commands_close() {
    let script = "x\r\n".repeat(11);
    let run = run_all_chunkings(
        &machine(ClientTls::None),
        &env(&exchange_ok),
        script.as_bytes(),
    );
    let mut want = PLAIN_GREETING.to_string();
    for _ in 0..11 {
        want.push_str("x BAD Missing command\r\n");
    }
    want.push_str("* BYE Too many invalid commands\r\n");
    assert_out(&run, &want);
    assert_eq!(run.end, End::Closed);
}

#[test]
fn too_many_commands_close() {
    let script = "A NOOP\r\n".repeat(101);
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&exchange_ok),
        &[script.as_bytes()],
    );
    assert!(
        run.text()
            .ends_with("A OK NOOP completed\r\n* BYE Too many commands before login\r\n")
    );
    assert_eq!(run.text().matches("A OK NOOP completed").count(), 100);
    assert_eq!(run.end, End::Closed);
}

#[test]
fn login_failures_are_counted_per_session() {
    let script = b"A1 LOGIN u a\r\nA2 LOGIN u b\r\nA3 LOGIN u c\r\nA4 LOGIN u d\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&bad_credentials), script);
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}A1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n\
             A2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n\
             A3 NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Too many failed logins\r\n"
        ),
    );
    assert_eq!(run.logins.len(), 3);
    assert_eq!(run.end, End::Closed);
}

#[test]
fn login_outcomes() {
    let n = Cell::new(0);
    let outcomes = |_: &LoginRequest| {
        n.set(n.get() + 1);
        match n.get() {
            1 => LoginOutcome::Unavailable("token endpoint unreachable\r\nA9 OK forged".into()),
            2 => LoginOutcome::Rejected("[AUTHENTICATIONFAILED] AUTHENTICATE failed.".into()),
            3 => LoginOutcome::Rejected("AUTHENTICATE failed.".into()),
            _ => LoginOutcome::Throttled,
        }
    };
    let script = b"A1 LOGIN u p\r\nA2 LOGIN u p\r\nA3 LOGIN u p\r\nA4 LOGIN u p\r\n";
    let run = play(
        machine(ClientTls::None)().as_mut(),
        &env(&outcomes),
        &[script],
    );
    assert_out(
        &run,
        &format!(
            "{PLAIN_GREETING}A1 NO [UNAVAILABLE] token endpoint unreachable  A9 OK forged\r\n\
             A2 NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.\r\n\
             A3 NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.\r\n\
             * BYE Too many failed logins, try again later\r\n"
        ),
    );
    assert_eq!(run.end, End::Closed);
    // an empty success text gets ours
    let e = Env {
        caps: None,
        outcomes: &super::testkit::success,
    };
    let run = super::testkit::run(
        machine(ClientTls::None)().as_mut(),
        &e,
        &[b"A1 LOGIN u p\r\n"],
    );
    assert_out(&run, &format!("{PLAIN_GREETING}A1 OK LOGIN completed\r\n"));
}

#[test]
fn usernames_are_lossy_utf8_and_passwords_raw() {
    let script = b"A1 LOGIN \"j\xe9r\xc3\xb4me\" \"\xff\xfe\"\r\n";
    let run = run_all_chunkings(&machine(ClientTls::None), &env(&exchange_ok), script);
    assert_eq!(run.logins, login("j\u{fffd}rôme", b"\xff\xfe"));
}

#[test]
fn goodbyes() {
    let mut m = ImapClient::new(ctx(ClientTls::None));
    let mut out = Vec::new();
    m.shutting_down(&mut out);
    assert_eq!(out, b"* BYE Server shutting down\r\n");
    let mut out = Vec::new();
    m.timed_out(&mut out);
    assert_eq!(out, b"* BYE Autologout; idle for too long\r\n");
}

#[test]
fn garbage_never_panics_and_stays_bounded() {
    // A crude fuzz: pseudo-random bytes biased toward IMAP syntax, in random chunkings.
    let alphabet: &[u8] = b"A1 {}+\"\\\r\n*LOGIN AUTHENTICATE PLAIN 0123456789\x00\xff()[]=";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let len = (next() % 400) as usize;
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
