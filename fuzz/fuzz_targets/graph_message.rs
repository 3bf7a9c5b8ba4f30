//! The Graph listener's header scan and `Bcc:` edit (`authbridge::graph::recipients`): never
//! panics on any header bytes, stays within its address cap, and after the edit the header names
//! every address it named before plus the added one, however the original was written.
#![no_main]

use authbridge::graph::recipients::{MAX_ADDRESSES, bcc_edit, normalise, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let before = scan(raw);
    assert!(before.addresses.len() <= MAX_ADDRESSES);
    assert!(before.header_end <= before.header_len && before.header_len <= raw.len());
    if let Some(r) = &before.bcc_field {
        assert!(r.start < r.end && r.end <= before.header_len);
    }
    let added = "added@fuzz.example".to_string();
    let Some((range, text)) = bcc_edit(&before, raw, std::slice::from_ref(&added)) else {
        panic!("something to add gives an edit");
    };
    let mut out = raw.to_vec();
    out.splice(range, text);
    let after = scan(&out);
    assert!(after.addresses.contains(&normalise(&added)));
    if before.addresses.len() < MAX_ADDRESSES / 2 {
        for a in &before.addresses {
            // Bcc addresses are rewritten in their parsed form, which normalises the same.
            assert!(after.addresses.contains(a), "{a} lost");
        }
    }
});
