//! The `authbridge` command line: the clap definitions of every subcommand ([`Cli`], [`Command`]),
//! [`dispatch`] to the module that runs each, and the exit codes: 0 ok, 1 runtime failure, 2 usage
//! or config error.
//!
//! One module per subcommand: [`run`], [`check`], [`login`], [`status`], [`import_token`],
//! [`hash_password`], [`gen_cert`], [`probe`], [`migrate_store`]; `failure.rs` (how a subcommand fails) and `setup.rs` (config
//! loading, the async runtime) serve them all, `account_arg.rs` the ACCOUNT argument of `login`
//! and `import-token`. Room for the planned one, a module of its own:
//! `reload` (SIGHUP to the running process).
//!
//! Library modules never use `crate::cli`; the CLI may use any of them. `src/main.rs` only parses,
//! dispatches and turns the outcome into the exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod account_arg;
pub mod check;
mod failure;
pub mod gen_cert;
pub mod hash_password;
pub mod import_token;
pub mod login;
pub mod migrate_store;
pub mod probe;
pub mod reload;
pub mod run;
mod setup;
pub mod status;

pub use failure::Failure;

// No doc comments on the clap types: clap would turn them into help text.
#[derive(Parser)]
#[command(
    name = "authbridge",
    version,
    about = "Local SMTP/IMAP/POP3 logins for Microsoft 365 through OAuth2 (XOAUTH2)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file (default: $AUTHBRIDGE_CONFIG or ./config/authbridge.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config (exit 2 on a config error), check that the listen ports are free, fetch
    /// a token for every account and compare what it grants with each listener's needs, log in
    /// upstream on every listener and run the client's first command; every problem is printed
    /// with its fix (exit 1 if one fails).
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the findings as one JSON document (accounts, listeners, each with findings).
        #[arg(long)]
        json: bool,
        /// Also send one real test message to ADDRESS through the full path — the running
        /// authbridge's local SMTP listener, a local login, the upstream — as GLPI's "Send a test
        /// to you" does, and report the final reply.
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
        /// The local username the send test logs in with; its password comes from
        /// $AUTHBRIDGE_CHECK_PASSWORD, else the terminal, else stdin (never the command line).
        #[arg(
            long,
            value_name = "USER",
            requires = "send_test",
            conflicts_with = "direct"
        )]
        login: Option<String>,
        /// The SMTP listener the send test goes through (default: the first SMTP listener).
        #[arg(
            long,
            value_name = "NAME",
            requires = "send_test",
            conflicts_with = "direct"
        )]
        listener: Option<String>,
        /// Send the test message from check straight to every SMTP upstream instead (no local
        /// listener, no local password needed).
        #[arg(long, requires = "send_test")]
        direct: bool,
    },
    /// First delegated authorisation of ACCOUNT (browser with PKCE by default). The local
    /// password is not needed; a running authbridge picks the new token up without a restart.
    Login {
        account: String,
        /// Device-code flow: print a code to enter at the provider's verification page.
        #[arg(long, conflicts_with = "paste")]
        device_code: bool,
        /// Paste the address the browser was sent to (when the loopback port cannot be reached).
        #[arg(long)]
        paste: bool,
        /// How long to wait for the browser or the pasted address, in seconds.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: u64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-read the config in the running `authbridge run` (SIGHUP to the pid in
    /// state_dir/authbridge.pid) and print what changed, or why nothing did. Exits 1 when the
    /// new config was refused (the running one stays in force) or no result came in time.
    Reload {
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to wait for the running process to report, in seconds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Exit as soon as the signal was delivered.
        #[arg(long)]
        no_wait: bool,
    },
    /// One line per account: flow, access-token expiry, last refresh, refresh-token age, state.
    /// Exits 1 when an account needs a login, its last token request failed, or what is known of
    /// it is stale. Reads no secret.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Store an existing refresh token (read from stdin) for ACCOUNT (delegated flows only).
    ImportToken {
        account: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Hash a local password (stdin, or a prompt on a terminal) into an argon2id PHC string.
    /// One password per run: one trailing newline is dropped, another line break is refused.
    HashPassword {
        /// Keep line breaks inside the password (stdin only; one trailing newline is still
        /// dropped).
        #[arg(long)]
        allow_line_breaks: bool,
    },
    /// Write a self-signed certificate (cert.pem, key.pem) for client-side TLS, for localhost,
    /// 127.0.0.1 and ::1 plus the --host names. An existing pair is kept unless --force.
    GenCert {
        /// Output folder.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Another name for the certificate: a DNS name or an IP address (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Replace an existing cert.pem and key.pem.
        #[arg(long)]
        force: bool,
    },
    /// Health probe for containers: GET /healthz (or /readyz with --ready) of the admin
    /// listener; exit 0 on 200, else 1 with the reason. Needs no shell or curl.
    Probe {
        /// Address to probe, e.g. http://127.0.0.1:9925 (default: admin.listen of the config).
        #[arg(long)]
        url: Option<String>,
        /// Probe /readyz (every listener bound, every account able to get a token) instead.
        #[arg(long)]
        ready: bool,
        /// Config file, for `admin.listen` (default: see `run`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Copy the refresh tokens of the file store (state_dir/tokens) into the shared token store
    /// (token_store: redis). Never changes the files; an account the shared store already holds
    /// is kept as it is. Safe to run again.
    MigrateStore {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs one subcommand.
pub fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config } => run::run(config),
        Command::Check {
            config,
            json,
            send_test,
            login,
            listener,
            direct,
        } => check::run(
            config,
            check::Options {
                json,
                send_test,
                direct,
                listener,
                login,
                password: None,
            },
        ),
        Command::Login {
            account,
            device_code,
            paste,
            timeout,
            config,
        } => login::run(&account, device_code, paste, timeout, config),
        Command::Status { config } => status::run(config),
        Command::Reload {
            config,
            timeout,
            no_wait,
        } => reload::run(config, timeout, no_wait),
        Command::ImportToken { account, config } => import_token::run(&account, config),
        Command::HashPassword { allow_line_breaks } => hash_password::run(allow_line_breaks),
        Command::GenCert { out, hosts, force } => gen_cert::run(&out, &hosts, force),
        Command::Probe { url, ready, config } => probe::run(url, ready, config),
        Command::MigrateStore { config } => migrate_store::run(config),
    }
}

/// The exit code when clap did not yield a [`Cli`]: 0 after `--help` or `--version`, 2 for a
/// usage error.
pub fn parse_exit_code(e: &clap::Error) -> u8 {
    if e.use_stderr() { 2 } else { 0 }
}

/// The exit code of a dispatched subcommand: 0 ok, 1 runtime failure, 2 usage or config error.
pub fn exit_code(outcome: &Result<(), Failure>) -> u8 {
    match outcome {
        Ok(()) => 0,
        Err(Failure::Runtime(_)) => 1,
        Err(Failure::Usage(_)) => 2,
    }
}
