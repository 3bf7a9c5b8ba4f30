//! One fetch of an account's access token, run in its own task by the manager: load the refresh
//! token, ask the token endpoint (through `grant.rs`), persist a rotated refresh token before
//! anyone sees the access token that came with it (or keep it in memory if the store refuses it),
//! and report the [`Outcome`] to the slot.
//!
//! For a delegated account the whole fetch, from loading the refresh token to saving the rotated
//! one, runs under the slot's `turn` and the store's lock for the account, so another process on
//! the same store (`authbridge login`, a second `run`) never sends the same refresh token nor
//! overwrites a newer one. The decisions about the stored token are in `rotation.rs`.

use std::sync::Arc;
use std::time::Instant;

use super::rotation::{self, Persisted};
use super::slot::{Outcome, Slot, make_cached};
use crate::token::error::{ErrorContext, TokenError};
use crate::token::failure::ErrorKind;
use crate::token::grant;
use crate::token::settings::TokenSettings;
use crate::token::store::{StoreError, StoreLock, TokenStore};

/// One fetch: load the refresh token, ask the endpoint, persist a rotated refresh token, build the
/// cache entry. Runs in its own task.
pub(super) async fn fetch(
    slot: &Arc<Slot>,
    store: &TokenStore,
    settings: &TokenSettings,
    epoch: u64,
) -> Outcome {
    let config = slot.config();
    let provider = &*config.provider;
    let account = slot.name();
    let started = Instant::now();
    let outcome = |result, rt_digest, requested| Outcome {
        result,
        rt_digest,
        requested,
        epoch,
    };
    if !provider.flow.is_delegated() {
        if let Some(e) = slot.permanent_block(None, started) {
            return outcome(Err(e), None, false);
        }
        let result = grant::client_credentials(provider, account, settings).await;
        let requested = !matches!(&result, Err(e) if e.kind == ErrorKind::NotConfigured);
        return outcome(
            result.map(|r| make_cached(r, started, settings)),
            None,
            requested,
        );
    }
    let ctx = ErrorContext::new(provider, account, "refresh_token");
    if let Some(shared) = store.shared() {
        return super::cluster::fetch(slot, store, shared, settings, epoch).await;
    }
    // Held until the rotated token is saved (or kept): see the module docs.
    let _turn = slot.turn.lock().await;
    let _lock = match store_lock(store, account).await {
        Ok(lock) => lock,
        Err(e) => return outcome(Err(TokenError::from_store(&e, &ctx)), None, false),
    };
    let for_settle = Arc::clone(slot);
    let chosen = match store
        .blocking(move |s| rotation::settle(s, &for_settle))
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return outcome(Err(TokenError::no_refresh_token(account)), None, false),
        Err(e) => return outcome(Err(TokenError::from_store(&e, &ctx)), None, false),
    };
    let digest = chosen.digest;
    if let Some(e) = slot.permanent_block(Some(digest), started) {
        return outcome(Err(e), Some(digest), false);
    }
    let response = match grant::refresh(provider, account, &chosen.token, settings).await {
        Ok(r) => r,
        Err(e) => return outcome(Err(e), Some(digest), true),
    };
    if let Some(rotated) = &response.refresh_token
        && rotated != &chosen.token
    {
        // Persist before anyone sees the access token that came with it.
        let name = account.to_owned();
        let lineage = chosen.lineage();
        let rotated = rotated.clone();
        let to_store = rotated.clone();
        match store
            .blocking(move |s| rotation::persist_rotated(s, &name, &chosen, &to_store))
            .await
        {
            Ok(Persisted::Stored) => {
                slot.forget_unsaved(None);
                tracing::debug!(account, "rotated refresh token stored");
            }
            // The access token just fetched is still good.
            Ok(Persisted::Superseded) => {
                slot.forget_unsaved(None);
                tracing::info!(
                    account,
                    "a new refresh token was stored while this refresh ran; keeping the new one"
                );
            }
            Err(e) => {
                tracing::error!(
                    account,
                    "could not store the rotated refresh token: {e} — it is kept in memory and \
                     used for the next refresh, and the save is retried in the background; check \
                     that the state_dir is writable and the disk is not full"
                );
                slot.keep_unsaved(rotated, lineage, e.to_string());
            }
        }
    }
    outcome(
        Ok(make_cached(response, started, settings)),
        Some(digest),
        true,
    )
}

/// The store's lock for `account`, for a read-modify-write of its token. `Ok(None)` when the lock
/// cannot be had for another reason than a holder (a read-only or full state_dir): the slot's
/// turn still serialises this process, and a save then most likely fails and is kept in memory.
pub(super) async fn store_lock(
    store: &TokenStore,
    account: &str,
) -> Result<Option<StoreLock>, StoreError> {
    let name = account.to_owned();
    match store.blocking(move |s| s.lock(&name)).await {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ StoreError::Locked { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(
                account,
                "cannot take the token store's lock, going on without it: {e}"
            );
            Ok(None)
        }
    }
}
