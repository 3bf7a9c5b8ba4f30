//! The `token_store:` section: `{ type: file }` (the default) or `{ type: redis, url, username,
//! password, key_prefix, ca_file, lease_ms }`. The Redis password is read whatever the load's
//! secrets mode: `status` and `import-token` skip the provider's secret but need the store.

use std::time::Duration;

use crate::config::error::ConfigError;
use crate::config::schema::RawTokenStore;
use crate::limits::shared_store::{LEASE_DEFAULT, LEASE_MAX, LEASE_MIN};
use crate::token::{RedisSettings, StoreConfig};

use super::context::Resolver;

/// Default `key_prefix`.
const KEY_PREFIX: &str = "authbridge/";
const KEY_PREFIX_MAX: usize = 128;

impl Resolver<'_> {
    pub(super) fn token_store(
        &self,
        raw: Option<RawTokenStore>,
    ) -> Result<StoreConfig, ConfigError> {
        let (url, username, password, key_prefix, ca_file, lease_ms) = match raw {
            None | Some(RawTokenStore::File {}) => return Ok(StoreConfig::File),
            Some(RawTokenStore::Redis {
                url,
                username,
                password,
                key_prefix,
                ca_file,
                lease_ms,
            }) => (url, username, password, key_prefix, ca_file, lease_ms),
        };
        let tls = if url.starts_with("rediss://") {
            true
        } else if url.starts_with("redis://") {
            false
        } else {
            return Err(self.err(
                "token_store.url",
                format!(
                    "expected redis://HOST:PORT/DB or rediss://HOST:PORT/DB (TLS), got {:?}",
                    redacted(&url)
                ),
            ));
        };
        if url_has_password(&url) {
            return Err(self.err(
                "token_store.url",
                "put the password under `token_store.password` (e.g. `{ env: REDIS_PASSWORD }`), \
                 not in the URL, so it never shows in logs or messages",
            ));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(self.err(
                "token_store.url",
                format!("{:?} is not a Redis URL: {e}", redacted(&url)),
            ));
        }
        if ca_file.is_some() && !tls {
            return Err(self.err(
                "token_store.ca_file",
                "a CA file only applies to TLS: use a rediss:// URL",
            ));
        }
        let key_prefix = key_prefix.unwrap_or_else(|| KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > KEY_PREFIX_MAX
            || key_prefix
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(self.err(
                "token_store.key_prefix",
                format!(
                    "expected 1 to {KEY_PREFIX_MAX} characters without spaces, e.g. `{KEY_PREFIX}`"
                ),
            ));
        }
        let lease = match lease_ms {
            None => LEASE_DEFAULT,
            Some(ms) => {
                let (min, max) = (LEASE_MIN.as_millis(), LEASE_MAX.as_millis());
                if u128::from(ms) < min || u128::from(ms) > max {
                    return Err(self.err(
                        "token_store.lease_ms",
                        format!("expected {min} to {max} milliseconds, got {ms}"),
                    ));
                }
                Duration::from_millis(ms)
            }
        };
        let password = password
            .map(|s| {
                s.read(|file| self.path(file))
                    .map_err(|message| self.err("token_store.password", message))
            })
            .transpose()?;
        if username.is_some() && password.is_none() {
            return Err(self.err(
                "token_store.password",
                "a Redis ACL user needs its password, e.g. `password: { env: REDIS_PASSWORD }`",
            ));
        }
        Ok(StoreConfig::Redis(RedisSettings {
            url,
            username,
            password,
            key_prefix,
            ca_file: ca_file.map(|p| self.path(&p)),
            lease,
        }))
    }
}

/// Whether the URL's authority carries a password (`redis://user:pass@host`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `url` without any userinfo, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => url.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::token::StoreConfig;

    fn parse(store: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        Config::parse(
            &dir.path().join("a.yaml"),
            &format!("state_dir: s\ntoken_store: {store}\n"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::parse(&dir.path().join("a.yaml"), "state_dir: s\n").unwrap();
        assert!(matches!(c.token_store, StoreConfig::File));
        assert!(matches!(
            parse("{ type: file }").unwrap().token_store,
            StoreConfig::File
        ));
    }

    #[test]
    fn redis_settings() {
        let c = parse(
            "{ type: redis, url: rediss://r:6380/2, username: ab, password: pw, key_prefix: x/, \
             ca_file: ca.pem, lease_ms: 2000 }",
        )
        .unwrap();
        let StoreConfig::Redis(r) = c.token_store else {
            panic!("not redis")
        };
        assert_eq!(r.url, "rediss://r:6380/2");
        assert_eq!(r.key_prefix, "x/");
        assert_eq!(r.lease.as_millis(), 2000);
        assert!(r.ca_file.unwrap().is_absolute());
        assert_eq!(r.password.unwrap().expose(), "pw");
    }

    #[test]
    fn refusals_name_the_key() {
        for (store, key) in [
            ("{ type: redis, url: http://x }", "token_store.url"),
            (
                "{ type: redis, url: 'redis://u:secret@x' }",
                "token_store.url",
            ),
            (
                "{ type: redis, url: redis://x, ca_file: c.pem }",
                "token_store.ca_file",
            ),
            (
                "{ type: redis, url: redis://x, lease_ms: 5 }",
                "token_store.lease_ms",
            ),
            (
                "{ type: redis, url: redis://x, key_prefix: 'a b' }",
                "token_store.key_prefix",
            ),
            (
                "{ type: redis, url: redis://x, username: u }",
                "token_store.password",
            ),
            ("{ type: redis, url: redis://x, nope: 1 }", "token_store"),
            ("{ type: memcached }", "token_store"),
        ] {
            let e = parse(store).unwrap_err();
            assert!(e.contains(key), "{store}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
