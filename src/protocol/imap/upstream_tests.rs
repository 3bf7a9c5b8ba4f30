//! [`ImapUpstream`] against Exchange Online's and Dovecot's bytes (FACTS.md).

use bytes::BytesMut;

use super::ImapUpstream;
use super::testkit::{
    DOVECOT_CHALLENGE, MS_XOAUTH2, UpEv, run_upstream, run_upstream_all_chunkings,
};
use crate::protocol::{UpStep, UpstreamProtocol};
use crate::secret::SecretString;

const EXCHANGE_GREETING: &[u8] =
    b"* OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAQwBBADAAMAAwADEALgBuAGEAbQBwAHIAZAAwADEALgBwAHIAbwBkAC4AbwB1AHQAbABvAG8AawAuAGMAbwBtAA==]\r\n";
const EXCHANGE_CAPS: &[u8] = b"* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+\r\n";
const DOVECOT_GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.\r\n";

fn implicit() -> Box<dyn UpstreamProtocol> {
    Box::new(ImapUpstream::new(false))
}

fn starttls() -> Box<dyn UpstreamProtocol> {
    Box::new(ImapUpstream::new(true))
}

fn caps(s: &str) -> Vec<String> {
    s.split(' ').map(String::from).collect()
}

fn exchange_caps() -> Vec<String> {
    caps(
        "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+",
    )
}

#[test]
fn exchange_implicit_tls_sasl_ir_success() {
    // Exchange's greeting has no [CAPABILITY]: we ask; SASL-IR → one line; bytes after the
    // tagged OK stay for the pipe.
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPS,
        b"A0 OK CAPABILITY completed.\r\nA1 OK AUTHENTICATE completed.\r\n* 3 EXISTS\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!("A0 CAPABILITY\r\nA1 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\n")
    );
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(exchange_caps()),
            UpEv::AuthOk {
                untagged: Vec::new(),
                text: "AUTHENTICATE completed.".into()
            }
        ]
    );
    assert_eq!(run.leftover, b"* 3 EXISTS\r\n");
}

#[test]
fn exchange_refusal_then_retry() {
    // `NO AUTHENTICATE failed.` → AuthRejected; the driver retries once on the same connection.
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPS,
        b"A0 OK CAPABILITY completed.\r\nA1 NO AUTHENTICATE failed.\r\nA2 OK AUTHENTICATE completed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 2);
    assert_eq!(
        run.sent(),
        format!(
            "A0 CAPABILITY\r\nA1 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\nA2 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\n"
        )
    );
    assert_eq!(run.events.len(), 3);
    assert_eq!(
        run.events[1],
        UpEv::AuthRejected("AUTHENTICATE failed.".into())
    );
    // one attempt only: the rejection is final
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::AuthRejected("AUTHENTICATE failed.".into()))
    );
}

#[test]
fn dovecot_error_challenge_is_answered_with_an_empty_line() {
    // Dovecot's greeting carries [CAPABILITY …]: no CAPABILITY command.
    let server = [
        DOVECOT_GREETING,
        format!("+ {DOVECOT_CHALLENGE}\r\n").as_bytes(),
        b"A0 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!("A0 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\n\r\n")
    );
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(caps(
                "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=XOAUTH2 AUTH=OAUTHBEARER"
            )),
            UpEv::AuthRejected("[AUTHENTICATIONFAILED] Authentication failed.".into())
        ]
    );
}

#[test]
fn without_sasl_ir_the_token_follows_the_continuation() {
    let greeting: &[u8] = b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n";
    let server = [greeting, b"+ \r\nA0 OK AUTHENTICATE completed.\r\n"].concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!("A0 AUTHENTICATE XOAUTH2\r\n{MS_XOAUTH2}\r\n")
    );
    assert!(matches!(run.events.last(), Some(UpEv::AuthOk { .. })));
    // a bare "+" works too; an error challenge after the token gets the empty line, a second
    // one a cancel
    let server = [
        greeting,
        format!("+\r\n+ {DOVECOT_CHALLENGE}\r\n+ again\r\nA0 BAD cancelled\r\n").as_bytes(),
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!("A0 AUTHENTICATE XOAUTH2\r\n{MS_XOAUTH2}\r\n\r\n*\r\n")
    );
    assert_eq!(
        run.events.last(),
        Some(&UpEv::AuthRejected("cancelled".into()))
    );
    let server = [greeting, b"+\r\n+ a\r\n+ b\r\n+ c\r\n"].concat();
    let run = run_upstream(implicit().as_mut(), &[vec![server.as_slice()]], 1);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::Failed(
            "upstream keeps sending SASL challenges".into()
        ))
    );
}

#[test]
fn untagged_responses_during_login_are_kept_with_their_literals() {
    let server = [
        DOVECOT_GREETING,
        b"* CAPABILITY IMAP4rev1 IDLE\r\n* OK [ALERT] {3}\r\nabc\r\n* 1 FETCH (BODY[] {5}\r\nA0 OK)\r\nA0 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\nTAG2 SELECT",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&implicit, &[&server], 1);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::AuthOk {
            untagged: b"* CAPABILITY IMAP4rev1 IDLE\r\n* OK [ALERT] {3}\r\nabc\r\n* 1 FETCH (BODY[] {5}\r\nA0 OK)\r\n".to_vec(),
            text: "[CAPABILITY IMAP4rev1 IDLE] Logged in".into()
        })
    );
    assert_eq!(run.leftover, b"TAG2 SELECT");
}

