//! The piped SMTP session's reply watch (`authbridge::protocol::smtp::reply_watch`): never panics,
//! keeps its bounds, reports at most once, and finds the same refusal however the upstream's
//! bytes are split into reads.
#![no_main]

use authbridge::protocol::smtp::reply_watch::{MAX_LINE, ReplyWatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Some((&sel, rest)) = raw.split_first() else {
        return;
    };
    let whole = ReplyWatch::new().feed(rest);
    if let Some(r) = &whole {
        assert!(r.text.len() <= MAX_LINE * 3);
        assert!((400..600).contains(&r.code));
    }
    // Two reads, cut anywhere.
    let cut = usize::from(sel) * rest.len() / 255;
    let mut w = ReplyWatch::new();
    let split = w.feed(&rest[..cut]).or_else(|| w.feed(&rest[cut..]));
    assert_eq!(split, whole);
    // Reads of `sel % 7 + 1` bytes, and once done it stays quiet.
    let mut w = ReplyWatch::new();
    let mut found = None;
    for chunk in rest.chunks(usize::from(sel % 7) + 1) {
        if let Some(r) = w.feed(chunk) {
            assert!(found.is_none(), "reported twice");
            found = Some(r);
        }
    }
    assert_eq!(found, whole);
    assert_eq!(w.done(), whole.is_some());
});
