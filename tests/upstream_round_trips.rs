//! Issue 19: an IMAP or POP3 login through authbridge costs the upstream no more round trips
//! than a direct client's, once the listener knows its upstream. Counted by the sandbox (each
//! time its server answered and then had to wait for the client: `LoginTrace::round_trips`),
//! so the saving is measured, not assumed. A direct client that sends `AUTHENTICATE XOAUTH2
//! <ir>` after Exchange's greeting takes 1; before issue 19 authbridge took 2 (it waited for
//! `CAPABILITY`) and then sent a `NOOP` of its own before the client's first command.
//!
//! Also: an upstream that changes its capabilities between sessions (drops SASL-IR, drops
//! AUTH=XOAUTH2, gets them back) is followed without a failed login where one can be avoided.

mod common;

use common::*;
use sandbox::LoginTrace;

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One IMAP session on the `imap` listener: LOGIN, then SELECT when it worked; the login's
/// tagged reply.
async fn imap_session(env: &Env) -> String {
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await;
    let (_, r) = c
        .imap("a1", &format!("LOGIN {USER} {}", quote(PASSWORD)))
        .await;
    if r.starts_with("a1 OK") {
        let (_, s) = c.imap("a2", "SELECT INBOX").await;
        assert!(s.starts_with("a2 OK"), "{s}");
        c.imap("a3", "LOGOUT").await;
    }
    r
}

fn last_login(env: &Env, protocol: &str) -> LoginTrace {
    env.sandbox
        .login_traces()
        .into_iter()
        .rfind(|t| t.protocol == protocol)
        .expect("a login was traced")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_login_takes_the_round_trips_of_a_direct_client() {
    let env = Env::start().await;
    // First session of the listener: it must ask for the capabilities (2 round trips).
    let r = imap_session(&env).await;
    assert!(r.starts_with("a1 OK"), "{r}");
    let first = last_login(&env, "imap");
    assert_eq!(first.round_trips, 2, "{first:?}");
    // The client's SELECT is the first command after the login: no probe of ours before it.
    assert_eq!(first.first_command.as_deref(), Some("SELECT"), "{first:?}");
    // Every later session: CAPABILITY and AUTHENTICATE go together, as a direct client's one.
    for _ in 0..3 {
        let r = imap_session(&env).await;
        assert!(r.starts_with("a1 OK"), "{r}");
        let t = last_login(&env, "imap");
        assert_eq!(t.round_trips, 1, "{t:?}");
        assert_eq!(t.first_command.as_deref(), Some("SELECT"), "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_login_sends_no_probe_before_the_clients_first_command() {
    let env = Env::start().await;
    for _ in 0..2 {
        let mut c = LineClient::connect(env.addr("pop3")).await;
        c.line().await;
        c.send(&format!("USER {USER}")).await;
        c.line().await;
        c.send(&format!("PASS {PASSWORD}")).await;
        let r = c.line().await.unwrap();
        assert!(r.starts_with("+OK"), "{r}");
        c.send("STAT").await;
        let r = c.line().await.unwrap();
        assert!(r.starts_with("+OK"), "{r}");
        let t = last_login(&env, "pop3");
        assert_eq!(t.first_command.as_deref(), Some("STAT"), "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_upstream_that_changes_its_capabilities_is_followed() {
    let env = Env::start().await;
    assert!(imap_session(&env).await.starts_with("a1 OK"));
    assert!(imap_session(&env).await.starts_with("a1 OK"));
    assert_eq!(last_login(&env, "imap").round_trips, 1);

    // SASL-IR gone: the remembered one-line AUTHENTICATE is refused with BAD and repeated with
    // a continuation in the same session; the client never sees it.
    env.sandbox
        .set_imap_capabilities(Some("IMAP4 IMAP4rev1 AUTH=XOAUTH2 UIDPLUS ID IDLE"));
    let r = imap_session(&env).await;
    assert!(r.starts_with("a1 OK"), "{r}");
    assert_eq!(last_login(&env, "imap").round_trips, 3);
    // Learned: from now on the continuation form goes with CAPABILITY (greeting → command →
    // `+` → token).
    let r = imap_session(&env).await;
    assert!(r.starts_with("a1 OK"), "{r}");
    assert_eq!(last_login(&env, "imap").round_trips, 2);

    // AUTH=XOAUTH2 gone: a temporary refusal that says why, as for a fresh session; the next
    // session asks again (a set without XOAUTH2 is never assumed) and fails the same way.
    env.sandbox
        .set_imap_capabilities(Some("IMAP4 IMAP4rev1 AUTH=PLAIN SASL-IR"));
    for _ in 0..2 {
        let r = imap_session(&env).await;
        assert!(
            r.starts_with("a1 NO [UNAVAILABLE]") && r.contains("does not offer AUTH=XOAUTH2"),
            "{r}"
        );
    }

    // Back to Exchange's list: asked once (2), then remembered again (1).
    env.sandbox.set_imap_capabilities(None);
    assert!(imap_session(&env).await.starts_with("a1 OK"));
    assert_eq!(last_login(&env, "imap").round_trips, 2);
    assert!(imap_session(&env).await.starts_with("a1 OK"));
    assert_eq!(last_login(&env, "imap").round_trips, 1);
}
