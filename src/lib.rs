//! authbridge: lets username+password mail clients reach Microsoft 365 through OAuth2 XOAUTH2.
//!
//! A session goes: listener → client TLS → sans-I/O pre-auth machine → local credential check →
//! token provider → upstream connect + XOAUTH2 → success reply → byte pipe. [`run`] is the one
//! entry point, used by `main.rs` and by the integration tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod diagnosis;
pub mod graph;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod password_hash;
pub mod pidfile;
pub mod pipe;
pub mod protocol;
pub mod recent_logins;
pub mod reload_status;
pub mod secret;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;

pub use server::{run, start};
