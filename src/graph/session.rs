//! Drives a logged-in session of a Graph listener: the relay machine
//! (`protocol::smtp::relay`) reads the client strictly and writes the commands and the body to
//! its "connector", which here is the local [`GraphConnector`]; a finished message is posted to
//! Microsoft Graph and the client gets Graph's verdict as the reply to its end of DATA.
//!
//! Deadlines: `pipe_idle` for client silence, `client_write` for one write to the client, and
//! `relay_reply` for one `sendMail` request (connect, TLS, request, answer). The access token
//! comes from the token manager's cache for the account's Graph scopes; a `401` gets one
//! refreshed token and one retry. One log line per message, with Graph's request id, never the
//! token or the message.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::connector::{GraphConnector, Outgoing, SendReply};
use super::{client, reply};
use crate::config::{Graph, Relay};
use crate::limits::Limits;
use crate::metrics::{GraphResult, Metrics};
use crate::protocol::smtp::relay::{RelayEnd, RelayMachine, RelayOut, RelayStep};
use crate::session::relay::{read_client, send};
use crate::token::TokenManager;

/// Who sends and where.
pub struct Sender<'a> {
    pub graph: &'a Graph,
    pub tokens: &'a TokenManager,
    pub account: &'a str,
    pub mailbox: &'a str,
    pub hostname: &'a str,
    pub limits: &'a Limits,
    /// The listener's name (metrics label) and the registry.
    pub listener: &'a str,
    pub metrics: &'a Metrics,
    /// A delegate sends from a shared mailbox (`token_from`): the token needs
    /// `Mail.Send.Shared` (see [`super::scopes`]).
    pub on_behalf: bool,
}

/// Serve the rest of the session. `input` holds client bytes not yet handled.
pub async fn run<C>(mut client: C, mut input: BytesMut, sender: &Sender<'_>) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let limits = sender.limits;
    let idle = limits.timeouts.pipe_idle;
    let client_write = limits.timeouts.client_write;
    // Every sender is allowed: Graph sends as the mailbox, and refuses a From it may not use.
    let open = Relay {
        require_login: true,
        allow_from: Vec::new(),
        allowed_senders: Vec::new(),
    };
    let mut machine = RelayMachine::new(open, &limits.protocol);
    let mut connector = GraphConnector::new(sender.hostname, client::MESSAGE_MAX);
    let mut replies = BytesMut::new();
    let mut out = RelayOut::default();
    loop {
        let step = machine.step(&mut input, &mut replies, &mut out);
        if let RelayStep::End(end) = step {
            let _ = send(&mut client, &out.to_client, client_write).await;
            return end;
        }
        if !out.to_connector.is_empty() {
            let message = connector.feed(&out.to_connector, &mut replies);
            out.to_connector.clear();
            if let Some(message) = message {
                let result = post(sender, &message).await;
                connector.sent(&result, &mut replies);
            }
        }
        if !out.to_client.is_empty() {
            if let Err(e) = send(&mut client, &out.to_client, client_write).await {
                return RelayEnd::Error(e);
            }
            out.to_client.clear();
        }
        match step {
            RelayStep::Continue | RelayStep::End(_) => {}
            RelayStep::NeedClient => {
                let read = read_client(&mut client, &mut input, idle);
                if let Some(end) = read
                    .await
                    .ended(&mut machine, &mut client, &mut out, client_write)
                    .await
                {
                    return end;
                }
            }
            RelayStep::NeedConnector => {
                // The local connector answers every complete command at once; asking for more
                // means it got something it cannot answer.
                machine.connector_failed(&mut out);
                let _ = send(&mut client, &out.to_client, client_write).await;
                return RelayEnd::Error("the local SMTP end did not answer".into());
            }
            RelayStep::DropConnector => {
                // A refused body (bare CR/LF): nothing of it is posted.
                connector.reset();
                replies.clear();
            }
            RelayStep::Reconnect => machine.reconnected(Ok(()), &mut out),
        }
    }
}

/// Post one message; the reply the client gets for it.
async fn post(s: &Sender<'_>, message: &Outgoing) -> SendReply {
    let Some(account) = s.tokens.account(s.account) else {
        return reply::for_token(&format!("account {} is not configured", s.account));
    };
    let provider = &*account.provider;
    if let Err(why) = super::supported(provider) {
        return reply::for_token(&why);
    }
    let scopes = super::scopes(provider, s.on_behalf);
    let endpoint = super::endpoint(s.graph.endpoint.as_deref(), provider);
    let limit = s.limits.timeouts.relay_reply;
    let mut token = match s.tokens.access_token_for(s.account, &scopes).await {
        Ok(t) => t,
        Err(e) => {
            warn!(account = s.account, error = %e, "graph: no access token for Microsoft Graph; message not sent");
            s.metrics
                .graph_request(s.listener, GraphResult::no_token, None);
            return reply::for_token(&e.to_string());
        }
    };
    let mut retried = false;
    loop {
        let answer = s
            .graph
            .clients
            .send_mail(
                provider,
                &endpoint,
                s.mailbox,
                token.token.expose(),
                &message.mime,
                limit,
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(why) => {
                s.metrics
                    .graph_request(s.listener, GraphResult::network_error, None);
                let r = reply::for_network(&why);
                warn!(
                    account = s.account,
                    mailbox = s.mailbox,
                    endpoint = %endpoint,
                    reason = %why,
                    bytes = message.mime.len(),
                    reply = r.code,
                    "graph: sendMail failed; the client was told to retry"
                );
                return r;
            }
        };
        s.metrics.graph_request(
            s.listener,
            result_of(answer.status),
            answer.retry_after.as_deref(),
        );
        if answer.status == 401 && !retried {
            retried = true;
            info!(account = s.account, request_id = ?answer.request_id, "graph: Microsoft Graph refused the access token; refreshing it and retrying once");
            match s
                .tokens
                .refresh_after_rejection_for(s.account, &scopes, &token)
                .await
            {
                Ok(t) => {
                    token = t;
                    continue;
                }
                Err(e) => {
                    warn!(account = s.account, error = %e, "graph: token refresh after a refusal failed; message not sent");
                    return reply::for_token(&e.to_string());
                }
            }
        }
        let r = reply::for_status(
            answer.status,
            answer.retry_after.as_deref(),
            &answer.body,
            s.mailbox,
        );
        let (code, _) = reply::error_of(&answer.body);
        if r.code == 250 {
            info!(
                account = s.account,
                mailbox = s.mailbox,
                sender = %message.sender,
                recipients = message.recipients,
                added_bcc = message.added_bcc,
                bytes = message.mime.len(),
                request_id = answer.request_id.as_deref().unwrap_or(""),
                "graph: message accepted by Microsoft Graph"
            );
        } else {
            warn!(
                account = s.account,
                mailbox = s.mailbox,
                status = answer.status,
                graph_error = %code,
                retry_after = answer.retry_after.as_deref().unwrap_or(""),
                request_id = answer.request_id.as_deref().unwrap_or(""),
                reply = %format!("{} {}", r.code, r.text),
                "graph: Microsoft Graph did not accept the message"
            );
        }
        return r;
    }
}

/// The metrics label of a Graph answer's HTTP status.
fn result_of(status: u16) -> GraphResult {
    match status {
        200..=299 => GraphResult::accepted,
        401 => GraphResult::unauthorized,
        429 => GraphResult::throttled,
        400..=499 => GraphResult::refused,
        _ => GraphResult::unavailable,
    }
}
