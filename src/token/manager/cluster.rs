//! One fetch of a delegated account's token when the store is shared by several replicas
//! (Redis): the cluster-wide single flight.
//!
//! 1. Adopt: if another replica published an access token that is not yet due for renewal (its
//!    remaining life by the server's clock, `PTTL`, is above the refresh margin) and, after the
//!    upstream refused this replica's token, is newer than the refused one, use it: no token
//!    request.
//! 2. Otherwise take the account's refresh lease (`SET NX PX`). While another replica holds it,
//!    poll (every `LEASE_POLL`) for its published result or a free lease, for at most
//!    `LEASE_WAIT`; then give up with a temporary error. A holder that died loses the lease when
//!    it expires, and a waiter takes it over.
//! 3. Holding the lease: look again (a result may have landed just before), then load the stored
//!    refresh token with its version, refresh, and save the rotated token together with the
//!    access token by compare-and-set on that version. A replica whose save finds another
//!    version lost a race (its lease expired while it was slow): it keeps what is stored and
//!    adopts the winner's access token. A non-rotating refresh publishes the access token only
//!    while its refresh token's version is still the stored one.
//!
//! A slot for other scopes than the account's own (a Graph token) publishes and adopts under
//! its own audience's key (`access/<account>/<audience>`), never the account's: a replica never
//! takes an Exchange token for a Graph one nor the reverse. The lease and the refresh token are
//! the account's, shared by all its scope sets (one refresh of the account at a time).
//!
//! Redis down: adopting and leasing fail with [`StoreError::Unavailable`], a transient error
//! (temporary replies); no token request is made and nothing stored is touched. Sessions with
//! a cached access token are not affected (they never get here).
//!
//! [`StoreError::Unavailable`]: crate::token::store::StoreError::Unavailable

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rotation;
use super::slot::{Cached, Outcome, Slot, make_cached, sha256};
use crate::limits::shared_store::{LEASE_POLL, LEASE_WAIT};
use crate::token::error::{ErrorContext, TokenError};
use crate::token::failure::ErrorKind;
use crate::token::grant;
use crate::token::response::TokenResponse;
use crate::token::settings::TokenSettings;
use crate::token::store::{Audience, RedisStore, SharedAccess, TokenStore};

/// A published access token valid for less than this is never adopted.
const MIN_ADOPT: Duration = Duration::from_secs(30);

