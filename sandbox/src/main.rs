//! `authbridge-sandbox serve`: run the fake Entra ID + Exchange Online until SIGINT/SIGTERM.
//! Everything testable lives in the library (`sandbox::cli`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use sandbox::Sandbox;
use sandbox::cli::{self, Command};

fn main() -> ExitCode {
    let args = match cli::parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Serve(a)) => a,
        Err(e) => {
            eprintln!("authbridge-sandbox: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authbridge-sandbox: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authbridge-sandbox: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: cli::ServeArgs) -> std::io::Result<()> {
    let sb = Sandbox::start(args.options).await?;
    let info = cli::prepare(&sb, &args.dir)?;
    print!("{}", cli::banner(&info));
    println!("  (details in {})", args.dir.join("sandbox.json").display());
    wait_for_signal().await?;
    println!("authbridge sandbox stopping");
    sb.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
