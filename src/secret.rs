//! One type for every secret (passwords, tokens, client secrets, keys).
//!
//! `Secret<T>` never prints its content: `Debug` and `Display` both show `[redacted]`, in every
//! build, so a secret that ends up in a log line or an error message by accident stays hidden.
//! The content is zeroed on drop. Reading it needs an explicit `expose()`, which is easy to grep.
//!
//! Buffers that pass through code written for [`Bytes`] (framed lines, HTTP bodies) are made by
//! [`wiping_bytes`]: the memory is zeroed when the last handle to it is dropped.

use std::fmt;

use bytes::Bytes;
use zeroize::Zeroize;

/// A value that must never appear in logs, errors or debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself. Callers must not log or format what this returns.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret<String> {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<Vec<u8>> for Secret<Vec<u8>> {
    fn from(v: Vec<u8>) -> Self {
        Secret(v)
    }
}

/// `owner`'s bytes as [`Bytes`] (moved, not copied) that are zeroed when the last handle to them
/// (clones and slices included) is dropped. For buffers that may hold a secret and must travel as
/// `Bytes`: a framed client line, a token request body.
pub fn wiping_bytes<T>(owner: T) -> Bytes
where
    T: AsRef<[u8]> + AsMut<[u8]> + Send + 'static,
{
    Bytes::from_owner(WipeOnDrop(owner))
}

/// Zeroes its content on drop; see [`wiping_bytes`].
struct WipeOnDrop<T: AsMut<[u8]>>(T);

impl<T: AsMut<[u8]>> Drop for WipeOnDrop<T> {
    fn drop(&mut self) {
        self.0.as_mut().zeroize();
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsRef<[u8]> for WipeOnDrop<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// A secret string.
pub type SecretString = Secret<String>;
/// Secret bytes (passwords may hold raw 8-bit bytes in IMAP quoted strings).
pub type SecretBytes = Secret<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer that records its content when it is dropped (after `WipeOnDrop` ran).
    struct Probe {
        data: Vec<u8>,
        seen: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    }

    impl AsRef<[u8]> for Probe {
        fn as_ref(&self) -> &[u8] {
            &self.data
        }
    }

    impl AsMut<[u8]> for Probe {
        fn as_mut(&mut self) -> &mut [u8] {
            &mut self.data
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            *self.seen.lock().unwrap() = Some(self.data.clone());
        }
    }

    #[test]
    fn wiping_bytes_are_zeroed_when_the_last_handle_goes() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let bytes = wiping_bytes(Probe {
            data: b"A1 LOGIN glpi hunter2".to_vec(),
            seen: seen.clone(),
        });
        assert_eq!(&bytes[..], b"A1 LOGIN glpi hunter2");
        let password = bytes.slice(14..);
        let copy = bytes.clone();
        drop(bytes);
        drop(copy);
        assert_eq!(&password[..], b"hunter2");
        assert!(seen.lock().unwrap().is_none(), "a slice still holds it");
        drop(password);
        assert_eq!(seen.lock().unwrap().as_deref(), Some(&[0u8; 21][..]));
    }

    #[test]
    fn never_prints_its_content() {
        let s = SecretString::from("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }
}
