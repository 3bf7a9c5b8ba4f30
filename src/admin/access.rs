//! Who may use the admin page, and how a request proves it.
//!
//! - **Host** (DNS rebinding): a page request must name the admin listener in `Host` — a
//!   loopback name (`localhost`, `127.0.0.1`, `[::1]`), the listen address, or one of
//!   `admin.hostnames`; anything else gets `421`. The port is not compared (`kubectl
//!   port-forward` and `ssh -L` may use another local port); a rebinding attacker cannot make a
//!   browser send a loopback name for its own site.
//! - **Sessions**: `GET /` gives the browser a random session id in a cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, and `Secure` under TLS). Each session has its own CSRF token,
//!   which every POST must carry in its form (compared in constant time); a POST whose `Origin`
//!   is present and not the page's own is refused too. At most [`MAX_SESSIONS`] sessions are
//!   kept (the least recently seen goes first); a session ends after [`SESSION_IDLE`] idle or
//!   [`SESSION_MAX`] in all.
//! - **Password** (`admin.password_hash`): the session must have logged in with it. Checks run
//!   one at a time on the blocking pool (argon2id), failures are throttled per source address
//!   as local mail logins are (growing delay, then refused for the failure window), and a
//!   successful login gets a new session id (no fixation).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::auth::FailureTracker;
use crate::config::AdminSettings;
use crate::secret::SecretString;

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 256;
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// A session ends this long after it began, used or not.
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// How long a password check may take (queue and argon2).
const PASSWORD_CHECK: Duration = Duration::from_secs(10);
/// The throttle's key for admin-page logins (one "user" per source address).
const THROTTLE_USER: &str = "\0admin-page";

pub const SESSION_COOKIE: &str = "authbridge_session";

/// A 32-byte random value, base64url.
pub fn random_token() -> std::io::Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let s = URL_SAFE_NO_PAD.encode(raw);
    zeroize::Zeroize::zeroize(&mut raw);
    Ok(s)
}

/// Constant-time equality of two strings (CSRF tokens, flow bindings).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Session {
    csrf: SecretString,
    authenticated: bool,
    created: Instant,
    last_seen: Instant,
}

/// What a request's session cookie gives it.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub id: String,
    pub csrf: String,
    pub authenticated: bool,
    /// Made for this request: the response must set the cookie.
    pub new: bool,
}

/// A password check's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    Ok,
    Wrong,
    /// Too many failures from this source: refused without a check.
    Throttled,
    /// The check could not run in time.
    Busy,
}

/// Sessions, password checks and the Host allow-list of one admin listener.
pub struct Access {
    settings: AdminSettings,
    listen_host: Option<String>,
    tls: bool,
    sessions: Mutex<HashMap<String, Session>>,
    checks: Semaphore,
    throttle: Arc<FailureTracker>,
}

