//! The watch over the upstream's first replies after login (`protocol::first_replies`): never
//! panics, gives the same output and verdict whatever the chunking, passes everything through
//! unchanged unless it reports the refusal, and holds back at most one bounded line.
#![no_main]

use authbridge::limits::first_replies::LINE_MAX;
use authbridge::protocol::first_replies::{FirstReplies, Verdict, WatchKind};
use libfuzzer_sys::fuzz_target;

fn run(kind: WatchKind, chunks: &[&[u8]]) -> (Vec<u8>, Verdict) {
    let mut w = FirstReplies::new(kind, "tickets@contoso.com");
    let mut out = Vec::new();
    let mut verdict = Verdict::Watching;
    let mut fed = 0usize;
    for c in chunks {
        verdict = w.feed(c, &mut out);
        fed += c.len();
        if matches!(verdict, Verdict::NotConnected { .. }) {
            break;
        }
        // Held back: only the current, unfinished line, and never more than LINE_MAX.
        assert!(fed - out.len() <= LINE_MAX);
    }
    (out, verdict)
}

fuzz_target!(|raw: &[u8]| {
    let Some((&sel, rest)) = raw.split_first() else {
        return;
    };
    let kind = if sel % 2 == 0 {
        WatchKind::Imap
    } else {
        WatchKind::Pop3
    };
    let split = usize::from(sel) % (rest.len() + 1);
    let whole = run(kind, &[rest]);
    let parts = run(kind, &[&rest[..split], &rest[split..]]);
    assert_eq!(whole, parts);
    match &whole.1 {
        Verdict::NotConnected { .. } => {}
        Verdict::Done => assert_eq!(whole.0, rest),
        Verdict::Watching => assert!(rest.starts_with(&whole.0)),
    }
});
