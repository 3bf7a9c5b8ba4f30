//! SMTP listeners that send through Microsoft Graph `sendMail` (`upstream: { type: graph }`),
//! for tenants where SMTP AUTH is off: authbridge terminates SMTP itself and posts each message
//! to `{endpoint}/v1.0/users/{mailbox}/sendMail` with a Graph-audience token.
//!
//! Files: `recipients.rs` (which addresses the header names, and the `Bcc:` for the others),
//! `connector.rs` (the local SMTP end behind the relay machine: envelope, size limit,
//! unstuffing), `reply.rs` (Graph's answer → SMTP reply), `client.rs` (the HTTP request),
//! `session.rs` (drives a logged-in session). Which cloud, endpoint and scopes an account uses
//! is decided here.

pub mod client;
pub mod connector;
pub mod recipients;
pub mod reply;
pub mod session;

pub use client::{GraphClients, MESSAGE_MAX, REQUEST_MAX};

use crate::token::{Flow, ProviderConfig, ProviderKind};

/// The Microsoft Graph resource (token audience and default endpoint) of a provider's cloud:
/// global `https://graph.microsoft.com`, US Government L4 `https://graph.microsoft.us`, China
/// (21Vianet) `https://microsoftgraph.chinacloudapi.cn`. The cloud is the one of the provider's
/// token endpoint host (`login.microsoftonline.us`, `login.chinacloudapi.cn`); any other host
/// (including a test stand-in) counts as global.
pub fn resource(provider: &ProviderConfig) -> &'static str {
    let host = url::Url::parse(&provider.endpoints.token_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if host.ends_with("microsoftonline.us") {
        "https://graph.microsoft.us"
    } else if host.ends_with("chinacloudapi.cn") {
        "https://microsoftgraph.chinacloudapi.cn"
    } else {
        "https://graph.microsoft.com"
    }
}

/// The scopes of a Graph token for `provider`'s accounts: app-only `{resource}/.default` (the
/// app's Mail.Send application permission), delegated `{resource}/Mail.Send` and
/// `offline_access` (redeemed with the account's refresh token: Microsoft refresh tokens are
/// multi-resource). `on_behalf`: a delegated token that sends from another mailbox than its
/// user's (a shared mailbox, `token_from`) needs `{resource}/Mail.Send.Shared` instead, and the
/// user SendAs (or Send on Behalf) on that mailbox.
pub fn scopes(provider: &ProviderConfig, on_behalf: bool) -> Vec<String> {
    let r = resource(provider);
    match provider.flow {
        Flow::ClientCredentials => vec![format!("{r}/.default")],
        Flow::AuthorizationCode | Flow::DeviceCode => {
            let permission = if on_behalf { SEND_SHARED } else { SEND };
            vec![format!("{r}/{permission}"), "offline_access".to_string()]
        }
    }
}

/// Graph's permission to send as the signed-in user (delegated) or as any mailbox (application).
pub const SEND: &str = "Mail.Send";
/// Graph's delegated permission to send from another mailbox the user may send as.
pub const SEND_SHARED: &str = "Mail.Send.Shared";

/// Can `provider`'s accounts use Graph at all (only Microsoft providers)?
pub fn supported(provider: &ProviderConfig) -> Result<(), String> {
    if provider.kind == ProviderKind::Microsoft {
        Ok(())
    } else {
        Err(format!(
            "provider `{}` is a {} provider; Microsoft Graph needs a microsoft provider",
            provider.name, provider.kind
        ))
    }
}

/// The endpoint a listener posts to for an account of `provider`.
pub fn endpoint(configured: Option<&str>, provider: &ProviderConfig) -> String {
    configured
        .unwrap_or_else(|| resource(provider))
        .trim_end_matches('/')
        .to_string()
}
