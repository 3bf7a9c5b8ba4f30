//! The Redis (or Valkey) backend: the store replicas share. Per account, under `key_prefix`:
//! - `<prefix>token/<account>`: a hash, `v` = the store version, `rec` = the sealed refresh-token
//!   record (`record.rs`); written only by a compare-and-set script on `v`, so a rotation saved
//!   by one replica is never overwritten by another that started from the same version.
//! - `<prefix>access/<account>`: the sealed access token the last refresh published, with the
//!   server's own expiry (`PX` = its lifetime); readers take its remaining life from `PTTL`, never
//!   from their own clock. Published in the same script as the refresh token it came with, and
//!   only while that refresh token's version is the stored one.
//! - `<prefix>access/<account>/<audience>`: the same for a token of other scopes than the
//!   account's own (a Microsoft Graph token next to the Exchange one; `<audience>` is a digest of
//!   the scope set, [`Audience`]). Sealed under `<account>/<audience>`, so a record copied from
//!   one audience's key to another's does not open: replicas never take one resource's token
//!   for another's.
//! - `<prefix>lease/<account>`: the refresh lease (`SET NX PX`), its value the holder's id. The
//!   holder renews it every third of its lifetime from a helper thread while its refresh runs,
//!   and releases it (delete-if-mine) when the guard drops; a holder that dies loses it when it
//!   expires, by the server's clock. A process that ends (a CLI command such as `import-token`
//!   or `migrate-store`, or `run` on shutdown) first waits, bounded, for the releases its
//!   dropped guards started ([`finish_lease_releases`]): otherwise the lease would outlive it
//!   and make every replica's next refresh wait for its expiry. Fencing is by version: the lease only avoids duplicate token
//!   requests, the compare-and-set on `v` keeps the stored token right whoever holds it.
//!
//! Connections: the synchronous client (the store's contract is blocking, see `backend.rs`), a
//! small pool, a connect deadline and a per-command deadline (`limits::shared_store`). After a
//! failed connect, calls fail at once with the last error until a backoff (doubling, capped at
//! 2 s) has passed, so a Redis outage costs callers a fast temporary error, not a hang; the next
//! call after the backoff reconnects. [`RedisStore::health`] pings for `status` and readiness.
//!
//! Commands used (the ACL a deployment grants): `PING`, `HGET`, `HMGET`, `GET`, `PTTL`, `SET`,
//! `EVAL`, and `CLIENT SETNAME` is not sent (nor `CLIENT SETINFO`).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ::redis::{Client, Connection, ErrorKind as RedisErrorKind, RedisError, Value};

use super::backend::{StoreBackend, StoreLock, StoredToken};
use super::crypto::MasterKey;
use super::error::StoreError;
use super::record::{self, OpenError, RecordKind};
use crate::limits::shared_store::{
    COMMAND, CONNECT, POOL_MAX, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN,
};
use crate::secret::SecretString;
use crate::token::unix_time::{from_unix_secs, unix_secs};

/// Test hook: seconds added to this process's wall clock wherever the Redis backend reads it
/// (only the `stored_at` shown by `status`). Lets a test run replicas whose clocks disagree and
/// check that nothing they decide depends on it.
pub const CLOCK_SKEW_VAR: &str = "AUTHBRIDGE_TEST_CLOCK_SKEW_SECS";

