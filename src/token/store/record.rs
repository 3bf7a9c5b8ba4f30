//! Sealed records of the shared (Redis) backend: the refresh token and the published access token
//! of an account, each one JSON value with its metadata in clear and the token sealed under the
//! master key (the same AEAD and key as the file backend).
//!
//! The associated data binds a sealed token to its kind, account and store version
//! (`authbridge/<kind>\0<account>\0<version as 8 big-endian bytes>`): a value copied to another
//! account, kind or version does not open. [`parse`] is the only reader of bytes that come from
//! the server; it is total (any input gives a record or a reason), bounded by
//! [`RECORD_MAX`](crate::limits::shared_store::RECORD_MAX) and fuzzed (`fuzz/fuzz_targets/store_record.rs`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::crypto::{CIPHER, MasterKey, NONCE_LEN};
use crate::limits::shared_store::RECORD_MAX;
use crate::secret::SecretString;

/// The record format.
pub const RECORD_FORMAT: u32 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// The account's refresh token.
    Refresh,
    /// The access token the last refresh published for the other replicas.
    Access,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Refresh => "refresh",
            RecordKind::Access => "access",
        }
    }
}

/// One record as stored. Only `sealed` is secret, and it is encrypted.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub format: u32,
    pub kind: String,
    pub account: String,
    /// The store version of the refresh token (an access record: the version it came with).
    pub version: u64,
    /// Seconds since the Unix epoch, by the writer's clock: shown by `status`, never used to
    /// decide anything (expiry and leases are the server's own TTLs).
    pub stored_at: u64,
    /// Access records: the lifetime the provider gave the token, in milliseconds.
    #[serde(default)]
    pub lifetime_ms: Option<u64>,
    pub cipher: String,
    pub key_check: String,
    pub nonce: String,
    pub sealed: String,
}

/// The parts of a record that [`parse`] checked.
#[derive(Debug)]
pub struct Parsed {
    pub record: Record,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// The associated data a token of `kind` for `account` at `version` is sealed with.
pub fn associated(kind: RecordKind, account: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + account.len());
    aad.extend_from_slice(b"authbridge/");
    aad.extend_from_slice(kind.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(account.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Reads a record of `kind` for `account` out of bytes from the server. Checks the size, the
/// format, the cipher, kind and account, and decodes the nonce and the sealed bytes; does not
/// open the seal (see [`open`]).
pub fn parse(bytes: &[u8], kind: RecordKind, account: &str) -> Result<Parsed, String> {
    if bytes.len() > RECORD_MAX {
        return Err(format!(
            "the value is {} bytes, more than the {RECORD_MAX} a record may have",
            bytes.len()
        ));
    }
    let record: Record =
        serde_json::from_slice(bytes).map_err(|e| format!("not a token record: {e}"))?;
    if record.format != RECORD_FORMAT {
        return Err(format!("unsupported record format {}", record.format));
    }
    if record.cipher != CIPHER {
        return Err(format!("unsupported cipher {:?}", record.cipher));
    }
    if record.kind != kind.as_str() {
        return Err(format!(
            "it holds a {:?} record, not a {:?} one",
            record.kind,
            kind.as_str()
        ));
    }
    if record.account != account {
        return Err(format!("it belongs to account {:?}", record.account));
    }
    let nonce: [u8; NONCE_LEN] = STANDARD
        .decode(&record.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| "bad nonce".to_owned())?;
    let ciphertext = STANDARD
        .decode(&record.sealed)
        .map_err(|_| "the sealed token is not base64".to_owned())?;
    Ok(Parsed {
        record,
        nonce,
        ciphertext,
    })
}

/// Why [`open`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with another master key (the key check value differs).
    WrongKey,
    /// The seal does not authenticate (a changed byte, another account, kind or version).
    Damaged(String),
}

/// Opens a parsed record with `key`.
pub fn open(key: &MasterKey, kind: RecordKind, parsed: &Parsed) -> Result<SecretString, OpenError> {
    if parsed.record.key_check != key.check_value() {
        return Err(OpenError::WrongKey);
    }
    let aad = associated(kind, &parsed.record.account, parsed.record.version);
    let plain = key
        .open(&aad, &parsed.nonce, &parsed.ciphertext)
        .ok_or_else(|| OpenError::Damaged("the sealed token does not authenticate".into()))?;
    match std::str::from_utf8(plain.expose()) {
        Ok(s) => Ok(SecretString::new(s.to_owned())),
        Err(_) => Err(OpenError::Damaged("the token is not UTF-8".into())),
    }
}

/// Seals `token` into a record's JSON text. `None` only when no random nonce could be had or the
/// cipher refused.
pub fn seal(
    key: &MasterKey,
    kind: RecordKind,
    account: &str,
    version: u64,
    stored_at: u64,
    lifetime_ms: Option<u64>,
    token: &SecretString,
) -> Option<String> {
    let aad = associated(kind, account, version);
    let sealed = key.seal(&aad, token.expose().as_bytes()).ok()?;
    let record = Record {
        format: RECORD_FORMAT,
        kind: kind.as_str().to_owned(),
        account: account.to_owned(),
        version,
        stored_at,
        lifetime_ms,
        cipher: CIPHER.to_owned(),
        key_check: key.check_value(),
        nonce: STANDARD.encode(sealed.nonce),
        sealed: STANDARD.encode(sealed.ciphertext),
    };
    serde_json::to_string(&record).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32], "test")
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key(1);
        let t = SecretString::new("rt-secret".to_owned());
        let text = seal(&k, RecordKind::Refresh, "tickets", 7, 1, None, &t).unwrap();
        assert!(!text.contains("rt-secret"));
        let p = parse(text.as_bytes(), RecordKind::Refresh, "tickets").unwrap();
        assert_eq!(
            open(&k, RecordKind::Refresh, &p).unwrap().expose(),
            "rt-secret"
        );
        // Another key, kind, account or version does not open.
        assert_eq!(
            open(&key(2), RecordKind::Refresh, &p),
            Err(OpenError::WrongKey)
        );
        assert!(parse(text.as_bytes(), RecordKind::Access, "tickets").is_err());
        assert!(parse(text.as_bytes(), RecordKind::Refresh, "other").is_err());
        let moved = text.replace("\"version\":7", "\"version\":8");
        let p = parse(moved.as_bytes(), RecordKind::Refresh, "tickets").unwrap();
        assert!(matches!(
            open(&k, RecordKind::Refresh, &p),
            Err(OpenError::Damaged(_))
        ));
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        for bad in [&b""[..], b"{}", b"null", b"\xff\xfe", b"{\"format\":2}"] {
            assert!(parse(bad, RecordKind::Refresh, "a").is_err());
        }
        let big = vec![b' '; RECORD_MAX + 1];
        assert!(
            parse(&big, RecordKind::Refresh, "a")
                .unwrap_err()
                .contains("more than")
        );
    }
}
