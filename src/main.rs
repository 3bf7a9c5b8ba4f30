//! The `authbridge` command line (DESIGN §6). Exit codes: 0 ok, 1 runtime failure, 2 usage or
//! config error.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use authbridge::config::{self, Config};
use authbridge::secret::SecretString;

#[derive(Parser)]
#[command(
    name = "authbridge",
    version,
    about = "Local SMTP/IMAP/POP3 logins for Microsoft 365 through OAuth2 (XOAUTH2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file (default: $AUTHBRIDGE_CONFIG or ./config/authbridge.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config, fetch a token for every account and log in upstream on every listener.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
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
    /// One line per account: flow, access-token expiry, last refresh, refresh-token age, state.
    /// Exits 1 when an account needs a login (or other action).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Store an existing refresh token (read from stdin) for ACCOUNT.
    ImportToken {
        account: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Hash a local password (stdin, or a prompt on a terminal) into an argon2id PHC string.
    HashPassword,
    /// Write a self-signed certificate for localhost (cert.pem, key.pem) for client-side TLS.
    GenCert {
        /// Output folder.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("authbridge: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("authbridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.unwrap_or_else(config::default_path);
    Config::load(&path).map_err(|e| Failure::Usage(e.into()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot start the async runtime: {e}")))
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config } => {
            let config = load(config)?;
            authbridge::telemetry::init(config.log_level.as_deref(), config.log_format);
            runtime()?.block_on(run(config)).map_err(Failure::Runtime)
        }
        Command::Check { config } => {
            let config = load(config)?;
            authbridge::telemetry::init(Some("warn"), config.log_format);
            let ok = runtime()?.block_on(authbridge::cli::check::check(
                &config,
                &mut std::io::stdout(),
            ));
            if ok {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow!("some checks failed (see above)")))
            }
        }
        Command::Login {
            account,
            device_code,
            paste,
            timeout,
            config,
        } => {
            let config = load(config)?;
            authbridge::telemetry::init(Some("warn"), config.log_format);
            let opts = authbridge::cli::login::LoginOptions {
                mode: if device_code {
                    Some(authbridge::cli::login::Mode::DeviceCode)
                } else if paste {
                    Some(authbridge::cli::login::Mode::Paste)
                } else {
                    None
                },
                timeout: std::time::Duration::from_secs(timeout),
            };
            let mut stdout = std::io::stdout();
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            runtime()?
                .block_on(authbridge::cli::login::login(
                    &config,
                    &account,
                    &opts,
                    &mut stdout,
                    &mut stdin,
                ))
                .map_err(|e| match e {
                    authbridge::cli::login::LoginError::Usage(m) => Failure::Usage(anyhow!(m)),
                    authbridge::cli::login::LoginError::Failed(m) => Failure::Runtime(anyhow!(m)),
                })
        }
        Command::Status { config } => {
            let config = load(config)?;
            let lines = authbridge::cli::status::report(&config, std::time::SystemTime::now());
            for l in &lines {
                println!("{}", l.text);
            }
            if lines.iter().any(|l| l.needs_action) {
                Err(Failure::Runtime(anyhow!(
                    "some accounts need attention (see above)"
                )))
            } else {
                Ok(())
            }
        }
        Command::ImportToken { account, config } => {
            let config = load(config)?;
            import_token(&config, &account)
        }
        Command::HashPassword => hash_password().map_err(Failure::Runtime),
        Command::GenCert { out } => gen_cert(&out).map_err(Failure::Runtime),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = authbridge::server::start(config, shutdown.clone()).await?;
    let signals = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        anyhow::Ok(())
    };
    signals.await?;
    shutdown.cancel();
    running.wait().await;
    Ok(())
}

fn import_token(config: &Config, account: &str) -> Result<(), Failure> {
    if config.account(account).is_none() {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(Failure::Usage(anyhow!(
            "no account named `{account}` in {} (accounts: {})",
            config.file.display(),
            known.join(", ")
        )));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Runtime(anyhow!("cannot read the refresh token from stdin: {e}")))?;
    let token = SecretString::new(text.trim().to_string());
    drop(text);
    if token.expose().is_empty() || token.expose().contains(char::is_whitespace) {
        return Err(Failure::Usage(anyhow!(
            "expected one refresh token on stdin (no spaces inside), got {}",
            if token.expose().is_empty() {
                "nothing"
            } else {
                "text with spaces"
            }
        )));
    }
    let store = authbridge::server::token_store(config).map_err(|e| Failure::Runtime(e.into()))?;
    store
        .save(account, &token)
        .map_err(|e| Failure::Runtime(anyhow!("cannot store the token: {e}")))?;
    println!(
        "stored the refresh token for {account} (encrypted) under {}; run `authbridge check` to try it",
        config.state_dir.display()
    );
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = SecretString::new(rpassword::prompt_password("Password: ")?);
        let second = SecretString::new(rpassword::prompt_password("Again: ")?);
        if first != second {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut bytes = Vec::new();
        stdin.lock().read_to_end(&mut bytes)?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.pop();
        }
        let s = String::from_utf8(bytes).context("the password on stdin is not UTF-8")?;
        SecretString::new(s)
    };
    if password.expose().is_empty() {
        bail!("refusing to hash an empty password");
    }
    let hash =
        authbridge::auth::hash_password(password.expose().as_bytes()).map_err(|e| anyhow!(e))?;
    println!("{hash}");
    Ok(())
}

fn gen_cert(out: &std::path::Path) -> anyhow::Result<()> {
    let (cert, key) = authbridge::tls::self_signed_localhost()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    std::fs::write(&cert_path, cert)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let mut f = open_private(&key_path)?;
    f.write_all(key.expose().as_bytes())?;
    println!(
        "wrote {} and {} (self-signed for localhost, 127.0.0.1, ::1; valid until 2036)\nuse them as `cert:` and `key:` of a listener with tls: starttls or implicit",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn open_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
