//! [`RelayMachine`] against scripted connectors: command lines, MAIL FROM forms and message
//! bodies, byte-exact on both sides.

use bytes::BytesMut;

use super::relay::{RelayEnd, RelayMachine, RelayOut, RelayStep};
use crate::config::{Relay, SenderRule};
use crate::limits::ProtocolLimits;

/// What one run shows.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    to_client: String,
    /// What the connector got; `|` marks where a connection was dropped, `+` where a new one
    /// was opened.
    to_connector: String,
    /// `None`: the client's bytes ran out (or the script did) with the session still open.
    end: Option<RelayEnd>,
}

fn relay(allowed_senders: &[&str]) -> Relay {
    Relay {
        require_login: true,
        allow_from: Vec::new(),
        allowed_senders: allowed_senders
            .iter()
            .map(|r| match r.strip_prefix('@') {
                Some(d) => SenderRule::Domain(d.to_string()),
                None => SenderRule::Address(r.to_string()),
            })
            .collect(),
    }
}

/// Feed `client` whole; answer every wait for the connector with the next of `replies` (each
/// one whole reply, CRLFs included). Stops when the client's bytes or the replies run out.
fn play(settings: Relay, client: &[u8], replies: &[&str]) -> Run {
    play_chunks(settings, &[client], replies, Ok(()))
}

/// [`play`] with the client's bytes in `chunks` (one read each), and `reconnect` as the outcome
/// of every reconnection.
fn play_chunks(
    settings: Relay,
    chunks: &[&[u8]],
    replies: &[&str],
    reconnect: Result<(), &str>,
) -> Run {
    let m = RelayMachine::new(settings, &ProtocolLimits::default());
    play_machine(m, chunks, replies, reconnect)
}

/// [`play_chunks`] with the machine given.
fn play_machine(
    mut m: RelayMachine,
    chunks: &[&[u8]],
    replies: &[&str],
    reconnect: Result<(), &str>,
) -> Run {
    let mut chunks = chunks.iter();
    let mut client_in = BytesMut::new();
    let mut connector_in = BytesMut::new();
    let mut replies = replies.iter();
    let mut out = RelayOut::default();
    let mut run = Run::default();
    for _ in 0..100_000 {
        let step = m.step(&mut client_in, &mut connector_in, &mut out);
        run.to_connector
            .push_str(&String::from_utf8_lossy(&out.to_connector));
        run.to_client
            .push_str(&String::from_utf8_lossy(&out.to_client));
        out.to_connector.clear();
        out.to_client.clear();
        match step {
            RelayStep::Continue => {}
            RelayStep::End(e) => {
                run.end = Some(e);
                return run;
            }
            RelayStep::NeedClient => match chunks.next() {
                Some(c) => client_in.extend_from_slice(c),
                None => return run,
            },
            RelayStep::NeedConnector => match replies.next() {
                Some(r) => connector_in.extend_from_slice(r.as_bytes()),
                None => return run,
            },
            RelayStep::DropConnector => {
                run.to_connector.push('|');
                connector_in.clear();
            }
            RelayStep::Reconnect => {
                run.to_connector.push('+');
                m.reconnected(reconnect.map_err(String::from), &mut out);
            }
        }
    }
    panic!("the machine makes no progress: {run:?}");
}

/// A non-ASCII byte where `MAIL FROM:` is expected used to panic (a str sliced inside a
/// character); it is a syntax error and the session goes on.
#[test]
fn non_ascii_in_mail_from_is_a_syntax_error_not_a_panic() {
    let run = play(
        relay(&[]),
        "MAIL FROMé:<a@b>\r\nNOOP\r\nMAIL FROM:<é@b>\r\n".as_bytes(),
        &["250 2.0.0 OK\r\n", "250 2.1.0 OK\r\n"],
    );
    assert_eq!(
        run.to_client,
        "501 5.5.4 Syntax: MAIL FROM:<address>\r\n250 2.0.0 OK\r\n250 2.1.0 OK\r\n"
    );
    assert_eq!(run.to_connector, "NOOP\r\nMAIL FROM:<é@b>\r\n");
    assert_eq!(run.end, None);
}

