//! The master key and sealing, shared by every backend: [`MasterKey`] (32 random bytes, never
//! printed) seals a refresh token with ChaCha20-Poly1305 under a random 12-byte nonce and
//! caller-chosen associated data, which binds the sealed value to where it belongs (the file
//! backend binds the account name, so a value copied to another account does not open; a backend
//! that versions values can bind the version too). A short key check value tells a wrong key
//! apart from a damaged value. Where the key comes from is `key_file.rs`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use super::error::StoreError;
use crate::secret::{Secret, SecretString};

/// The AEAD, as named in stored values.
pub(super) const CIPHER: &str = "chacha20poly1305";
pub(super) const KEY_LEN: usize = 32;
pub(super) const NONCE_LEN: usize = 12;

/// The 32-byte key that seals refresh tokens.
#[derive(Clone)]
pub struct MasterKey {
    key: Secret<[u8; KEY_LEN]>,
    /// Where it came from (a path or `AUTHBRIDGE_KEY`), for error messages.
    origin: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A sealed value and the nonce it was sealed under.
pub(super) struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Why [`MasterKey::seal`] failed.
pub(super) enum SealError {
    /// No random nonce could be had.
    Nonce(io::Error),
    /// The cipher refused (does not happen with a valid key and a sane length).
    Aead,
}

impl MasterKey {
    /// A key from raw bytes (tests, or a key held elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_LEN], origin: impl Into<String>) -> MasterKey {
        MasterKey {
            key: Secret::new(bytes),
            origin: origin.into(),
        }
    }

    /// A fresh random key.
    pub fn generate(origin: impl Into<String>) -> Result<MasterKey, StoreError> {
        let origin = origin.into();
        let mut bytes = [0u8; KEY_LEN];
        if let Err(source) = random(&mut bytes) {
            return Err(StoreError::Io {
                action: "generate a master key for",
                path: PathBuf::from(origin),
                source,
            });
        }
        let key = MasterKey::from_bytes(bytes, origin);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    /// Where the key came from (a path or `AUTHBRIDGE_KEY`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A short, non-reversible fingerprint stored next to each sealed token, so a wrong key is told
    /// apart from a damaged file.
    pub(super) fn check_value(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"authbridge token store key check v1\0");
        h.update(self.key.expose());
        STANDARD_NO_PAD.encode(&h.finalize()[..12])
    }

    /// The key as written to a key file: standard base64 and a newline.
    pub(super) fn encoded(&self) -> SecretString {
        SecretString::new(format!("{}\n", STANDARD.encode(self.key.expose())))
    }

    /// Seals `plaintext` under a fresh random nonce, bound to `associated`.
    pub(super) fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce).map_err(SealError::Nonce)?;
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .map_err(|_| SealError::Aead)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens what [`seal`](Self::seal) sealed with the same `associated` data; `None` if it does
    /// not authenticate (another key, other associated data, a changed byte).
    pub(super) fn open(
        &self,
        associated: &[u8],
        nonce: &[u8; NONCE_LEN],
        ciphertext: &[u8],
    ) -> Option<Secret<Vec<u8>>> {
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .ok()
            .map(Secret::new)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.key.expose()))
    }
}

fn random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(e.to_string()))
}
