//! SMTP submission (RFC 5321, RFC 4954 AUTH, RFC 3207 STARTTLS): the pre-login server side toward
//! the legacy client ([`SmtpClient`]), the EHLO/STARTTLS/XOAUTH2 client side toward Exchange
//! ([`SmtpUpstream`]), and the relay-mode dialogue after login ([`relay::RelayMachine`]).

pub mod body;
mod client;
mod command;
pub mod envelope;
pub mod relay;
#[cfg(test)]
mod relay_tests;
mod reply;
mod upstream;

pub use client::SmtpClient;
pub use command::{Command, parse_command};
pub use reply::{Reply, ReplyParser, ReplyStep, write_reply};
pub use upstream::SmtpUpstream;

/// EHLO keywords passed from the upstream to the client (DESIGN §1). Everything else (AUTH,
/// STARTTLS, vendor extensions) is dropped.
const KEPT_EXTENSIONS: &[&str] = &[
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
];

/// Extensions a relay-mode listener does not pass on: the relay handles one command at a time
/// and streams DATA, so it offers neither pipelining nor BDAT.
const RELAY_DROPPED: &[&str] = &["PIPELINING", "CHUNKING", "BINARYMIME"];
