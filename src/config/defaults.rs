//! Defaults for what a config file may leave out: where the file itself is, and the top-level,
//! provider and relay keys with a fixed default. (The `limits:` defaults live with
//! [`crate::limits::Limits`]; keyword defaults are the `#[default]` variants in `schema`.)

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

/// Environment variable naming the config file.
const CONFIG_ENV: &str = "AUTHBRIDGE_CONFIG";
/// Config file used when neither `--config` nor [`CONFIG_ENV`] is given.
const CONFIG_PATH: &str = "config/authbridge.yaml";

/// `state_dir`, relative to the config file's folder.
pub(crate) const STATE_DIR: &str = "state";
/// `hostname`: the name in greetings and EHLO replies.
pub(super) const HOSTNAME: &str = "localhost";
/// A Microsoft provider's `tenant` when it is left out (allowed only with `token_url`).
pub(super) const MICROSOFT_TENANT: &str = "common";
/// `admin.listen` when `admin:` is given without it: loopback, and not 8925 (the default
/// redirect port of `authbridge login`).
pub(super) const ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9925));
/// A relay listener's `require_login`.
pub(super) const RELAY_REQUIRE_LOGIN: bool = true;

/// Default config path: `$AUTHBRIDGE_CONFIG` or `./config/authbridge.yaml`.
pub fn default_path() -> PathBuf {
    std::env::var_os(CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_PATH))
}