const POLICY: &[&str] = &["tickets@contoso.com", "@glpi.contoso.com"];

fn not_allowed(sender: &str) -> String {
    format!("550 5.7.1 Sender <{sender}> is not allowed to send through this relay\r\n")
}

const CONTROL: &str = "500 5.5.2 Syntax error: control character in command\r\n";
const UNRECOGNIZED: &str = "500 5.5.1 Command unrecognized\r\n";
const NOT_AVAILABLE: &str = "502 5.5.1 Command not available through this relay\r\n";

/// One client line against a connector that answers everything with 250: what the client gets
/// and what the connector gets (security issue items 2 and 3). An empty connector column means
/// nothing was forwarded.
#[test]
fn command_table() {
    let ok = "250 OK\r\n";
    let cases: Vec<(&[&str], &[u8], String, &str)> = vec![
        // Forwarded, each as a line rebuilt from what was parsed.
        (
            POLICY,
            b"EHLO glpi.contoso.com",
            ok.into(),
            "EHLO glpi.contoso.com\r\n",
        ),
        (
            POLICY,
            b"helo [127.0.0.1]",
            ok.into(),
            "HELO [127.0.0.1]\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com>",
            ok.into(),
            "MAIL FROM:<tickets@contoso.com>\r\n",
        ),
        (
            POLICY,
            b"mail from: <Tickets@Contoso.COM> size=10 body=8BITMIME",
            ok.into(),
            "MAIL FROM:<Tickets@Contoso.COM> SIZE=10 BODY=8BITMIME\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:tickets@contoso.com",
            ok.into(),
            "MAIL FROM:<tickets@contoso.com>\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:<noreply@glpi.contoso.com>",
            ok.into(),
            "MAIL FROM:<noreply@glpi.contoso.com>\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:<\"tickets\"@contoso.com>",
            ok.into(),
            "MAIL FROM:<tickets@contoso.com>\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:<\"john doe\"@glpi.contoso.com>",
            ok.into(),
            "MAIL FROM:<\"john doe\"@glpi.contoso.com>\r\n",
        ),
        (
            POLICY,
            b"MAIL FROM:<@relay.example,@b.example:tickets@contoso.com>",
            ok.into(),
            "MAIL FROM:<tickets@contoso.com>\r\n",
        ),
        (&[], b"MAIL FROM:<>", ok.into(), "MAIL FROM:<>\r\n"),
        (
            &[],
            b"MAIL FROM:<ceo@evil.example> AUTH=<>",
            ok.into(),
            "MAIL FROM:<ceo@evil.example> AUTH=<>\r\n",
        ),
        (
            POLICY,
            b"RCPT TO:<alerts@contoso.com> NOTIFY=FAILURE",
            ok.into(),
            "RCPT TO:<alerts@contoso.com> NOTIFY=FAILURE\r\n",
        ),
        (POLICY, b"rset", ok.into(), "RSET\r\n"),
        (POLICY, b"NOOP anything", ok.into(), "NOOP\r\n"),
        (POLICY, b"HELP MAIL", ok.into(), "HELP\r\n"),
        // Senders outside allowed_senders, however they are written.
        (
            POLICY,
            b"MAIL FROM:<ceo@evil.example>",
            not_allowed("ceo@evil.example"),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<CEO@Contoso.com>",
            not_allowed("ceo@contoso.com"),
            "",
        ),
        (POLICY, b"MAIL FROM:<>", not_allowed(""), ""),
        (
            &["@contoso.com"],
            b"MAIL FROM:<\"tickets@contoso.com>\"@evil.example>",
            not_allowed("\"tickets@contoso.com>\"@evil.example"),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<@contoso.com:ceo@evil.example>",
            not_allowed("ceo@evil.example"),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com@evil.example>",
            "501 5.1.7 Bad sender address syntax\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com> <ceo@evil.example>",
            "555 5.5.4 Unsupported or malformed MAIL parameter\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<@tickets@contoso.com:ceo@evil.example>",
            "501 5.1.7 Bad sender address syntax\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com> XFORWARD=1",
            "555 5.5.4 Unsupported or malformed MAIL parameter\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com> AUTH=ceo@contoso.com",
            "555 5.5.4 Unsupported or malformed MAIL parameter\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"MAIL TO:<tickets@contoso.com>",
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            "",
        ),
        // Unlisted verbs, and listed ones behind white space or a TAB.
        (
            POLICY,
            b" MAIL FROM:<ceo@evil.example>",
            UNRECOGNIZED.into(),
            "",
        ),
        (POLICY, b"MAIL\tFROM:<ceo@evil.example>", CONTROL.into(), ""),
        (
            POLICY,
            b"MAILFROM:<ceo@evil.example>",
            UNRECOGNIZED.into(),
            "",
        ),
        (
            POLICY,
            b"XCLIENT ADDR=192.0.2.1 NAME=trusted.contoso.com",
            NOT_AVAILABLE.into(),
            "",
        ),
        (
            POLICY,
            b"XFORWARD HELO=trusted.contoso.com",
            NOT_AVAILABLE.into(),
            "",
        ),
        (POLICY, b"VRFY ceo", NOT_AVAILABLE.into(), ""),
        (POLICY, b"EXPN staff", NOT_AVAILABLE.into(), ""),
        (POLICY, b"ETRN contoso.com", NOT_AVAILABLE.into(), ""),
        (POLICY, b"TURN", NOT_AVAILABLE.into(), ""),
        (
            POLICY,
            b"BDAT 5 LAST",
            "502 5.5.1 BDAT is not offered by this relay; use DATA\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"AUTH PLAIN AGEAYg==",
            "503 5.5.1 Already authenticated\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"STARTTLS",
            "503 5.5.1 TLS is handled by this relay; STARTTLS not available now\r\n".into(),
            "",
        ),
        (POLICY, b"", UNRECOGNIZED.into(), ""),
        // Control bytes, and bytes that are not UTF-8, anywhere in the line.
        (
            POLICY,
            b"NOOP\x00MAIL FROM:<ceo@evil.example>",
            CONTROL.into(),
            "",
        ),
        (
            POLICY,
            b"NOOP\rMAIL FROM:<ceo@evil.example>",
            CONTROL.into(),
            "",
        ),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com>\x1b",
            CONTROL.into(),
            "",
        ),
        (POLICY, b"RCPT TO:<a@contoso.com>\x7f", CONTROL.into(), ""),
        (
            POLICY,
            b"MAIL FROM:<tickets@contoso.com\xff>",
            "500 5.5.2 Syntax error: command is not UTF-8\r\n".into(),
            "",
        ),
        (
            POLICY,
            "MAIL FROMé:<a@b>".as_bytes(),
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            "",
        ),
        // Arguments where none belong, or a missing one.
        (POLICY, b"DATA now", "501 5.5.4 Syntax: DATA\r\n".into(), ""),
        (POLICY, b"QUIT x", "501 5.5.4 Syntax: QUIT\r\n".into(), ""),
        (
            POLICY,
            b"EHLO",
            "501 5.5.4 Syntax: EHLO hostname\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"EHLO two words",
            "501 5.5.4 Syntax: EHLO hostname\r\n".into(),
            "",
        ),
        (
            POLICY,
            "EHLO hôte".as_bytes(),
            "501 5.5.4 Syntax: EHLO hostname\r\n".into(),
            "",
        ),
        (
            POLICY,
            b"RCPT TO:<>",
            "501 5.1.3 Bad recipient address syntax\r\n".into(),
            "",
        ),
    ];
    for (policy, line, client, connector) in &cases {
        let mut input = line.to_vec();
        input.extend_from_slice(b"\r\n");
        let run = play(relay(policy), &input, &[ok]);
        let shown = String::from_utf8_lossy(line);
        assert_eq!(&run.to_client, client, "client reply to {shown:?}");
        assert_eq!(run.to_connector, *connector, "connector got for {shown:?}");
        assert_eq!(run.end, None, "{shown:?}");
    }
}

