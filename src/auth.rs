//! Local credentials: argon2id verification, a cache of verified credentials, and per-source
//! failure throttling.
//!
//! - A verified credential is remembered as an HMAC-SHA256 digest under a per-process random key
//!   and compared in constant time, so repeat logins (GLPI opens a session per notification) do
//!   not pay argon2 again and no password is kept in memory.
//! - An unknown user is checked against a dummy hash with the same parameters: wrong user and
//!   wrong password take the same time and get the same reply.
//! - argon2 runs on the blocking pool behind a semaphore, so a login storm cannot exhaust memory
//!   (each verification takes ~19 MiB). Its working memory comes from a pool of at most
//!   `ARGON2_PARALLEL` buffers, reused: allocating 19 MiB afresh for every verification made the
//!   allocator keep a little more each time (tests/hostile.rs saw the resident size climb by
//!   ~19 MiB per failed login up to ~200 MiB).
//! - Failures are counted per source address in a sliding window; the reply to a failure is
//!   delayed more with each one, and past the limit the source is refused outright.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::Account;
use crate::limits::ConnectionLimits;
pub use crate::password_hash::check_hash;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Concurrent argon2 verifications.
const ARGON2_PARALLEL: usize = 4;
/// Sources tracked for failures before the oldest are dropped.
const TRACKED_SOURCES_MAX: usize = 65_536;

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
    dummy_hash: String,
    argon2_slots: Semaphore,
    /// argon2 working memory, one buffer per slot in use, reused across verifications.
    argon2_memory: Mutex<Vec<Vec<Block>>>,
}

/// The result of a credential check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The login maps to this account.
    Account(String),
    Invalid,
}

impl Credentials {
    pub fn new(accounts: &[Account]) -> Arc<Credentials> {
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
        let mut key = vec![0u8; 32];
        // Without randomness the cache key is fixed; the cache still never holds a password.
        let _ = getrandom::fill(&mut key);
        let dummy_hash = hash_password(b"authbridge-dummy-password")
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$J1KoOiDzkVdcZh9rZ1Rml2x6Kx0v/4nP1YfDhsmB8lU".into());
        Arc::new(Credentials {
            logins,
            cache_key: Secret::new(key),
            dummy_hash,
            argon2_slots: Semaphore::new(ARGON2_PARALLEL),
            argon2_memory: Mutex::new(Vec::new()),
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

    /// Check a login. Unknown users cost the same as wrong passwords.
    pub async fn verify(self: &Arc<Self>, username: &str, password: &Secret<Vec<u8>>) -> Verdict {
        let digest = self.digest(username, password.expose());
        let entry = self.logins.get(username);
        if let Some(e) = entry {
            if cached(e, &digest) {
                return Verdict::Account(e.account.clone());
            }
        }
        let Ok(_slot) = self.argon2_slots.acquire().await else {
            return Verdict::Invalid;
        };
        if let Some(e) = entry {
            // Another session may have verified the same credential while we waited.
            if cached(e, &digest) {
                return Verdict::Account(e.account.clone());
            }
        }
        let hash = entry.map_or_else(|| self.dummy_hash.clone(), |e| e.hash.clone());
        let pw = password.clone();
        let memory = self
            .argon2_memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        let (ok, memory) = tokio::task::spawn_blocking(move || {
            let mut memory = memory;
            let ok = verify_with_memory(&hash, pw.expose(), &mut memory);
            (ok, memory)
        })
        .await
        .unwrap_or((false, Vec::new()));
        if !memory.is_empty() {
            self.argon2_memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(memory);
        }
        match entry {
            Some(e) if ok => {
                *e.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
                Verdict::Account(e.account.clone())
            }
            _ => Verdict::Invalid,
        }
    }
}

/// `PasswordVerifier::verify_password` (password-hash crate), with the caller's working memory:
/// recompute the hash with the PHC string's algorithm, version, parameters and salt, compare in
/// constant time. The memory is wiped before it goes back to the pool.
fn verify_with_memory(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok();
    memory[..blocks].fill(Block::default());
    let ok = computed && bool::from(out.as_slice().ct_eq(expected.as_bytes()));
    zeroize::Zeroize::zeroize(&mut out);
    ok
}

fn cached(entry: &LoginEntry, digest: &[u8; 32]) -> bool {
    entry
        .verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|d| bool::from(d.ct_eq(digest)))
}

/// Failed logins per source address in a sliding window.
pub struct FailureTracker {
    limits: ConnectionLimits,
    sources: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl FailureTracker {
    pub fn new(limits: ConnectionLimits) -> Arc<FailureTracker> {
        Arc::new(FailureTracker {
            limits,
            sources: Mutex::new(HashMap::new()),
        })
    }

    fn recent(&self, map: &mut HashMap<IpAddr, Vec<Instant>>, ip: IpAddr, now: Instant) -> usize {
        let window = self.limits.failure_window;
        match map.get_mut(&ip) {
            Some(v) => {
                v.retain(|t| now.duration_since(*t) < window);
                let n = v.len();
                if n == 0 {
                    map.remove(&ip);
                }
                n
            }
            None => 0,
        }
    }

    /// True when this source has used up its failures and must be refused without a check.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        self.recent(&mut map, ip, Instant::now()) >= self.limits.login_failures_per_source as usize
    }

    /// Count a failure; returns how long to wait before answering it, and whether the source is
    /// now over its limit.
    pub fn record_failure(&self, ip: IpAddr) -> (Duration, bool) {
        let now = Instant::now();
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.recent(&mut map, ip, now) + 1;
        if map.len() >= TRACKED_SOURCES_MAX && !map.contains_key(&ip) {
            // Drop the sources whose last failure is oldest.
            let window = self.limits.failure_window;
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < window / 2)
            });
        }
        map.entry(ip).or_default().push(now);
        let factor = 1u32 << (n - 1).min(8) as u32;
        let delay = (self.limits.failure_delay_base * factor).min(self.limits.failure_delay_max);
        (delay, n >= self.limits.login_failures_per_source as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Login;

    fn accounts(hash: &str) -> Vec<Account> {
        let provider = Arc::new(crate::token::ProviderConfig {
            name: "p".into(),
            kind: crate::token::ProviderKind::Custom,
            flow: crate::token::Flow::ClientCredentials,
            client_id: "c".into(),
            client_secret: None,
            endpoints: crate::token::Endpoints {
                token_url: "http://127.0.0.1:1/token".into(),
                authorize_url: None,
                device_code_url: None,
            },
            scopes: vec![],
            redirect_uri: None,
            tls: crate::tls::client_config(None).unwrap(),
        });
        vec![Account {
            name: "tickets".into(),
            provider,
            mailbox: "tickets@contoso.com".into(),
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

    #[test]
    fn failure_tracker_delays_and_blocks() {
        let t = FailureTracker::new(ConnectionLimits {
            login_failures_per_source: 3,
            ..Default::default()
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!t.is_blocked(ip));
        let (d1, over1) = t.record_failure(ip);
        let (d2, _) = t.record_failure(ip);
        let (_, over3) = t.record_failure(ip);
        assert!(d2 > d1 && !over1 && over3);
        assert!(t.is_blocked(ip));
        assert!(!t.is_blocked("127.0.0.2".parse().unwrap()));
    }
}
