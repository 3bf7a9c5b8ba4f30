//! `check` for a Microsoft Graph listener (`upstream: { type: graph }`): per account, a Graph
//! token is fetched and its claims are compared with what `sendMail` needs (Graph audience,
//! `Mail.Send` as application role or delegated scope).
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
        let scopes = crate::graph::scopes(&a.provider);
        match tokens.access_token_for(&a.name, &scopes).await {
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
                    lr.findings.extend(judge(&c, crate::graph::resource(&a.provider), &a.mailbox));
                }
            },
        }
        reports.push(lr);
    }
    reports
}

/// What the claims of a Graph token say about `sendMail` for `mailbox`.
fn judge(c: &claims::Claims, resource: &str, mailbox: &str) -> Vec<Finding> {
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
    let has = |list: &[String]| list.iter().any(|p| p.eq_ignore_ascii_case("Mail.Send"));
    if c.is_delegated() {
        if has(&c.scp) {
            out.push(Finding::ok(format!(
                "Microsoft Graph token OK: delegated Mail.Send for {}",
                c.upn.as_deref().unwrap_or(mailbox)
            )));
        } else {
            out.push(Finding::failed(
                "the delegated Graph token has no Mail.Send scope",
                Some(
                    "add the delegated permission Mail.Send (Microsoft Graph) to the app registration, then run `authbridge login ACCOUNT` again to consent to it"
                        .into(),
                ),
            ));
        }
    } else if has(&c.roles) {
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
            st(judge(&claims(g, &[], &["Mail.Send"]), g, "m")),
            Status::Ok
        );
        assert_eq!(
            st(judge(&claims(g, &["Mail.Send"], &[]), g, "m")),
            Status::Ok
        );
        assert_eq!(st(judge(&claims(g, &[], &[]), g, "m")), Status::Failed);
        assert_eq!(
            st(judge(&claims(g, &["Mail.Read"], &[]), g, "m")),
            Status::Failed
        );
        assert_eq!(
            st(judge(
                &claims("https://outlook.office365.com", &[], &["Mail.Send"]),
                g,
                "m"
            )),
            Status::Failed
        );
    }
}