/// An overlong line is answered and dropped; nothing of it reaches the connector.
#[test]
fn overlong_line_is_refused_and_never_forwarded() {
    let mut line = b"MAIL FROM:<tickets@contoso.com> ENVID=".to_vec();
    line.extend_from_slice(&vec![b'A'; ProtocolLimits::default().line_max]);
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let run = play(relay(POLICY), &line, &["250 2.0.0 OK\r\n"]);
    assert_eq!(run.to_client, "500 5.5.6 Line too long\r\n250 2.0.0 OK\r\n");
    assert_eq!(run.to_connector, "NOOP\r\n");
}

/// Invalid commands count; after `bad_commands_max` of them the session ends with a 421.
/// Refused senders do not count: they are policy, not protocol errors.
#[test]
fn too_many_invalid_commands_close_the_session() {
    let max = ProtocolLimits::default().bad_commands_max as usize;
    let run = play(
        relay(POLICY),
        &b"XCLIENT ADDR=1.2.3.4\r\n".repeat(max + 5),
        &[],
    );
    let want =
        NOT_AVAILABLE.repeat(max) + "421 4.7.0 Too many invalid commands, closing connection\r\n";
    assert_eq!(run.to_client, want);
    assert_eq!(run.end, Some(RelayEnd::TooManyInvalidCommands));
    assert_eq!(run.to_connector, "");

    let run = play(
        relay(POLICY),
        &b"MAIL FROM:<ceo@evil.example>\r\n".repeat(max + 5),
        &[],
    );
    assert_eq!(run.end, None);
    assert_eq!(run.to_connector, "");
    assert_eq!(run.to_client.matches("550 5.7.1").count(), max + 5);
}

