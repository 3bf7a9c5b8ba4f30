//! SASL pieces shared by SMTP, IMAP and POP3: PLAIN and LOGIN decoding (RFC 4616, the LOGIN
//! draft) for local logins, and XOAUTH2 encoding for the upstream.
//!
//! Every intermediate buffer that holds a password or a token (the decoded PLAIN message, the
//! clear XOAUTH2 string) is [`Zeroizing`] and allocated once at its final size, so no copy is
//! left behind in freed memory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::secret::{SecretBytes, SecretString};

/// `334 VXNlcm5hbWU6` / `+ VXNlcm5hbWU6`: base64 of "Username:".
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
/// base64 of "Password:".
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Why a SASL response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64 in SASL response")]
    BadBase64,
    #[error("malformed SASL PLAIN response: expected authzid NUL authcid NUL password")]
    BadPlain,
    #[error("SASL PLAIN authorization identity must be empty or equal to the user name")]
    AuthzidMismatch,
    #[error("authentication cancelled by the client")]
    Cancelled,
}

/// Decode one base64 SASL response line. `*` is the client's cancel (RFC 4954 §4,
/// RFC 3501 §6.2.2). Whitespace around the value is ignored. The bytes are the caller's to
/// protect: a password goes straight into a [`SecretBytes`] (moved, not copied).
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    decode_secret_response(line).map(|mut bytes| std::mem::take(&mut *bytes))
}

/// [`decode_response`] into a buffer that is zeroed on drop (decoded in one allocation).
pub fn decode_secret_response(line: &[u8]) -> Result<Zeroizing<Vec<u8>>, SaslError> {
    let line = line.trim_ascii();
    if line == b"*" {
        return Err(SaslError::Cancelled);
    }
    if line == b"=" {
        // RFC 4954: "=" is an empty initial response.
        return Ok(Zeroizing::new(Vec::new()));
    }
    let mut out = Zeroizing::new(Vec::new());
    STANDARD
        .decode_vec(line, &mut out)
        .map_err(|_| SaslError::BadBase64)?;
    Ok(out)
}

/// A base64 PLAIN response line (RFC 4616 §2) decoded into credentials; the decoded message,
/// which holds the password, is zeroed before this returns.
pub fn decode_plain_response(line: &[u8]) -> Result<PlainCredentials, SaslError> {
    decode_plain(&decode_secret_response(line)?)
}

/// A decoded PLAIN response.
#[derive(Debug)]
pub struct PlainCredentials {
    pub username: String,
    pub password: SecretBytes,
}

