//! SMTP submission (RFC 5321, RFC 4954 AUTH, RFC 3207 STARTTLS): the pre-login server side toward
//! the legacy client ([`SmtpClient`]), the EHLO/STARTTLS/XOAUTH2 client side toward Exchange
//! ([`SmtpUpstream`]), the relay-mode dialogue after login ([`relay::RelayMachine`]) and the
//! relay's AUTH PLAIN/LOGIN towards a transactional provider ([`relay_auth::RelayAuth`]).

pub mod body;
mod client;
mod command;
pub mod envelope;
mod extensions;
pub mod relay;
pub mod relay_auth;
#[cfg(test)]
mod relay_tests;
mod reply;
pub mod reply_watch;
mod upstream;

pub use client::SmtpClient;
pub use command::{Command, parse_command};
pub use reply::{Reply, ReplyParser, ReplyStep, write_reply};
pub use upstream::SmtpUpstream;
