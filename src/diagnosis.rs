//! Microsoft-side misconfigurations, recognised and explained: an upstream reply (or what an
//! access token grants) → what is wrong and the command that fixes it. One table, [`KNOWN`],
//! serves `authbridge check`, the hints live sessions write to the log, and the README's
//! "Troubleshooting" table (a test keeps the README equal to [`troubleshooting_table`]).
//!
//! Fix texts name placeholders that [`Known::fix_for`] fills in: `{mailbox}`, `{account}`,
//! `{client_id}`, `{perm}` (the permission the protocol needs), `{delegate}` (the signed-in user
//! whose token opens a shared mailbox).

use crate::config::Protocol;
use crate::token::claims::Claims;

/// One known problem.
#[derive(Debug)]
pub struct Known {
    /// Stable name (`check --json` `id`).
    pub id: &'static str,
    /// What the admin sees (README "Symptom" column).
    pub symptom: &'static str,
    /// Substrings of an upstream reply that identify it (case-insensitive); empty for problems
    /// found from the token's claims.
    patterns: &'static [&'static str],
    /// What is wrong.
    pub cause: &'static str,
    /// What to do (with placeholders).
    pub fix: &'static str,
}

/// Values for a fix text's placeholders.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub mailbox: &'a str,
    pub account: &'a str,
    pub client_id: &'a str,
    pub protocol: Option<Protocol>,
    pub app_only: bool,
    /// A shared mailbox opened with another user's delegated token (`token_from`): that user.
    /// Empty otherwise. With it, "not connected" and "SendAsDenied" name the missing grant.
    pub delegate: &'a str,
}

impl Known {
    /// The fix with its placeholders filled in.
    pub fn fix_for(&self, ctx: &Context<'_>) -> String {
        fill(self.fix, ctx)
    }

    /// The cause with its placeholders filled in.
    pub fn cause_for(&self, ctx: &Context<'_>) -> String {
        fill(self.cause, ctx)
    }
}

fn fill(text: &str, ctx: &Context<'_>) -> String {
    let or = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_string()
        } else {
            v.to_string()
        }
    };
    let perm = ctx
        .protocol
        .map(|p| required_permission(p, ctx.app_only))
        .unwrap_or("IMAP/POP/SMTP permission");
    text.replace("{mailbox}", &or(ctx.mailbox, "<mailbox>"))
        .replace("{account}", &or(ctx.account, "ACCOUNT"))
        .replace("{client_id}", &or(ctx.client_id, "<client id>"))
        .replace("{perm}", perm)
        .replace("{delegate}", &or(ctx.delegate, "<delegate>"))
}

/// The permission a protocol needs: delegated (`scp`) or application (`roles`).
pub fn required_permission(protocol: Protocol, app_only: bool) -> &'static str {
    match (protocol, app_only) {
        (Protocol::Imap, false) => "IMAP.AccessAsUser.All",
        (Protocol::Imap, true) => "IMAP.AccessAsApp",
        (Protocol::Pop3, false) => "POP.AccessAsUser.All",
        (Protocol::Pop3, true) => "POP.AccessAsApp",
        (Protocol::Smtp, false) => "SMTP.Send",
        (Protocol::Smtp, true) => "SMTP.SendAsApp",
    }
}

/// Audiences Exchange Online accepts for IMAP, POP and SMTP.
pub const EXCHANGE_AUDIENCES: [&str; 2] = [
    "https://outlook.office.com",
    "https://outlook.office365.com",
];

