//! Exchange Online's side of an XOAUTH2 login: what the mail servers check after the fake Entra
//! has vouched for the token, and the per-mailbox and per-app settings an admin gets wrong.
//!
//! Order of the checks, as Exchange applies them (the reply each failure gets is chosen by the
//! protocol server; this module only says which failure it is):
//! 1. audience: `https://outlook.office.com` or `https://outlook.office365.com` (a Graph token is
//!    refused like a bad token);
//! 2. permission for the protocol: delegated `scp` (IMAP.AccessAsUser.All, POP.AccessAsUser.All,
//!    SMTP.Send) or app-only `roles` (IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp);
//! 3. app-only: the app's service principal is registered in Exchange (`New-ServicePrincipal`);
//! 4. the protocol is enabled on the mailbox (`Set-CASMailbox -ImapEnabled/-PopEnabled`,
//!    `-SmtpClientAuthenticationDisabled`);
//! 5. the token may open that mailbox ([`Exchange::may_open`]: its own user, or FullAccess
//!    granted with `Add-MailboxPermission` to the signed-in user or to the app): if not, IMAP
//!    and POP3 accept the login and fail every later command ("authenticated but not
//!    connected"), SMTP answers `535 5.7.3`.
//!
//! Sending: the message's sender must be one the token may send as ([`Exchange::may_send_as`]:
//! its own mailbox, or SendAs granted with `Add-RecipientPermission`), else `554 5.2.252
//! SendAsDenied` after DATA. A shared mailbox has no sign-in of its own: a delegate reads it
//! with `user=<shared mailbox>` and FullAccess, and sends as it with SendAs.

use std::collections::{HashMap, HashSet};

use crate::sasl::Proto;

/// Audiences Exchange Online accepts.
pub(crate) const EXCHANGE_AUDIENCES: [&str; 2] = [
    "https://outlook.office.com",
    "https://outlook.office365.com",
];

/// What a valid access token says about itself (the claims Exchange looks at).
#[derive(Clone, Debug)]
pub(crate) struct TokenInfo {
    /// The signed-in user (delegated) or `None` (app-only).
    pub user: Option<String>,
    pub client_id: String,
    pub aud: String,
    /// Delegated permissions (short names, e.g. `IMAP.AccessAsUser.All`).
    pub scp: Vec<String>,
    /// Application permissions with admin consent (e.g. `IMAP.AccessAsApp`).
    pub roles: Vec<String>,
}

/// A mailbox's client-access settings (Exchange `Set-CASMailbox`). Default: everything on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxSettings {
    /// `SmtpClientAuthenticationDisabled $true`: `535 5.7.139 … SmtpClientAuthentication is
    /// disabled for the Mailbox.`
    pub smtp_auth_disabled: bool,
    /// `ImapEnabled $false`: `NO AUTHENTICATE failed.`
    pub imap_disabled: bool,
    /// `PopEnabled $false`: `-ERR Authentication failure: …`
    pub pop_disabled: bool,
    /// The authenticated identity has no SendAs right on this mailbox: `554 5.2.252
    /// SendAsDenied` after DATA even when the sender is the mailbox itself.
    pub send_as_denied: bool,
}

/// Exchange-side state an admin configures.
#[derive(Default)]
pub(crate) struct Exchange {
    mailboxes: HashMap<String, MailboxSettings>,
    /// Apps whose service principal was never registered with `New-ServicePrincipal`.
    unregistered_apps: HashSet<String>,
    /// `Add-MailboxPermission -Identity <mailbox> -User <trustee> -AccessRights FullAccess`:
    /// (mailbox, trustee) pairs, lower-cased; a trustee is a user's mailbox or an app's client id.
    full_access: HashSet<(String, String)>,
    /// `Add-RecipientPermission -Identity <mailbox> -Trustee <trustee> -AccessRights SendAs`.
    send_as: HashSet<(String, String)>,
    /// Application Access Policies (`New-ApplicationAccessPolicy -AccessRight RestrictAccess`):
    /// an app listed here may use Graph only on these mailboxes; an app not listed, on all.
    app_access_policies: HashMap<String, HashSet<String>>,
}

/// A mailbox right Exchange grants to a trustee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxRight {
    /// `Add-MailboxPermission … -AccessRights FullAccess`: open the mailbox (IMAP, POP3).
    FullAccess,
    /// `Add-RecipientPermission … -AccessRights SendAs`: send with the mailbox as sender.
    SendAs,
}

/// Exchange's verdict on an XOAUTH2 login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Logged in to this mailbox.
    Granted,
    /// Token accepted, mailbox not accessible ("authenticated but not connected").
    NoRights,
    /// Refused like a bad token (wrong audience or scope, no service principal, protocol off).
    Refused(&'static str),
    /// SMTP AUTH is disabled for the mailbox (`535 5.7.139`).
    SmtpAuthDisabled,
}

