//! The `authbridge-sandbox` command line, kept in the library so it can be tested: argument
//! parsing (std only) and the files `serve` writes for the demo (`ca.pem`, `sandbox.json`,
//! `refresh_token`, the connector client certificate). `main.rs` only wires these to a runtime and
//! the signals.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Ports, Sandbox, SandboxOptions};

/// The pre-seeded confidential client of `serve`.
pub const DEMO_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const DEMO_CLIENT_SECRET: &str = "sandbox-client-secret";
/// The pre-seeded mailbox (delegated refresh token, app access, authorize/device-login default).
pub const DEMO_MAILBOX: &str = "tickets@contoso.com";

pub const USAGE: &str =
    "usage: authbridge-sandbox serve [--dir DIR] [--token-lifetime SECS] [--refresh-grace SECS]
                                [--device-interval SECS] [--tenant NAME]
                                [--token-port N] [--smtp-port N] [--smtps-port N] [--imap-port N]
                                [--imap-starttls-port N] [--pop3-port N] [--pop3-starttls-port N]
                                [--connector-port N] [--graph-port N] [--connector-allow-ip IP]...
                                [--connector-cert-name NAME]... [--connector-starttls on|off]
                                [--connector-reject-direct-send on|off]
                                [--max-sessions N] [--idle-timeout SECS] [--opaque-tokens on|off]

Starts a fake Entra ID token service, a fake Exchange Online (SMTP, IMAP, POP3) and a fake inbound
connector (plain SMTP, STARTTLS, no AUTH; takes mail from an allowed IP or a client certificate
with an allowed name, default contoso.com) on 127.0.0.1 (port 0 = any free port), writes
DIR/ca.pem, DIR/sandbox.json, DIR/refresh_token and DIR/connector-client.{pem,key} (a client
certificate with its chain for the first allowed name) (default DIR: ./sandbox-data), prints the
endpoints and runs until SIGINT or SIGTERM. --max-sessions: concurrent sessions per listener
(default 512); --idle-timeout: a silent mail session is dropped after this (default 300);
--opaque-tokens on: access tokens are opaque strings instead of JWTs (default off).
Exchange's failure modes are switched at run time on the token service: POST /_sandbox/mailbox
with JSON keys mailbox, smtp_auth_disabled, imap_disabled, pop_disabled, send_as_denied;
POST /_sandbox/app with client_id, roles (a list), service_principal, mailbox, mailbox_permission;
POST /_sandbox/permission with mailbox, trustee (a user's mailbox or an app's client id), right
(FullAccess or SendAs) and granted (default true);
POST /_sandbox/tokens with opaque, tid (another tenant's id in access tokens, null: the own);
POST /_sandbox/graph with failure (\"429:SECS\", \"503\", \"send_as_denied\"; absent or null: none) and
times (the next N sendMail requests; default: until changed); the connector's with POST /_sandbox/connector (allowed_ips,
allowed_cert_names, starttls, reject_direct_send: 550 5.7.68 TenantInboundAttribution for an
unattributed sender from an accepted domain).";

/// Parsed `serve` arguments.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub dir: PathBuf,
    pub options: SandboxOptions,
}

/// What the command line asked for.
#[derive(Debug)]
// Parsed once per process; boxing `ServeArgs` would change the public API for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Serve(ServeArgs),
    Help,
}

