//! [`Pop3Upstream`] against Exchange Online's and Dovecot's bytes (FACTS.md; Exchange's CAPA as
//! logged in kisli/vmime#267; the bare `+` from Microsoft Learn's POP sample).

use super::Pop3Upstream;
use crate::protocol::UpstreamProtocol;
use crate::protocol::imap::testkit::{
    DOVECOT_CHALLENGE, MS_XOAUTH2, UpEv, run_upstream, run_upstream_all_chunkings,
};

const EXCHANGE_GREETING: &[u8] = b"+OK The Microsoft Exchange POP3 service is ready. [UwBDADEAUABSADgAMABDAEEAMAAxADAANQAuAGwAYQBtAHAAcgBkADgAMAAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]\r\n";
const EXCHANGE_CAPA: &[u8] = b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n";

fn implicit() -> Box<dyn UpstreamProtocol> {
    Box::new(Pop3Upstream::new(false))
}

fn starttls() -> Box<dyn UpstreamProtocol> {
    Box::new(Pop3Upstream::new(true))
}

fn lines(s: &[&str]) -> Vec<String> {
    s.iter().map(|l| l.to_string()).collect()
}

#[test]
fn exchange_two_step_xoauth2() {
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPA,
        b"+\r\n+OK User successfully authenticated.\r\nleft",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!("CAPA\r\nAUTH XOAUTH2\r\n{MS_XOAUTH2}\r\n")
    );
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(lines(&["TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER"])),
            UpEv::AuthOk {
                untagged: Vec::new(),
                text: "User successfully authenticated.".into()
            }
        ]
    );
    assert_eq!(run.leftover, b"left");
}

#[test]
fn exchange_refusal_then_retry() {
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPA,
        b"+ \r\n-ERR Authentication failure: unknown user name or bad password.\r\n+ \r\n+OK User successfully authenticated.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 2);
    assert_eq!(
        run.sent(),
        format!("CAPA\r\nAUTH XOAUTH2\r\n{MS_XOAUTH2}\r\nAUTH XOAUTH2\r\n{MS_XOAUTH2}\r\n")
    );
    assert_eq!(
        run.events[1],
        UpEv::AuthRejected("Authentication failure: unknown user name or bad password.".into())
    );
    assert!(matches!(run.events[2], UpEv::AuthOk { .. }));
}

#[test]
fn dovecot_error_challenge_and_stls() {
    // Dovecot on 110: STLS, CAPA after TLS, XOAUTH2, error challenge → empty line → -ERR.
    let pre: &[u8] = b"+OK Dovecot (Debian) ready.\r\n+OK Begin TLS negotiation now.\r\n";
    let post = [
        b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n+ \r\n".as_slice(),
        format!("+ {DOVECOT_CHALLENGE}\r\n").as_bytes(),
        b"-ERR [AUTH] Authentication failed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&starttls, &[pre, &post], 1);
    assert_eq!(
        run.sent(),
        format!("STLS\r\nCAPA\r\nAUTH XOAUTH2\r\n{MS_XOAUTH2}\r\n\r\n")
    );
    assert_eq!(run.events.first(), Some(&UpEv::StartTls));
    assert_eq!(
        run.events.last(),
        Some(&UpEv::AuthRejected("[AUTH] Authentication failed.".into()))
    );
}

#[test]
fn capa_not_supported_still_tries_xoauth2() {
    let server: &[u8] = b"+OK hi\r\n-ERR unknown command\r\n-ERR no such mechanism\r\n";
    let run = run_upstream_all_chunkings(&implicit, &[server], 1);
    assert_eq!(run.sent(), "CAPA\r\nAUTH XOAUTH2\r\n");
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(Vec::new()),
            UpEv::AuthRejected("no such mechanism".into())
        ]
    );
}

#[test]
fn capa_lines_are_dot_unstuffed() {
    let server: &[u8] = b"+OK\r\n+OK\r\n..X\r\nSASL xoauth2\r\n.\r\n";
    let run = run_upstream_all_chunkings(&implicit, &[server], 0);
    assert_eq!(
        run.events,
        vec![UpEv::Ready(lines(&[".X", "SASL xoauth2"]))]
    );
}

#[test]
fn setup_failures() {
    let cases: &[(bool, &[u8], &str)] = &[
        (
            false,
            b"+OK\r\n+OK\r\nTOP\r\nSASL PLAIN\r\nUSER\r\n.\r\n",
            "upstream does not offer SASL XOAUTH2",
        ),
        (
            false,
            b"-ERR too busy\r\n",
            "upstream refused the connection: too busy",
        ),
        (
            false,
            b"* OK IMAP here\r\n",
            "unexpected upstream greeting: * OK IMAP here",
        ),
        (
            true,
            b"+OK\r\n-ERR STLS not available\r\n",
            "upstream refused STLS: STLS not available",
        ),
        (
            false,
            b"+OK\r\nhello\r\n",
            "unexpected upstream reply to CAPA: hello",
        ),
        (
            false,
            b"+OK\r\n+OK\r\nSASL XOAUTH2\r\n.\r\n+OK what\r\n",
            "unexpected upstream line before login: +OK what",
        ),
    ];
    for (tls, server, want) in cases {
        let make = if *tls { starttls } else { implicit };
        let run = run_upstream_all_chunkings(&make, &[server], 0);
        assert_eq!(
            run.events.last(),
            Some(&UpEv::Failed(want.to_string())),
            "{:?}",
            String::from_utf8_lossy(server)
        );
    }
    let server = [b"+OK\r\n+OK\r\n".as_slice(), "X\r\n".repeat(201).as_bytes()].concat();
    let run = run_upstream(implicit().as_mut(), &[vec![server.as_slice()]], 0);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::Failed("upstream CAPA list is too long".into()))
    );
    let mut server = b"+OK ".to_vec();
    server.extend(std::iter::repeat_n(b'x', 70_000));
    server.extend_from_slice(b"\r\n");
    let run = run_upstream(implicit().as_mut(), &[vec![server.as_slice()]], 0);
    assert_eq!(
        run.events,
        vec![UpEv::Failed("upstream sent an overlong line".into())]
    );
}

#[test]
fn challenges_are_bounded() {
    let server: &[u8] = b"+OK\r\n-ERR\r\n+\r\n+ a\r\n+ b\r\n+ c\r\n";
    let run = run_upstream(implicit().as_mut(), &[vec![server]], 1);
    assert_eq!(
        run.sent(),
        format!("CAPA\r\nAUTH XOAUTH2\r\n{MS_XOAUTH2}\r\n\r\n*\r\n")
    );
    assert_eq!(
        run.events.last(),
        Some(&UpEv::Failed(
            "upstream keeps sending SASL challenges".into()
        ))
    );
}
