//! The relay-mode SMTP dialogue after login (DESIGN §2): client commands and message bodies in
//! any chunking, against a simulated connector as lenient as the receivers SMTP smuggling aims
//! at (see `authbridge_fuzz::relay`): no panic, split invariance, bounded buffering, and no
//! MAIL FROM reaches the connector without having been checked against `allowed_senders`.
//! The same input, read as a provider's replies, drives the relay's AUTH PLAIN/LOGIN exchange
//! towards a transactional provider (`check_relay_auth`).
#![no_main]

use authbridge_fuzz::Input;
use authbridge_fuzz::relay::{RelayInput, check_relay, check_relay_auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    check_relay_auth(input.cfg, input.data, input.chunk);
    let Some(input) = RelayInput::parse(&input) else {
        return;
    };
    check_relay(&input);
});