/// Parse the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("serve") => {}
        Some("-h" | "--help" | "help") | None => return Ok(Command::Help),
        Some(other) => return Err(format!("unknown command {other:?}")),
    }
    let mut dir = PathBuf::from("sandbox-data");
    let mut options = SandboxOptions {
        authorize_user: Some(DEMO_MAILBOX.to_string()),
        ..Default::default()
    };
    let mut ports = Ports::default();
    let mut cert_names: Option<Vec<String>> = None;
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{flag}: expected whole seconds, got {v:?}"))
        };
        let port = |v: &str| -> Result<u16, String> {
            v.parse::<u16>()
                .map_err(|_| format!("{flag}: expected a port number, got {v:?}"))
        };
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--token-lifetime" => options.token_lifetime = secs(&value)?,
            "--refresh-grace" => options.refresh_grace = secs(&value)?,
            "--device-interval" => options.device_code_interval = secs(&value)?,
            "--tenant" => options.tenant = value,
            "--idle-timeout" => options.idle_timeout = secs(&value)?,
            "--token-port" => ports.token = port(&value)?,
            "--smtp-port" => ports.smtp = port(&value)?,
            "--smtps-port" => ports.smtps = port(&value)?,
            "--imap-port" => ports.imap = port(&value)?,
            "--imap-starttls-port" => ports.imap_starttls = port(&value)?,
            "--pop3-port" => ports.pop3 = port(&value)?,
            "--pop3-starttls-port" => ports.pop3_starttls = port(&value)?,
            "--max-sessions" => {
                options.max_sessions = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{flag}: expected a positive number, got {value:?}"))?
            }
            "--connector-port" => ports.connector = port(&value)?,
            "--graph-port" => ports.graph = port(&value)?,
            "--connector-allow-ip" => options.connector_allowed_ips.push(
                value
                    .parse()
                    .map_err(|_| format!("{flag}: expected an IP address, got {value:?}"))?,
            ),
            "--connector-cert-name" => cert_names.get_or_insert_with(Vec::new).push(value),
            "--connector-starttls" => options.connector_starttls = on_off(&flag, &value)?,
            "--connector-reject-direct-send" => {
                options.connector_reject_direct_send = on_off(&flag, &value)?
            }
            "--opaque-tokens" => options.opaque_tokens = on_off(&flag, &value)?,
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    if let Some(names) = cert_names {
        options.connector_allowed_cert_names = names;
    }
    options.ports = ports;
    Ok(Command::Serve(ServeArgs { dir, options }))
}

fn on_off(flag: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{flag}: expected on or off, got {value:?}")),
    }
}

/// Everything a demo or a script needs to talk to a running sandbox.
pub fn describe(sb: &Sandbox, dir: &Path) -> Value {
    let base = sb.token_base_url();
    json!({
        "tenant": sb.tenant(),
        "token_base_url": base,
        "token_url": sb.token_url(),
        "authorize_url": sb.authorize_url(),
        "device_code_url": sb.device_code_url(),
        "introspect_url": sb.introspect_url(),
        "device_login_url": format!("{base}/devicelogin"),
        "control_url": format!("{base}/_sandbox"),
        "smtp": sb.smtp_addr().to_string(),
        "smtps": sb.smtps_addr().to_string(),
        "imap": sb.imap_addr().to_string(),
        "imap_starttls": sb.imap_starttls_addr().to_string(),
        "pop3": sb.pop3_addr().to_string(),
        "pop3_starttls": sb.pop3_starttls_addr().to_string(),
        "connector": sb.connector_addr().to_string(),
        "graph_url": sb.graph_url(),
        "connector_client_cert_name": demo_cert_name(sb),
        "connector_client_cert": dir.join("connector-client.pem"),
        "connector_client_key": dir.join("connector-client.key"),
        "ca_file": dir.join("ca.pem"),
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "mailbox": DEMO_MAILBOX,
        "refresh_token_file": dir.join("refresh_token"),
        "app_scope": crate::entra::APP_SCOPE,
        "delegated_scope": format!("{} offline_access", crate::entra::DELEGATED_SCOPE),
    })
}

/// The name of the demo connector client certificate: the first allowed name.
fn demo_cert_name(sb: &Sandbox) -> String {
    sb.connector_allowed_cert_names()
        .into_iter()
        .next()
        .unwrap_or_else(|| "contoso.com".to_string())
}

