//! Validation and resolution of the parsed YAML into [`Config`]: each section has its file
//! (`providers`, `accounts`, `listeners` with relay settings, `limits`); this one resolves the
//! top-level keys (`state_dir`, `key_file`, `log`, `admin`, `hostname`, `on_reauth_needed`) and
//! fixes the order sections are checked in, so the first error reported does not depend on
//! how the code is split.

mod accounts;
mod context;
mod limits;
mod listeners;
mod providers;

pub(super) use context::Resolver;

use std::path::Path;

use crate::config::defaults;
use crate::config::error::ConfigError;
use crate::config::resolved::Config;
use crate::config::schema::{RawCommand, RawConfig};

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
        let limits = self.limits(raw.limits)?;
        let on_reauth_needed = self.on_reauth_needed(raw.on_reauth_needed)?;

        Ok(Config {
            file: self.file.to_owned(),
            state_dir,
            key_file,
            log_level: raw.log.level,
            log_format: raw.log.format,
            admin_listen: raw.admin.map(|a| a.listen),
            hostname: raw.hostname.unwrap_or_else(|| defaults::HOSTNAME.into()),
            providers,
            accounts,
            listeners,
            limits,
            on_reauth_needed,
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
