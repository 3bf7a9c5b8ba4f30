//! IMAP4rev1 (RFC 3501) before login, both ways.
//!
//! - [`ImapClient`] plays the server toward the legacy client: greeting, CAPABILITY, ID, NOOP,
//!   LOGOUT, STARTTLS and the local login forms (`LOGIN` with atoms, quoted strings and literals;
//!   `AUTHENTICATE PLAIN` / `LOGIN` with SASL-IR or continuations).
//! - [`ImapUpstream`] plays the client toward Exchange: greeting, STARTTLS when asked, CAPABILITY,
//!   then `AUTHENTICATE XOAUTH2`.
//!
//! Layers, as in the rest of `protocol`: [`reader`] frames lines and literals under caps,
//! [`command`] parses one complete client command, [`response`] parses upstream responses,
//! [`capability`] builds what the client is shown. The machines do no I/O and keep no time.

pub mod capability;
mod client;
#[cfg(test)]
mod client_tests;
pub mod command;
pub mod reader;
pub mod response;
#[cfg(test)]
pub(crate) mod testkit;
mod upstream;
#[cfg(test)]
mod upstream_tests;

pub use client::ImapClient;
pub use upstream::ImapUpstream;