const SMUGGLED: &str = "MAIL FROM:<ceo@evil.example>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n";
const LF_REFUSED: &str =
    "550 5.6.11 Message refused: bare LF in the message body; every line must end in CRLF\r\n";
const CR_REFUSED: &str =
    "550 5.6.11 Message refused: bare CR in the message body; every line must end in CRLF\r\n";

/// The connector's replies to MAIL, RCPT and DATA.
const ENVELOPE_OK: [&str; 3] = ["250 2.1.0 OK\r\n", "250 2.1.5 OK\r\n", "354 go ahead\r\n"];

/// MAIL, RCPT, DATA and `body`, as a client sends them.
fn message(body: &str) -> String {
    format!("MAIL FROM:<tickets@contoso.com>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\n{body}")
}

const ENVELOPE_SENT: &str =
    "MAIL FROM:<tickets@contoso.com>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\n";

/// Security issue item 1 (SMTP smuggling): a body whose lines do not all end in CRLF is
/// refused with 550 5.6.11 after the client's `CRLF . CRLF`; the connector gets only a clean
/// prefix, then its connection is dropped, so neither the message nor the smuggled one behind
/// `\n.\r\n` / `\n.\n` is ever delivered; the session goes on.
#[test]
fn bodies_with_bare_cr_or_lf_are_refused_and_the_connector_dropped() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "Subject: x\r\n\r\nhello\n.\r\n",
            "Subject: x\r\n\r\nhello",
            LF_REFUSED,
        ),
        (
            "Subject: x\r\n\r\nhello\n.\n",
            "Subject: x\r\n\r\nhello",
            LF_REFUSED,
        ),
        (
            "Subject: x\r\n\r\nhello\r.\r",
            "Subject: x\r\n\r\nhello",
            CR_REFUSED,
        ),
        (
            "Subject: x\r\n\r\nhello\r\n.\n",
            "Subject: x\r\n\r\nhello\r\n.",
            LF_REFUSED,
        ),
        (
            "Subject: x\nBcc: ceo@contoso.com\r\n\r\nhi\r\n",
            "Subject: x",
            LF_REFUSED,
        ),
        ("\n", "", LF_REFUSED),
    ];
    for (body, passed, reply) in cases {
        let client = message(body) + SMUGGLED + "RSET\r\nQUIT\r\n";
        let run = play(relay(POLICY), client.as_bytes(), &ENVELOPE_OK);
        assert_eq!(
            run,
            Run {
                to_client: ENVELOPE_OK.concat() + reply + "250 2.0.0 OK\r\n221 2.0.0 Bye\r\n",
                to_connector: format!("{ENVELOPE_SENT}{passed}|"),
                end: Some(RelayEnd::Quit),
            },
            "{body:?}"
        );
    }
}

