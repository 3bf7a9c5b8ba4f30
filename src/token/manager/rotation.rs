//! What becomes of a rotated refresh token, as read-modify-writes of the stored one. Every
//! function here blocks (store I/O) and runs while its caller holds the slot's `turn` and the
//! store's lock for the account.
//!
//! - [`settle`], before a refresh: choose the token to send. Normally the stored one; if an
//!   earlier rotation could not be saved ([`Unsaved`]), the unsaved one, after one more attempt
//!   to store it (it replaces only one of its ancestors, or nothing readable). If the store holds
//!   another token meanwhile (`authbridge login`, `import-token`), that newer one wins and the
//!   unsaved one is forgotten. The background save retry is the same call.
//! - [`persist_rotated`], after a refresh that rotated: store the new token unless a token other
//!   than the one the refresh started from was stored meanwhile (compare-and-set on its version).
//!   If the store refuses it, the fetch keeps it in memory (`Slot::keep_unsaved`): the access
//!   token is served, the next refresh sends the new refresh token, and the save is retried.
//!   Dropping it instead would leave the store with a token the provider has already replaced:
//!   harmless with Entra ID, fatal with a provider that refuses a reused refresh token.
//!
//! [`Unsaved`]: super::slot::Unsaved

use super::slot::{Slot, sha256};
use crate::secret::SecretString;
use crate::token::store::{StoreError, StoredToken, TokenStore};

/// The refresh token a fetch sends, and what it may replace when it rotates.
pub(super) struct Chosen {
    pub(super) token: SecretString,
    /// SHA-256 of `token`.
    pub(super) digest: [u8; 32],
    /// For an unsaved token, its ancestors ([`Unsaved::ancestors`]); empty for a stored one.
    pub(super) ancestors: Vec<[u8; 32]>,
    /// The store version it is stored as (`None` while it is not in the store).
    pub(super) version: Option<u64>,
}

impl Chosen {
    fn stored(s: StoredToken) -> Chosen {
        Chosen {
            digest: sha256(&s.refresh_token),
            token: s.refresh_token,
            ancestors: Vec::new(),
            version: Some(s.version),
        }
    }

    /// Whether the store holding `digest` means nobody else stored a token since this one was
    /// chosen: it holds this token or one of its ancestors.
    fn lineage_holds(&self, digest: &[u8; 32]) -> bool {
        *digest == self.digest || self.ancestors.contains(digest)
    }

    /// The ancestors of a token rotated from this one.
    pub(super) fn lineage(&self) -> Vec<[u8; 32]> {
        let mut lineage = self.ancestors.clone();
        lineage.push(self.digest);
        lineage
    }
}

/// What [`persist_rotated`] did with the new token.
pub(super) enum Persisted {
    Stored,
    /// Another token was stored while the refresh ran; it was kept.
    Superseded,
}

/// Loads the stored token and settles a pending unsaved one against it (see the module docs);
/// returns the token to send next, `None` if there is none at all.
pub(super) fn settle(store: &TokenStore, slot: &Slot) -> Result<Option<Chosen>, StoreError> {
    let account = slot.name();
    let loaded = store.load(account);
    let Some((pending, ancestors)) = slot.pending() else {
        return loaded.map(|s| s.map(Chosen::stored));
    };
    let chosen = Chosen {
        digest: sha256(&pending),
        token: pending,
        ancestors,
        version: None,
    };
    let expected = match loaded {
        Ok(Some(s)) => {
            let held = sha256(&s.refresh_token);
            if held == chosen.digest {
                // Stored meanwhile (a retry that finished after its caller gave up).
                slot.forget_unsaved(Some(&chosen.digest));
                return Ok(Some(Chosen::stored(s)));
            }
            if !chosen.lineage_holds(&held) {
                slot.forget_unsaved(Some(&chosen.digest));
                tracing::info!(
                    account,
                    "a new refresh token was stored (login or import) while the rotated one \
                     waited to be saved: using the new one"
                );
                return Ok(Some(Chosen::stored(s)));
            }
            Some(s.version)
        }
        // Nothing readable is stored: the pending token is the only good one.
        Ok(None) | Err(_) => None,
    };
    match store.replace(account, &chosen.token, expected) {
        Ok(version) => {
            slot.forget_unsaved(Some(&chosen.digest));
            tracing::info!(account, "the rotated refresh token is stored now");
            Ok(Some(Chosen {
                ancestors: Vec::new(),
                version: Some(version),
                ..chosen
            }))
        }
        Err(e) => {
            let failed = slot.save_failed_again(e.to_string());
            tracing::warn!(
                account,
                failed_saves = failed,
                "still cannot store the rotated refresh token (kept in memory, retried): {e}"
            );
            Ok(Some(chosen))
        }
    }
}

/// Stores `rotated` (issued for `chosen`) unless the store holds a token of another lineage now
/// (see the module docs). On an error nothing was written; the caller keeps `rotated`.
pub(super) fn persist_rotated(
    store: &TokenStore,
    account: &str,
    chosen: &Chosen,
    rotated: &SecretString,
) -> Result<Persisted, StoreError> {
    let expected = match store.load(account) {
        Ok(Some(now)) if chosen.lineage_holds(&sha256(&now.refresh_token)) => Some(now.version),
        Ok(Some(_)) => return Ok(Persisted::Superseded),
        // Nothing readable is stored: the rotated token is the only good one, store it.
        Ok(None) | Err(_) => None,
    };
    match store.replace(account, rotated, expected) {
        Ok(_) => Ok(Persisted::Stored),
        // Stored meanwhile by a writer that did not hold the lock: theirs is the newer one.
        Err(StoreError::Conflict { .. }) => Ok(Persisted::Superseded),
        Err(e) => Err(e),
    }
}