/// Seed the demo client and mailbox, then write `ca.pem`, `sandbox.json`, `refresh_token` and
/// `connector-client.pem` / `.key` (leaf + intermediate, for the certificate-based connector)
/// into `dir` (created if needed). Returns the description written to `sandbox.json`.
pub fn prepare(sb: &Sandbox, dir: &Path) -> io::Result<Value> {
    std::fs::create_dir_all(dir)?;
    sb.add_client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &[DEMO_MAILBOX]);
    let rt = sb.issue_refresh_token(DEMO_CLIENT_ID, DEMO_MAILBOX);
    sb.write_ca(&dir.join("ca.pem"))?;
    write_private(&dir.join("refresh_token"), format!("{rt}\n").as_bytes())?;
    let cert = sb.issue_client_cert(&demo_cert_name(sb));
    std::fs::write(dir.join("connector-client.pem"), &cert.chain_pem)?;
    write_private(&dir.join("connector-client.key"), cert.key_pem.as_bytes())?;
    let info = describe(sb, dir);
    let text = serde_json::to_string_pretty(&info).map_err(io::Error::other)?;
    std::fs::write(dir.join("sandbox.json"), format!("{text}\n"))?;
    Ok(info)
}

/// Write a file readable by its owner only (on Unix).
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(path)?.write_all(data)
}

/// The lines `serve` prints.
pub fn banner(info: &Value) -> String {
    let s = |k: &str| info[k].as_str().unwrap_or("").to_string();
    format!(
        "authbridge sandbox running\n  token endpoint   {}\n  authorize        {}\n  device code      {}\n  device login     {}\n  introspection    {}\n  control          {}\n  SMTP (STARTTLS)  {}\n  SMTP (TLS)       {}\n  IMAP (TLS)       {}\n  IMAP (STARTTLS)  {}\n  POP3 (TLS)       {}\n  POP3 (STLS)      {}\n  SMTP connector   {} (client certificate for {} in {})\n  Microsoft Graph  {}\n  CA certificate   {}\n  client           {} / {}\n  mailbox          {} (refresh token in {})\n",
        s("token_url"),
        s("authorize_url"),
        s("device_code_url"),
        s("device_login_url"),
        s("introspect_url"),
        s("control_url"),
        s("smtp"),
        s("smtps"),
        s("imap"),
        s("imap_starttls"),
        s("pop3"),
        s("pop3_starttls"),
        s("connector"),
        s("connector_client_cert_name"),
        s("connector_client_cert"),
        s("graph_url"),
        s("ca_file"),
        s("client_id"),
        s("client_secret"),
        s("mailbox"),
        s("refresh_token_file"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parsing() {
        let Command::Serve(a) = parse_args(args(
            "serve --dir /tmp/x --token-lifetime 60 --smtp-port 2587 --max-sessions 20000 --idle-timeout 3600",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.dir, PathBuf::from("/tmp/x"));
        assert_eq!(a.options.token_lifetime, Duration::from_secs(60));
        assert_eq!(a.options.ports.smtp, 2587);
        assert_eq!(a.options.max_sessions, 20000);
        assert_eq!(a.options.idle_timeout, Duration::from_secs(3600));
        assert!(parse_args(args("serve --max-sessions 0")).is_err());
        assert_eq!(a.options.authorize_user.as_deref(), Some(DEMO_MAILBOX));
        assert!(matches!(parse_args(args("")), Ok(Command::Help)));
        assert!(parse_args(args("serve --bogus 1")).is_err());
        assert!(parse_args(args("serve --token-lifetime")).is_err());
        assert!(parse_args(args("serve --token-lifetime x")).is_err());
        assert!(parse_args(args("frobnicate")).is_err());

        let Command::Serve(a) = parse_args(args(
            "serve --connector-port 2525 --connector-allow-ip 192.0.2.7 --connector-allow-ip ::1 \
             --connector-cert-name fabrikam.com --connector-starttls off",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.options.ports.connector, 2525);
        assert_eq!(
            a.options.connector_allowed_ips,
            vec![
                "192.0.2.7".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(a.options.connector_allowed_cert_names, vec!["fabrikam.com"]);
        assert!(!a.options.connector_starttls);
        assert!(parse_args(args("serve --connector-allow-ip nope")).is_err());
        assert!(parse_args(args("serve --connector-starttls maybe")).is_err());
    }
}
