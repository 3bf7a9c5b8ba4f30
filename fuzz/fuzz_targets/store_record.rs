//! Sealed records read back from the shared (Redis) token store (`token::record`): the parser is
//! total on any bytes (a record or a reason, never a panic), refuses anything over its size cap,
//! and a record it accepts opens only with the key, kind, account and version it was sealed for.
#![no_main]

use authbridge::secret::SecretString;
use authbridge::token::MasterKey;
use authbridge::token::record::{self, RecordKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes([9; 32], "fuzz");
    for kind in [RecordKind::Refresh, RecordKind::Access] {
        if let Ok(p) = record::parse(data, kind, "tickets") {
            assert!(data.len() <= authbridge::limits::shared_store::RECORD_MAX);
            assert_eq!(p.record.account, "tickets");
            assert_eq!(p.record.kind, kind.as_str());
            // Random bytes do not authenticate under the key.
            let _ = record::open(&key, kind, &p);
        }
    }
    // Round trip: any token text seals and opens back, only as what it was sealed for.
    if let Ok(text) = std::str::from_utf8(data) {
        let token = SecretString::new(text.to_owned());
        let version = data.len() as u64;
        let sealed = record::seal(
            &key,
            RecordKind::Refresh,
            "tickets",
            version,
            0,
            None,
            &token,
        )
        .unwrap();
        let p = record::parse(sealed.as_bytes(), RecordKind::Refresh, "tickets").unwrap();
        assert_eq!(
            record::open(&key, RecordKind::Refresh, &p)
                .unwrap()
                .expose(),
            text
        );
        assert!(record::parse(sealed.as_bytes(), RecordKind::Access, "tickets").is_err());
        assert!(record::parse(sealed.as_bytes(), RecordKind::Refresh, "other").is_err());
    }
});
