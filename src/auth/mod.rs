//! Local credentials: argon2id verification and a cache of verified credentials. The
//! computations run in a bounded pool (`argon2_pool`); failed logins are throttled per source
//! and user (`throttle`).
//!
//! - A verified credential is remembered as an HMAC-SHA256 digest under a per-process random key
//!   and compared in constant time, so repeat logins (GLPI opens a session per notification) do
//!   not pay argon2 again and no password is kept in memory. [`Credentials::cached`] answers
//!   at once: a verified credential never waits for argon2 or behind its queue, and the session
//!   asks it before the throttle, so it is never refused either.
//! - An unknown user is checked against a dummy hash whose parameters (m, t, p, salt and output
//!   lengths) are those of the median configured hash (by `m × t`), through the same pool: an
//!   unknown user and a wrong password for a known one cost the same work and get the same reply.
//! - argon2 memory: at most `cap` buffers of at most `password_hash::M_COST_KIB` each, at any
//!   instant (19 MiB each with the default parameters).

mod argon2_pool;
mod throttle;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, Params};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Account;
pub use crate::password_hash::check_hash;
use crate::password_hash::{self, HashShape};
use crate::secret::Secret;
use argon2_pool::Argon2Pool;
pub use argon2_pool::Argon2Stats;
pub use throttle::{Attempt, Blocked, CHECKS_PER_SOURCE, FailureTracker, Source};

type HmacSha256 = Hmac<Sha256>;

/// User names in logs: at most this many characters, escaped.
pub const LOGGED_NAME_MAX: usize = 64;

/// Hash a password as an argon2id PHC string with a random salt (default parameters:
/// m=19456 KiB, t=2, p=1, as OWASP recommends).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness available: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A client-supplied user name as logs show it: quoted, the first [`LOGGED_NAME_MAX`]
/// characters with control characters, quotes and backslashes escaped, and how much was cut.
pub struct LoggedName<'a>(pub &'a str);

impl fmt::Display for LoggedName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars().take(LOGGED_NAME_MAX) {
            write!(f, "{}", c.escape_debug())?;
        }
        f.write_str("\"")?;
        let total = self.0.chars().count();
        if total > LOGGED_NAME_MAX {
            write!(f, "… ({total} characters)")?;
        }
        Ok(())
    }
}

struct LoginEntry {
    account: String,
    hash: String,
    /// HMAC of the last password verified for this login.
    verified: Mutex<Option<[u8; 32]>>,
}

/// The local logins of every account.
pub struct Credentials {
    logins: HashMap<String, LoginEntry>,
    cache_key: Secret<Vec<u8>>,
    /// Checked for unknown users: the median configured parameters, a hash nothing matches.
    dummy_hash: String,
    /// Shared with the credentials a config reload replaces these with: one memory bound.
    pool: Arc<Argon2Pool>,
}

/// The result of a credential check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The login maps to this account.
    Account(String),
    Invalid,
    /// Too many checks are queued: answer with the temporary reply.
    Busy,
}

impl Credentials {
    pub fn new(accounts: &[Account]) -> Arc<Credentials> {
        let mut key = vec![0u8; 32];
        // Without randomness the cache key is fixed; the cache still never holds a password.
        let _ = getrandom::fill(&mut key);
        Self::build(accounts, Secret::new(key), Arc::new(Argon2Pool::new()))
    }

    /// The credentials a config reload switches to: the logins of `accounts`, sharing this
    /// one's argon2 pool and cache key. A login whose account and hash are unchanged keeps its
    /// verified credential (no argon2 on its next login); a changed hash forgets it, so the old
    /// password stops working at once.
    pub fn reconfigured(&self, accounts: &[Account]) -> Arc<Credentials> {
        let next = Self::build(
            accounts,
            Secret::new(self.cache_key.expose().clone()),
            Arc::clone(&self.pool),
        );
        for (name, entry) in &next.logins {
            if let Some(old) = self.logins.get(name)
                && old.account == entry.account
                && old.hash == entry.hash
            {
                let verified = *old.verified.lock().unwrap_or_else(|p| p.into_inner());
                *entry.verified.lock().unwrap_or_else(|p| p.into_inner()) = verified;
            }
        }
        next
    }

