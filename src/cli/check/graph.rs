//! `check` for a Microsoft Graph listener (`upstream: { type: graph }`): per account, a Graph
//! token is fetched and its claims are compared with what `sendMail` needs (Graph audience,
//! `Mail.Send` as application role or delegated scope, `Mail.Send.Shared` for a delegate sending
//! from a shared mailbox). A Graph token refused for want of consent (AADSTS65001 and kin) gets
//! the admin-consent fix: the delegated Graph permission is a consent of its own, next to the
//! Exchange ones the account already has.
//!
//! There is no harmless request to prove the mailbox permission: with only `Mail.Send`, every
//! read of the mailbox or the user is refused, and `sendMail` sends. So the mailbox itself (an
//! Application Access Policy, SendAs rights) is only proven by the first real message, or by
//! `check --send-test` once that is offered for Graph listeners.

use super::report::{Finding, ListenerReport};
use crate::config::{Config, Listener};
use crate::token::TokenManager;
use crate::token::claims::{self, Inspection};

/// The findings for Graph listener `l`, one report per account.
pub(super) async fn check_listener(
    config: &Config,
    l: &Listener,
    tokens: &TokenManager,
) -> Vec<ListenerReport> {
    let mut reports = Vec::new();
    for a in &config.accounts {
        let endpoint = crate::graph::endpoint(
            l.graph.as_ref().and_then(|g| g.endpoint.as_deref()),
            &a.provider,
        );
        let mut lr = ListenerReport {
            name: l.name.clone(),
            protocol: l.protocol.to_string(),
            mode: "graph",
            upstream: endpoint,
            account: Some(a.name.clone()),
            ok: true,
            findings: Vec::new(),
        };
        if let Err(why) = crate::graph::supported(&a.provider) {
            lr.findings.push(Finding::failed(why, None));
            reports.push(lr);
            continue;
        }
        let on_behalf = a.delegate().is_some();
        let permission = if on_behalf {
            crate::graph::SEND_SHARED
        } else {
            crate::graph::SEND
        };
        let scopes = crate::graph::scopes(&a.provider, on_behalf);
        match tokens.access_token_for(a.token_account(), &scopes).await {
            Err(e) if e.aadsts.is_some_and(is_consent) => lr.findings.push(Finding::failed(
                format!(
                    "Microsoft Graph token refused for want of consent ({}): {}",
                    scopes.join(" "),
                    e.message
                ),
                Some(consent_fix(&a.provider, a.token_account(), permission)),
            )),
            Err(e) => lr.findings.push(Finding::failed(
                format!("could not get a Microsoft Graph token ({}): {e}", scopes.join(" ")),
                None,
            )),
            Ok(t) => match claims::inspect(t.token.expose()) {
                Inspection::Opaque => lr.findings.push(Finding::warning(
                    "Microsoft Graph token OK, but not a JWT: its permissions cannot be checked here",
                    None,
                )),
                Inspection::Jwt(c) => {
                    lr.findings.extend(judge(
                        &c,
                        crate::graph::resource(&a.provider),
                        &a.mailbox,
                        permission,
                    ));
                }
            },
        }
        reports.push(lr);
    }
    reports
}

/// AADSTS codes that mean "not consented": 65001 (no consent for this app and resource), 65004
/// (the user declined), 650056 (the app registration does not list the permission, or no
/// admin consented), 90093/90094 (only an admin may consent).
fn is_consent(aadsts: u32) -> bool {
    matches!(aadsts, 65001 | 65004 | 650056 | 90093 | 90094)
}

/// How to consent to Graph `permission` for `provider`'s app: admin consent in the Entra admin
/// center or through the tenant's admin-consent URL, or the user's own consent at login.
fn consent_fix(provider: &crate::token::ProviderConfig, account: &str, permission: &str) -> String {
    let cid = &provider.client_id;
    // The tenant's admin-consent URL: the token endpoint's tenant path, `/adminconsent`.
    let url = provider
        .endpoints
        .token_url
        .strip_suffix("/oauth2/v2.0/token")
        .map(|base| format!(", or have an admin open {base}/adminconsent?client_id={cid}"))
        .unwrap_or_default();
    if provider.flow.is_delegated() {
        format!(
            "add Microsoft Graph > Delegated permissions > {permission} to app registration \
             {cid} (Entra admin center > App registrations > API permissions), then grant admin \
             consent there (\"Grant admin consent for <tenant>\"){url}, or run `authbridge \
             login {account}` again: it asks the user's consent for Graph too when a Graph \
             listener is configured"
        )
    } else {
        format!(
            "add Microsoft Graph > Application permissions > Mail.Send to app registration \
             {cid} and grant admin consent (Entra admin center > App registrations > API \
             permissions){url}"
        )
    }
}

