//! XOAUTH2 encoding toward the upstream (Microsoft Learn, "Authenticate an IMAP, POP or SMTP
//! connection using OAuth"): the blob is one base64 line that decodes to exactly
//! `user=<mailbox>\x01auth=Bearer <token>\x01\x01`, and splits back into mailbox and token.
#![no_main]

use authbridge::protocol::sasl::{decode_response, xoauth2};
use authbridge::secret::SecretString;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mailbox, token) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mailbox = String::from_utf8_lossy(mailbox).into_owned();
    let token = String::from_utf8_lossy(token).into_owned();
    let blob = xoauth2(&mailbox, &SecretString::new(token.clone()));
    let blob = blob.expose();
    // One line of base64 alphabet: safe to put after `AUTH XOAUTH2 ` or alone on a line.
    assert!(
        blob.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    );
    let raw = STANDARD.decode(blob).expect("valid base64");
    assert_eq!(
        raw,
        format!("user={mailbox}\x01auth=Bearer {token}\x01\x01").into_bytes()
    );
    // Our own SASL decoder reads it back.
    assert_eq!(decode_response(blob.as_bytes()).unwrap(), raw);
    // Decoding round trip: mailbox and token come back when they hold no \x01.
    if !mailbox.contains('\x01') && !token.contains('\x01') {
        let fields: Vec<&[u8]> = raw.split(|b| *b == 1).collect();
        assert_eq!(fields.len(), 4);
        assert_eq!(
            fields[0].strip_prefix(b"user=").unwrap(),
            mailbox.as_bytes()
        );
        assert_eq!(
            fields[1].strip_prefix(b"auth=Bearer ").unwrap(),
            token.as_bytes()
        );
        assert!(fields[2].is_empty() && fields[3].is_empty());
    }
});