/// Every known problem, most specific first (the first whose pattern matches wins).
pub static KNOWN: &[Known] = &[
    Known {
        id: "smtp_auth_disabled",
        symptom: "`535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox` (or `… for the Tenant`)",
        patterns: &["5.7.139", "SmtpClientAuthentication is disabled"],
        cause: "SMTP AUTH is disabled for {mailbox} or for the whole tenant",
        fix: "in Exchange Online PowerShell run `Set-CASMailbox -Identity {mailbox} -SmtpClientAuthenticationDisabled $false` (if the tenant turns it off for everyone: `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`)",
    },
    Known {
        id: "not_connected",
        symptom: "`BAD User is authenticated but not connected.` (IMAP) or `-ERR User is authenticated but not connected.` (POP3) right after a successful login",
        patterns: &["authenticated but not connected"],
        cause: "the token is valid but may not open {mailbox}",
        fix: "app-only: `Add-MailboxPermission -Identity {mailbox} -User <service principal object id> -AccessRights FullAccess` (after `New-ServicePrincipal -AppId {client_id} -ObjectId <enterprise application object id>`); delegated: log in as {mailbox} with `authbridge login {account}`, or give the signed-in user FullAccess on {mailbox}",
    },
    Known {
        id: "send_as_denied",
        symptom: "`554 5.2.252 SendAsDenied; … not allowed to send as …` after DATA",
        patterns: &["5.2.252", "SendAsDenied"],
        cause: "{mailbox} may not send with the message's From address",
        fix: "send with From: {mailbox} (GLPI: Setup > Notifications > Administrator email), or grant the right: `Add-RecipientPermission -Identity <From address> -Trustee {mailbox} -AccessRights SendAs`",
    },
    Known {
        id: "shared_full_access_missing",
        symptom: "`BAD User is authenticated but not connected.` (IMAP) or `-ERR User is authenticated but not connected.` (POP3) on a shared mailbox opened with another account's token (`token_from`)",
        patterns: &[],
        cause: "{delegate} signs in fine but has no FullAccess on the shared mailbox {mailbox}",
        fix: "in Exchange Online PowerShell run `Add-MailboxPermission -Identity {mailbox} -User {delegate} -AccessRights FullAccess -AutoMapping $false`",
    },
    Known {
        id: "shared_send_as_missing",
        symptom: "`554 5.2.252 SendAsDenied` after DATA, sending as a shared mailbox with another account's token (`token_from`)",
        patterns: &[],
        cause: "{delegate} may not send as the shared mailbox {mailbox}",
        fix: "in Exchange Online PowerShell run `Add-RecipientPermission -Identity {mailbox} -Trustee {delegate} -AccessRights SendAs -Confirm:$false`; the client's From must be {mailbox}",
    },
    Known {
        id: "send_as_mail_from",
        symptom: "`550 5.7.60 SMTP; Client does not have permissions to send as this sender`",
        patterns: &["5.7.60"],
        cause: "{mailbox} may not use that envelope sender (MAIL FROM)",
        fix: "send with MAIL FROM:<{mailbox}>, or grant the right: `Add-RecipientPermission -Identity <sender> -Trustee {mailbox} -AccessRights SendAs`",
    },
    Known {
        id: "tenant_attribution",
        symptom: "`550 5.7.64 TenantAttribution; Relay Access Denied` at RCPT TO (relay listener)",
        patterns: &["5.7.64", "TenantAttribution"],
        cause: "the tenant's connector does not recognise this host as your organisation's mail server",
        fix: "Exchange admin center > Mail flow > Connectors: add an inbound connector \"from your organization's email server\" that matches this host's public IP, or a TLS certificate whose name is one of your accepted domains (then set `client_cert`/`client_key` on the relay listener; the full chain is sent)",
    },
    Known {
        id: "reject_direct_send",
        symptom: "`550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources` at RCPT TO (relay listener)",
        patterns: &["5.7.68", "TenantInboundAttribution"],
        cause: "the tenant rejects Direct Send (`Set-OrganizationConfig -RejectDirectSend $true`) and no inbound connector matched this host, so mail from your own domain counts as unauthorised",
        fix: "Exchange admin center > Mail flow > Connectors: add an inbound connector \"from your organization's email server\" that matches this host's public IP, or a TLS certificate whose name is one of your accepted domains (then set `client_cert`/`client_key` on the relay listener); Reject Direct Send lets connector mail through. Turning it off (`Set-OrganizationConfig -RejectDirectSend $false`) also works but reopens Direct Send to anyone",
    },
    Known {
        id: "client_not_authenticated",
        symptom: "`530 5.7.57 Client not authenticated to send mail`",
        patterns: &["5.7.57"],
        cause: "the upstream wants SMTP AUTH, but this listener sends without it",
        fix: "use `mode: auth` with upstream smtp.office365.com:587 (XOAUTH2), or a relay listener towards `<tenant>.mail.protection.outlook.com:25` with a connector",
    },
    Known {
        id: "smtp_refused",
        symptom: "`535 5.7.3 Authentication unsuccessful` (SMTP)",
        patterns: &["5.7.3 "],
        cause: "Exchange refused the token for SMTP on {mailbox}",
        fix: "the token needs {perm} (delegated: SMTP.Send; app-only: SMTP.SendAsApp with admin consent); app-only also needs `New-ServicePrincipal -AppId {client_id} -ObjectId <enterprise application object id>` and `Add-MailboxPermission -Identity {mailbox} -User <service principal object id> -AccessRights FullAccess`; run `authbridge check` to see what the token grants",
    },
    Known {
        id: "imap_refused",
        symptom: "`NO AUTHENTICATE failed.` (IMAP)",
        patterns: &["AUTHENTICATE failed"],
        cause: "Exchange refused the token for IMAP on {mailbox}",
        fix: "check that IMAP is on for the mailbox (`Set-CASMailbox -Identity {mailbox} -ImapEnabled $true`); app-only: the service principal must be registered in Exchange (`New-ServicePrincipal -AppId {client_id} -ObjectId <enterprise application object id>`) and the app needs IMAP.AccessAsApp with admin consent; delegated: IMAP.AccessAsUser.All",
    },
    Known {
        id: "pop_refused",
        symptom: "`-ERR Authentication failure: unknown user name or bad password.` (POP3)",
        patterns: &["Authentication failure"],
        cause: "Exchange refused the token for POP3 on {mailbox}",
        fix: "check that POP is on for the mailbox (`Set-CASMailbox -Identity {mailbox} -PopEnabled $true`); app-only: the service principal must be registered in Exchange (`New-ServicePrincipal -AppId {client_id} -ObjectId <enterprise application object id>`) and the app needs POP.AccessAsApp with admin consent; delegated: POP.AccessAsUser.All",
    },
    Known {
        id: "protocol_disabled",
        symptom: "`check`: login refused on one protocol while the same token logs in on another",
        patterns: &[],
        cause: "{perm} is granted, the service principal is registered, but the protocol is turned off for {mailbox}",
        fix: "`Set-CASMailbox -Identity {mailbox} -ImapEnabled $true` (IMAP) / `-PopEnabled $true` (POP3) / `-SmtpClientAuthenticationDisabled $false` (SMTP)",
    },
    Known {
        id: "service_principal_missing",
        symptom: "`check`: app-only token with the right roles refused on every protocol",
        patterns: &[],
        cause: "the app's service principal is not registered in Exchange Online",
        fix: "`New-ServicePrincipal -AppId {client_id} -ObjectId <object id of the enterprise application>` then `Add-MailboxPermission -Identity {mailbox} -User <that object id> -AccessRights FullAccess` in Exchange Online PowerShell",
    },
    Known {
        id: "wrong_audience",
        symptom: "`check`: token audience is `https://graph.microsoft.com` (or anything but Outlook)",
        patterns: &[],
        cause: "the token is for another API (Microsoft Graph is the classic mistake); Exchange refuses it for IMAP, POP and SMTP",
        fix: "set the provider's `scopes` to `https://outlook.office365.com/.default` (app-only) or `https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access` (delegated; then `authbridge login {account}` again), and add those \"Office 365 Exchange Online\" API permissions to the app registration",
    },
    Known {
        id: "scope_missing",
        symptom: "`check`: delegated token without the protocol's scope (`scp`)",
        patterns: &[],
        cause: "the token does not grant {perm}",
        fix: "add the delegated permission {perm} (Office 365 Exchange Online) to the app registration, add `https://outlook.office.com/{perm}` to the provider's `scopes`, then run `authbridge login {account}` again (the user or an admin must consent)",
    },
    Known {
        id: "admin_consent_missing",
        symptom: "`check`: app-only token without `roles`, or without the protocol's role",
        patterns: &[],
        cause: "the app has no admin consent for {perm}",
        fix: "Entra admin center > App registrations > {client_id} > API permissions: add Office 365 Exchange Online > Application permissions > {perm}, then \"Grant admin consent\"",
    },
    Known {
        id: "wrong_user",
        symptom: "`check`: delegated token of another user than the account's mailbox",
        patterns: &[],
        cause: "the token was issued to another user than {mailbox}",
        fix: "run `authbridge login {account}` and sign in as {mailbox}, or give the signed-in user FullAccess on {mailbox} (`Add-MailboxPermission`)",
    },
    Known {
        id: "smtp_concurrency_limit",
        symptom: "`432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded` (or `432 4.3.2 concurrent connection limit exceeded`)",
        patterns: &[
            "sender thread limit exceeded",
            "concurrent connection limit exceeded",
        ],
        cause: "more than three SMTP connections sent as {mailbox} at once; Exchange Online allows three per mailbox",
        fix: "a temporary refusal: the application should retry later (GLPI retries from its mail queue); send over fewer parallel connections (one mail queue worker), or spread the senders over more mailboxes",
    },
    Known {
        id: "wrong_tenant",
        symptom: "`check`: token `tid` differs from the provider's configured tenant id",
        patterns: &[],
        cause: "the token was issued by another tenant than the one configured for {account}",
        fix: "put the tenant of {mailbox} in the provider's `tenant` (its tenant id: Entra admin center > Overview), or, for a multi-tenant app, grant admin consent in the mailbox's tenant and sign in there (`authbridge login {account}`)",
    },
];

