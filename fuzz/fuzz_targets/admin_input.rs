//! The admin page's request parsing (`Host` header, `Cookie` header, form body): never panics,
//! and what it returns stays within the input — a host name is a lower-cased part of the input
//! without port, a cookie value a substring of the header, at most MAX_FORM_FIELDS form fields.
#![no_main]

use authbridge::admin::http_input::{MAX_FORM_FIELDS, cookie, form, host_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    if let Some(h) = host_name(raw) {
        assert!(!h.is_empty() && h.len() <= raw.len());
        assert!(!h.contains(['/', '@', ' ']));
        let lower = String::from_utf8_lossy(raw).to_ascii_lowercase();
        assert!(lower.contains(&h));
    }
    if let Some(v) = cookie(raw, "authbridge_session") {
        let text = std::str::from_utf8(raw).unwrap();
        assert!(text.contains(v));
    }
    assert!(form(raw).len() <= MAX_FORM_FIELDS);
});