#[test]
fn starttls_path() {
    // Greeting lists STARTTLS: A0 STARTTLS, upgrade, A1 CAPABILITY, A2 AUTHENTICATE. Bytes
    // buffered with the STARTTLS OK are discarded by the driver.
    let pre: &[u8] = b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\nA0 OK Begin TLS negotiation now.\r\n* injected\r\n";
    let post: &[u8] = b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\r\nA1 OK done\r\nA2 OK AUTHENTICATE completed.\r\n";
    let run = run_upstream_all_chunkings(&starttls, &[pre, post], 1);
    assert_eq!(
        run.sent(),
        format!("A0 STARTTLS\r\nA1 CAPABILITY\r\nA2 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\n")
    );
    assert_eq!(
        run.events,
        vec![
            UpEv::StartTls,
            UpEv::Ready(caps("IMAP4rev1 SASL-IR AUTH=XOAUTH2")),
            UpEv::AuthOk {
                untagged: Vec::new(),
                text: "AUTHENTICATE completed.".into()
            }
        ]
    );
    // Greeting without capabilities: ask first.
    let pre: &[u8] = b"* OK ready\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\nA0 OK\r\nA1 OK go\r\n";
    let post: &[u8] = b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hi\r\n* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\nA2 OK\r\n";
    let run = run_upstream_all_chunkings(&starttls, &[pre, post], 0);
    assert_eq!(
        run.sent(),
        "A0 CAPABILITY\r\nA1 STARTTLS\r\nA2 CAPABILITY\r\n"
    );
    assert_eq!(
        run.events,
        vec![UpEv::StartTls, UpEv::Ready(caps("IMAP4rev1 AUTH=XOAUTH2"))]
    );
}

#[test]
fn setup_failures() {
    let cases: &[(bool, &[u8], &str)] = &[
        (
            true,
            b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] x\r\n",
            "upstream does not offer STARTTLS",
        ),
        (
            true,
            b"* OK x\r\n* CAPABILITY IMAP4rev1\r\nA0 OK\r\n",
            "upstream does not offer STARTTLS",
        ),
        (
            true,
            b"* OK [CAPABILITY STARTTLS] x\r\nA0 BAD TLS not available\r\n",
            "upstream refused STARTTLS: TLS not available",
        ),
        (
            false,
            b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] x\r\n",
            "upstream does not offer AUTH=XOAUTH2",
        ),
        (
            false,
            b"* OK x\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nA0 OK\r\n",
            "upstream does not offer AUTH=XOAUTH2",
        ),
        (
            false,
            b"* OK x\r\nA0 NO go away\r\n",
            "upstream refused CAPABILITY: go away",
        ),
        (
            false,
            b"* BYE Too many connections\r\n",
            "upstream refused the connection: Too many connections",
        ),
        (
            false,
            b"* PREAUTH welcome\r\n",
            "upstream greeted with PREAUTH; a login was expected",
        ),
        (false, b"* NO x\r\n", "unexpected upstream greeting"),
        (false, b"A0 OK x\r\n", "unexpected upstream greeting"),
        (
            false,
            b"HTTP/1.1 400 Bad Request\r\n",
            "upstream sent something that is not IMAP: HTTP/1.1 400 Bad Request",
        ),
        (
            false,
            b"* OK x\r\n* BYE Autologout\r\n",
            "upstream closed the connection: Autologout",
        ),
        (
            false,
            b"* OK x\r\nB7 OK x\r\n",
            "unexpected upstream response to CAPABILITY",
        ),
        (
            false,
            b"* OK [CAPABILITY AUTH=XOAUTH2] x\r\n* BYE shutting down\r\n",
            "upstream closed the connection: shutting down",
        ),
        (
            false,
            b"* OK [CAPABILITY AUTH=XOAUTH2] x\r\nA0 OK out of the blue\r\n",
            "unexpected upstream response before login",
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
}

#[test]
fn overlong_and_oversized_responses_fail() {
    let mut server = b"* OK ".to_vec();
    server.extend(std::iter::repeat_n(b'x', 70_000));
    server.extend_from_slice(b"\r\n");
    let run = run_upstream(implicit().as_mut(), &[vec![server.as_slice()]], 0);
    assert_eq!(
        run.events,
        vec![UpEv::Failed("upstream sent an overlong line".into())]
    );
    let server: &[u8] = b"* OK x\r\n* 1 FETCH (BODY[] {4294967295}\r\n";
    let run = run_upstream(implicit().as_mut(), &[vec![server]], 0);
    assert_eq!(
        run.events,
        vec![UpEv::Failed("upstream sent an oversized response".into())]
    );
}

