//! One status line per account, as `authbridge status` prints it and `/readyz` reports it, from
//! what the processes acting on the accounts left behind (a separate process has no in-memory
//! state): the status file the token manager writes ([`StatusFiles`]) and the token store's
//! clear-text metadata (when the refresh token was stored). Needs no key and no provider secret,
//! and decrypts nothing.
//!
//! ```text
//! tickets  flow=authorization_code  access_token=expires in 52m (2025-06-01 10:42:00 UTC)  last_refresh=8m ago  refresh_token_age=8m  credential=client_secret  state=ok
//! ```
//!
//! An account needs attention when it needs a login, its last token request failed
//! (`state=failed: <why> — <fix>`), or its status file is stale — a token request marked in
//! flight whose process has exited or that outlived its bound, or an access token that the
//! process keeping it fresh stopped renewing. Whether the writer still runs is read from
//! `/proc/<pid>`, so the reader must run on the same machine (and PID namespace) as the writer;
//! where that cannot be told, only the time bounds apply.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{Account, Config};
use crate::token::{
    MasterKey, PersistedStatus, StatusFiles, StoreConfig, TokenError, TokenStore, from_unix_secs,
};

/// A token request may take `limits.token_request_secs` plus this (store reads and writes, the
/// status file) before a "refreshing" mark is stale.
const REFRESH_SLACK: Duration = Duration::from_secs(30);
/// A process that keeps an account's access token fresh renews it before it expires, and retries
/// a failure within 5 min (10 min after a refusal): an expiry this far in the past, with no update
/// since, means it stopped.
const RENEWAL_OVERDUE: Duration = Duration::from_secs(15 * 60);

/// The status of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLine {
    pub account: String,
    /// The whole line as printed.
    pub text: String,
    /// Someone must act: the account needs a login, its last token request failed, or its status
    /// is stale.
    pub needs_action: bool,
}

/// What `line` is told besides the account and its files.
pub struct Judge {
    pub now: SystemTime,
    /// How long a token request may be marked in flight (see [`REFRESH_SLACK`]).
    pub request_bound: Duration,
    /// Whether a process runs (`None`: cannot tell).
    pub alive: fn(u32) -> Option<bool>,
}

impl Judge {
    /// As of now, for `config`, asking `/proc` about writers.
    pub fn now(config: &Config) -> Judge {
        Judge {
            now: SystemTime::now(),
            request_bound: config.limits.timeouts.token_request + REFRESH_SLACK,
            alive: process_alive,
        }
    }
}

/// With a shared store (Redis), one line on whether it answers (`account` is `token_store`):
/// `token_store=redis (URL)  state=ok` or `state=failed: <why>`. `None` for files.
pub fn store_line(config: &Config) -> Option<AccountLine> {
    let StoreConfig::Redis(_) = &config.token_store else {
        return None;
    };
    let (text, needs_action) = match open_store(config) {
        Some(store) => match store.health() {
            Ok(()) => (format!("token_store={}  state=ok", store.describe()), false),
            Err(e) => (
                format!("token_store={}  state=failed: {e}", store.describe()),
                true,
            ),
        },
        None => (
            "token_store=redis  state=failed: cannot open the store".to_owned(),
            true,
        ),
    };
    Some(AccountLine {
        account: "token_store".to_owned(),
        text,
        needs_action,
    })
}

/// The store for reading clear-text metadata: any key will do, and none is created.
fn open_store(config: &Config) -> Option<TokenStore> {
    let key = MasterKey::from_bytes([0; 32], "status (no key needed)");
    match &config.token_store {
        StoreConfig::File => config
            .state_dir
            .is_dir()
            .then(|| TokenStore::open(&config.state_dir, key).ok())
            .flatten(),
        StoreConfig::Redis(_) => {
            TokenStore::open_with(&config.token_store, &config.state_dir, key).ok()
        }
    }
}

/// The status line of every configured account.
pub fn report(config: &Config, judge: &Judge) -> Vec<AccountLine> {
    report_with(config, open_store(config).as_ref(), judge, |_| true)
}