/// Decode the PLAIN message `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). An authzid is
/// accepted only when empty or equal to the authcid (Symfony Mailer sends the user name there).
pub fn decode_plain(decoded: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut parts = decoded.splitn(3, |b| *b == 0);
    let authzid = parts.next().ok_or(SaslError::BadPlain)?;
    let authcid = parts.next().ok_or(SaslError::BadPlain)?;
    let passwd = parts.next().ok_or(SaslError::BadPlain)?;
    if authcid.is_empty() || passwd.contains(&0) {
        return Err(SaslError::BadPlain);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(PlainCredentials {
        username: String::from_utf8_lossy(authcid).into_owned(),
        password: SecretBytes::new(passwd.to_vec()),
    })
}

/// Base64 of the XOAUTH2 initial response:
/// `user=<mailbox>\x01auth=Bearer <token>\x01\x01` (Microsoft Learn, "Authenticate an IMAP, POP or
/// SMTP connection using OAuth").
pub fn xoauth2(mailbox: &str, token: &SecretString) -> SecretString {
    let mut raw = Zeroizing::new(Vec::with_capacity(xoauth2_raw_len(mailbox, token)));
    raw.extend_from_slice(b"user=");
    raw.extend_from_slice(mailbox.as_bytes());
    raw.extend_from_slice(b"\x01auth=Bearer ");
    raw.extend_from_slice(token.expose().as_bytes());
    raw.extend_from_slice(b"\x01\x01");
    debug_assert_eq!(raw.len(), raw.capacity(), "one allocation, never grown");
    // `encode` sizes its output exactly: one allocation, moved into the secret.
    SecretString::new(STANDARD.encode(&*raw))
}

/// The length of [`xoauth2`]'s base64 output, so that a buffer the line is written into can be
/// allocated once at its final size (growing it would leave a copy behind in freed memory).
pub fn xoauth2_len(mailbox: &str, token: &SecretString) -> usize {
    xoauth2_raw_len(mailbox, token).div_ceil(3) * 4
}

fn xoauth2_raw_len(mailbox: &str, token: &SecretString) -> usize {
    "user=\x01auth=Bearer \x01\x01".len() + mailbox.len() + token.expose().len()
}

/// Best-effort decode of an error challenge (Google and Dovecot send base64 JSON) for logs.
pub fn decode_error_challenge(challenge: &[u8]) -> String {
    match STANDARD.decode(challenge.trim_ascii()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::from_utf8_lossy(challenge).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_matches_the_microsoft_test_vector() {
        let token = SecretString::from("EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
        assert_eq!(
            xoauth2("test@contoso.onmicrosoft.com", &token).expose(),
            "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
        );
    }

    #[test]
    fn plain_forms() {
        let c = decode_plain(b"\0glpi\0pa ss").unwrap();
        assert_eq!(c.username, "glpi");
        assert_eq!(c.password.expose(), b"pa ss");
        let c = decode_plain(b"glpi\0glpi\0x").unwrap();
        assert_eq!(c.username, "glpi");
        assert_eq!(
            decode_plain(b"admin\0glpi\0x").unwrap_err(),
            SaslError::AuthzidMismatch
        );
        assert_eq!(decode_plain(b"glpi\0x").unwrap_err(), SaslError::BadPlain);
        assert_eq!(decode_plain(b"\0\0x").unwrap_err(), SaslError::BadPlain);
        assert_eq!(decode_plain(b"\0u\0p\0q").unwrap_err(), SaslError::BadPlain);
        // an empty password is syntactically fine; the credential check refuses it
        assert!(decode_plain(b"\0u\0").is_ok());
    }

    #[test]
    fn buffers_that_hold_a_password_or_token_are_zeroizing() {
        // The decoded PLAIN message (authzid NUL authcid NUL password) is zeroed on drop.
        let blob: Zeroizing<Vec<u8>> = decode_secret_response(b"AGdscGkAaHVudGVyMg==").unwrap();
        assert_eq!(&blob[..], b"\0glpi\0hunter2");
        let c = decode_plain_response(b"AGdscGkAaHVudGVyMg==").unwrap();
        assert_eq!(
            (c.username.as_str(), &c.password.expose()[..]),
            ("glpi", &b"hunter2"[..])
        );
        assert_eq!(
            decode_plain_response(b"*").unwrap_err(),
            SaslError::Cancelled
        );
        // The XOAUTH2 line's length is known before it is built (a buffer is sized once).
        for (mailbox, token) in [
            ("a@b", ""),
            ("test@contoso.onmicrosoft.com", "EwB"),
            ("", "x"),
        ] {
            let token = SecretString::from(token);
            assert_eq!(
                xoauth2(mailbox, &token).expose().len(),
                xoauth2_len(mailbox, &token)
            );
        }
    }

    #[test]
    fn responses() {
        assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));
        assert_eq!(decode_response(b"="), Ok(vec![]));
        assert_eq!(decode_response(b"Z2xwaQ=="), Ok(b"glpi".to_vec()));
        assert_eq!(decode_response(b"Z2xwaQ== "), Ok(b"glpi".to_vec()));
        assert_eq!(decode_response(b"not base64!"), Err(SaslError::BadBase64));
    }
}
