//! Token endpoint answers (RFC 6749 §5.1/§5.2, Microsoft's `error_codes`, RFC 8628 §3.2, RFC 9110
//! `Retry-After`): classifying any status, header and body never panics, a success always carries
//! a non-empty access token and a bounded lifetime, and a failure's texts hold no body bytes
//! beyond the shortened first line of the description.
#![no_main]

use std::time::{Duration, SystemTime};

use authbridge::token::{classify, classify_device_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = 100 + u16::from_be_bytes([data[0], data[1]]) % 500;
    let split = usize::from(data[2]).min(data.len() - 3);
    let rest = &data[3..];
    let retry_after = std::str::from_utf8(&rest[..split]).ok();
    let body = &rest[split..];
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match classify(status, retry_after, body, now) {
        Ok(r) => {
            assert!(!r.access_token.expose().is_empty());
            assert!(r.expires_in <= Duration::from_secs(366 * 24 * 3600));
        }
        Err(f) => {
            assert!(f.message.len() <= 4096, "message bounded");
            if let Some(d) = &f.description {
                assert!(d.len() <= 4096, "description bounded");
                assert!(!d.contains('\n'), "first line only");
            }
        }
    }
    let _ = classify_device_authorization(status, retry_after, body, now);
});