/// The entry named `id`. Panics on an unknown id (a programming error caught by the tests).
pub fn by_id(id: &str) -> &'static Known {
    KNOWN
        .iter()
        .find(|k| k.id == id)
        .unwrap_or_else(|| panic!("unknown diagnosis id {id}"))
}

/// The known problem an upstream reply shows, if any.
pub fn recognise(reply: &str) -> Option<&'static Known> {
    let lower = reply.to_ascii_lowercase();
    KNOWN.iter().find(|k| {
        k.patterns
            .iter()
            .any(|p| lower.contains(&p.to_ascii_lowercase()))
    })
}

/// The known problem an upstream reply shows for `ctx`: as [`recognise`], except that on a
/// shared mailbox opened with a delegate's token (`ctx.delegate`) a mailbox that does not open
/// or a refused From is the delegate's missing FullAccess or SendAs grant.
pub fn recognise_for(reply: &str, ctx: &Context<'_>) -> Option<&'static Known> {
    let k = recognise(reply)?;
    if ctx.delegate.is_empty() {
        return Some(k);
    }
    Some(match k.id {
        "not_connected" => by_id("shared_full_access_missing"),
        "send_as_denied" | "send_as_mail_from" => by_id("shared_send_as_missing"),
        _ => k,
    })
}

/// The one-line hint live sessions log next to an upstream refusal.
pub fn hint(reply: &str, ctx: &Context<'_>) -> String {
    match recognise_for(reply, ctx) {
        Some(k) => format!("{}: {}", k.cause_for(ctx), k.fix_for(ctx)),
        None => fill(
            "check that the app registration has {perm} (delegated or app-only) and that {mailbox} is the signed-in user or a mailbox the app may open; `authbridge check` shows what the token grants",
            ctx,
        ),
    }
}

/// What is wrong with the token's claims for `protocol`, as (id) of [`KNOWN`] entries, most
/// important first. Empty when the claims allow it.
pub fn claims_problems(
    claims: &Claims,
    protocol: Option<Protocol>,
    mailbox: &str,
) -> Vec<&'static Known> {
    let mut out = Vec::new();
    if let Some(aud) = &claims.aud {
        let aud = aud.trim_end_matches('/');
        if !EXCHANGE_AUDIENCES
            .iter()
            .any(|a| a.eq_ignore_ascii_case(aud))
        {
            out.push(by_id("wrong_audience"));
            return out;
        }
    }
    let delegated = claims.is_delegated();
    if delegated {
        if let Some(upn) = &claims.upn
            && upn.contains('@')
            && !upn.eq_ignore_ascii_case(mailbox)
        {
            out.push(by_id("wrong_user"));
        }
    } else if claims.roles.is_empty() {
        out.push(by_id("admin_consent_missing"));
        return out;
    }
    if let Some(p) = protocol {
        let need = required_permission(p, !delegated);
        let have = if delegated {
            &claims.scp
        } else {
            &claims.roles
        };
        if !have.iter().any(|s| s.eq_ignore_ascii_case(need)) {
            out.push(by_id(if delegated {
                "scope_missing"
            } else {
                "admin_consent_missing"
            }));
        }
    }
    out
}

