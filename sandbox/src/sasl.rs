//! SASL XOAUTH2 as Exchange Online receives it, and the check every fake mail server shares.
//!
//! Wire form (FACTS.md "XOAUTH2 and Exchange Online"):
//! `base64("user=" mailbox "\x01auth=Bearer " token "\x01\x01")`.

use std::time::Instant;

use crate::Shared;
use crate::exchange::{TokenInfo, Verdict};
use crate::util::unb64;

/// Which fake server saw an authentication attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Proto {
    Smtp,
    Imap,
    Pop3,
}

/// A decoded XOAUTH2 initial response.
#[derive(Debug, PartialEq)]
pub(crate) struct XOAuth2 {
    pub user: String,
    pub token: String,
}

/// Decode the base64 XOAUTH2 blob; `None` if it is not base64 or lacks `user=` / `auth=Bearer`.
pub(crate) fn parse_xoauth2(b64: &[u8]) -> Option<XOAuth2> {
    let raw = unb64(b64)?;
    let text = String::from_utf8(raw).ok()?;
    let mut user = None;
    let mut token = None;
    for field in text.split('\x01') {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(a) = field.strip_prefix("auth=") {
            let (scheme, value) = a.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("Bearer") {
                token = Some(value.trim().to_string());
            }
        }
    }
    Some(XOAuth2 {
        user: user.filter(|u| !u.is_empty())?,
        token: token.filter(|t| !t.is_empty())?,
    })
}

/// Outcome of an XOAUTH2 attempt.
#[derive(Debug, PartialEq)]
pub(crate) enum AuthResult {
    /// Authenticated for this mailbox (lower-cased).
    Ok(String),
    /// Token valid, mailbox not accessible (IMAP: "authenticated but not connected").
    NoRights(String),
    /// SMTP AUTH disabled for the mailbox (`535 5.7.139`).
    SmtpAuthDisabled,
    Failed,
}

impl Shared {
    /// Check an XOAUTH2 blob and count the attempt.
    pub(crate) fn xoauth2(&self, proto: Proto, b64: &[u8]) -> AuthResult {
        self.xoauth2_with_token(proto, b64).0
    }

    /// [`Shared::xoauth2`], and the claims of a valid token (SMTP checks the sender with them
    /// after DATA).
    pub(crate) fn xoauth2_with_token(
        &self,
        proto: Proto,
        b64: &[u8],
    ) -> (AuthResult, Option<TokenInfo>) {
        let mut claims = None;
        let result = match parse_xoauth2(b64) {
            None => AuthResult::Failed,
            Some(x) => {
                let (info, app_may_open) = {
                    let entra = self.entra();
                    let info = entra.token_info(&x.token, Instant::now());
                    let may = info
                        .as_ref()
                        .is_some_and(|i| entra.app_may_open(&i.client_id, &x.user));
                    (info, may)
                };
                let user = x.user.to_ascii_lowercase();
                claims = info.clone();
                match info.map(|i| self.exchange().decide(&i, &user, proto, app_may_open)) {
                    None => AuthResult::Failed,
                    Some(Verdict::Granted) => AuthResult::Ok(user),
                    Some(Verdict::NoRights) => AuthResult::NoRights(user),
                    Some(Verdict::SmtpAuthDisabled) => AuthResult::SmtpAuthDisabled,
                    Some(Verdict::Refused(why)) => {
                        tracing::debug!(?proto, why, "sandbox XOAUTH2 refused by Exchange policy");
                        AuthResult::Failed
                    }
                }
            }
        };
        let ok = !matches!(result, AuthResult::Failed | AuthResult::SmtpAuthDisabled);
        let mut guard = crate::lock(&self.mail_auth);
        let c = &mut *guard;
        let counter = match (proto, ok) {
            (Proto::Smtp, true) => &mut c.smtp_ok,
            (Proto::Smtp, false) => &mut c.smtp_failed,
            (Proto::Imap, true) => &mut c.imap_ok,
            (Proto::Imap, false) => &mut c.imap_failed,
            (Proto::Pop3, true) => &mut c.pop3_ok,
            (Proto::Pop3, false) => &mut c.pop3_failed,
        };
        *counter += 1;
        drop(guard);
        tracing::debug!(?proto, ok, "sandbox XOAUTH2 attempt");
        (result, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_test_vector() {
        // Microsoft Learn, "Authenticate an IMAP, POP or SMTP connection using OAuth".
        let blob = b"dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";
        assert_eq!(
            parse_xoauth2(blob),
            Some(XOAuth2 {
                user: "test@contoso.onmicrosoft.com".into(),
                token: "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA".into()
            })
        );
        assert_eq!(parse_xoauth2(b"!!!"), None);
        assert_eq!(parse_xoauth2(b"dXNlcj0BAQ=="), None);
    }
}