/// `token_store: { type: redis, … }`, validated.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL, without a password.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub key_prefix: String,
    /// CA certificates (PEM) that sign the server's certificate, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Lifetime of the refresh lease.
    pub lease: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("ca_file", &self.ca_file)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Which access token of an account: its own scopes' (`None`) or another scope set's (a digest,
/// see [`Audience::of_scopes`]).
pub type AudienceRef<'a> = Option<&'a Audience>;

/// The shared-store name of a scope set other than an account's own: the first 16 hex digits of
/// the SHA-256 of the scopes, sorted and space-separated. Only hex digits, so it is safe in a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Audience(String);

impl Audience {
    pub fn of_scopes(scopes: &[String]) -> Audience {
        use sha2::{Digest, Sha256};
        let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let digest = Sha256::digest(sorted.join(" ").as_bytes());
        Audience(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An access token another replica published, with the life the server still gives it.
#[derive(Debug)]
pub struct SharedAccess {
    pub access_token: SecretString,
    /// The refresh token's version it came with.
    pub version: u64,
    /// The lifetime the provider gave it.
    pub lifetime: Duration,
    /// What is left of it, by the server's clock (`PTTL`).
    pub remaining: Duration,
}

/// Compare-and-set of the refresh token, and the access token that came with it.
/// KEYS: token hash, access key. ARGV: expected version ("" = none stored), new version, record,
/// then optionally the access record and its lifetime in ms.
const SAVE_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur then cur = '' end
if cur ~= ARGV[1] then return {0, cur} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'rec', ARGV[3])
if ARGV[4] and ARGV[4] ~= '' then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
else
  redis.call('DEL', KEYS[2])
end
return {1, ARGV[2]}
";

/// Publishes an access token if its refresh token's version is still the stored one.
/// KEYS: token hash, access key. ARGV: version, access record, lifetime ms.
const PUBLISH_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Renews (ARGV[2] = ms) or, without ARGV[2], releases the lease if ARGV[1] still holds it.
const LEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
";

/// Tokens in Redis. Cheap to share (`Arc` inside); its methods block for at most the connect
/// and command deadlines.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The URL, for messages (never holds a password: refused at config load).
    url: String,
    prefix: String,
    key: MasterKey,
    lease: Duration,
    /// This process's part of every lease value; a counter makes each lease unique.
    owner: String,
    leases: AtomicU64,
    pool: Mutex<Vec<Connection>>,
    health: Mutex<Health>,
    skew_secs: i64,
}

#[derive(Default)]
struct Health {
    failures: u32,
    /// While set and in the future, calls fail at once with `last_error`.
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the server `settings` name; does not connect yet (the first call does, so a
    /// replica starts while Redis is down and serves what it can).
    pub fn open(settings: &RedisSettings, key: MasterKey) -> Result<RedisStore, StoreError> {
        let bad = |reason: String| StoreError::Unavailable {
            store: settings.url.clone(),
            reason,
        };
        let mut info = ::redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| bad(format!("not a Redis URL: {e}")))?;
        let mut redis_settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(u) = &settings.username {
            redis_settings = redis_settings.set_username(u);
        }
        if let Some(p) = &settings.password {
            redis_settings = redis_settings.set_password(p.expose());
        }
        info = info.set_redis_settings(redis_settings);
        let client = match &settings.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| StoreError::Io {
                    action: "read the Redis CA file",
                    path: ca.clone(),
                    source: e,
                })?;
                Client::build_with_tls(
                    info,
                    ::redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => Client::open(info),
        }
        .map_err(|e| bad(describe(&e)))?;
        let mut id = [0u8; 6];
        let _ = getrandom::fill(&mut id);
        let owner = format!(
            "{}:{}",
            std::process::id(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let skew_secs = std::env::var(CLOCK_SKEW_VAR)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                url: settings.url.clone(),
                prefix: settings.key_prefix.clone(),
                key,
                lease: settings.lease,
                owner,
                leases: AtomicU64::new(0),
                pool: Mutex::new(Vec::new()),
                health: Mutex::new(Health::default()),
                skew_secs,
            }),
        })
    }

    /// The server's URL (no password), for messages.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// `PING`: `Ok` when the server answers, else why not (for `status` and readiness).
    pub fn health(&self) -> Result<(), StoreError> {
        self.call(|c| ::redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }

    /// The last connection failure, if the store is failing now.
    pub fn last_error(&self) -> Option<String> {
        let h = self.health_lock();
        h.retry_at.and(h.last_error.clone())
    }

    fn key(&self, what: &str, account: &str) -> Result<String, StoreError> {
        super::file::check_account_name(account)?;
        Ok(format!("{}{what}/{account}", self.inner.prefix))
    }

    /// The key of `account`'s published access token for `audience`, and the name its record is
    /// sealed under.
    fn access_key(
        &self,
        account: &str,
        audience: AudienceRef<'_>,
    ) -> Result<(String, String), StoreError> {
        let key = self.key("access", account)?;
        Ok(match audience {
            None => (key, account.to_owned()),
            Some(a) => (
                format!("{key}/{}", a.as_str()),
                format!("{account}/{}", a.as_str()),
            ),
        })
    }

    fn health_lock(&self) -> MutexGuard<'_, Health> {
        self.inner.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A wall-clock reading for metadata (with the test skew).
    fn now_unix(&self) -> u64 {
        let now = unix_secs(SystemTime::now());
        now.saturating_add_signed(self.inner.skew_secs)
    }

    /// A pooled connection (`true`), or a new one unless the reconnect backoff is running.
    fn connection(&self) -> Result<(Connection, bool), StoreError> {
        if let Some(c) = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok((c, true));
        }
        {
            let h = self.health_lock();
            if let (Some(at), Some(why)) = (h.retry_at, &h.last_error)
                && Instant::now() < at
            {
                return Err(self.unavailable(why.clone()));
            }
        }
        let conn = self
            .inner
            .client
            .get_connection_with_timeout(CONNECT)
            .and_then(|c| {
                c.set_read_timeout(Some(COMMAND))?;
                c.set_write_timeout(Some(COMMAND))?;
                Ok(c)
            });
        match conn {
            Ok(c) => Ok((c, false)),
            Err(e) => {
                let why = describe(&e);
                self.failed(&why);
                Err(self.unavailable(why))
            }
        }
    }

    fn failed(&self, why: &str) {
        let mut h = self.health_lock();
        h.failures = h.failures.saturating_add(1);
        let doublings = h.failures.saturating_sub(1).min(8);
        let backoff = (RECONNECT_BACKOFF_MIN * 2u32.pow(doublings)).min(RECONNECT_BACKOFF_MAX);
        h.retry_at = Some(Instant::now() + backoff);
        if h.last_error.as_deref() != Some(why) {
            tracing::warn!(store = %self.inner.url, "token store unreachable: {why}");
        }
        h.last_error = Some(why.to_owned());
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            store: self.inner.url.clone(),
            reason,
        }
    }

    /// Runs `f` on a connection; a connection that failed is dropped (the next call reconnects).
    /// An idle pooled connection that turns out dead (Redis restarted meanwhile) is retried once
    /// on a new connection.
    fn call<T>(
        &self,
        f: impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        match self.call_once(&f) {
            Err((true, _)) => self.call_once(&f).map_err(|(_, e)| e),
            other => other.map_err(|(_, e)| e),
        }
    }

    /// One attempt of [`call`](Self::call); the error says whether a pooled connection broke.
    fn call_once<T>(
        &self,
        f: &impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, (bool, StoreError)> {
        let (mut conn, reused) = self.connection().map_err(|e| (false, e))?;
        match f(&mut conn) {
            Ok(v) => {
                let mut h = self.health_lock();
                if h.retry_at.take().is_some() {
                    tracing::info!(store = %self.inner.url, "token store reachable again");
                }
                h.failures = 0;
                drop(h);
                let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < POOL_MAX {
                    pool.push(conn);
                }
                Ok(v)
            }
            Err(e) => {
                let why = describe(&e);
                let broken = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error();
                if broken {
                    // Idle connections to the same server are most likely broken too.
                    self.inner
                        .pool
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                    if reused {
                        return Err((true, self.unavailable(why)));
                    }
                    self.failed(&why);
                } else {
                    let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < POOL_MAX {
                        pool.push(conn);
                    }
                }
                Err((false, self.unavailable(why)))
            }
        }
    }

    fn corrupt(&self, key: &str, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: PathBuf::from(format!("{} key {key}", self.inner.url)),
            reason,
        }
    }

    /// The version and record of `account`'s refresh token.
    fn read_token(&self, account: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let key = self.key("token", account)?;
        let (v, rec): (Option<String>, Option<Vec<u8>>) =
            self.call(|c| ::redis::cmd("HMGET").arg(&key).arg("v").arg("rec").query(c))?;
        match (v, rec) {
            (None, None) => Ok(None),
            (Some(v), Some(rec)) => {
                let v = v
                    .parse()
                    .map_err(|_| self.corrupt(&key, format!("version {v:?} is not a number")))?;
                Ok(Some((v, rec)))
            }
            _ => Err(self.corrupt(&key, "the version or the record is missing".into())),
        }
    }

    fn open_record(
        &self,
        key: &str,
        kind: RecordKind,
        account: &str,
        bytes: &[u8],
    ) -> Result<(SecretString, record::Record), StoreError> {
        let parsed = record::parse(bytes, kind, account).map_err(|r| self.corrupt(key, r))?;
        match record::open(&self.inner.key, kind, &parsed) {
            Ok(t) => Ok((t, parsed.record)),
            Err(OpenError::WrongKey) => Err(StoreError::KeyMismatch {
                path: PathBuf::from(format!("{} key {key}", self.inner.url)),
                key_source: self.inner.key.origin().to_owned(),
            }),
            Err(OpenError::Damaged(r)) => Err(self.corrupt(key, r)),
        }
    }

    fn seal(
        &self,
        kind: RecordKind,
        account: &str,
        version: u64,
        lifetime: Option<Duration>,
        token: &SecretString,
    ) -> Result<String, StoreError> {
        let lifetime_ms = lifetime.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        record::seal(
            &self.inner.key,
            kind,
            account,
            version,
            self.now_unix(),
            lifetime_ms,
            token,
        )
        .ok_or_else(|| self.unavailable("cannot seal the token (no random nonce)".into()))
    }

    /// Compare-and-set of the refresh token (and, with `access`, publishes the access token that
    /// came with it; else drops a published one, which belongs to an older refresh token).
    /// `expected`: the stored version it replaces (`None`: nothing stored). Returns the new
    /// version, or `Err(found)` when another version is stored.
    fn cas(
        &self,
        account: &str,
        expected: Option<u64>,
        refresh_token: &SecretString,
        access: Option<(&SecretString, Duration)>,
        audience: AudienceRef<'_>,
    ) -> Result<Result<u64, Option<u64>>, StoreError> {
        let new = expected
            .map_or(Some(1), |v| v.checked_add(1))
            .ok_or_else(|| self.corrupt(account, "its version cannot grow any more".into()))?;
        let rec = self.seal(RecordKind::Refresh, account, new, None, refresh_token)?;
        let (access_key, label) = self.access_key(account, audience)?;
        let access_rec = match access {
            Some((token, lifetime)) => Some((
                self.seal(RecordKind::Access, &label, new, Some(lifetime), token)?,
                lifetime.as_millis().max(1),
            )),
            None => None,
        };
        let token_key = self.key("token", account)?;
        let reply: Vec<Value> = self.call(|c| {
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(SAVE_SCRIPT)
                .arg(2)
                .arg(&token_key)
                .arg(&access_key)
                .arg(expected.map(|v| v.to_string()).unwrap_or_default())
                .arg(new)
                .arg(&rec);
            if let Some((a, ms)) = &access_rec {
                cmd.arg(a).arg(ms.to_string());
            }
            cmd.query(c)
        })?;
        let number = |v: Option<&Value>| -> Option<u64> {
            match v? {
                Value::Int(i) => u64::try_from(*i).ok(),
                Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                _ => None,
            }
        };
        match number(reply.first()) {
            Some(1) => Ok(Ok(new)),
            Some(0) => Ok(Err(number(reply.get(1)))),
            _ => Err(self.unavailable("unexpected reply from the save script".into())),
        }
    }

    /// Publishes `access_token` (from a refresh that did not rotate the refresh token stored as
    /// `version`) for the other replicas; `false` when another version is stored now.
    pub fn publish_access(
        &self,
        account: &str,
        audience: AudienceRef<'_>,
        version: u64,
        access_token: &SecretString,
        lifetime: Duration,
    ) -> Result<bool, StoreError> {
        let (access_key, label) = self.access_key(account, audience)?;
        let rec = self.seal(
            RecordKind::Access,
            &label,
            version,
            Some(lifetime),
            access_token,
        )?;
        let token_key = self.key("token", account)?;
        let done: i64 = self.call(|c| {
            ::redis::cmd("EVAL")
                .arg(PUBLISH_SCRIPT)
                .arg(2)
                .arg(&token_key)
                .arg(&access_key)
                .arg(version)
                .arg(&rec)
                .arg(lifetime.as_millis().max(1).to_string())
                .query(c)
        })?;
        Ok(done == 1)
    }

    /// The access token for `audience` the last refresh published, if the server still holds
    /// it.
    pub fn load_access(
        &self,
        account: &str,
        audience: AudienceRef<'_>,
    ) -> Result<Option<SharedAccess>, StoreError> {
        let (key, label) = self.access_key(account, audience)?;
        let (rec, pttl): (Option<Vec<u8>>, i64) = self.call(|c| {
            ::redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query(c)
        })?;
        let (Some(rec), Ok(remaining_ms)) = (rec, u64::try_from(pttl)) else {
            return Ok(None);
        };
        let (token, r) = self.open_record(&key, RecordKind::Access, &label, &rec)?;
        Ok(Some(SharedAccess {
            access_token: token,
            version: r.version,
            lifetime: Duration::from_millis(r.lifetime_ms.unwrap_or(remaining_ms)),
            remaining: Duration::from_millis(remaining_ms),
        }))
    }

    /// Saves `rotated` (issued for the refresh token stored as `expected`) and publishes the
    /// access token that came with it, in one step. `Ok(Err(found))`: another version is stored
    /// (another replica won the race); nothing was written.
    pub fn save_rotation(
        &self,
        account: &str,
        audience: AudienceRef<'_>,
        expected: Option<u64>,
        rotated: &SecretString,
        access_token: &SecretString,
        lifetime: Duration,
    ) -> Result<Result<u64, Option<u64>>, StoreError> {
        self.cas(
            account,
            expected,
            rotated,
            Some((access_token, lifetime)),
            audience,
        )
    }

    /// Takes the refresh lease of `account` if nobody holds it; `None` if someone does.
    pub fn try_lease(&self, account: &str) -> Result<Option<StoreLock>, StoreError> {
        let key = self.key("lease", account)?;
        let n = self.inner.leases.fetch_add(1, Ordering::Relaxed);
        let value = format!("{}:{n}", self.inner.owner);
        let ms = u64::try_from(self.inner.lease.as_millis()).unwrap_or(u64::MAX);
        let got: Option<String> = self.call(|c| {
            ::redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query(c)
        })?;
        if got.is_none() {
            return Ok(None);
        }
        Ok(Some(StoreLock::holding(Lease::start(
            self.clone(),
            key,
            value,
        ))))
    }

    fn lease_script(
        &self,
        key: &str,
        value: &str,
        renew_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.call(|c| {
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(LEASE_SCRIPT).arg(1).arg(key).arg(value);
            if let Some(ms) = renew_ms {
                cmd.arg(ms);
            }
            cmd.query::<i64>(c)
        })
        .map(|_| ())
    }
}

