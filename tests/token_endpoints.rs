//! The real `authbridge` binary refuses a provider endpoint over plain `http://` to a host that is
//! not loopback: the config does not load (exit 2) and the error names the file, the key path and
//! says to use https. Loopback endpoints (tests, local stand-ins) still load.

use std::process::Command;

/// A config that loads but for the endpoint under test: one provider, one account, one listener.
fn config(token_url: &str) -> String {
    format!(
        "providers:\n  idp:\n    type: custom\n    client_id: c\n    flow: authorization_code\n    \
         token_url: \"{token_url}\"\n\
         accounts:\n  - name: a\n    provider: idp\n    mailbox: a@example.com\n    logins:\n      \
         - {{ username: u, password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$AuGa1YnsI06GYhr/ypvKfw$Xm/fhKB4HSQGuBBvWzB5TaNmtt0W102jA72mjJd9pos\" }}\n\
         listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    \
         upstream: {{ host: 127.0.0.1, port: 9, tls: implicit }}\n"
    )
}

#[test]
fn plain_http_token_url_to_a_remote_host_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authbridge.yaml");
    std::fs::write(&path, config("http://login.example.com/idp/token")).unwrap();
    for command in ["check", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_authbridge"))
            .args([command, "--config"])
            .arg(&path)
            .env_remove("AUTHBRIDGE_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains("authbridge.yaml")
                && err.contains("providers.idp.token_url")
                && err.contains("use https://"),
            "{command}: {err}"
        );
    }
}

#[test]
fn plain_http_token_url_on_loopback_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authbridge.yaml");
    std::fs::write(&path, config("http://127.0.0.1:9/idp/token")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("AUTHBRIDGE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("providers.idp.token_url"), "{err}");
}
