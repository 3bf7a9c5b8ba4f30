//! `authbridge status`: one line per account, from what the processes acting on the accounts left
//! behind (a separate process has no in-memory state): the status file the token manager writes
//! (`token::StatusFiles`) and the token store's clear-text metadata (when the refresh token was
//! stored). Needs no key and decrypts nothing.
//!
//! ```text
//! tickets  flow=authorization_code  access_token=expires in 52m (2025-06-01 10:42:00 UTC)  last_refresh=8m ago  refresh_token_age=8m  state=ok
//! ```

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::load;

use crate::config::{Account, Config};
use crate::token::{
    MasterKey, PersistedStatus, StatusFiles, TokenError, TokenStore, from_unix_secs,
};

/// A "refreshing" mark older than this is stale (the writer died mid-request).
const REFRESHING_STALE: Duration = Duration::from_secs(60);

/// The status of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLine {
    pub account: String,
    /// The whole line as printed.
    pub text: String,
    /// Someone must act (the state is "needs login").
    pub needs_action: bool,
}

/// Runs `authbridge status [--config PATH]`: prints every account's line; an account that needs
/// action is a runtime failure.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(config)?;
    let lines = report(&config, SystemTime::now());
    for l in &lines {
        println!("{}", l.text);
    }
    if lines.iter().any(|l| l.needs_action) {
        Err(Failure::Runtime(anyhow!(
            "some accounts need attention (see above)"
        )))
    } else {
        Ok(())
    }
}

/// The status line of every configured account, as of `now`.
pub fn report(config: &Config, now: SystemTime) -> Vec<AccountLine> {
    let files = StatusFiles::new(&config.state_dir);
    // Only clear-text metadata is read: any key will do, and none is created.
    let store = config
        .state_dir
        .is_dir()
        .then(|| {
            TokenStore::open(
                &config.state_dir,
                MasterKey::from_bytes([0; 32], "status (no key needed)"),
            )
            .ok()
        })
        .flatten();
    config
        .accounts
        .iter()
        .map(|a| {
            let persisted = files.load(&a.name);
            let stored_at = store
                .as_ref()
                .map(|s| s.stored_at(&a.name).map_err(|e| e.to_string()));
            line(a, persisted.as_ref(), stored_at, now)
        })
        .collect()
}

/// `stored_at`: `None` when there is no store yet; `Some(Err)` when the token file is unreadable.
fn line(
    account: &Account,
    p: Option<&PersistedStatus>,
    stored_at: Option<Result<Option<SystemTime>, String>>,
    now: SystemTime,
) -> AccountLine {
    let name = &account.name;
    let flow = account.provider.flow;
    let delegated = flow.is_delegated();
    let stored = match &stored_at {
        Some(Ok(Some(t))) => Some(*t),
        _ => None,
    };
    let access = match p
        .and_then(|p| p.access_token_expires_at)
        .map(from_unix_secs)
    {
        Some(t) if t > now => format!(
            "expires in {} ({})",
            human(t.duration_since(now).unwrap_or_default()),
            utc(t)
        ),
        Some(t) => format!(
            "expired {} ago",
            human(now.duration_since(t).unwrap_or_default())
        ),
        None => "none".to_owned(),
    };
    let last_refresh = match p.and_then(|p| p.last_refresh).map(from_unix_secs) {
        Some(t) => format!("{} ago", human(now.duration_since(t).unwrap_or_default())),
        None => "never".to_owned(),
    };
    let rt_age = if !delegated {
        "n/a".to_owned()
    } else {
        match &stored_at {
            Some(Ok(Some(t))) => human(now.duration_since(*t).unwrap_or_default()),
            Some(Err(_)) => "unreadable".to_owned(),
            _ => "none".to_owned(),
        }
    };
    let needs_login_since = p.and_then(|p| p.needs_login_since).map(from_unix_secs);
    let newer_token = matches!((stored, needs_login_since), (Some(s), Some(since)) if s > since);
    let mut last_error = p.and_then(|p| p.last_error.clone());
    let (state, needs_action) = match (p, &stored_at) {
        (_, Some(Err(e))) if delegated => (format!("needs login: {e}"), true),
        (_, Some(Ok(None)) | None) if delegated => (
            format!("needs login: {}", TokenError::no_refresh_token(name).hint()),
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
        (Some(p), _)
            if p.refreshing_since
                .map(from_unix_secs)
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() < REFRESHING_STALE) =>
        {
            ("refreshing".to_owned(), false)
        }
        (None, _) => (
            "ok (no token request made yet; `authbridge check` tries one)".to_owned(),
            false,
        ),
        (Some(_), _) => ("ok".to_owned(), false),
    };
    let mut text = format!(
        "{name}  flow={flow}  access_token={access}  last_refresh={last_refresh}  \
         refresh_token_age={rt_age}"
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
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
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
        let ok = line(&a, Some(&persisted(now_s)), stored.clone(), now);
        assert_eq!(
            ok.text,
            "tickets  flow=authorization_code  access_token=expires in 50m (2023-11-14 23:03:20 UTC)  \
             last_refresh=10m ago  refresh_token_age=2d 0h  state=ok"
        );
        assert!(!ok.needs_action);

        let refreshing = PersistedStatus {
            refreshing_since: Some(now_s - 2),
            ..persisted(now_s)
        };
        assert!(
            line(&a, Some(&refreshing), stored.clone(), now)
                .text
                .ends_with("state=refreshing")
        );
        let stale = PersistedStatus {
            refreshing_since: Some(now_s - 600),
            ..persisted(now_s)
        };
        assert!(
            line(&a, Some(&stale), stored.clone(), now)
                .text
                .ends_with("state=ok")
        );

        let transient = PersistedStatus {
            last_error: Some("token refresh for account tickets failed: HTTP 503".into()),
            ..persisted(now_s)
        };
        let l = line(&a, Some(&transient), stored.clone(), now);
        assert!(l.text.contains("last_error=\"token refresh"), "{}", l.text);
        assert!(l.text.ends_with("state=ok") && !l.needs_action);

        let refused = PersistedStatus {
            last_error: Some("…".into()),
            needs_login: Some(
                "AADSTS70008 refresh token expired — run `authbridge login tickets`".into(),
            ),
            needs_login_since: Some(now_s - 60),
            ..persisted(now_s)
        };
        let l = line(&a, Some(&refused), stored.clone(), now);
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
            now,
        );
        assert!(
            l.text.contains("state=ok (a new refresh token was stored"),
            "{}",
            l.text
        );
        assert!(!l.needs_action);

        // Nothing stored yet; no status file yet; an unreadable token file.
        let l = line(&a, None, Some(Ok(None)), now);
        assert!(
            l.text.ends_with(
                "access_token=none  last_refresh=never  refresh_token_age=none  state=needs login: \
                 no refresh token stored yet — run `authbridge login tickets` (or pipe an existing \
                 refresh token into `authbridge import-token tickets`)"
            ),
            "{}",
            l.text
        );
        let l = line(&a, None, stored.clone(), now);
        assert!(
            l.text
                .ends_with("state=ok (no token request made yet; `authbridge check` tries one)")
        );
        let l = line(&a, None, Some(Err("tickets.json is damaged".into())), now);
        assert!(l.needs_action && l.text.contains("refresh_token_age=unreadable"));

        // App-only: no refresh token, an expired access token.
        let app = account("client_credentials");
        let expired = PersistedStatus {
            access_token_expires_at: Some(now_s - 120),
            ..persisted(now_s)
        };
        let l = line(&app, Some(&expired), Some(Ok(None)), now);
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
