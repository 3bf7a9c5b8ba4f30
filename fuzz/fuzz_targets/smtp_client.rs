//! SMTP commands from a legacy client (RFC 5321, RFC 4954 AUTH, RFC 3207 STARTTLS): the
//! pre-login server machine in auth and relay mode, over any chunking of the input.
#![no_main]

use authbridge::protocol::smtp::{Command, SmtpClient, parse_command};
use authbridge_fuzz::{End, Input, check_client, smtp_caps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let cfg = input.cfg;
    let caps = smtp_caps();
    let make = || -> Box<dyn authbridge::protocol::ClientProtocol> {
        let m = SmtpClient::new(cfg.ctx());
        Box::new(if cfg.bit4() {
            m.relay(cfg.0 & 64 != 0)
        } else {
            m
        })
    };
    let run = check_client(&make, &input, &caps);
    // A login is only ever asked for through AUTH: never on a STARTTLS listener before TLS.
    if cfg.tls() == authbridge::protocol::ClientTls::StartTls && run.starttls == 0 {
        assert!(run.logins.is_empty(), "login before STARTTLS");
        assert!(!matches!(run.end, End::Pipe { .. }) || cfg.bit4());
    }
    // The command parser alone, on every line: total, and an AUTH initial response is a
    // non-empty part of the line it came from.
    for line in input.data.split(|b| *b == b'\n') {
        if let Command::Auth {
            initial: Some(ir), ..
        } = parse_command(line)
        {
            assert!(!ir.is_empty());
            assert!(line.as_ptr_range().contains(&ir.as_ptr()));
        }
    }
});