/// The status lines of the accounts `wanted` selects, reading metadata from `store` (a running
/// server passes its own: no second store, no Redis connection per call).
pub fn report_with(
    config: &Config,
    store: Option<&TokenStore>,
    judge: &Judge,
    wanted: impl Fn(&Account) -> bool,
) -> Vec<AccountLine> {
    let files = StatusFiles::new(&config.state_dir);
    config
        .accounts
        .iter()
        .filter(|a| wanted(a))
        .map(|a| {
            // An account with `token_from` shows the state of the token it borrows.
            let owner = a.token_account();
            let persisted = files.load(owner);
            let stored_at = store.map(|s| s.stored_at(owner).map_err(|e| e.to_string()));
            line(a, persisted.as_ref(), stored_at, judge)
        })
        .collect()
}

/// Whether process `pid` runs on this machine; `None` when that cannot be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if pid == 0 || !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// `stored_at`: `None` when there is no store yet; `Some(Err)` when the token file is unreadable.
fn line(
    account: &Account,
    p: Option<&PersistedStatus>,
    stored_at: Option<Result<Option<SystemTime>, String>>,
    judge: &Judge,
) -> AccountLine {
    let now = judge.now;
    let ago = |t: SystemTime| human(now.duration_since(t).unwrap_or_default());
    let name = &account.name;
    let flow = account.provider.flow;
    let delegated = flow.is_delegated();
    let stored = match &stored_at {
        Some(Ok(Some(t))) => Some(*t),
        _ => None,
    };
    let access_expiry = p
        .and_then(|p| p.access_token_expires_at)
        .map(from_unix_secs);
    let access = match access_expiry {
        Some(t) if t > now => format!(
            "expires in {} ({})",
            human(t.duration_since(now).unwrap_or_default()),
            utc(t)
        ),
        Some(t) => format!("expired {} ago", ago(t)),
        None => "none".to_owned(),
    };
    let last_refresh = match p.and_then(|p| p.last_refresh).map(from_unix_secs) {
        Some(t) => format!("{} ago", ago(t)),
        None => "never".to_owned(),
    };
    let rt_age = if !delegated {
        "n/a".to_owned()
    } else {
        match &stored_at {
            Some(Ok(Some(t))) => ago(*t),
            Some(Err(_)) => "unreadable".to_owned(),
            _ => "none".to_owned(),
        }
    };
    let needs_login_since = p.and_then(|p| p.needs_login_since).map(from_unix_secs);
    let newer_token = matches!((stored, needs_login_since), (Some(s), Some(since)) if s > since);
    let mut last_error = p.and_then(|p| p.last_error.clone());
    // The writer of the status file, if it is known to have exited.
    let gone = |p: &PersistedStatus| (judge.alive)(p.pid) == Some(false);
    let (state, needs_action) = match (p, &stored_at) {
        (_, Some(Err(e))) if delegated => (format!("needs login: {e}"), true),
        (_, Some(Ok(None)) | None) if delegated => (
            format!(
                "needs login: {}",
                TokenError::no_refresh_token(account.token_account()).hint()
            ),
            true,
        ),
        (Some(p), _) if p.needs_login.is_some() && !newer_token => {
            last_error = None;
            (
                format!("needs login: {}", p.needs_login.clone().unwrap_or_default()),
                true,
            )
        }
        (Some(p), _) if p.needs_login.is_some() => {
            last_error = None;
            (
                "ok (a new refresh token was stored after the last refusal; it is used at the next \
                 refresh)"
                    .to_owned(),
                false,
            )
        }
        (Some(p), _) if p.refreshing_since.is_some() => {
            let since = from_unix_secs(p.refreshing_since.unwrap_or_default());
            let running = now.duration_since(since).unwrap_or_default();
            if gone(p) {
                (
                    format!(
                        "stale (a token request started {} ago by pid {}, which has exited \
                         without recording the outcome; `authbridge check` tries again)",
                        ago(since),
                        p.pid
                    ),
                    true,
                )
            } else if running > judge.request_bound {
                (
                    format!(
                        "stale (a token request started {} ago by pid {} has not finished, though \
                         it may take {}; that process seems stuck: see its log, restart it; \
                         `authbridge check` tries again)",
                        ago(since),
                        p.pid,
                        human(judge.request_bound)
                    ),
                    true,
                )
            } else if last_error.is_some() {
                ("refreshing (the last attempt failed)".to_owned(), true)
            } else {
                ("refreshing".to_owned(), false)
            }
        }
        (Some(_), _) if last_error.is_some() => {
            let why = last_error.take().unwrap_or_default();
            (format!("failed: {why}"), true)
        }
        (Some(p), _)
            if p.in_use
                && access_expiry.is_some_and(|t| t + RENEWAL_OVERDUE < now)
                && from_unix_secs(p.updated_at) + RENEWAL_OVERDUE < now =>
        {
            let why = if gone(p) {
                format!(
                    "pid {}, which kept this account's access token fresh, has exited: the token \
                     expired {} ago and nothing renews it (is authbridge running?)",
                    p.pid,
                    access_expiry.map(ago).unwrap_or_default()
                )
            } else {
                format!(
                    "pid {} keeps this account's access token fresh but has not renewed it: it \
                     expired {} ago, last update {} ago — that process seems stuck, see its log",
                    p.pid,
                    access_expiry.map(ago).unwrap_or_default(),
                    ago(from_unix_secs(p.updated_at))
                )
            };
            (
                format!("stale ({why}; `authbridge check` records a fresh result)"),
                true,
            )
        }
        (None, _) => (
            "ok (no token request made yet; `authbridge check` tries one)".to_owned(),
            false,
        ),
        (Some(_), _) => ("ok".to_owned(), false),
    };
    let borrowed = match &account.token_from {
        Some(from) if delegated => format!(
            "  mailbox={}  token_from={from} (signed in as {})",
            account.mailbox, account.identity
        ),
        Some(from) => format!(
            "  mailbox={}  token_from={from} (app-only)",
            account.mailbox
        ),
        None => String::new(),
    };
    let mut text = format!(
        "{name}{borrowed}  flow={flow}  access_token={access}  last_refresh={last_refresh}  \
         refresh_token_age={rt_age}  credential={}",
        account.provider.credential
    );
    if let Some(e) = last_error {
        text.push_str(&format!("  last_error=\"{}\"", e.replace('"', "'")));
    }
    text.push_str(&format!("  state={state}"));
    AccountLine {
        account: name.clone(),
        text,
        needs_action,
    }
}