fn lower(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

impl Exchange {
    pub(crate) fn mailbox(&self, mailbox: &str) -> MailboxSettings {
        self.mailboxes
            .get(&lower(mailbox))
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn set_mailbox(&mut self, mailbox: &str, settings: MailboxSettings) {
        self.mailboxes.insert(lower(mailbox), settings);
    }

    pub(crate) fn set_service_principal(&mut self, client_id: &str, registered: bool) {
        if registered {
            self.unregistered_apps.remove(&lower(client_id));
        } else {
            self.unregistered_apps.insert(lower(client_id));
        }
    }

    /// Grant (or take back) `right` on `mailbox` to `trustee` (a user's mailbox or an app's
    /// client id).
    pub(crate) fn set_right(
        &mut self,
        mailbox: &str,
        trustee: &str,
        right: MailboxRight,
        granted: bool,
    ) {
        let set = match right {
            MailboxRight::FullAccess => &mut self.full_access,
            MailboxRight::SendAs => &mut self.send_as,
        };
        let key = (lower(mailbox), lower(trustee));
        if granted {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    fn trustee(token: &TokenInfo) -> String {
        lower(token.user.as_deref().unwrap_or(&token.client_id))
    }

    /// May `token` open `mailbox` (IMAP, POP3, SMTP AUTH as it)? A delegated token opens its
    /// own user's mailbox and those where the user holds FullAccess; an app-only token those
    /// where FullAccess was granted to the app's client id (the app's `Add-MailboxPermission`
    /// kept by the fake Entra is passed to [`Exchange::decide`] separately).
    pub(crate) fn may_open(&self, token: &TokenInfo, mailbox: &str) -> bool {
        let mailbox = lower(mailbox);
        token.user.as_deref().is_some_and(|u| lower(u) == mailbox)
            || self.full_access.contains(&(mailbox, Self::trustee(token)))
    }

    /// May `token` send with `mailbox` as the sender? A delegated token as its own user's
    /// mailbox (unless that mailbox's `send_as_denied` is set) and as mailboxes where the user
    /// holds SendAs; an app-only token as mailboxes where SendAs was granted to its client id
    /// (SMTP: the mailbox an app-only token logged in as is checked by the SMTP server).
    pub(crate) fn may_send_as(&self, token: &TokenInfo, mailbox: &str) -> bool {
        let own = token
            .user
            .as_deref()
            .is_some_and(|u| lower(u) == lower(mailbox));
        (own && !self.mailbox(mailbox).send_as_denied)
            || self
                .send_as
                .contains(&(lower(mailbox), Self::trustee(token)))
    }

    /// Restrict `client_id`'s Graph access to `mailboxes` (`None`: remove the policy).
    pub(crate) fn set_app_access_policy(&mut self, client_id: &str, mailboxes: Option<&[&str]>) {
        match mailboxes {
            Some(m) => {
                self.app_access_policies
                    .insert(lower(client_id), m.iter().map(|x| lower(x)).collect());
            }
            None => {
                self.app_access_policies.remove(&lower(client_id));
            }
        }
    }

    /// May `token` send mail as `mailbox` through Microsoft Graph? A delegated token: as its
    /// own mailbox and as mailboxes where its user holds SendAs. An app-only token with
    /// `Mail.Send`: as any mailbox, unless an Application Access Policy limits the app to
    /// others. Never when the mailbox's `send_as_denied` is set.
    pub(crate) fn may_send_via_graph(&self, token: &TokenInfo, mailbox: &str) -> bool {
        if self.mailbox(mailbox).send_as_denied {
            return false;
        }
        match &token.user {
            Some(u) => {
                lower(u) == lower(mailbox)
                    || self
                        .send_as
                        .contains(&(lower(mailbox), Self::trustee(token)))
            }
            None => self
                .app_access_policies
                .get(&lower(&token.client_id))
                .is_none_or(|allowed| allowed.contains(&lower(mailbox))),
        }
    }

    /// Exchange's checks in order (module docs). `app_may_open` says whether an app-only token's
    /// app holds `Add-MailboxPermission` on `mailbox`.
    pub(crate) fn decide(
        &self,
        token: &TokenInfo,
        mailbox: &str,
        proto: Proto,
        app_may_open: bool,
    ) -> Verdict {
        if !EXCHANGE_AUDIENCES
            .iter()
            .any(|a| token.aud.eq_ignore_ascii_case(a))
        {
            return Verdict::Refused("audience is not Exchange Online");
        }
        let (delegated, app) = match proto {
            Proto::Imap => ("IMAP.AccessAsUser.All", "IMAP.AccessAsApp"),
            Proto::Pop3 => ("POP.AccessAsUser.All", "POP.AccessAsApp"),
            Proto::Smtp => ("SMTP.Send", "SMTP.SendAsApp"),
        };
        let has = |list: &[String], p: &str| list.iter().any(|s| s.eq_ignore_ascii_case(p));
        match &token.user {
            Some(_) if !has(&token.scp, delegated) => {
                return Verdict::Refused("delegated scope missing");
            }
            None if !has(&token.roles, app) => return Verdict::Refused("application role missing"),
            None if self.unregistered_apps.contains(&lower(&token.client_id)) => {
                return Verdict::Refused("service principal not registered");
            }
            _ => {}
        }
        let settings = self.mailbox(mailbox);
        match proto {
            Proto::Imap if settings.imap_disabled => return Verdict::Refused("IMAP disabled"),
            Proto::Pop3 if settings.pop_disabled => return Verdict::Refused("POP disabled"),
            Proto::Smtp if settings.smtp_auth_disabled => return Verdict::SmtpAuthDisabled,
            _ => {}
        }
        let may_open = self.may_open(token, mailbox) || (token.user.is_none() && app_may_open);
        if may_open {
            Verdict::Granted
        } else {
            Verdict::NoRights
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegated(scp: &[&str], aud: &str) -> TokenInfo {
        TokenInfo {
            user: Some("tickets@contoso.com".into()),
            client_id: "c".into(),
            aud: aud.into(),
            scp: scp.iter().map(|s| s.to_string()).collect(),
            roles: vec![],
        }
    }

    #[test]
    fn audience_scope_and_mailbox_settings() {
        let mut ex = Exchange::default();
        let all = ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"];
        let t = delegated(&all, "https://outlook.office.com");
        assert_eq!(
            ex.decide(&t, "tickets@contoso.com", Proto::Imap, false),
            Verdict::Granted
        );
        let graph = delegated(&all, "https://graph.microsoft.com");
        assert!(matches!(
            ex.decide(&graph, "tickets@contoso.com", Proto::Imap, false),
            Verdict::Refused(_)
        ));
        let imap_only = delegated(&["IMAP.AccessAsUser.All"], "https://outlook.office.com");
        assert!(matches!(
            ex.decide(&imap_only, "tickets@contoso.com", Proto::Smtp, false),
            Verdict::Refused(_)
        ));
        ex.set_mailbox(
            "Tickets@contoso.com",
            MailboxSettings {
                smtp_auth_disabled: true,
                ..Default::default()
            },
        );
        assert_eq!(
            ex.decide(&t, "tickets@contoso.com", Proto::Smtp, false),
            Verdict::SmtpAuthDisabled
        );
        assert_eq!(
            ex.decide(&t, "other@contoso.com", Proto::Imap, false),
            Verdict::NoRights
        );
        let app = TokenInfo {
            user: None,
            client_id: "app".into(),
            aud: "https://outlook.office365.com".into(),
            scp: vec![],
            roles: vec!["IMAP.AccessAsApp".into()],
        };
        assert_eq!(
            ex.decide(&app, "x@contoso.com", Proto::Imap, true),
            Verdict::Granted
        );
        assert_eq!(
            ex.decide(&app, "x@contoso.com", Proto::Imap, false),
            Verdict::NoRights
        );
        // FullAccess and SendAs grants: a delegate opens and sends as a shared mailbox.
        let shared = "helpdesk@contoso.com";
        assert_eq!(ex.decide(&t, shared, Proto::Imap, false), Verdict::NoRights);
        assert!(!ex.may_send_as(&t, shared));
        ex.set_right(
            shared,
            "TICKETS@contoso.com",
            MailboxRight::FullAccess,
            true,
        );
        assert_eq!(ex.decide(&t, shared, Proto::Imap, false), Verdict::Granted);
        assert!(!ex.may_send_as(&t, shared), "FullAccess is not SendAs");
        ex.set_right(shared, "tickets@contoso.com", MailboxRight::SendAs, true);
        assert!(ex.may_send_as(&t, shared));
        assert!(ex.may_send_as(&t, "tickets@contoso.com"), "its own mailbox");
        ex.set_mailbox(
            "tickets@contoso.com",
            MailboxSettings {
                send_as_denied: true,
                ..Default::default()
            },
        );
        assert!(!ex.may_send_as(&t, "tickets@contoso.com"));
        ex.set_mailbox("tickets@contoso.com", MailboxSettings::default());
        ex.set_right(
            shared,
            "tickets@contoso.com",
            MailboxRight::FullAccess,
            false,
        );
        assert_eq!(ex.decide(&t, shared, Proto::Imap, false), Verdict::NoRights);
        // An app: FullAccess granted to its client id, SendAs likewise.
        assert_eq!(
            ex.decide(&app, shared, Proto::Imap, false),
            Verdict::NoRights
        );
        ex.set_right(shared, "app", MailboxRight::FullAccess, true);
        assert_eq!(
            ex.decide(&app, shared, Proto::Imap, false),
            Verdict::Granted
        );
        assert!(!ex.may_send_as(&app, "other@contoso.com"));
        ex.set_right("other@contoso.com", "app", MailboxRight::SendAs, true);
        assert!(ex.may_send_as(&app, "other@contoso.com"));
        ex.set_service_principal("APP", false);
        assert!(matches!(
            ex.decide(&app, "x@contoso.com", Proto::Imap, true),
            Verdict::Refused(_)
        ));
    }
}