/// The README's "Troubleshooting" table (Markdown), generated from [`KNOWN`].
pub fn troubleshooting_table() -> String {
    let ctx = Context::default();
    let mut s = String::from("| Symptom | Cause | Fix |\n|---|---|---|\n");
    for k in KNOWN {
        let esc = |t: String| t.replace('|', "\\|");
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            esc(k.symptom.to_string()),
            esc(k.cause_for(&ctx)),
            esc(k.fix_for(&ctx))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_replies_are_recognised() {
        let cases = [
            (
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. [host]",
                "smtp_auth_disabled",
            ),
            (
                "BAD User is authenticated but not connected.",
                "not_connected",
            ),
            ("554 5.2.252 SendAsDenied; a not allowed", "send_as_denied"),
            (
                "550 5.7.64 TenantAttribution; Relay Access Denied [h]",
                "tenant_attribution",
            ),
            ("550 5.7.68 TenantInboundAttribution", "reject_direct_send"),
            ("535 5.7.3 Authentication unsuccessful [h]", "smtp_refused"),
            ("NO AUTHENTICATE failed.", "imap_refused"),
            (
                "-ERR Authentication failure: unknown user name or bad password.",
                "pop_refused",
            ),
        ];
        for (reply, id) in cases {
            assert_eq!(recognise(reply).map(|k| k.id), Some(id), "{reply}");
        }
        assert!(recognise("250 OK").is_none());
        let ctx = Context {
            mailbox: "tickets@contoso.com",
            ..Default::default()
        };
        assert!(hint(cases[0].0, &ctx).contains(
            "Set-CASMailbox -Identity tickets@contoso.com -SmtpClientAuthenticationDisabled $false"
        ));
    }

    #[test]
    fn every_entry_is_reachable_and_placeholders_fill() {
        let ctx = Context {
            mailbox: "m@x",
            account: "acc",
            client_id: "cid",
            protocol: Some(Protocol::Imap),
            app_only: true,
            delegate: "d@x",
        };
        for k in KNOWN {
            assert!(std::ptr::eq(by_id(k.id), k), "duplicate id {}", k.id);
            let f = k.fix_for(&ctx) + &k.cause_for(&ctx);
            assert!(!f.contains('{'), "{}: {f}", k.id);
        }
    }

    #[test]
    fn claims_are_compared_with_what_each_protocol_needs() {
        let ids = |c: &Claims, p| {
            claims_problems(c, Some(p), "t@contoso.com")
                .iter()
                .map(|k| k.id)
                .collect::<Vec<_>>()
        };
        let graph = Claims {
            aud: Some("https://graph.microsoft.com".into()),
            roles: vec!["Mail.Send".into()],
            ..Default::default()
        };
        assert_eq!(ids(&graph, Protocol::Smtp), ["wrong_audience"]);
        let imap_only = Claims {
            aud: Some("https://outlook.office.com".into()),
            scp: vec!["IMAP.AccessAsUser.All".into()],
            upn: Some("t@contoso.com".into()),
            ..Default::default()
        };
        assert!(ids(&imap_only, Protocol::Imap).is_empty());
        assert_eq!(ids(&imap_only, Protocol::Smtp), ["scope_missing"]);
        let no_consent = Claims {
            aud: Some("https://outlook.office365.com".into()),
            ..Default::default()
        };
        assert_eq!(ids(&no_consent, Protocol::Pop3), ["admin_consent_missing"]);
        let other_user = Claims {
            upn: Some("boss@contoso.com".into()),
            ..imap_only
        };
        assert_eq!(ids(&other_user, Protocol::Imap), ["wrong_user"]);
    }

    /// A shared mailbox opened with a delegate's token: the same Exchange replies name the
    /// delegate's missing grant, with the PowerShell that adds it.
    #[test]
    fn shared_mailbox_refusals_name_the_missing_grant() {
        let ctx = Context {
            mailbox: "helpdesk@contoso.com",
            delegate: "agent@contoso.com",
            ..Default::default()
        };
        let k = recognise_for("BAD User is authenticated but not connected.", &ctx).unwrap();
        assert_eq!(k.id, "shared_full_access_missing");
        assert!(k.fix_for(&ctx).contains(
            "Add-MailboxPermission -Identity helpdesk@contoso.com -User agent@contoso.com -AccessRights FullAccess"
        ));
        let reply = "554 5.2.252 SendAsDenied; agent@contoso.com not allowed to send as helpdesk@contoso.com";
        assert!(hint(reply, &ctx).contains(
            "Add-RecipientPermission -Identity helpdesk@contoso.com -Trustee agent@contoso.com -AccessRights SendAs"
        ));
        // Without a delegate, the general entries.
        let own = Context {
            mailbox: "helpdesk@contoso.com",
            ..Default::default()
        };
        assert_eq!(recognise_for(reply, &own).unwrap().id, "send_as_denied");
    }

    /// The README's table is this module's table: edit `KNOWN`, then paste the output of this
    /// test's `troubleshooting_table()` between the markers.
    #[test]
    fn readme_troubleshooting_table_matches() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let start = "<!-- troubleshooting:start -->\n";
        let end = "<!-- troubleshooting:end -->";
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            panic!("README.md lacks the troubleshooting markers");
        };
        let table = troubleshooting_table();
        assert_eq!(
            &readme[a + start.len()..b],
            table,
            "README.md's Troubleshooting table differs from src/diagnosis.rs; replace it with:\n{table}"
        );
    }
}