/// `45s`, `12m`, `3h 4m`, `2d 3h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `2025-06-01 10:42:00 UTC`.
pub fn utc(t: SystemTime) -> String {
    let c = crate::token::civil(crate::token::unix_secs(t));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(flow: &str) -> Account {
        let yaml = format!(
            "providers:\n  m365:\n    type: microsoft\n    tenant: t\n    client_id: c\n    \
             client_secret: s\n    flow: {flow}\naccounts:\n  - name: tickets\n    provider: m365\n    \
             mailbox: tickets@contoso.com\n"
        );
        crate::config::Config::parse(std::path::Path::new("/x/a.yaml"), &yaml)
            .unwrap()
            .accounts
            .remove(0)
    }

    /// As of `now`, every writer still running.
    fn judge(now: SystemTime) -> Judge {
        Judge {
            now,
            request_bound: Duration::from_secs(35),
            alive: |_| Some(true),
        }
    }

    fn persisted(now: u64) -> PersistedStatus {
        PersistedStatus {
            version: 1,
            account: "tickets".into(),
            updated_at: now,
            flow: "authorization_code".into(),
            access_token_expires_at: Some(now + 3000),
            last_refresh: Some(now - 600),
            ..Default::default()
        }
    }

    #[test]
    fn states() {
        let now_s = 1_700_000_000;
        let now = from_unix_secs(now_s);
        let a = account("authorization_code");
        let stored = Some(Ok(Some(from_unix_secs(now_s - 2 * 86_400))));
        let ok = line(&a, Some(&persisted(now_s)), stored.clone(), &judge(now));
        assert_eq!(
            ok.text,
            "tickets  flow=authorization_code  access_token=expires in 50m (2023-11-14 23:03:20 UTC)  \
             last_refresh=10m ago  refresh_token_age=2d 0h  credential=client_secret  state=ok"
        );
        assert!(!ok.needs_action);

        let refreshing = PersistedStatus {
            refreshing_since: Some(now_s - 2),
            ..persisted(now_s)
        };
        assert!(
            line(&a, Some(&refreshing), stored.clone(), &judge(now))
                .text
                .ends_with("state=refreshing")
        );
        // A "refreshing" mark past its bound is stale, not ok (issue 13: it read as healthy).
        let stale = PersistedStatus {
            refreshing_since: Some(now_s - 600),
            pid: 4242,
            ..persisted(now_s)
        };
        let l = line(&a, Some(&stale), stored.clone(), &judge(now));
        assert!(
            l.text.ends_with(
                "state=stale (a token request started 10m ago by pid 4242 has not finished, \
                 though it may take 35s; that process seems stuck: see its log, restart it; \
                 `authbridge check` tries again)"
            ),
            "{}",
            l.text
        );
        assert!(l.needs_action);

        // A failed last attempt is the state, with its fix, and needs action (it read "ok").
        let transient = PersistedStatus {
            last_error: Some(
                "token refresh for account tickets failed: HTTP 503 — authbridge retries".into(),
            ),
            ..persisted(now_s)
        };
        let l = line(&a, Some(&transient), stored.clone(), &judge(now));
        assert!(
            l.text.ends_with(
                "state=failed: token refresh for account tickets failed: HTTP 503 — authbridge \
                 retries"
            ),
            "{}",
            l.text
        );
        assert!(
            l.needs_action && !l.text.contains("last_error="),
            "{}",
            l.text
        );
        let retrying = PersistedStatus {
            refreshing_since: Some(now_s - 2),
            ..transient.clone()
        };
        let l = line(&a, Some(&retrying), stored.clone(), &judge(now));
        assert!(
            l.needs_action
                && l.text.contains("last_error=\"token refresh")
                && l.text
                    .ends_with("state=refreshing (the last attempt failed)"),
            "{}",
            l.text
        );

        let refused = PersistedStatus {
            last_error: Some("…".into()),
            needs_login: Some(
                "AADSTS70008 refresh token expired — run `authbridge login tickets`".into(),
            ),
            needs_login_since: Some(now_s - 60),
            ..persisted(now_s)
        };
        let l = line(&a, Some(&refused), stored.clone(), &judge(now));
        assert!(
            l.text.ends_with(
                "state=needs login: AADSTS70008 refresh token expired — run `authbridge login tickets`"
            ),
            "{}",
            l.text
        );
        assert!(l.needs_action && !l.text.contains("last_error"));
        // A token stored after the refusal (login, import-token in another process).
        let l = line(
            &a,
            Some(&refused),
            Some(Ok(Some(from_unix_secs(now_s - 5)))),
            &judge(now),
        );
        assert!(
            l.text.contains("state=ok (a new refresh token was stored"),
            "{}",
            l.text
        );
        assert!(!l.needs_action);

        // Nothing stored yet; no status file yet; an unreadable token file.
        let l = line(&a, None, Some(Ok(None)), &judge(now));
        assert!(
            l.text.ends_with(
                "access_token=none  last_refresh=never  refresh_token_age=none  credential=client_secret  state=needs login: \
                 no refresh token stored yet — run `authbridge login tickets` (or pipe an existing \
                 refresh token into `authbridge import-token tickets`)"
            ),
            "{}",
            l.text
        );
        let l = line(&a, None, stored.clone(), &judge(now));
        assert!(
            l.text
                .ends_with("state=ok (no token request made yet; `authbridge check` tries one)")
        );
        let l = line(
            &a,
            None,
            Some(Err("tickets.json is damaged".into())),
            &judge(now),
        );
        assert!(l.needs_action && l.text.contains("refresh_token_age=unreadable"));

        // App-only: no refresh token, an expired access token.
        let app = account("client_credentials");
        let expired = PersistedStatus {
            access_token_expires_at: Some(now_s - 120),
            ..persisted(now_s)
        };
        let l = line(&app, Some(&expired), Some(Ok(None)), &judge(now));
        assert!(
            l.text
                .contains("flow=client_credentials  access_token=expired 2m ago")
                && l.text.contains("refresh_token_age=n/a")
                && l.text.ends_with("state=ok"),
            "{}",
            l.text
        );
    }

    #[test]
    fn a_status_whose_writer_stopped_is_stale() {
        let now_s = 1_700_000_000;
        let now = from_unix_secs(now_s);
        let a = account("client_credentials");
        let gone = Judge {
            alive: |_| Some(false),
            ..judge(now)
        };
        let unknown = Judge {
            alive: |_| None,
            ..judge(now)
        };
        // `check` exited right after starting a request (its outcome never written).
        let cut_off = PersistedStatus {
            refreshing_since: Some(now_s - 3),
            pid: 4242,
            ..persisted(now_s)
        };
        let l = line(&a, Some(&cut_off), Some(Ok(None)), &gone);
        assert!(
            l.needs_action
                && l.text.ends_with(
                    "state=stale (a token request started 3s ago by pid 4242, which has exited \
                     without recording the outcome; `authbridge check` tries again)"
                ),
            "{}",
            l.text
        );
        // Without /proc only the bound tells.
        let l = line(&a, Some(&cut_off), Some(Ok(None)), &unknown);
        assert!(
            !l.needs_action && l.text.ends_with("state=refreshing"),
            "{}",
            l.text
        );

        // The server that kept the token fresh is gone: the token expired long ago.
        let abandoned = PersistedStatus {
            pid: 4242,
            in_use: true,
            updated_at: now_s - 7200,
            last_refresh: Some(now_s - 7200),
            access_token_expires_at: Some(now_s - 3600),
            ..persisted(now_s)
        };
        let l = line(&a, Some(&abandoned), Some(Ok(None)), &gone);
        assert!(
            l.needs_action
                && l.text.ends_with(
                    "state=stale (pid 4242, which kept this account's access token fresh, has \
                     exited: the token expired 1h 0m ago and nothing renews it (is authbridge \
                     running?); `authbridge check` records a fresh result)"
                ),
            "{}",
            l.text
        );
        let l = line(&a, Some(&abandoned), Some(Ok(None)), &judge(now));
        assert!(
            l.needs_action
                && l.text
                    .contains("state=stale (pid 4242 keeps this account's"),
            "{}",
            l.text
        );
        // Recently expired (renewal may be under way), or nobody was keeping it fresh (`check`,
        // `login` wrote it): not stale.
        let recent = PersistedStatus {
            access_token_expires_at: Some(now_s - 60),
            ..abandoned.clone()
        };
        assert!(!line(&a, Some(&recent), Some(Ok(None)), &gone).needs_action);
        let idle = PersistedStatus {
            in_use: false,
            ..abandoned
        };
        let l = line(&a, Some(&idle), Some(Ok(None)), &gone);
        assert!(
            !l.needs_action && l.text.ends_with("state=ok"),
            "{}",
            l.text
        );
    }

    #[test]
    fn formats() {
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(from_unix_secs(1_700_000_000)),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(utc(from_unix_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(human(Duration::from_secs(59)), "59s");
        assert_eq!(human(Duration::from_secs(125)), "2m");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 240)), "3h 4m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3 * 3600)), "2d 3h");
    }
}
