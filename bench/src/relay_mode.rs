//! Relay mode (`mode: relay`): warm message submission to the sandbox's inbound connector —
//! directly (the client does STARTTLS itself, no AUTH, as a device allowed by IP would), through
//! the byte relay, and through authbridge's relay listener (local `AUTH LOGIN` as GLPI does, then
//! authbridge's own STARTTLS session to the connector). Timed from connect to the `250` after
//! the message; the systems interleave round by round like the login phase.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::client::{self, Conn, System, Tls, err};
use crate::phases::{Ctx, LoginSeries};
use crate::report;
use crate::systems::{LOCAL_PASS, LOCAL_USER};

/// Recipient at the connector (a tenant mailbox; the connector attributes by source address).
const RCPT: &str = "sink@contoso.com";

/// Relay-mode results: per system, the submission latencies, plus the connector's own count.
#[derive(Default)]
pub struct RelayModeRun {
    pub series: BTreeMap<System, LoginSeries>,
    pub message_bytes: usize,
    /// Messages the connector accepted during the phase (warm-ups included) and how many the
    /// clients saw accepted: the two must agree.
    pub connector_accepted: u64,
    pub client_accepted: u64,
}

/// How one system is reached.
struct Way {
    addr: SocketAddr,
    /// STARTTLS by the client itself (direct, relay).
    tls: Option<Tls>,
    /// Local login (authbridge).
    login: bool,
}

/// One submission: connect, EHLO, (STARTTLS, EHLO | AUTH LOGIN), MAIL, RCPT, DATA → 250.
async fn submit(w: &Way, from: &str, body: &[u8]) -> io::Result<Duration> {
    let start = Instant::now();
    let mut c = Conn::connect(w.addr).await?;
    c.smtp_reply("220").await?;
    c.send(b"EHLO bench.example\r\n").await?;
    c.smtp_reply("250").await?;
    if let Some(tls) = &w.tls {
        c.send(b"STARTTLS\r\n").await?;
        c.smtp_reply("220").await?;
        c.start_tls(tls).await?;
        c.send(b"EHLO bench.example\r\n").await?;
        c.smtp_reply("250").await?;
    }
    if w.login {
        c.send(b"AUTH LOGIN\r\n").await?;
        c.smtp_reply("334").await?;
        c.send(format!("{}\r\n", B64.encode(LOCAL_USER)).as_bytes())
            .await?;
        c.smtp_reply("334").await?;
        c.send(format!("{}\r\n", B64.encode(LOCAL_PASS)).as_bytes())
            .await?;
        c.smtp_reply("235").await?;
    }
    client::smtp_send(&mut c, from, RCPT, body).await?;
    let took = start.elapsed();
    let _ = c.send(b"QUIT\r\n").await;
    c.close().await;
    Ok(took)
}

fn accepted(counters: &serde_json::Value) -> u64 {
    counters["connector"]["connector_accepted"]
        .as_u64()
        .unwrap_or(0)
}

pub async fn relay_mode(ctx: &mut Ctx) -> io::Result<()> {
    let Some(ab_relay) = ctx.ab.relay else {
        return Err(err(
            "relay-mode: authbridge has no relay listener (not measured with --upstream-rtt-ms)",
        ));
    };
    let connector = ctx.sb.addr("connector")?;
    let mut ways: Vec<(System, Way)> = Vec::new();
    for s in ctx.systems() {
        let way = match s {
            System::Direct => Way {
                addr: connector,
                tls: Some(ctx.sb.tls.clone()),
                login: false,
            },
            System::Relay => match &ctx.relay {
                Some(r) => Way {
                    addr: r.connector,
                    tls: Some(ctx.sb.tls.clone()),
                    login: false,
                },
                None => continue,
            },
            System::Authbridge => Way {
                addr: ab_relay,
                tls: None,
                login: true,
            },
            // email-oauth2-proxy has no relay mode.
            System::EmailProxy => continue,
        };
        ways.push((s, way));
    }
    let body = client::message(
        ctx.opts.submit_bytes,
        &ctx.mailbox,
        RCPT,
        "bench-relay-mode",
    );
    let before = accepted(&ctx.sb.counters().await?);
    let mut run = RelayModeRun {
        message_bytes: body.len(),
        ..Default::default()
    };
    // Warm up: verified-credential cache, TLS session caches.
    for (s, w) in &ways {
        for _ in 0..5 {
            submit(w, &ctx.mailbox, &body)
                .await
                .map_err(|e| err(format!("{} relay-mode warm-up: {e}", s.name())))?;
            run.client_accepted += 1;
        }
    }
    let rounds = ctx.opts.rounds;
    let systems: Vec<System> = ways.iter().map(|(s, _)| *s).collect();
    for r in 0..rounds {
        for s in crate::phases::order(&systems, r) {
            let w = &ways.iter().find(|(x, _)| *x == s).expect("way").1;
            let total = ctx.opts.submissions;
            let n = total / rounds + usize::from(r < total % rounds);
            let e = run.series.entry(s).or_default();
            let mut round = Vec::with_capacity(n);
            for _ in 0..n {
                match submit(w, &ctx.mailbox, &body).await {
                    Ok(d) => {
                        round.push(d.as_secs_f64() * 1e3);
                        run.client_accepted += 1;
                    }
                    Err(x) => {
                        e.errors += 1;
                        e.first_error.get_or_insert_with(|| x.to_string());
                    }
                }
            }
            let p50 = report::percentile(&round, 50.0);
            crate::phases::log(format!(
                "relay-mode round {}/{rounds} {}: {} ok, p50 {p50:.2} ms",
                r + 1,
                s.name(),
                round.len()
            ));
            e.round_p50_ms.push(p50);
            e.samples_ms.extend(round);
        }
    }
    run.connector_accepted = accepted(&ctx.sb.counters().await?) - before;
    if run.connector_accepted != run.client_accepted {
        ctx.res.notes.push(format!(
            "relay mode: the connector accepted {} messages, the clients saw {} accepted",
            run.connector_accepted, run.client_accepted
        ));
    }
    ctx.res.relay_mode = Some(run);
    Ok(())
}
