//! POP3 (RFC 1939) before login, both ways.
//!
//! - [`Pop3Client`] plays the server toward the legacy client: greeting (no APOP timestamp), CAPA,
//!   STLS, QUIT and the local login forms (`USER`/`PASS`, `AUTH PLAIN`, `AUTH LOGIN`).
//! - [`Pop3Upstream`] plays the client toward Exchange: greeting, STLS when asked, CAPA, then
//!   `AUTH XOAUTH2` in two steps.
//!
//! The machines do no I/O and keep no time.

mod client;
#[cfg(test)]
mod client_tests;
pub mod command;
mod upstream;
#[cfg(test)]
mod upstream_tests;

pub use client::{Leg, Pop3Client, client_capa};
pub use upstream::Pop3Upstream;
