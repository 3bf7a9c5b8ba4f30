//! The `limits:` section: optional overrides of [`Limits`], each checked against its accepted
//! range (a limit can be tuned, never switched off) and against the limits it must agree with.

use crate::config::error::ConfigError;
use crate::config::schema::RawLimits;
use crate::limits::Limits;

use super::context::Resolver;

impl Resolver<'_> {
    /// Apply the `limits:` overrides, each within its range.
    pub(super) fn limits(&self, rl: RawLimits) -> Result<Limits, ConfigError> {
        let mut l = Limits::default();
        let range = |key: &str, v: Option<u64>, min: u64, max: u64, unit: &str| match v {
            Some(v) if v < min || v > max => Err(self.err(
                format!("limits.{key}"),
                format!("expected {min} to {max} {unit}, got {v}"),
            )),
            other => Ok(other),
        };
        let secs = std::time::Duration::from_secs;
        let ms = std::time::Duration::from_millis;
        let c = &mut l.connections;
        if let Some(v) = range("max_sessions", rl.max_sessions, 1, 1_000_000, "sessions")? {
            c.max_sessions = v as usize;
        }
        if let Some(v) = range(
            "max_sessions_per_source",
            rl.max_sessions_per_source,
            1,
            1_000_000,
            "sessions",
        )? {
            c.max_sessions_per_source = v as usize;
        }
        if let Some(v) = range(
            "early_upstream_per_source",
            rl.early_upstream_per_source,
            1,
            1_000_000,
            "connections",
        )? {
            c.early_upstream_per_source = v as usize;
        }
        if let Some(v) = range(
            "early_upstream_max",
            rl.early_upstream_max,
            1,
            1_000_000,
            "connections",
        )? {
            c.early_upstream_max = v as usize;
        }
        if let Some(v) = range(
            "login_failures_per_source",
            rl.login_failures_per_source,
            1,
            100_000,
            "failures",
        )? {
            c.login_failures_per_source = v as u32;
        }
        if let Some(v) = range(
            "failure_window_secs",
            rl.failure_window_secs,
            1,
            86_400,
            "seconds",
        )? {
            c.failure_window = secs(v);
        }
        if let Some(v) = range(
            "failure_delay_base_ms",
            rl.failure_delay_base_ms,
            0,
            10_000,
            "milliseconds",
        )? {
            c.failure_delay_base = ms(v);
        }
        if let Some(v) = range(
            "failure_delay_max_ms",
            rl.failure_delay_max_ms,
            0,
            30_000,
            "milliseconds",
        )? {
            c.failure_delay_max = ms(v);
        }
        if c.failure_delay_max < c.failure_delay_base {
            return Err(self.err(
                "limits.failure_delay_max_ms",
                "expected at least failure_delay_base_ms",
            ));
        }

        let p = &mut l.protocol;
        if let Some(v) = range("line_max", rl.line_max, 512, 65_536, "octets")? {
            p.line_max = v as usize;
        }
        if let Some(v) = range("auth_line_max", rl.auth_line_max, 512, 65_536, "octets")? {
            p.auth_line_max = v as usize;
        }
        if p.auth_line_max < p.line_max {
            return Err(self.err(
                "limits.auth_line_max",
                format!(
                    "expected at least line_max ({} octets): AUTH lines are the longest commands",
                    p.line_max
                ),
            ));
        }
        if let Some(v) = range("literal_max", rl.literal_max, 0, 1 << 20, "octets")? {
            p.literal_max = v as usize;
        }
        if let Some(v) = range(
            "preauth_commands_max",
            rl.preauth_commands_max,
            1,
            100_000,
            "commands",
        )? {
            p.preauth_commands_max = v as u32;
        }
        if let Some(v) = range(
            "bad_commands_max",
            rl.bad_commands_max,
            0,
            10_000,
            "commands",
        )? {
            p.bad_commands_max = v as u32;
        }
        if let Some(v) = range(
            "session_login_failures_max",
            rl.session_login_failures_max,
            1,
            100,
            "failures",
        )? {
            p.session_login_failures_max = v as u32;
        }
        if let Some(v) = range(
            "token_response_max",
            rl.token_response_max,
            4096,
            16 << 20,
            "octets",
        )? {
            l.token_response_max = v as usize;
        }

        let t = &mut l.timeouts;
        let timeouts: [(&str, Option<u64>, u64, u64, &mut std::time::Duration); 14] = [
            (
                "client_tls_handshake_secs",
                rl.client_tls_handshake_secs,
                1,
                300,
                &mut t.client_tls_handshake,
            ),
            (
                "preauth_idle_secs",
                rl.preauth_idle_secs,
                1,
                3600,
                &mut t.preauth_idle,
            ),
            (
                "preauth_total_secs",
                rl.preauth_total_secs,
                1,
                86_400,
                &mut t.preauth_total,
            ),
            (
                "client_write_secs",
                rl.client_write_secs,
                1,
                600,
                &mut t.client_write,
            ),
            (
                "upstream_connect_secs",
                rl.upstream_connect_secs,
                1,
                60,
                &mut t.upstream_connect,
            ),
            (
                "upstream_tls_handshake_secs",
                rl.upstream_tls_handshake_secs,
                1,
                60,
                &mut t.upstream_tls_handshake,
            ),
            (
                "upstream_setup_secs",
                rl.upstream_setup_secs,
                1,
                60,
                &mut t.upstream_setup,
            ),
            (
                "upstream_auth_secs",
                rl.upstream_auth_secs,
                1,
                60,
                &mut t.upstream_auth,
            ),
            (
                "token_request_secs",
                rl.token_request_secs,
                1,
                60,
                &mut t.token_request,
            ),
            (
                "capabilities_wait_secs",
                rl.capabilities_wait_secs,
                0,
                60,
                &mut t.capabilities_wait,
            ),
            (
                "login_budget_secs",
                rl.login_budget_secs,
                1,
                60,
                &mut t.login_budget,
            ),
            (
                "pipe_idle_secs",
                rl.pipe_idle_secs,
                1,
                7 * 86_400,
                &mut t.pipe_idle,
            ),
            (
                "relay_reply_secs",
                rl.relay_reply_secs,
                1,
                3600,
                &mut t.relay_reply,
            ),
            (
                "shutdown_grace_secs",
                rl.shutdown_grace_secs,
                0,
                3600,
                &mut t.shutdown_grace,
            ),
        ];
        for (key, v, min, max, slot) in timeouts {
            if let Some(v) = range(key, v, min, max, "seconds")? {
                *slot = secs(v);
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testkit::parse;

    #[test]
    fn limits_defaults_overrides_and_ranges() {
        let c = parse("").unwrap();
        assert_eq!(c.limits, Limits::default());
        let d = Limits::default();
        assert_eq!(d.protocol.line_max, 4096);
        assert_eq!(d.protocol.auth_line_max, 12288);
        assert!(d.timeouts.login_budget < std::time::Duration::from_secs(10));

        let c = parse(
            "limits:\n  line_max: 1000\n  auth_line_max: 2000\n  literal_max: 100\n  preauth_commands_max: 5\n  bad_commands_max: 2\n  session_login_failures_max: 1\n  max_sessions: 7\n  max_sessions_per_source: 3\n  login_failures_per_source: 4\n  failure_window_secs: 30\n  failure_delay_base_ms: 10\n  failure_delay_max_ms: 20\n  token_response_max: 8192\n  client_tls_handshake_secs: 2\n  preauth_idle_secs: 3\n  preauth_total_secs: 4\n  client_write_secs: 5\n  upstream_connect_secs: 6\n  upstream_tls_handshake_secs: 7\n  upstream_setup_secs: 8\n  upstream_auth_secs: 9\n  token_request_secs: 10\n  capabilities_wait_secs: 0\n  login_budget_secs: 11\n  pipe_idle_secs: 12\n  shutdown_grace_secs: 13\n  relay_reply_secs: 14\n  early_upstream_per_source: 6\n  early_upstream_max: 60\n",
        )
        .unwrap();
        let l = &c.limits;
        let s = std::time::Duration::from_secs;
        assert_eq!(
            (
                l.protocol.line_max,
                l.protocol.auth_line_max,
                l.protocol.literal_max
            ),
            (1000, 2000, 100)
        );
        assert_eq!(
            (
                l.protocol.preauth_commands_max,
                l.protocol.bad_commands_max,
                l.protocol.session_login_failures_max
            ),
            (5, 2, 1)
        );
        assert_eq!(
            (
                l.connections.max_sessions,
                l.connections.max_sessions_per_source,
                l.connections.login_failures_per_source
            ),
            (7, 3, 4)
        );
        assert_eq!(l.connections.failure_window, s(30));
        assert_eq!(
            (
                l.connections.early_upstream_per_source,
                l.connections.early_upstream_max
            ),
            (6, 60)
        );
        assert_eq!(d.connections.early_upstream_per_source, 32);
        assert_eq!(d.connections.early_upstream_max, 1024);
        assert_eq!(
            l.connections.failure_delay_max,
            std::time::Duration::from_millis(20)
        );
        assert_eq!(l.token_response_max, 8192);
        let t = &l.timeouts;
        assert_eq!(
            [
                t.client_tls_handshake,
                t.preauth_idle,
                t.preauth_total,
                t.client_write,
                t.upstream_connect,
                t.upstream_tls_handshake,
                t.upstream_setup,
                t.upstream_auth,
                t.token_request,
                t.capabilities_wait,
                t.login_budget,
                t.pipe_idle,
                t.shutdown_grace,
                t.relay_reply
            ],
            [2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 11, 12, 13, 14].map(s)
        );
        assert_eq!(l.token_settings().request_timeout, s(10));

        for (yaml, want) in [
            (
                "line_max: 0",
                "limits.line_max: expected 512 to 65536 octets, got 0",
            ),
            ("max_sessions: 0", "limits.max_sessions: expected 1 to"),
            (
                "early_upstream_per_source: 0",
                "limits.early_upstream_per_source: expected 1 to 1000000 connections, got 0",
            ),
            (
                "early_upstream_max: 0",
                "limits.early_upstream_max: expected 1 to 1000000 connections, got 0",
            ),
            (
                "preauth_idle_secs: 0",
                "limits.preauth_idle_secs: expected 1 to 3600 seconds",
            ),
            (
                "login_budget_secs: 61",
                "limits.login_budget_secs: expected 1 to 60 seconds",
            ),
            ("literal_max: 99999999", "limits.literal_max"),
            (
                "line_max: 20000",
                "limits.auth_line_max: expected at least line_max (20000 octets)",
            ),
            (
                "failure_delay_base_ms: 500\n  failure_delay_max_ms: 100",
                "limits.failure_delay_max_ms",
            ),
            ("line_max: -1", "limits.line_max"),
            (
                "no_such_limit: 1",
                "limits.no_such_limit: unknown field `no_such_limit`",
            ),
        ] {
            let e = parse(&format!("limits:\n  {yaml}\n")).unwrap_err();
            // Schema errors (type, unknown key) carry the line of the key.
            let file = ["", ":2", ":3"]
                .map(|line| format!("/etc/authbridge/test.yaml{line}: "))
                .into_iter()
                .any(|prefix| e.starts_with(&prefix));
            assert!(file && e.contains(want), "{yaml}: {e}");
        }
    }
}