/// What the claims of a Graph token say about `sendMail` for `mailbox` with the delegated
/// `permission` (`Mail.Send`, or `Mail.Send.Shared` for a shared mailbox).
fn judge(c: &claims::Claims, resource: &str, mailbox: &str, permission: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let aud_ok = c.aud.as_deref().is_some_and(|a| {
        a.trim_end_matches('/').eq_ignore_ascii_case(resource) || a == GRAPH_APP_ID
    });
    if !aud_ok {
        out.push(Finding::failed(
            format!(
                "the token's audience is {}, not Microsoft Graph ({resource})",
                c.aud.as_deref().unwrap_or("missing")
            ),
            Some(format!(
                "Graph tokens are requested with the scope {resource}/.default (app-only) or {resource}/Mail.Send (delegated); check the provider's token endpoint and cloud"
            )),
        ));
        return out;
    }
    let has = |list: &[String], p: &str| list.iter().any(|s| s.eq_ignore_ascii_case(p));
    if c.is_delegated() {
        if has(&c.scp, permission) {
            out.push(Finding::ok(format!(
                "Microsoft Graph token OK: delegated {permission} for {}{}",
                c.upn.as_deref().unwrap_or(mailbox),
                if permission == crate::graph::SEND_SHARED {
                    format!(" (sending from {mailbox} also needs SendAs on it)")
                } else {
                    String::new()
                }
            )));
        } else {
            out.push(Finding::failed(
                format!("the delegated Graph token has no {permission} scope"),
                Some(format!(
                    "add the delegated permission {permission} (Microsoft Graph) to the app registration, then run `authbridge login ACCOUNT` again to consent to it"
                )),
            ));
        }
    } else if has(&c.roles, "Mail.Send") {
        out.push(Finding::ok(format!(
            "Microsoft Graph token OK: application permission Mail.Send (the app may send as any mailbox unless an Application Access Policy limits it; {mailbox} must be in its scope)"
        )));
    } else {
        out.push(Finding::failed(
            "the app-only Graph token has no Mail.Send role",
            Some(
                "in Entra ID > App registrations > API permissions add Microsoft Graph > Application permissions > Mail.Send and grant admin consent"
                    .into(),
            ),
        ));
    }
    out
}

/// Microsoft Graph's application id, which v1.0 tokens may carry as `aud`.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::check::report::Status;

    fn claims(aud: &str, scp: &[&str], roles: &[&str]) -> claims::Claims {
        claims::Claims {
            aud: Some(aud.into()),
            scp: scp.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            upn: (!scp.is_empty()).then(|| "u@x".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        let g = "https://graph.microsoft.com";
        let st = |f: Vec<Finding>| f[0].status;
        assert_eq!(
            st(judge(&claims(g, &[], &["Mail.Send"]), g, "m", "Mail.Send")),
            Status::Ok
        );
        assert_eq!(
            st(judge(&claims(g, &["Mail.Send"], &[]), g, "m", "Mail.Send")),
            Status::Ok
        );
        assert_eq!(
            st(judge(&claims(g, &[], &[]), g, "m", "Mail.Send")),
            Status::Failed
        );
        // A delegate sending from a shared mailbox needs Mail.Send.Shared, not Mail.Send.
        assert_eq!(
            st(judge(
                &claims(g, &["Mail.Send"], &[]),
                g,
                "m",
                "Mail.Send.Shared"
            )),
            Status::Failed
        );
        assert_eq!(
            st(judge(
                &claims(g, &["Mail.Send.Shared"], &[]),
                g,
                "m",
                "Mail.Send.Shared"
            )),
            Status::Ok
        );
        assert_eq!(
            st(judge(&claims(g, &["Mail.Read"], &[]), g, "m", "Mail.Send")),
            Status::Failed
        );
        assert_eq!(
            st(judge(
                &claims("https://outlook.office365.com", &[], &["Mail.Send"]),
                g,
                "m",
                "Mail.Send"
            )),
            Status::Failed
        );
    }
}
