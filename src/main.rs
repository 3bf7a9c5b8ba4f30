//! The `authbridge` binary: parses the command line, hands it to [`authbridge::cli::dispatch`] and
//! turns the outcome into the exit code (0 ok, 1 runtime failure, 2 usage or config error).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use authbridge::cli::{self, Cli};

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(cli::parse_exit_code(&e));
        }
    };
    let outcome = cli::dispatch(args.command);
    // A refresh lease left behind would make every replica wait for its expiry.
    let held =
        authbridge::token::finish_lease_releases(authbridge::limits::shared_store::RELEASE_AT_EXIT);
    if held > 0 {
        eprintln!(
            "authbridge: {held} refresh lease(s) in Redis could not be released; they expire by \
             themselves (token_store.lease_ms)"
        );
    }
    if let Err(failure) = &outcome {
        eprintln!("authbridge: {}", failure.message());
    }
    ExitCode::from(cli::exit_code(&outcome))
}
