//! The YAML config: parsed strictly (unknown keys are errors), then validated and resolved into
//! [`Config`]: relative paths made absolute against the config file's folder, secrets read from
//! their `env`/`file` sources, password hashes parsed, TLS material loaded, placeholder values
//! copied from the examples refused. Every error names the file, the key path and what is
//! expected (and the line, when known).
//!
//! This file is the entry point ([`Config::load`], [`Config::load_without_secrets`],
//! [`Config::parse`]) and the module's public face (every public item is re-exported here). The
//! parts: `schema` (the YAML as written), `keywords` (the values a key may take), `secrets`,
//! `placeholders` (example values that must not run), `defaults`, `resolve/` (validation and
//! resolution, a file per section), `resolved` (the validated types) and `error`. No part imports
//! this file, so the module has no import cycle.

mod defaults;
mod error;
mod keywords;
mod placeholders;
mod resolve;
mod resolved;
mod schema;
mod secrets;
#[cfg(test)]
mod testkit;

pub(crate) use defaults::STATE_DIR as DEFAULT_STATE_DIR;
pub use defaults::default_path;
pub use error::ConfigError;
pub use keywords::{
    ClientTlsMode, CloudName, FlowName, ListenerMode, LogFormat, Protocol, ProviderType,
    UpstreamTls,
};
pub use placeholders::{example_password, refuse_example_passwords};
pub use resolved::{
    Account, AdminSettings, Config, Graph, Listener, Login, Relay, RelayAuth, SenderRule, Upstream,
};

use std::path::Path;

use resolve::Resolver;
use schema::RawConfig;
use secrets::Secrets;

impl Config {
    /// Read, parse, validate and resolve a config file that is to run: on top of what
    /// [`parse`](Self::parse) checks, it must configure something to serve (listeners, and the
    /// accounts they log clients in to).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Config::load_with(file, Secrets::Read)
    }

    /// [`load`](Self::load) without reading any secret: a `client_secret` given as
    /// `{ env: NAME }` or `{ file: PATH }` need not be readable, and every provider's
    /// `client_secret` is `None`. For the commands that never talk to a provider (`status`,
    /// `import-token`); such a config must not be used to request tokens.
    pub fn load_without_secrets(file: &Path) -> Result<Config, ConfigError> {
        Config::load_with(file, Secrets::Skip)
    }

    fn load_with(file: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: None,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let config = Config::parse_with(file, &text, secrets)?;
        resolve::require_service(&config)?;
        Ok(config)
    }

    /// Parse config text; `file` names it in errors and anchors relative paths. Checks every
    /// section, not that the whole is enough to run (see [`load`](Self::load)).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(file, text, Secrets::Read)
    }

    fn parse_with(file: &Path, text: &str, secrets: Secrets) -> Result<Config, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| schema_error(file, &e))?;
        let base = file
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        Resolver {
            file,
            base: &base,
            text,
            secrets,
        }
        .resolve(raw)
    }
}

/// A serde error as a [`ConfigError`]: the key path once (serde_norway puts it in its message
/// too), the line in front rather than `at line L column C` at the end.
fn schema_error(file: &Path, e: &serde_path_to_error::Error<serde_norway::Error>) -> ConfigError {
    let path = e.path().to_string().trim_start_matches('.').to_string();
    let mut message = e.inner().to_string();
    // serde_norway names the key path, or its parent (for an unknown field), in front.
    let mut key = path.as_str();
    loop {
        if let Some(rest) = message.strip_prefix(&format!("{key}: ")) {
            message = rest.to_string();
            break;
        }
        match key.rfind(['.', '[']) {
            Some(i) if i > 0 => key = &key[..i],
            _ => break,
        }
    }
    let location = e.inner().location();
    if let Some(l) = &location {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(rest) = message.strip_suffix(&suffix) {
            message = rest.to_string();
        }
    }
    ConfigError {
        file: file.to_owned(),
        line: location.map(|l| l.line()),
        path,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::parse;

    #[test]
    fn schema_errors_name_the_key_once_and_the_line() {
        let e = parse("state_dir: x\nlisteners:\n  - name: [1]\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/authbridge/test.yaml:3: listeners[0].name: invalid type: sequence, expected a \
             string"
        );
        let e = parse("log: { level: info, colour: red }\n").unwrap_err();
        assert!(
            e.starts_with("/etc/authbridge/test.yaml:1: log.colour: unknown field `colour`"),
            "{e}"
        );
        // A YAML syntax error has no key path; its own wording is kept.
        let e = parse("a: [\n").unwrap_err();
        assert!(e.starts_with("/etc/authbridge/test.yaml:"), "{e}");
        assert!(!e.contains(": : "), "{e}");
    }
}