/// Lease threads of this process that have not released their lease yet.
static LEASE_THREADS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

fn lease_threads() -> MutexGuard<'static, usize> {
    LEASE_THREADS.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits, at most `bound`, until every lease this process took is released (its guard dropped
/// and the release sent). Called before the process exits; returns how many are still held.
pub fn finish_lease_releases(bound: Duration) -> usize {
    let deadline = Instant::now() + bound;
    let mut live = lease_threads();
    while *live > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        live = LEASE_THREADS
            .1
            .wait_timeout(live, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    *live
}

/// A held lease: a helper thread renews it every third of its lifetime and releases it when the
/// guard drops (so dropping it never blocks an async task).
struct Lease {
    stop: mpsc::Sender<()>,
}

impl Lease {
    fn start(store: RedisStore, key: String, value: String) -> Lease {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = store.inner.lease / 3;
        let ms = u64::try_from(store.inner.lease.as_millis()).unwrap_or(u64::MAX);
        *lease_threads() += 1;
        let spawned = std::thread::Builder::new()
            .name("authbridge-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = store.lease_script(&key, &value, Some(ms)) {
                        tracing::warn!("cannot renew the refresh lease {key}: {e}");
                    }
                }
                if let Err(e) = store.lease_script(&key, &value, None) {
                    tracing::debug!("cannot release the refresh lease {key} (it expires): {e}");
                }
                lease_thread_ended();
            });
        if let Err(e) = spawned {
            lease_thread_ended();
            tracing::warn!("cannot start the lease thread (the lease expires by itself): {e}");
        }
        Lease { stop }
    }
}

