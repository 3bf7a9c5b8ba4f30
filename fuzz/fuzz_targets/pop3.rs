//! POP3 (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH): the pre-login server machine
//! toward the client and the STLS / CAPA / AUTH XOAUTH2 client machine toward the upstream, each
//! over any chunking. Bit 7 of the configuration byte picks which.
#![no_main]

use authbridge::protocol::pop3::command::parse_command;
use authbridge::protocol::pop3::{Pop3Client, Pop3Upstream};
use authbridge_fuzz::{Input, check_client, check_upstream, pop3_caps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let cfg = input.cfg;
    if cfg.0 & 128 == 0 {
        let caps = pop3_caps();
        let make = || -> Box<dyn authbridge::protocol::ClientProtocol> {
            Box::new(Pop3Client::new(cfg.ctx()))
        };
        let run = check_client(&make, &input, &caps);
        if cfg.tls() == authbridge::protocol::ClientTls::StartTls && run.starttls == 0 {
            assert!(run.logins.is_empty(), "login before STLS");
        }
        for line in input.data.split(|b| *b == b'\n') {
            let _ = parse_command(line);
        }
    } else {
        let starttls = cfg.bit4();
        let make = || -> Box<dyn authbridge::protocol::UpstreamProtocol> {
            Box::new(Pop3Upstream::new(starttls))
        };
        check_upstream(&make, &input, starttls, 1 + usize::from(cfg.0 & 1));
    }
});
