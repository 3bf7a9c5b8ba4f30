//! Validation and resolution of the parsed YAML into [`Config`]: each section has its file
//! (`providers`, `accounts`, `listeners` with relay settings, `limits`); this one resolves the
//! top-level keys (`state_dir`, `key_file`, `log`, `admin`, `hostname`, `on_reauth_needed`;
//! `token_store` in `token_store.rs`) and
//! fixes the order sections are checked in, so the first error reported does not depend on
//! how the code is split. [`require_service`] checks that a file that is to run serves
//! something.

mod accounts;
mod admin;
mod context;
mod limits;
mod listeners;
mod providers;
mod token_store;

pub(super) use context::Resolver;

use std::path::Path;

use crate::config::defaults;
use crate::config::error::ConfigError;
use crate::config::resolved::Config;
use crate::config::schema::{RawCommand, RawConfig};

/// A config that is to run must serve something: at least one listener, and an account for the
/// listeners that log clients in (every one but a relay with `require_login: false`).
pub(in crate::config) fn require_service(config: &Config) -> Result<(), ConfigError> {
    let err = |path: &str, message: String| ConfigError {
        file: config.file.clone(),
        line: None,
        path: path.to_owned(),
        message,
    };
    const ACCOUNT: &str = "`- { name: tickets, provider: m365, mailbox: tickets@contoso.com, \
                           logins: [{ username: glpi, password_hash: \"…\" }] }`";
    if config.listeners.is_empty() && config.accounts.is_empty() {
        return Err(err(
            "",
            "nothing is configured: add `providers:`, `accounts:` and `listeners:` \
             (config/authbridge.example.yaml is a commented starting point)"
                .to_owned(),
        ));
    }
    if config.listeners.is_empty() {
        return Err(err(
            "listeners",
            "expected at least one listener, e.g. `- { name: smtp, protocol: smtp, listen: \
             127.0.0.1:1587, upstream: { host: smtp.office365.com, port: 587, tls: starttls } }`"
                .to_owned(),
        ));
    }
    let needs_login = config
        .listeners
        .iter()
        .find(|l| l.relay.as_ref().is_none_or(|r| r.require_login));
    if let Some(l) = needs_login
        && config.accounts.is_empty()
    {
        return Err(err(
            "accounts",
            format!(
                "expected at least one account: listener `{}` logs clients in to one; add e.g. \
                 {ACCOUNT} (and its provider under `providers:`)",
                l.name
            ),
        ));
    }
    Ok(())
}

impl Resolver<'_> {
    /// Validate and resolve the whole file, section by section; the first problem is the error.
    pub(in crate::config) fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = self.path(
            raw.state_dir
                .as_deref()
                .unwrap_or(Path::new(defaults::STATE_DIR)),
        );
        let key_file = raw.key_file.as_deref().map(|p| self.path(p));
        if let Some(level) = &raw.log.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(self.err(
                    "log.level",
                    format!(
                        "`{level}` is not a log level (expected error, warn, info, debug or trace)"
                    ),
                ));
            }
        }

        let providers = self.providers(raw.providers)?;
        let accounts = self.accounts(raw.accounts, &providers)?;
        let listeners = self.listeners(raw.listeners)?;
        let admin_listen = raw
            .admin
            .as_ref()
            .map(|a| a.listen.unwrap_or(defaults::ADMIN_LISTEN));
        let admin_listen = self.admin_listen(admin_listen, &listeners)?;
        let admin = self.admin(raw.admin, admin_listen)?;
        let limits = self.limits(raw.limits)?;
        let on_reauth_needed = self.on_reauth_needed(raw.on_reauth_needed)?;
        let token_store = self.token_store(raw.token_store)?;

        Ok(Config {
            file: self.file.to_owned(),
            state_dir,
            key_file,
            log_level: raw.log.level,
            log_format: raw.log.format,
            admin_listen,
            admin,
            hostname: raw.hostname.unwrap_or_else(|| defaults::HOSTNAME.into()),
            providers,
            accounts,
            listeners,
            limits,
            on_reauth_needed,
            token_store,
        })
    }

    /// `on_reauth_needed`: a program and its arguments, run without a shell.
    fn on_reauth_needed(
        &self,
        command: Option<RawCommand>,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let argv = match command {
            None => None,
            Some(RawCommand::Text(text)) => {
                let first = text.split_whitespace().next().unwrap_or("/path/to/program");
                return Err(self.err(
                    "on_reauth_needed",
                    format!(
                        "expected a list [program, argument, …], e.g. [{first}, …] (it is run \
                         without a shell; for a shell command write [/bin/sh, -c, \"…\"])"
                    ),
                ));
            }
            Some(RawCommand::Argv(argv)) => {
                match argv.first().map(String::as_str) {
                    None | Some("") => {
                        return Err(self.err(
                            "on_reauth_needed",
                            "expected a list [program, argument, …] with a program first",
                        ));
                    }
                    Some(program) if program.contains('/') && !Path::new(program).is_absolute() => {
                        return Err(self.err(
                            "on_reauth_needed[0]",
                            format!(
                                "`{program}` is a relative path: give an absolute path or a \
                                 program name found on PATH"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(self.err("on_reauth_needed", "arguments cannot contain NUL"));
                }
                Some(argv)
            }
        };
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::require_service;
    use crate::config::testkit::parse;

    #[test]
    fn a_config_to_run_serves_something() {
        let check = |text: &str| require_service(&parse(text).unwrap()).map_err(|e| e.to_string());
        let e = check("").unwrap_err();
        assert_eq!(
            e,
            "/etc/authbridge/test.yaml: nothing is configured: add `providers:`, `accounts:` and \
             `listeners:` (config/authbridge.example.yaml is a commented starting point)"
        );
        let account = "providers:\n  m: { type: microsoft, tenant: t, client_id: x }\naccounts:\n  \
                       - { name: tickets, provider: m, mailbox: tickets@contoso.com }\n";
        let e = check(account).unwrap_err();
        assert!(
            e.starts_with("/etc/authbridge/test.yaml: listeners: expected at least one listener"),
            "{e}"
        );
        let listener = |extra: &str| {
            format!(
                "listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:1587\n{extra}    \
                 upstream: {{ host: h, port: 25, tls: starttls }}\n"
            )
        };
        let e = check(&listener("")).unwrap_err();
        assert!(
            e.starts_with(
                "/etc/authbridge/test.yaml: accounts: expected at least one account: listener \
                 `smtp` logs clients in to one"
            ),
            "{e}"
        );
        check(&listener("    mode: relay\n")).unwrap_err();
        // A relay that lets listed hosts send without a login needs no account.
        check(&listener(
            "    mode: relay\n    require_login: false\n    allow_from: [127.0.0.1/32]\n",
        ))
        .unwrap();
        check(&format!("{account}{}", listener(""))).unwrap();
    }
}
