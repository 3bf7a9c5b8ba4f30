//! What `authbridge check` found, as data: one object per account and per listener × account,
//! each a list of findings (status, what, fix). Rendered as one line per finding for people, or
//! as one JSON document (`--json`) for monitoring and support.

use std::io::Write;

use serde::Serialize;

use crate::token::claims::{Claims, Inspection};

/// How a finding bears on the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing, not a failure (exit status unaffected).
    Warning,
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub status: Status,
    /// The diagnosis table's name for a known problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'static str>,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// What the line is about, when not its section's subject (e.g. `listener smtp` among the
    /// config-wide findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Finding {
        Finding {
            status: Status::Ok,
            id: None,
            what: what.into(),
            fix: None,
            subject: None,
        }
    }

    pub fn failed(what: impl Into<String>, fix: Option<String>) -> Finding {
        Finding {
            status: Status::Failed,
            id: None,
            what: what.into(),
            fix,
            subject: None,
        }
    }

    pub fn warning(what: impl Into<String>, fix: Option<String>) -> Finding {
        Finding {
            status: Status::Warning,
            id: None,
            what: what.into(),
            fix,
            subject: None,
        }
    }

    pub fn about(mut self, subject: impl Into<String>) -> Finding {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_id(mut self, id: &'static str) -> Finding {
        self.id = Some(id);
        self
    }
}

/// What the access token says about itself (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    /// `jwt` or `opaque`.
    pub form: &'static str,
    #[serde(flatten)]
    pub claims: Option<Claims>,
}

impl TokenSummary {
    pub fn new(inspection: &Inspection) -> TokenSummary {
        match inspection {
            Inspection::Jwt(c) => TokenSummary {
                form: "jwt",
                claims: Some(c.clone()),
            },
            Inspection::Opaque => TokenSummary {
                form: "opaque",
                claims: None,
            },
        }
    }

    /// `aud=… tid=… appid=… scp=… upn=… exp=…` (the claims present).
    pub fn describe(&self) -> String {
        let Some(c) = &self.claims else {
            return "token is opaque (not a JWT): its permissions cannot be read here, which is \
                    normal for Google and some custom providers"
                .to_string();
        };
        let mut parts = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                parts.push(format!("{k}={v}"));
            }
        };
        push("aud", c.aud.clone());
        push("tid", c.tid.clone());
        push("appid", c.appid.clone());
        push("scp", (!c.scp.is_empty()).then(|| c.scp.join(",")));
        push("roles", (!c.roles.is_empty()).then(|| c.roles.join(",")));
        push("upn", c.upn.clone());
        push("exp", c.exp.map(|e| e.to_string()));
        format!("token claims: {}", parts.join(" "))
    }
}

#[derive(Debug, Serialize)]
pub struct AccountReport {
    pub name: String,
    pub provider: String,
    pub flow: String,
    pub mailbox: String,
    /// `token_from`: the account whose token this one uses (a shared mailbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_from: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSummary>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct ListenerReport {
    pub name: String,
    pub protocol: String,
    /// `auth` or `relay`.
    pub mode: &'static str,
    /// `host:port`.
    pub upstream: String,
    /// The account logged in with (none for relay listeners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub ok: bool,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub config: String,
    pub ok: bool,
    /// Config-wide findings (listen addresses, token store, status files).
    pub findings: Vec<Finding>,
    pub accounts: Vec<AccountReport>,
    pub listeners: Vec<ListenerReport>,
    /// `--send-test` through the local listener (the full path); empty otherwise (`--direct`
    /// reports under each listener).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub send_test: Vec<Finding>,
}

impl Report {
    /// Recompute every `ok` from the findings.
    pub fn settle(&mut self) {
        let fine = |f: &[Finding]| f.iter().all(|f| f.status != Status::Failed);
        for a in &mut self.accounts {
            a.ok = fine(&a.findings);
        }
        for l in &mut self.listeners {
            l.ok = fine(&l.findings);
        }
        self.ok = fine(&self.findings)
            && fine(&self.send_test)
            && self.accounts.iter().all(|a| a.ok)
            && self.listeners.iter().all(|l| l.ok);
    }

    /// One line per finding: `subject: what` for OK, `subject: FAILED: what — fix: …`.
    pub fn write_human(&self, out: &mut dyn Write) {
        let line = |out: &mut dyn Write, subject: &str, f: &Finding| {
            let subject = f.subject.as_deref().unwrap_or(subject);
            let _ = match (f.status, &f.fix) {
                (Status::Ok, _) => writeln!(out, "{subject}: {}", f.what),
                (Status::Warning, None) => writeln!(out, "{subject}: WARNING: {}", f.what),
                (Status::Warning, Some(fix)) => {
                    writeln!(out, "{subject}: WARNING: {} — fix: {fix}", f.what)
                }
                (Status::Failed, None) => writeln!(out, "{subject}: FAILED: {}", f.what),
                (Status::Failed, Some(fix)) => {
                    writeln!(out, "{subject}: FAILED: {} — fix: {fix}", f.what)
                }
            };
        };
        for f in &self.findings {
            line(out, "config", f);
        }
        for a in &self.accounts {
            let subject = format!("account {}", a.name);
            for f in &a.findings {
                line(out, &subject, f);
            }
        }
        for l in &self.listeners {
            let subject = match &l.account {
                Some(a) => format!(
                    "listener {} ({} → {}) as {a}",
                    l.name, l.protocol, l.upstream
                ),
                None => format!("listener {} ({} → {})", l.name, l.mode, l.upstream),
            };
            for f in &l.findings {
                line(out, &subject, f);
            }
        }
        for f in &self.send_test {
            line(out, "send test", f);
        }
        let _ = writeln!(
            out,
            "{}",
            if self.ok {
                "check: all OK"
            } else {
                "check: some checks failed (see the lines above)"
            }
        );
    }

    pub fn write_json(&self, out: &mut dyn Write) {
        // Serialising plain data to a Vec cannot fail.
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let _ = writeln!(out, "{text}");
    }
}
