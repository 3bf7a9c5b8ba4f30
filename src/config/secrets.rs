//! Secrets in the config (`client_secret`): the three forms a value may take — inline,
//! `{ env: NAME }` or `{ file: PATH }` — how each is read into a [`SecretString`], and whether a
//! load reads them at all ([`Secrets`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretString;

/// Whether a config load reads the secrets it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Secrets {
    /// Read every secret (a missing variable or file is an error): for everything that may talk
    /// to a provider.
    Read,
    /// Read none (each resolves to `None`): for `status` and `import-token`, which never do.
    Skip,
}

/// `client_secret: "value"`, `{ env: NAME }` or `{ file: PATH }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum SecretSource {
    Plain(String),
    Env { env: String },
    File { file: PathBuf },
}

impl SecretSource {
    /// Read the secret. `anchor` makes a relative `file:` path absolute (against the config
    /// file's folder). The error is the message alone; the caller names the key.
    pub(super) fn read(
        self,
        anchor: impl FnOnce(&Path) -> PathBuf,
    ) -> Result<SecretString, String> {
        match self {
            SecretSource::Plain(s) => Ok(SecretString::new(s)),
            SecretSource::Env { env } => std::env::var(&env)
                .map(SecretString::new)
                .map_err(|_| format!("environment variable {env} is not set (or not UTF-8)")),
            SecretSource::File { file } => {
                let path = anchor(&file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                Ok(SecretString::new(
                    text.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
        }
    }
}
