//! [`RelayMachine`] against scripted connectors: command lines, MAIL FROM forms and message
//! bodies, byte-exact on both sides.

use bytes::BytesMut;

use super::relay::{RelayEnd, RelayMachine, RelayOut, RelayStep, mail_from_address};
use crate::config::{Relay, SenderRule};
use crate::limits::ProtocolLimits;

/// What one run shows.
#[derive(Debug, Default)]
struct Run {
    to_client: String,
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
    let mut m = RelayMachine::new(settings, &ProtocolLimits::default());
    let mut client_in = BytesMut::from(client);
    let mut connector_in = BytesMut::new();
    let mut replies = replies.iter();
    let mut out = RelayOut::default();
    let mut run = Run::default();
    for _ in 0..10_000 {
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
            RelayStep::NeedClient => return run,
            RelayStep::NeedConnector => match replies.next() {
                Some(r) => connector_in.extend_from_slice(r.as_bytes()),
                None => return run,
            },
        }
    }
    panic!("the machine makes no progress: {run:?}");
}

/// A non-ASCII byte where `MAIL FROM:` is expected used to panic (a str sliced inside a
/// character); it is a syntax error and the session goes on.
#[test]
fn non_ascii_in_mail_from_is_a_syntax_error_not_a_panic() {
    assert_eq!(mail_from_address("MAIL FROMé:<a@b>".as_bytes()), None);
    assert_eq!(
        mail_from_address("MAIL FROM:<é@b>".as_bytes()).as_deref(),
        Some("é@b")
    );
    let run = play(
        relay(&[]),
        "MAIL FROMé:<a@b>\r\nNOOP\r\n".as_bytes(),
        &["250 2.0.0 OK\r\n"],
    );
    assert_eq!(
        run.to_client,
        "501 5.5.4 Syntax: MAIL FROM:<address>\r\n250 2.0.0 OK\r\n"
    );
    assert_eq!(run.to_connector, "NOOP\r\n");
    assert_eq!(run.end, None);
}