/// The refused body is read to the client's `CRLF . CRLF` and no further: a bare CR right
/// before it (`\r\r\n.\r\n`) does not hide the end, and `\n.\n` alone is not an end.
#[test]
fn a_refused_body_ends_only_at_crlf_dot_crlf() {
    let run = play(
        relay(POLICY),
        message("a\r\r\n.\r\nNOOP\r\n").as_bytes(),
        &ENVELOPE_OK,
    );
    assert_eq!(
        run.to_client,
        ENVELOPE_OK.concat() + CR_REFUSED + "250 2.0.0 OK\r\n"
    );
    let run = play(
        relay(POLICY),
        message("a\n.\nNOOP\n").as_bytes(),
        &ENVELOPE_OK,
    );
    assert_eq!(
        run.to_client,
        ENVELOPE_OK.concat(),
        "still inside the refused body"
    );
    assert_eq!(run.to_connector, format!("{ENVELOPE_SENT}a|"));
    assert_eq!(run.end, None);
}

/// After a refused body the next command that needs the connector opens a new connection
/// first; a clean message then goes through, CRLF line ends and dot-stuffing untouched.
#[test]
fn after_a_refused_body_the_next_message_goes_to_a_new_connection() {
    let clean = "Subject: ok\r\n\r\n..dot\r\nbody\r\n.\r\n";
    let client = message("x\n.\r\n") + SMUGGLED + &message(clean) + "QUIT\r\n";
    let replies = [
        ENVELOPE_OK.as_slice(),
        &ENVELOPE_OK,
        &["250 2.0.0 queued\r\n", "221 2.0.0 Bye\r\n"],
    ]
    .concat();
    let run = play(relay(POLICY), client.as_bytes(), &replies);
    assert_eq!(
        run.to_connector,
        format!("{ENVELOPE_SENT}x|+{ENVELOPE_SENT}{clean}QUIT\r\n")
    );
    assert_eq!(
        run.to_client,
        ENVELOPE_OK.concat()
            + LF_REFUSED
            + &ENVELOPE_OK.concat()
            + "250 2.0.0 queued\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(run.end, Some(RelayEnd::Quit));

    // No new connection to be had: 421 and the session ends.
    let client = message("x\n.\r\n") + SMUGGLED + &message(clean);
    let run = play_chunks(
        relay(POLICY),
        &[client.as_bytes()],
        &ENVELOPE_OK,
        Err("connection refused"),
    );
    assert_eq!(
        run.to_client,
        ENVELOPE_OK.concat()
            + LF_REFUSED
            + "421 4.4.2 The connector is unavailable, closing connection\r\n"
    );
    assert_eq!(run.to_connector, format!("{ENVELOPE_SENT}x|+"));
    assert!(
        matches!(&run.end, Some(RelayEnd::Error(e)) if e.contains("connection refused")),
        "{:?}",
        run.end
    );
}

/// Any chunking of the client's bytes gives the same result, refused body or not.
#[test]
fn bodies_in_any_chunking() {
    let client =
        message("Subject: x\r\n\r\nhello\n.\r\n") + SMUGGLED + &message("ok\r\n.\r\n") + "QUIT\r\n";
    let replies = [
        ENVELOPE_OK.as_slice(),
        &ENVELOPE_OK,
        &["250 2.0.0 queued\r\n", "221 2.0.0 Bye\r\n"],
    ]
    .concat();
    let whole = play(relay(POLICY), client.as_bytes(), &replies);
    assert_eq!(whole.end, Some(RelayEnd::Quit));
    let bytes = client.as_bytes();
    for split in 0..=bytes.len() {
        let (a, b) = bytes.split_at(split);
        let run = play_chunks(relay(POLICY), &[a, b], &replies, Ok(()));
        assert_eq!(run, whole, "split at {split}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        play_chunks(relay(POLICY), &singles, &replies, Ok(())),
        whole
    );
}

/// Each refused body counts as an invalid command, so reconnecting has a bound.
#[test]
fn refused_bodies_count_toward_the_limit() {
    let max = ProtocolLimits::default().bad_commands_max as usize;
    let one = message("x\n.\r\n") + "\r\n.\r\n";
    let client = one.repeat(max + 2);
    let replies: Vec<&str> = ENVELOPE_OK
        .iter()
        .copied()
        .cycle()
        .take(3 * (max + 2))
        .collect();
    let run = play(relay(POLICY), client.as_bytes(), &replies);
    assert_eq!(run.to_client.matches("550 5.6.11").count(), max);
    assert!(
        run.to_client
            .ends_with("421 4.7.0 Too many invalid commands, closing connection\r\n")
    );
    assert_eq!(run.end, Some(RelayEnd::TooManyInvalidCommands));
    assert_eq!(run.to_connector.matches('+').count(), max);
}

/// A machine without a connection yet (a relay with `upstream.auth`, client without a local
/// login): what the client can do without costing a provider login, and the one command that
/// opens the connection. `+` in the connector column marks the connection being opened; an
/// empty column, that none was.
#[test]
fn unconnected_start_connects_only_for_a_command_the_connector_must_answer() {
    const SEQ: &str = "503 5.5.1 Bad sequence of commands: MAIL FROM first\r\n";
    /// Client bytes, connector replies, what the client gets, what the connector gets, end.
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a str, Option<RelayEnd>);
    let table: &[Case] = &[
        (
            "QUIT\r\n",
            &[],
            "221 2.0.0 Bye\r\n",
            "",
            Some(RelayEnd::Quit),
        ),
        (
            "NOOP\r\nRSET\r\nNOOP x\r\n",
            &[],
            "250 2.0.0 OK\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n",
            "",
            None,
        ),
        // Out of sequence without a MAIL FROM the connector accepted.
        (
            "RCPT TO:<alerts@contoso.com>\r\nDATA\r\n",
            &[],
            &[SEQ, SEQ].concat(),
            "",
            None,
        ),
        // A sender outside allowed_senders is refused here; no connection for it.
        (
            "MAIL FROM:<ceo@evil.example>\r\nMAIL FROM:<>\r\n",
            &[],
            &[not_allowed("ceo@evil.example"), not_allowed("")].concat(),
            "",
            None,
        ),
        // Refused commands stay local too.
        (
            "VRFY root\r\nAUTH PLAIN\r\nSTARTTLS\r\n",
            &[],
            concat!(
                "502 5.5.1 Command not available through this relay\r\n",
                "503 5.5.1 Already authenticated\r\n",
                "503 5.5.1 TLS is handled by this relay; STARTTLS not available now\r\n"
            ),
            "",
            None,
        ),
        // The first allowed MAIL FROM opens the connection, once; the message follows.
        (
            "NOOP\r\nMAIL FROM:<tickets@contoso.com>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
            &[
                "250 2.1.0 OK\r\n",
                "250 2.1.5 OK\r\n",
                "354 go ahead\r\n",
                "250 2.0.0 queued\r\n",
                "221 2.0.0 Bye\r\n",
            ],
            "250 2.0.0 OK\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go ahead\r\n250 2.0.0 queued\r\n221 2.0.0 Bye\r\n",
            &format!("+{ENVELOPE_SENT}hi\r\n.\r\nQUIT\r\n"),
            Some(RelayEnd::Quit),
        ),
        // A command whose answer only the connector has opens it too.
        (
            "EHLO glpi\r\n",
            &["250 relay.example\r\n"],
            "250 relay.example\r\n",
            "+EHLO glpi\r\n",
            None,
        ),
    ];
    for (client, replies, to_client, to_connector, end) in table {
        let m = RelayMachine::unconnected(relay(POLICY), &ProtocolLimits::default());
        let run = play_machine(m, &[client.as_bytes()], replies, Ok(()));
        assert_eq!(run.to_client, *to_client, "{client:?}");
        assert_eq!(run.to_connector, *to_connector, "{client:?}");
        assert_eq!(run.end, *end, "{client:?}");
    }

    // The connection cannot be had (the provider refused the relay's login): 421 with the
    // reason, and the session ends; nothing was sent.
    let m = RelayMachine::unconnected(relay(POLICY), &ProtocolLimits::default());
    let run = play_machine(
        m,
        &[b"MAIL FROM:<tickets@contoso.com>\r\nRCPT TO:<alerts@contoso.com>\r\n"],
        &[],
        Err("upstream 127.0.0.1:1 relay_auth: refused\r\nyes"),
    );
    assert_eq!(
        run.to_client,
        "421 4.4.2 Relay connector unavailable: upstream 127.0.0.1:1 relay_auth: refused  yes\r\n"
    );
    assert_eq!(run.to_connector, "+");
    assert!(
        matches!(&run.end, Some(RelayEnd::Error(e)) if e.contains("relay_auth")),
        "{:?}",
        run.end
    );
}

/// `reconnected` outside a reconnect changes nothing.
#[test]
fn reconnected_when_not_asked_changes_nothing() {
    let mut m = RelayMachine::new(relay(POLICY), &ProtocolLimits::default());
    let mut out = RelayOut::default();
    let (mut client, mut connector) = (BytesMut::from(&b"DATA\r\n"[..]), BytesMut::new());
    assert_eq!(
        m.step(&mut client, &mut connector, &mut out),
        RelayStep::Continue
    );
    m.reconnected(Ok(()), &mut out);
    m.reconnected(Err("x".into()), &mut out);
    assert_eq!(out.to_connector, b"DATA\r\n");
    assert!(out.to_client.is_empty());
    connector.extend_from_slice(b"354 go ahead\r\n");
    assert_eq!(
        m.step(&mut client, &mut connector, &mut out),
        RelayStep::Continue
    );
    assert_eq!(out.to_client, b"354 go ahead\r\n");
}

mod upstream_auth {
    //! [`RelayAuth`] against scripted providers: the lines it sends (the secrets in them
    //! decoded for the check) and how each final reply is sorted.

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::BytesMut;

    use crate::protocol::smtp::relay_auth::{Mechanism, RelayAuth, RelayAuthStep, advertised};
    use crate::secret::SecretString;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Start with `offered` and `wanted`, answer every wait with the next of `replies`;
    /// returns what was sent (one line per write) and the final step.
    fn exchange(
        offered: &[&str],
        wanted: Option<Mechanism>,
        replies: &[&str],
    ) -> Result<(Vec<String>, RelayAuthStep), String> {
        let user = SecretString::from("relay-user");
        let pass = SecretString::from("pä ss:wörd");
        let mut out = Vec::new();
        let mut m = RelayAuth::start(&caps(offered), &user, &pass, wanted, &mut out)?;
        let mut sent = vec![String::from_utf8(std::mem::take(&mut out)).unwrap()];
        let mut input = BytesMut::new();
        let mut replies = replies.iter();
        loop {
            match m.step(&mut input, &mut out) {
                RelayAuthStep::NeedInput if out.is_empty() => match replies.next() {
                    Some(r) => input.extend_from_slice(r.as_bytes()),
                    None => return Ok((sent, RelayAuthStep::NeedInput)),
                },
                RelayAuthStep::NeedInput => {
                    sent.push(String::from_utf8(std::mem::take(&mut out)).unwrap());
                }
                done => return Ok((sent, done)),
            }
        }
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn advertised_mechanisms_in_both_forms() {
        assert_eq!(
            advertised(&caps(&[
                "SIZE 1",
                "AUTH PLAIN LOGIN",
                "AUTH=LOGIN CRAM-MD5"
            ])),
            ["PLAIN", "LOGIN", "CRAM-MD5"]
        );
        assert!(advertised(&caps(&["SIZE 1", "AUTHX PLAIN", "8BITMIME"])).is_empty());
    }

    #[test]
    fn plain_sends_one_line_and_takes_235() {
        let (sent, end) = exchange(
            &["AUTH LOGIN PLAIN"],
            None,
            &["235 2.7.0 Authentication successful\r\n"],
        )
        .unwrap();
        assert_eq!(
            sent,
            [format!(
                "AUTH PLAIN {}\r\n",
                b64("\0relay-user\0pä ss:wörd")
            )]
        );
        assert_eq!(end, RelayAuthStep::Authenticated);
    }

    #[test]
    fn login_answers_both_prompts() {
        let (sent, end) = exchange(
            &["AUTH LOGIN PLAIN"],
            Some(Mechanism::Login),
            &[
                "334 VXNlcm5hbWU6\r\n",
                "334 UGFzc3dvcmQ6\r\n",
                "235 2.7.0 Authentication successful\r\n",
            ],
        )
        .unwrap();
        assert_eq!(
            sent,
            [
                "AUTH LOGIN\r\n".to_string(),
                format!("{}\r\n", b64("relay-user")),
                format!("{}\r\n", b64("pä ss:wörd")),
            ]
        );
        assert_eq!(end, RelayAuthStep::Authenticated);
        // No mechanism asked for and no PLAIN offered: LOGIN.
        let (sent, _) = exchange(&["AUTH=LOGIN"], None, &[]).unwrap();
        assert_eq!(sent, ["AUTH LOGIN\r\n"]);
    }

    #[test]
    fn final_replies_are_sorted() {
        let cases = [
            (
                "535 5.7.8 Authentication credentials invalid\r\n",
                RelayAuthStep::Refused("535 5.7.8 Authentication credentials invalid".into()),
            ),
            (
                "454 4.7.0 Temporary authentication failure\r\n",
                RelayAuthStep::Temporary("454 4.7.0 Temporary authentication failure".into()),
            ),
            (
                "535-5.7.8 Username and Password\r\n535 5.7.8 not accepted\r\n",
                RelayAuthStep::Refused("535 5.7.8 Username and Password 5.7.8 not accepted".into()),
            ),
        ];
        for (reply, want) in cases {
            let (_, end) = exchange(&["AUTH PLAIN"], None, &[reply]).unwrap();
            assert_eq!(end, want, "{reply:?}");
        }
        // A challenge after PLAIN's initial response, a third LOGIN prompt, a 2xx other than
        // 235 and garbage end the exchange.
        for (mech, replies) in [
            (Mechanism::Plain, &["334 \r\n"][..]),
            (
                Mechanism::Login,
                &[
                    "334 VXNlcm5hbWU6\r\n",
                    "334 UGFzc3dvcmQ6\r\n",
                    "334 again\r\n",
                ][..],
            ),
            (Mechanism::Plain, &["250 2.0.0 OK\r\n"][..]),
            (Mechanism::Plain, &["hello\r\n"][..]),
        ] {
            let (_, end) = exchange(&["AUTH PLAIN LOGIN"], Some(mech), replies).unwrap();
            assert!(
                matches!(end, RelayAuthStep::Failed(_)),
                "{replies:?}: {end:?}"
            );
        }
    }

    /// A mechanism the provider does not advertise is not tried: the error says what it offers.
    #[test]
    fn unadvertised_mechanisms_are_refused_before_sending() {
        let e = exchange(&["AUTH CRAM-MD5"], None, &[]).unwrap_err();
        assert!(
            e.contains("does not offer AUTH PLAIN or LOGIN (it offers CRAM-MD5)"),
            "{e}"
        );
        let e = exchange(&["AUTH LOGIN"], Some(Mechanism::Plain), &[]).unwrap_err();
        assert!(
            e.contains("does not offer AUTH PLAIN (it offers LOGIN)"),
            "{e}"
        );
        let e = exchange(&["SIZE 1000"], None, &[]).unwrap_err();
        assert!(e.contains("does not offer AUTH at all"), "{e}");
    }

    /// The replies may arrive in any chunking: the same lines go out, the same end comes.
    #[test]
    fn split_replies_give_the_same_result() {
        let script = "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 OK\r\n";
        let whole = {
            let user = SecretString::from("u");
            let pass = SecretString::from("p");
            let mut out = Vec::new();
            let mut m =
                RelayAuth::start(&caps(&["AUTH LOGIN"]), &user, &pass, None, &mut out).unwrap();
            let mut input = BytesMut::new();
            let mut end = None;
            // One byte at a time: at most one reply completes per byte.
            for b in script.bytes() {
                input.extend_from_slice(&[b]);
                match m.step(&mut input, &mut out) {
                    RelayAuthStep::NeedInput => {}
                    done => {
                        end = Some(done);
                        break;
                    }
                }
            }
            (String::from_utf8(out).unwrap(), end)
        };
        assert_eq!(
            whole,
            (
                format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64("u"), b64("p")),
                Some(RelayAuthStep::Authenticated)
            )
        );
    }
}