#[test]
fn calls_out_of_order_fail_cleanly() {
    let mut m = ImapUpstream::new(false);
    let mut out = Vec::new();
    m.authenticate("a@b", &SecretString::from("t"), &mut out);
    assert!(out.is_empty());
    let mut input = BytesMut::from(&b"* OK [CAPABILITY AUTH=XOAUTH2] x\r\n"[..]);
    match m.step(&mut input, &mut out) {
        UpStep::Failed(why) => assert_eq!(why, "authenticate called before the upstream was ready"),
        other => panic!("{other:?}"),
    }
    let mut m = ImapUpstream::new(false);
    m.tls_started(&mut out);
    assert!(out.is_empty());
    assert!(matches!(m.step(&mut input, &mut out), UpStep::Failed(_)));
}

/// Capabilities remembered from an earlier session of the listener.
fn warm() -> Box<dyn UpstreamProtocol> {
    Box::new(ImapUpstream::new(false).with_known_capabilities(Some(exchange_caps())))
}

#[test]
fn remembered_capabilities_need_no_round_trip_before_authenticate() {
    // Only the greeting has arrived: a fresh machine must wait for its CAPABILITY answer, a
    // warm one is ready and sends CAPABILITY and AUTHENTICATE in the same write.
    let cold = run_upstream(implicit().as_mut(), &[vec![EXCHANGE_GREETING]], 1);
    assert_eq!(cold.sent(), "A0 CAPABILITY\r\n");
    assert!(cold.events.is_empty(), "{:?}", cold.events);
    let hot = run_upstream(warm().as_mut(), &[vec![EXCHANGE_GREETING]], 1);
    assert_eq!(
        hot.sent(),
        format!("A0 CAPABILITY\r\nA1 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\n")
    );
    assert_eq!(hot.events, vec![UpEv::Ready(exchange_caps())]);
    // Then the answers of both, in order: the CAPABILITY lines are not the client's.
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPS,
        b"A0 OK CAPABILITY completed.\r\nA1 OK AUTHENTICATE completed.\r\n* 3 EXISTS\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&warm, &[&server], 1);
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(exchange_caps()),
            UpEv::AuthOk {
                untagged: Vec::new(),
                text: "AUTHENTICATE completed.".into()
            }
        ]
    );
    assert_eq!(run.leftover, b"* 3 EXISTS\r\n");
    // A set without AUTH=XOAUTH2 is not used.
    let unusable = || -> Box<dyn UpstreamProtocol> {
        Box::new(ImapUpstream::new(false).with_known_capabilities(Some(caps("IMAP4rev1 SASL-IR"))))
    };
    let run = run_upstream(unusable().as_mut(), &[vec![EXCHANGE_GREETING]], 1);
    assert_eq!(run.sent(), "A0 CAPABILITY\r\n");
}

#[test]
fn an_upstream_that_dropped_sasl_ir_gets_the_continuation_form() {
    // Remembered: SASL-IR. Now: no SASL-IR, and the one-line form is refused with BAD. The
    // machine repeats AUTHENTICATE with a continuation; no token refresh is asked for.
    let server = [
        EXCHANGE_GREETING,
        b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 IDLE\r\nA0 OK CAPABILITY completed.\r\n",
        b"A1 BAD Command Argument Error. 12\r\n+ \r\nA2 OK AUTHENTICATE completed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&warm, &[&server], 1);
    assert_eq!(
        run.sent(),
        format!(
            "A0 CAPABILITY\r\nA1 AUTHENTICATE XOAUTH2 {MS_XOAUTH2}\r\nA2 AUTHENTICATE XOAUTH2\r\n{MS_XOAUTH2}\r\n"
        )
    );
    assert_eq!(
        run.events,
        vec![
            UpEv::Ready(exchange_caps()),
            UpEv::AuthOk {
                untagged: Vec::new(),
                text: "AUTHENTICATE completed.".into()
            }
        ]
    );
    let mut m = ImapUpstream::new(false).with_known_capabilities(Some(exchange_caps()));
    run_upstream(&mut m, &[vec![&server]], 1);
    assert_eq!(
        m.verified_capabilities(),
        Some(caps("IMAP4rev1 AUTH=XOAUTH2 IDLE"))
    );
}

#[test]
fn an_upstream_that_dropped_xoauth2_fails_as_a_fresh_session_would() {
    let server = [
        EXCHANGE_GREETING,
        b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\nA0 OK CAPABILITY completed.\r\n",
        b"A1 NO AUTHENTICATE failed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&warm, &[&server], 2);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::Failed("upstream does not offer AUTH=XOAUTH2".into()))
    );
    // A real refusal with unchanged capabilities stays a refusal (the driver refreshes).
    let server = [
        EXCHANGE_GREETING,
        EXCHANGE_CAPS,
        b"A0 OK CAPABILITY completed.\r\nA1 NO AUTHENTICATE failed.\r\n",
    ]
    .concat();
    let run = run_upstream_all_chunkings(&warm, &[&server], 1);
    assert_eq!(
        run.events.last(),
        Some(&UpEv::AuthRejected("AUTHENTICATE failed.".into()))
    );
}
