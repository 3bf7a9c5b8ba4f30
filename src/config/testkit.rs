//! Test helper shared by the config unit tests: parse YAML text as `/etc/authbridge/test.yaml`.

use std::path::Path;

use super::resolved::Config;

pub(super) fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("/etc/authbridge/test.yaml"), text).map_err(|e| e.to_string())
}