fn lease_thread_ended() {
    let mut live = lease_threads();
    *live = live.saturating_sub(1);
    LEASE_THREADS.1.notify_all();
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

impl StoreBackend for RedisStore {
    fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let Some((version, rec)) = self.read_token(account)? else {
            return Ok(None);
        };
        let key = self.key("token", account)?;
        let (token, r) = self.open_record(&key, RecordKind::Refresh, account, &rec)?;
        if r.version != version {
            return Err(self.corrupt(&key, "the record's version is not the stored one".into()));
        }
        Ok(Some(StoredToken {
            refresh_token: token,
            stored_at: from_unix_secs(r.stored_at),
            version,
        }))
    }

    fn save(
        &self,
        account: &str,
        refresh_token: &SecretString,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        if let Some(expected) = expected_version {
            return match self.cas(account, Some(expected), refresh_token, None, None)? {
                Ok(v) => Ok(v),
                Err(found) => Err(StoreError::Conflict {
                    account: account.to_owned(),
                    expected,
                    found,
                }),
            };
        }
        // Replace whatever is stored: compare-and-set on what we just read, a few times.
        for _ in 0..8 {
            let current = self.read_token(account)?.map(|(v, _)| v);
            if let Ok(v) = self.cas(account, current, refresh_token, None, None)? {
                return Ok(v);
            }
        }
        Err(self.unavailable("the token kept changing while it was being replaced".into()))
    }

    /// The refresh lease, waiting for another holder up to the file backend's bound.
    fn lock(&self, account: &str) -> Result<StoreLock, StoreError> {
        let started = Instant::now();
        loop {
            if let Some(l) = self.try_lease(account)? {
                return Ok(l);
            }
            if started.elapsed() >= super::file::LOCK_WAIT {
                return Err(StoreError::Locked {
                    path: PathBuf::from(self.key("lease", account)?),
                    waited: super::file::LOCK_WAIT,
                });
            }
            std::thread::sleep(crate::limits::shared_store::LEASE_POLL);
        }
    }

    fn stored_at(&self, account: &str) -> Result<Option<SystemTime>, StoreError> {
        let Some((_, rec)) = self.read_token(account)? else {
            return Ok(None);
        };
        let key = self.key("token", account)?;
        let parsed =
            record::parse(&rec, RecordKind::Refresh, account).map_err(|r| self.corrupt(&key, r))?;
        Ok(Some(from_unix_secs(parsed.record.stored_at)))
    }

    fn location(&self, account: &str) -> Result<String, StoreError> {
        Ok(format!(
            "{} key {}",
            self.inner.url,
            self.key("token", account)?
        ))
    }
}

/// A Redis error as a sentence (the crate's text names the kind and the server's message; it
/// never holds the password).
fn describe(e: &RedisError) -> String {
    match e.kind() {
        RedisErrorKind::AuthenticationFailed => {
            format!("Redis refused the credentials ({e}): check token_store.username and password")
        }
        _ if e.is_timeout() => format!("Redis did not answer within {} s", COMMAND.as_secs()),
        _ if e.code() == Some("NOPERM") => format!(
            "the Redis user lacks a permission ({e}): grant the ACL shown in README \
             \"Running several replicas\""
        ),
        _ => e.to_string(),
    }
}
