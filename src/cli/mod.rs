//! The `authbridge` subcommands, one module each.
//!
//! Library modules never use `crate::cli`; the CLI may use any of them.

pub mod check;
pub mod login;
pub mod status;
