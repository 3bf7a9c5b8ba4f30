//! One fetch of an account's access token, run in its own task by the manager: load the refresh
//! token, ask the token endpoint (through `grant.rs`), persist a rotated refresh token before
//! anyone sees the access token that came with it, and report the [`Outcome`] to the slot.
//!
//! Persisting a rotation is a read-modify-write of the stored token ([`persist_rotated`]): under
//! the store's lock for the account, re-read the store, keep a token stored meanwhile by
//! `authbridge login` / `import-token`, else replace the one this refresh started from
//! (compare-and-set on its version).

use std::time::Instant;

use sha2::{Digest, Sha256};

use super::slot::{Outcome, Slot, make_cached};
use crate::secret::SecretString;
use crate::token::error::{ErrorContext, TokenError};
use crate::token::failure::ErrorKind;
use crate::token::grant;
use crate::token::settings::TokenSettings;
use crate::token::store::{StoreError, TokenStore};

/// What became of a rotated refresh token.
enum Persisted {
    Stored,
    /// Another token was stored while the refresh ran; it was kept.
    Superseded,
}

/// One fetch: load the refresh token, ask the endpoint, persist a rotated refresh token, build the
/// cache entry. Runs in its own task.
pub(super) async fn fetch(
    slot: &Slot,
    store: &TokenStore,
    settings: &TokenSettings,
    epoch: u64,
) -> Outcome {
    let provider = &*slot.config.provider;
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
    let name = account.to_owned();
    let stored = match store.blocking(move |s| s.load(&name)).await {
        Ok(Some(s)) => s,
        Ok(None) => return outcome(Err(TokenError::no_refresh_token(account)), None, false),
        Err(e) => return outcome(Err(TokenError::from_store(&e, &ctx)), None, false),
    };
    let digest = sha256(&stored.refresh_token);
    if let Some(e) = slot.permanent_block(Some(digest), started) {
        return outcome(Err(e), Some(digest), false);
    }
    let response = match grant::refresh(provider, account, &stored.refresh_token, settings).await {
        Ok(r) => r,
        Err(e) => return outcome(Err(e), Some(digest), true),
    };
    if let Some(rotated) = &response.refresh_token
        && rotated != &stored.refresh_token
    {
        // Persist before anyone sees the access token that came with it.
        let name = account.to_owned();
        let rotated = rotated.clone();
        match store
            .blocking(move |s| persist_rotated(s, &name, &digest, &rotated))
            .await
        {
            Ok(Persisted::Stored) => tracing::debug!(account, "rotated refresh token stored"),
            // The access token just fetched is still good.
            Ok(Persisted::Superseded) => {
                tracing::info!(
                    account,
                    "a new refresh token was stored while this refresh ran; keeping the new one"
                );
            }
            Err(e) => {
                let e = TokenError::new(
                    account,
                    ErrorKind::Transient,
                    format!("could not store the rotated refresh token: {e}"),
                    "check that the state_dir is writable and the disk is not full; the previous \
                     refresh token is kept",
                );
                tracing::error!(account, "{e}");
                return outcome(Err(e), Some(digest), true);
            }
        }
    }
    outcome(
        Ok(make_cached(response, started, settings)),
        Some(digest),
        true,
    )
}

/// Stores `rotated` for `account` unless a token other than the one the refresh started from
/// (`started_from`, its SHA-256) was stored meanwhile (`authbridge login` / `import-token` may
/// store one while the request runs: theirs is kept). Blocking; run on the blocking pool.
fn persist_rotated(
    store: &TokenStore,
    account: &str,
    started_from: &[u8; 32],
    rotated: &SecretString,
) -> Result<Persisted, StoreError> {
    let _lock = store.lock(account)?;
    let expected = match store.load(account) {
        Ok(Some(now)) if sha256(&now.refresh_token) != *started_from => {
            return Ok(Persisted::Superseded);
        }
        Ok(Some(now)) => Some(now.version),
        // Nothing readable is stored: the rotated token is the only good one, store it.
        Ok(None) | Err(_) => None,
    };
    // A retry of a failed save belongs here, while the lock is still held.
    match store.replace(account, rotated, expected) {
        Ok(_) => Ok(Persisted::Stored),
        // Stored meanwhile by a writer that did not hold the lock: theirs is the newer one.
        Err(StoreError::Conflict { .. }) => Ok(Persisted::Superseded),
        Err(e) => Err(e),
    }
}

fn sha256(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}