pub(super) async fn fetch(
    slot: &Arc<Slot>,
    store: &TokenStore,
    shared: &RedisStore,
    settings: &TokenSettings,
    epoch: u64,
) -> Outcome {
    let config = slot.config();
    let provider = &*config.provider;
    let account = slot.name().to_owned();
    let started = Instant::now();
    let outcome = |result, rt_digest, requested| Outcome {
        result,
        rt_digest,
        requested,
        epoch,
    };
    let ctx = ErrorContext::new(provider, &account, "refresh_token");
    let store_err = |e| TokenError::from_store(&e, &ctx);
    let audience = slot.scoped.then(|| Audience::of_scopes(&provider.scopes));
    let audience = audience.as_ref();
    let _turn = slot.turn.lock().await;
    let rejected = slot.lock().rejected;

    // 1 and 2: adopt, or take the lease, or wait.
    let deadline = started + LEASE_WAIT;
    let _lease = loop {
        match adopt(store, &account, audience, rejected, settings, true).await {
            Ok(Some(c)) => return outcome(Ok(c), None, false),
            Ok(None) => {}
            Err(e) => return outcome(Err(store_err(e)), None, false),
        }
        let name = account.clone();
        let redis = shared.clone();
        match store.blocking(move |_| redis.try_lease(&name)).await {
            Ok(Some(lease)) => break lease,
            Ok(None) => {}
            Err(e) => return outcome(Err(store_err(e)), None, false),
        }
        if Instant::now() >= deadline {
            return outcome(
                Err(TokenError::new(
                    &account,
                    ErrorKind::Transient,
                    format!(
                        "another replica held the refresh lease for {}s without publishing a \
                         token",
                        LEASE_WAIT.as_secs()
                    ),
                    "authbridge tries again; if it lasts, look at the other replicas' logs (a \
                     token request that hangs) and at `authbridge status`",
                )),
                None,
                false,
            );
        }
        tokio::time::sleep(LEASE_POLL).await;
    };

    // 3: holding the lease.
    match adopt(store, &account, audience, rejected, settings, true).await {
        Ok(Some(c)) => return outcome(Ok(c), None, false),
        Ok(None) => {}
        Err(e) => return outcome(Err(store_err(e)), None, false),
    }
    let for_settle = Arc::clone(slot);
    let chosen = match store
        .blocking(move |s| rotation::settle(s, &for_settle))
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return outcome(Err(TokenError::no_refresh_token(&account)), None, false),
        Err(e) => return outcome(Err(store_err(e)), None, false),
    };
    let digest = chosen.digest;
    if let Some(e) = slot.permanent_block(Some(digest), started) {
        return outcome(Err(e), Some(digest), false);
    }
    let response = match grant::refresh(provider, &account, &chosen.token, settings).await {
        Ok(r) => r,
        Err(e) => return outcome(Err(e), Some(digest), true),
    };
    let lifetime = response.expires_in;
    let access = response.access_token.clone();
    match &response.refresh_token {
        Some(rotated) if rotated != &chosen.token => {
            // Persist (with the access token) before anyone sees the access token.
            let (name, redis, rotated) = (account.clone(), shared.clone(), rotated.clone());
            let expected = chosen.version;
            let to_store = rotated.clone();
            let aud = audience.cloned();
            let saved = store
                .blocking(move |_| {
                    redis.save_rotation(&name, aud.as_ref(), expected, &to_store, &access, lifetime)
                })
                .await;
            match saved {
                Ok(Ok(version)) => {
                    slot.forget_unsaved(None);
                    tracing::debug!(account, version, "rotated refresh token stored and shared");
                }
                Ok(Err(found)) => {
                    slot.forget_unsaved(None);
                    tracing::info!(
                        account,
                        found,
                        "another replica stored a newer refresh token while this refresh ran; \
                         keeping theirs"
                    );
                    if let Ok(Some(c)) =
                        adopt(store, &account, audience, rejected, settings, false).await
                    {
                        return outcome(Ok(c), Some(digest), true);
                    }
                }
                Err(e) => {
                    tracing::error!(
                        account,
                        "could not store the rotated refresh token in the shared store: {e} — \
                         it is kept in memory, used for the next refresh and saved again"
                    );
                    slot.keep_unsaved(rotated, chosen.lineage(), e.to_string());
                }
            }
        }
        _ => {
            if let Some(version) = chosen.version {
                let (name, redis, aud) = (account.clone(), shared.clone(), audience.cloned());
                let published = store
                    .blocking(move |_| {
                        redis.publish_access(&name, aud.as_ref(), version, &access, lifetime)
                    })
                    .await;
                if let Err(e) = published {
                    tracing::warn!(account, "could not share the new access token: {e}");
                }
            }
        }
    }
    outcome(
        Ok(make_cached(response, started, settings)),
        Some(digest),
        true,
    )
}

/// The published access token as a cache entry, if it may be used: not the refused one, valid
/// for `MIN_ADOPT` more and, with `fresh_only`, not yet due for renewal itself.
async fn adopt(
    store: &TokenStore,
    account: &str,
    audience: Option<&Audience>,
    rejected: Option<([u8; 32], Instant)>,
    settings: &TokenSettings,
    fresh_only: bool,
) -> Result<Option<Cached>, crate::token::store::StoreError> {
    let name = account.to_owned();
    let Some(redis) = store.shared().cloned() else {
        return Ok(None);
    };
    let aud = audience.cloned();
    let found = store
        .blocking(move |_| redis.load_access(&name, aud.as_ref()))
        .await?;
    let Some(SharedAccess {
        access_token,
        lifetime,
        remaining,
        ..
    }) = found
    else {
        return Ok(None);
    };
    if remaining < MIN_ADOPT {
        return Ok(None);
    }
    // After the upstream refused a token, only one published after this replica got the refused
    // one will do: the refused one, or any as old, may be as bad. Its age is by the server's
    // clock (lifetime minus what is left), compared with a local duration, never a timestamp.
    if let Some((digest, at)) = rejected {
        let age = lifetime.saturating_sub(remaining);
        if digest == sha256(&access_token) || age >= at.elapsed() {
            tracing::debug!(
                account,
                age_ms = age.as_millis() as u64,
                "not using the published access token: not newer than the refused one"
            );
            return Ok(None);
        }
    }
    let margin = settings.refresh_margin.min(lifetime / 2);
    if fresh_only && remaining <= margin {
        return Ok(None);
    }
    tracing::debug!(
        account,
        remaining_secs = remaining.as_secs(),
        "using the access token another replica published"
    );
    let response = TokenResponse {
        access_token,
        refresh_token: None,
        expires_in: remaining,
        scope: None,
        token_type: None,
        id_token: None,
    };
    Ok(Some(make_cached(response, Instant::now(), settings)))
}
