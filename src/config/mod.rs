//! The YAML config: parsed strictly (unknown keys are errors), then validated and resolved into
//! [`Config`]: relative paths made absolute against the config file's folder, secrets read from
//! their `env`/`file` sources, password hashes parsed, TLS material loaded. Every error names the
//! file, the key path and what is expected.
//!
//! This file is the entry point ([`Config::load`], [`Config::parse`]) and the module's public
//! face (every public item is re-exported here). The parts: `schema` (the YAML as written),
//! `keywords` (the values a key may take), `secrets`, `defaults`, `resolve/` (validation and
//! resolution, a file per section), `resolved` (the validated types) and `error`. No part
//! imports this file, so the module has no import cycle.

mod defaults;
mod error;
mod keywords;
mod resolve;
mod resolved;
mod schema;
mod secrets;
#[cfg(test)]
mod testkit;

pub use defaults::default_path;
pub use error::ConfigError;
pub use keywords::{
    ClientTlsMode, CloudName, FlowName, ListenerMode, LogFormat, Protocol, ProviderType,
    UpstreamTls,
};
pub use resolved::{Account, Config, Listener, Login, Relay, SenderRule, Upstream};

use std::path::Path;

use resolve::Resolver;
use schema::RawConfig;

impl Config {
    /// Read, parse, validate and resolve a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(file, &text)
    }

    /// Parse config text; `file` names it in errors and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
            file: file.to_owned(),
            path: e.path().to_string().trim_start_matches('.').to_string(),
            message: e.inner().to_string(),
        })?;
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
        Resolver { file, base: &base }.resolve(raw)
    }
}
