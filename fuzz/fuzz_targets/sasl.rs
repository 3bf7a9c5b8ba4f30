//! SASL PLAIN (RFC 4616) and LOGIN decoding for local logins: base64 responses (with `*`
//! cancel and `=` empty), and the PLAIN message, against a model of the spec; encode-then-decode
//! round trips.
#![no_main]

use authbridge::protocol::sasl::{SaslError, decode_plain, decode_response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any line: never panics; what decodes re-encodes to a line that decodes the same.
    if let Ok(bytes) = decode_response(data) {
        let again = STANDARD.encode(&bytes);
        let again = if again.is_empty() {
            "=".to_string()
        } else {
            again
        };
        assert_eq!(decode_response(again.as_bytes()).unwrap(), bytes);
    }
    // LOGIN: the base64 of any user name or password decodes to it, with spaces around too.
    let enc = STANDARD.encode(data);
    if !data.is_empty() {
        assert_eq!(decode_response(enc.as_bytes()).unwrap(), data);
        assert_eq!(
            decode_response(format!(" {enc}  ").as_bytes()).unwrap(),
            data
        );
    }
    assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));

    // PLAIN: `data` as the decoded message, against the RFC 4616 model.
    let mut parts = data.splitn(3, |b| *b == 0);
    let (authzid, authcid, passwd) = (parts.next(), parts.next(), parts.next());
    let got = decode_plain(data);
    match (authzid, authcid, passwd) {
        (Some(z), Some(c), Some(p)) if !c.is_empty() && !p.contains(&0) => {
            if z.is_empty() || z == c {
                let creds = got.expect("a valid PLAIN message");
                assert_eq!(creds.username, String::from_utf8_lossy(c));
                assert_eq!(creds.password.expose().as_slice(), p);
            } else {
                assert_eq!(got.err(), Some(SaslError::AuthzidMismatch));
            }
        }
        _ => assert_eq!(got.err(), Some(SaslError::BadPlain)),
    }
    // And through base64, as a client sends it.
    let via = decode_response(enc.as_bytes()).and_then(|d| decode_plain(&d));
    assert_eq!(via.is_ok(), decode_plain(data).is_ok());
});