    fn build(
        accounts: &[Account],
        cache_key: Secret<Vec<u8>>,
        pool: Arc<Argon2Pool>,
    ) -> Arc<Credentials> {
        let mut logins = HashMap::new();
        for a in accounts {
            for l in &a.logins {
                logins.insert(
                    l.username.clone(),
                    LoginEntry {
                        account: a.name.clone(),
                        hash: l.password_hash.clone(),
                        verified: Mutex::new(None),
                    },
                );
            }
        }
        let shapes: Vec<HashShape> = logins
            .values()
            .filter_map(|e| password_hash::parse(&e.hash).ok())
            .collect();
        Arc::new(Credentials {
            logins,
            cache_key,
            dummy_hash: dummy_hash(&median_shape(shapes)),
            pool,
        })
    }

    fn digest(&self, username: &str, password: &[u8]) -> [u8; 32] {
        let mut mac =
            HmacSha256::new_from_slice(self.cache_key.expose()).expect("HMAC takes any key length");
        mac.update(&(username.len() as u64).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// The account of a credential verified before, at once (no argon2, no queue); `None` if
    /// this credential has not been verified (or the user is unknown).
    pub fn cached(&self, username: &str, password: &Secret<Vec<u8>>) -> Option<String> {
        let digest = self.digest(username, password.expose());
        let entry = self.logins.get(username)?;
        cached(entry, &digest).then(|| entry.account.clone())
    }

    /// Check a login: from the cache, else with argon2 in the bounded pool. Unknown users cost
    /// the same as wrong passwords. Cancel-safe: a caller that stops waiting leaves the queue,
    /// or leaves a computation already started to finish (and release its slot) on its own.
    pub async fn verify(&self, username: &str, password: &Secret<Vec<u8>>) -> Verdict {
        let digest = self.digest(username, password.expose());
        let entry = self.logins.get(username);
        if let Some(e) = entry {
            if cached(e, &digest) {
                return Verdict::Account(e.account.clone());
            }
        }
        let Ok(slot) = self.pool.slot().await else {
            return Verdict::Busy;
        };
        if let Some(e) = entry {
            // Another session may have verified the same credential while we waited.
            if cached(e, &digest) {
                return Verdict::Account(e.account.clone());
            }
        }
        let hash = entry.map_or_else(|| self.dummy_hash.clone(), |e| e.hash.clone());
        let ok = slot.run(hash, password.clone()).await;
        match entry {
            Some(e) if ok => {
                *e.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
                Verdict::Account(e.account.clone())
            }
            _ => Verdict::Invalid,
        }
    }

    /// The argon2 pool's counters (computations running, the most at once, queue).
    pub fn argon2_stats(&self) -> Argon2Stats {
        self.pool.stats()
    }
}

fn cached(entry: &LoginEntry, digest: &[u8; 32]) -> bool {
    entry
        .verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|d| bool::from(d.ct_eq(digest)))
}

/// The configured hash of median work (`m × t`; the lower one of an even count); the defaults
/// of [`hash_password`] without any.
fn median_shape(mut shapes: Vec<HashShape>) -> HashShape {
    shapes.sort_by_key(|s| (s.work(), s.params.m_cost(), s.params.p_cost()));
    if shapes.is_empty() {
        return HashShape {
            params: Params::default(),
            salt_len: 16,
        };
    }
    shapes.swap_remove((shapes.len() - 1) / 2)
}

/// An argon2id PHC string of `shape` with a random salt and a random hash value: verifying any
/// password against it costs what a configured hash of that shape costs, and nothing matches it.
fn dummy_hash(shape: &HashShape) -> String {
    let p = &shape.params;
    let output_len = p.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut salt = vec![0u8; shape.salt_len];
    let mut value = vec![0u8; output_len];
    // Without randomness the bytes stay zero: still a hash no password is known to match.
    let _ = getrandom::fill(&mut salt);
    let _ = getrandom::fill(&mut value);
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        p.m_cost(),
        p.t_cost(),
        p.p_cost(),
        b64.encode(&salt),
        b64.encode(&value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Login;
    use std::time::{Duration, Instant};

    fn accounts(hash: &str) -> Vec<Account> {
        let provider = Arc::new(crate::token::ProviderConfig {
            name: "p".into(),
            kind: crate::token::ProviderKind::Custom,
            flow: crate::token::Flow::ClientCredentials,
            client_id: "c".into(),
            credential: crate::token::CredentialKind::None,
            client_secret: None,
            assertion: None,
            endpoints: crate::token::Endpoints {
                token_url: "http://127.0.0.1:1/token".into(),
                authorize_url: None,
                device_code_url: None,
            },
            scopes: vec![],
            redirect_uri: None,
            http: crate::token::HttpClient::new(
                crate::tls::client_config(None).unwrap(),
                crate::token::ProxySetting::Direct,
            ),
        });
        vec![Account {
            name: "tickets".into(),
            provider,
            mailbox: "tickets@contoso.com".into(),
            token_from: None,
            identity: "tickets@contoso.com".into(),
            logins: vec![Login {
                username: "glpi".into(),
                password_hash: hash.into(),
            }],
        }]
    }

    #[tokio::test]
    async fn verifies_and_caches() {
        let hash = hash_password(b"s3cret \"pw\"").unwrap();
        check_hash(&hash).unwrap();
        let creds = Credentials::new(&accounts(&hash));
        let pw = Secret::new(b"s3cret \"pw\"".to_vec());
        assert_eq!(
            creds.verify("glpi", &pw).await,
            Verdict::Account("tickets".into())
        );
        // cached path
        let t = Instant::now();
        assert_eq!(
            creds.verify("glpi", &pw).await,
            Verdict::Account("tickets".into())
        );
        assert!(t.elapsed() < Duration::from_millis(20));
        assert_eq!(
            creds.verify("glpi", &Secret::new(b"wrong".to_vec())).await,
            Verdict::Invalid
        );
        assert_eq!(creds.verify("nobody", &pw).await, Verdict::Invalid);
        // A wrong password after a cached success is still refused.
        assert_eq!(
            creds.verify("glpi", &Secret::new(b"s3cret".to_vec())).await,
            Verdict::Invalid
        );
    }

    fn hash_with(m: u32, t: u32, p: u32, output_len: usize) -> String {
        let salt = SaltString::encode_b64(b"twelve bytes").unwrap();
        Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Params::new(m, t, p, Some(output_len)).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string()
    }

    /// An unknown user is checked against a hash of the median configured shape (by m × t),
    /// not a fixed one: users whose hashes have other parameters cannot be told apart by time.
    #[test]
    fn the_dummy_hash_has_the_median_shape() {
        let mut accts = accounts(&hash_with(7_168, 5, 1, 32));
        for (i, hash) in [hash_with(47_104, 1, 2, 24), hash_with(65_536, 4, 1, 32)]
            .into_iter()
            .enumerate()
        {
            accts[0].logins.push(Login {
                username: format!("u{i}"),
                password_hash: hash,
            });
        }
        let creds = Credentials::new(&accts);
        let shape = password_hash::parse(&creds.dummy_hash).unwrap();
        let p = &shape.params;
        assert_eq!(
            (
                p.m_cost(),
                p.t_cost(),
                p.p_cost(),
                p.output_len(),
                shape.salt_len
            ),
            (47_104, 1, 2, Some(24), 12)
        );
        // Nothing configured: the defaults of hash_password.
        let none = Credentials::new(&[]);
        let shape = password_hash::parse(&none.dummy_hash).unwrap();
        assert_eq!(shape.params.m_cost(), Params::DEFAULT_M_COST);
        assert_eq!(shape.salt_len, 16);
    }

    /// Unknown users go through the same pool, at the same cost: one computation each.
    #[tokio::test]
    async fn unknown_users_cost_one_computation() {
        let hash = hash_password(b"pw").unwrap();
        let creds = Credentials::new(&accounts(&hash));
        let wrong = Secret::new(b"wrong".to_vec());
        assert_eq!(creds.verify("nobody", &wrong).await, Verdict::Invalid);
        assert_eq!(creds.verify("glpi", &wrong).await, Verdict::Invalid);
        assert_eq!(creds.argon2_stats().started, 2);
        assert_eq!(creds.cached("glpi", &wrong), None);
    }

    /// User names in logs: at most 64 characters, escaped, and how long the name was.
    #[test]
    fn logged_names_are_bounded_and_escaped() {
        assert_eq!(LoggedName("glpi").to_string(), "\"glpi\"");
        assert_eq!(
            LoggedName("a\"b\\c\n\u{1b}[31m").to_string(),
            "\"a\\\"b\\\\c\\n\\u{1b}[31m\""
        );
        let long = "x".repeat(5000);
        let shown = LoggedName(&long).to_string();
        assert_eq!(shown, format!("\"{}\"… (5000 characters)", "x".repeat(64)));
    }
}