impl Access {
    pub fn new(
        settings: AdminSettings,
        listen: Option<std::net::SocketAddr>,
        throttle: Arc<FailureTracker>,
    ) -> Access {
        Access {
            tls: settings.tls.is_some(),
            listen_host: listen
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| a.ip().to_string()),
            settings,
            sessions: Mutex::new(HashMap::new()),
            checks: Semaphore::new(1),
            throttle,
        }
    }

    pub fn settings(&self) -> &AdminSettings {
        &self.settings
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn password_required(&self) -> bool {
        self.settings.password_hash.is_some()
    }

    /// May a page request carry this `Host` host name?
    pub fn host_allowed(&self, host: &str) -> bool {
        host == "localhost"
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.listen_host.as_deref() == Some(host)
            || self.settings.hostnames.iter().any(|h| h == host)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of cookie value `id`, if it is alive (and marks it seen).
    pub fn session(&self, id: Option<&str>) -> Option<SessionView> {
        let id = id?;
        let now = Instant::now();
        let mut sessions = self.lock();
        let alive = sessions.get(id).is_some_and(|s| {
            now.duration_since(s.last_seen) < SESSION_IDLE
                && now.duration_since(s.created) < SESSION_MAX
        });
        if !alive {
            sessions.remove(id);
            return None;
        }
        let s = sessions.get_mut(id)?;
        s.last_seen = now;
        Some(SessionView {
            id: id.to_owned(),
            csrf: s.csrf.expose().clone(),
            authenticated: s.authenticated || self.settings.password_hash.is_none(),
            new: false,
        })
    }

    /// A new session (logged in when `authenticated`), evicting the least recently seen one
    /// when [`MAX_SESSIONS`] are kept.
    pub fn new_session(&self, authenticated: bool) -> std::io::Result<SessionView> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| {
            now.duration_since(s.last_seen) < SESSION_IDLE
                && now.duration_since(s.created) < SESSION_MAX
        });
        if sessions.len() >= MAX_SESSIONS {
            // Anonymous sessions go first: a flood of page loads cannot log an admin out.
            let victim = sessions
                .iter()
                .min_by_key(|(_, s)| (s.authenticated, s.last_seen))
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                sessions.remove(&k);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: SecretString::new(csrf.clone()),
                authenticated,
                created: now,
                last_seen: now,
            },
        );
        Ok(SessionView {
            id,
            csrf,
            authenticated: authenticated || self.settings.password_hash.is_none(),
            new: true,
        })
    }

    /// End a session.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many sessions are kept (tests).
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.lock().len()
    }

    /// The `Set-Cookie` value for a session.
    pub fn session_cookie(&self, id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
            if self.tls { "; Secure" } else { "" }
        )
    }

    /// Check the admin password of a login from `ip`.
    pub async fn check_password(&self, ip: IpAddr, password: SecretString) -> PasswordCheck {
        let Some(hash) = self.settings.password_hash.clone() else {
            return PasswordCheck::Ok;
        };
        let mut attempt = match tokio::time::timeout(
            PASSWORD_CHECK,
            self.throttle.begin(ip, THROTTLE_USER),
        )
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => return PasswordCheck::Throttled,
            Err(_) => return PasswordCheck::Busy,
        };
        let check = async {
            let _turn = self.checks.acquire().await.ok()?;
            tokio::task::spawn_blocking(move || verify(&hash, password.expose().as_bytes()))
                .await
                .ok()
        };
        match tokio::time::timeout(PASSWORD_CHECK, check).await {
            Ok(Some(true)) => PasswordCheck::Ok,
            Ok(Some(false)) => {
                let (delay, _blocked) = attempt.failed();
                tokio::time::sleep(delay).await;
                PasswordCheck::Wrong
            }
            _ => PasswordCheck::Busy,
        }
    }
}

fn verify(hash: &str, password: &[u8]) -> bool {
    use argon2::PasswordVerifier;
    argon2::PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ConnectionLimits;

    fn access(settings: AdminSettings) -> Access {
        Access::new(
            settings,
            Some("127.0.0.1:9925".parse().unwrap()),
            FailureTracker::new(ConnectionLimits {
                login_failures_per_source: 3,
                failure_delay_base: Duration::from_millis(1),
                failure_delay_max: Duration::from_millis(5),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn hosts() {
        let a = access(AdminSettings {
            hostnames: vec!["admin.example.com".into()],
            ..Default::default()
        });
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "127.0.0.2",
            "admin.example.com",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "example.com",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn sessions_and_cookies() {
        let a = access(AdminSettings::default());
        let s = a.new_session(false).unwrap();
        assert!(
            s.authenticated,
            "no password configured: every session may act"
        );
        let again = a.session(Some(&s.id)).unwrap();
        assert_eq!(again.csrf, s.csrf);
        assert!(a.session(Some("forged")).is_none());
        assert_eq!(
            a.session_cookie("X"),
            "authbridge_session=X; Path=/; HttpOnly; SameSite=Strict"
        );
        for _ in 0..MAX_SESSIONS + 5 {
            a.new_session(false).unwrap();
        }
        assert_eq!(a.session_count(), MAX_SESSIONS);
        a.end(&s.id);
        assert!(a.session(Some(&s.id)).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[tokio::test]
    async fn passwords_are_checked_and_throttled() {
        let a = access(AdminSettings {
            password_hash: Some(crate::auth::hash_password(b"s3cret").unwrap()),
            ..Default::default()
        });
        let s = a.new_session(false).unwrap();
        assert!(!s.authenticated);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let check = |p: &str| a.check_password(ip, SecretString::new(p.to_owned()));
        assert_eq!(check("s3cret").await, PasswordCheck::Ok);
        assert_eq!(check("wrong").await, PasswordCheck::Wrong);
        assert_eq!(check("wrong").await, PasswordCheck::Wrong);
        assert_eq!(check("wrong").await, PasswordCheck::Wrong);
        // Over the limit: even the right password is refused until the window passes.
        assert_eq!(check("s3cret").await, PasswordCheck::Throttled);
    }
}
