//! The targets table (issues 19 and 17): every target judged from the figures the runs wrote
//! (`WORK/figures.json` of the main run on loopback and of the 20 ms round-trip run), met or
//! missed, with the figures that explain a miss; then the Graph backend's figures, for which the
//! issue sets no target, in an informational table. `authbridge-bench targets --results FILE
//! --command TEXT FIGURES.json...` rewrites the `targets` block of the results file.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use crate::client::err;

/// The figures of one run.
pub struct Run {
    pub rtt_ms: u64,
    pub json: Value,
}

impl Run {
    fn get(&self, key: &str) -> Option<f64> {
        self.json["figures"][key].as_f64()
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Check {
    pub target: String,
    pub result: String,
    /// `None`: not measured in these runs.
    pub met: Option<bool>,
    /// The figures around the result (what the other systems got), which say why it is missed.
    pub context: String,
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn not_measured(target: String, which: &str) -> Check {
    Check {
        target,
        result: format!("not measured ({which})"),
        met: None,
        context: String::new(),
    }
}

/// Judge every target from the loopback run `lo` and the round-trip run `wan`.
pub fn checks(lo: Option<&Run>, wan: Option<&Run>) -> Vec<Check> {
    let mut v = Vec::new();
    let lo_missing = "no loopback run";
    // Warm logins with a 20 ms round trip: ≤ 1.02× direct p50.
    for (proto, name) in [("smtp", "SMTP"), ("imap", "IMAP")] {
        let target = format!("warm {name} login, 20 ms round trip: p50 ≤ 1.02× direct");
        let figs = wan.and_then(|w| {
            Some((
                w.get(&format!("login.{proto}.authbridge.p50"))?,
                w.get(&format!("login.{proto}.direct.p50"))?,
                w.rtt_ms,
            ))
        });
        v.push(match figs {
            None => not_measured(target, "no round-trip run"),
            Some((a, d, rtt)) => Check {
                target,
                result: format!("**{:.2}×** ({} vs {})", a / d, ms(a), ms(d)),
                met: Some(a <= 1.02 * d),
                context: format!(
                    "authbridge {:+.1} ms over direct = {:.2} round trips of {rtt} ms",
                    a - d,
                    (a - d) / rtt.max(1) as f64
                ),
            },
        });
    }
    // Warm logins on loopback: ≤ 1.0× the byte relay.
    for (proto, name) in [("smtp", "SMTP"), ("imap", "IMAP")] {
        let target = format!("warm {name} login, loopback: p50 ≤ 1.0× byte relay");
        let figs = lo.and_then(|r| {
            Some((
                r.get(&format!("login.{proto}.authbridge.p50"))?,
                r.get(&format!("login.{proto}.relay.p50"))?,
                r.get(&format!("login.{proto}.direct.p50"))?,
            ))
        });
        v.push(match figs {
            None => not_measured(target, lo_missing),
            Some((a, r, d)) => Check {
                target,
                result: format!("**{:.2}×** ({} vs {})", a / r, ms(a), ms(r)),
                met: Some(a <= r),
                context: format!(
                    "direct {}; the byte relay alone costs {:.2}× direct, authbridge {:.2}×",
                    ms(d),
                    r / d,
                    a / d
                ),
            },
        });
    }
    // Throughput and CPU.
    for (key, name, default_mb) in [("fetch", "IMAP FETCH", 100), ("data", "SMTP DATA", 50)] {
        let mb = lo
            .and_then(|r| r.json[format!("{key}_mb")].as_u64())
            .unwrap_or(default_mb);
        let name = format!("{name} {mb} MB");
        let g =
            |sys: &str, what: &str| lo.and_then(|r| r.get(&format!("transfer.{key}.{sys}.{what}")));
        let (a, r, d) = (
            g("authbridge", "mbps"),
            g("relay", "mbps"),
            g("direct", "mbps"),
        );
        let (ac, rc) = (g("authbridge", "cpu_s_per_gb"), g("relay", "cpu_s_per_gb"));
        let target = format!("{name}: throughput ≥ 1.0× byte relay");
        v.push(match (a, r, d) {
            (Some(a), Some(r), Some(d)) => Check {
                target,
                result: format!("**{:.2}×** ({a:.0} vs {r:.0} MB/s)", a / r),
                met: Some(a >= r),
                context: format!(
                    "median of rounds; direct {d:.0} MB/s, the relay reaches {:.2}× direct",
                    r / d
                ),
            },
            _ => not_measured(target, lo_missing),
        });
        let target = format!("{name}: throughput ≥ 0.9× direct");
        v.push(match (a, r, d) {
            (Some(a), Some(r), Some(d)) => Check {
                target,
                result: format!("**{:.2}×** ({a:.0} vs {d:.0} MB/s)", a / d),
                met: Some(a >= 0.9 * d),
                context: format!(
                    "the byte relay reaches {:.2}× direct ({r:.0} MB/s) on the same 2 cores",
                    r / d
                ),
            },
            _ => not_measured(target, lo_missing),
        });
        let target = format!("{name}: ≤ 1.5 CPU-s/GB in the proxy");
        v.push(match ac {
            Some(c) => Check {
                target,
                result: format!("**{c:.2}** CPU-s/GB"),
                met: Some(c <= 1.5),
                context: rc
                    .map(|rc| format!("byte relay {rc:.2} CPU-s/GB"))
                    .unwrap_or_default(),
            },
            None => not_measured(target, lo_missing),
        });
    }
    // Idle sessions at 10,000.
    let target =
        "idle logged-in IMAP sessions at 10,000: ≤ 42 KiB RSS each, all usable".to_string();
    let idle = lo.and_then(|r| {
        Some((
            r.get("idle.10000.authbridge.kib_per_session")?,
            r.get("idle.10000.authbridge.tried")?,
            r.get("idle.10000.authbridge.opened")?,
            r.get("idle.10000.authbridge.noop_ok")?,
        ))
    });
    v.push(match idle {
        None => not_measured(target, "no idle run at N = 10,000"),
        Some((kib, tried, opened, ok)) => Check {
            target,
            result: format!("**{kib:.1} KiB** at {opened:.0} sessions, {ok:.0} answered NOOP"),
            met: Some(kib <= 42.0 && opened == tried && ok == opened),
            context: if tried < 10_000.0 {
                format!(
                    "N capped at {tried:.0} by the open-file limit (two descriptors per session)"
                )
            } else {
                String::new()
            },
        },
    });
    // Cold burst.
    let burst = lo.and_then(|r| {
        Some((
            r.get("burst.authbridge.max_token_requests")?,
            r.get("burst.authbridge.failed")?,
            r.get("burst.authbridge.p99")?,
            r.json["burst_tokens_authbridge"].clone(),
            r.json["burst"].as_u64().unwrap_or(0),
        ))
    });
    let target = "cold burst of 1,000 logins: 1 token request".to_string();
    v.push(match &burst {
        None => not_measured(target, "no cold-burst run"),
        Some((max, failed, _, per, n)) => Check {
            target: target.replace("1,000", &thousands(*n)),
            result: format!("**{}** per round, {failed:.0} logins failed", list(per)),
            met: Some(*max == 1.0 && *failed == 0.0),
            context: String::new(),
        },
    });
    let target = "cold burst of 1,000 logins: p99 ≤ 1.2× direct's p99".to_string();
    let direct_p99 = lo.and_then(|r| r.get("burst.direct.p99"));
    v.push(match (&burst, direct_p99) {
        (Some((_, _, p99, _, n)), Some(d)) => Check {
            target: target.replace("1,000", &thousands(*n)),
            result: format!("**{:.2}×** ({} vs {})", p99 / d, ms(*p99), ms(d)),
            met: Some(*p99 <= 1.2 * d),
            context: "median of the rounds' p99; direct: the load generator logs in with one token it fetched".into(),
        },
        _ => not_measured(target, "no cold-burst run"),
    });
    // Storm.
    let target = "2,000 parallel wrong-password logins: RSS bounded (≤ 256 MiB peak), GLPI served"
        .to_string();
    let storm = lo.and_then(|r| {
        Some((
            r.get("storm.peak_mib")?,
            r.get("storm.before_mib")?,
            r.get("storm.settled_mib")?,
            r.get("storm.glpi_all_235")?,
            r.get("storm.glpi_slowest_ms")?,
            r.get("storm.logins")?,
        ))
    });
    v.push(match storm {
        None => not_measured(target, "no storm run"),
        Some((peak, before, settled, glpi, slowest, n)) => Check {
            target: target.replace("2,000", &thousands(n as u64)),
            result: format!("peak **{peak:.1} MiB**"),
            met: Some(peak <= 256.0 && glpi == 1.0 && slowest < 1000.0),
            context: format!(
                "{before:.1} MiB before, {settled:.1} MiB after; GLPI's correct logins {} (slowest {slowest:.0} ms)",
                if glpi == 1.0 { "all 235" } else { "NOT all 235" }
            ),
        },
    });
    // Replicas.
    let target = "3 replicas, Redis store, cold burst of 1,000 logins: 1 token request".to_string();
    let rep = lo.and_then(|r| {
        Some((
            r.get("replicas.max_token_requests")?,
            r.get("replicas.failed")?,
            r.get("replicas.count")?,
            r.json["replica_tokens"].clone(),
            r.json["burst"].as_u64().unwrap_or(0),
        ))
    });
    v.push(match rep {
        None => not_measured(target, "no replicas run"),
        Some((max, failed, count, per, n)) => Check {
            target: target
                .replace("1,000", &thousands(n))
                .replace("3 replicas", &format!("{count:.0} replicas")),
            result: format!("**{}** per round, {failed:.0} logins failed", list(&per)),
            met: Some(max == 1.0 && failed == 0.0),
            context: String::new(),
        },
    });
    for (proto, name) in [("smtp", "SMTP"), ("imap", "IMAP")] {
        let target = format!(
            "warm {name} login, Redis store vs file store: no difference (p50 ≤ 1.05× file's)"
        );
        let figs = lo.and_then(|r| {
            Some((
                r.get(&format!("replicas.warm.{proto}.redis.p50"))?,
                r.get(&format!("replicas.warm.{proto}.file.p50"))?,
                r.get(&format!("replicas.warm.{proto}.redis.p99"))?,
                r.get(&format!("replicas.warm.{proto}.file.p99"))?,
            ))
        });
        v.push(match figs {
            None => not_measured(target, "no replicas run"),
            Some((r50, f50, r99, f99)) => Check {
                target,
                result: format!("**{:.2}×** ({} vs {})", r50 / f50, ms(r50), ms(f50)),
                met: Some(r50 <= 1.05 * f50),
                context: format!("p99 {} vs {}", ms(r99), ms(f99)),
            },
        });
    }
    v
}

/// Figures issue 19 sets no target for (the Graph backend): the same shape as a target row, in
/// a table of their own, never judged.
pub fn informational(lo: Option<&Run>) -> Vec<Check> {
    let mut v = Vec::new();
    let Some(lo) = lo else {
        return v;
    };
    let g = |k: &str| lo.get(k);
    let small = g("graph.small_bytes").unwrap_or(f64::NAN);
    let mut cs: Vec<u64> = lo.json["figures"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("graph.small.c")?.strip_suffix(".graph.p50"))
                .filter_map(|c| c.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    cs.sort_unstable();
    for c in cs {
        let p = |w: &str, q: &str| g(&format!("graph.small.c{c}.{w}.{q}"));
        if let (Some(g50), Some(s50), Some(d50), Some(g99), Some(s99)) = (
            p("graph", "p50"),
            p("smtp", "p50"),
            p("direct", "p50"),
            p("graph", "p99"),
            p("smtp", "p99"),
        ) {
            v.push(Check {
                target: format!(
                    "Graph backend: warm {small:.0} B message, concurrency {c}, p50 vs authbridge's SMTP AUTH path"
                ),
                result: format!("**{:.2}×** ({} vs {})", g50 / s50, ms(g50), ms(s50)),
                met: None,
                context: format!(
                    "p99 {} vs {}; direct SMTP AUTH p50 {}",
                    ms(g99),
                    ms(s99),
                    ms(d50)
                ),
            });
        }
    }
    let mb = g("graph.large_bytes").unwrap_or(f64::NAN) / 1e6;
    if let (Some(a), Some(s), Some(d)) = (
        g("graph.large.graph.mbps"),
        g("graph.large.smtp.mbps"),
        g("graph.large.direct.mbps"),
    ) {
        v.push(Check {
            target: format!(
                "Graph backend: {mb:.1} MB messages, throughput vs authbridge's SMTP AUTH path"
            ),
            result: format!("**{:.2}×** ({a:.1} vs {s:.1} MB/s)", a / s),
            met: None,
            context: format!("direct SMTP AUTH {d:.1} MB/s"),
        });
    }
    if let (Some(a), Some(s)) = (
        g("graph.large.graph.cpu_s_per_gb"),
        g("graph.large.smtp.cpu_s_per_gb"),
    ) {
        v.push(Check {
            target: format!("Graph backend: {mb:.1} MB messages, CPU-s/GB in the proxy"),
            result: format!("**{a:.2}** CPU-s/GB"),
            met: None,
            context: format!("SMTP AUTH path {s:.2} CPU-s/GB"),
        });
    }
    if let (Some(a), Some(s), Some(n)) = (
        g("graph.large.graph.peak_mib"),
        g("graph.large.smtp.peak_mib"),
        g("graph.parallel"),
    ) {
        v.push(Check {
            target: format!("Graph backend: peak RSS with {n:.0} × {mb:.1} MB messages at once"),
            result: format!("**{a:.1} MiB**"),
            met: None,
            context: format!("SMTP AUTH path {s:.1} MiB"),
        });
    }
    v
}

fn thousands(n: u64) -> String {
    if n >= 1000 {
        format!("{},{:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "–".into())
}

/// The Markdown block.
pub fn render(runs: &[Run], command: &str) -> String {
    let lo = runs.iter().find(|r| r.rtt_ms == 0);
    let wan = runs.iter().find(|r| r.rtt_ms > 0);
    let mut out = String::new();
    let _ = writeln!(out, "## Targets\n");
    let desc: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} (block `{}`, {}, git {})",
                if r.rtt_ms == 0 {
                    "loopback run".to_string()
                } else {
                    format!("{} ms round-trip run", r.rtt_ms)
                },
                r.json["block"].as_str().unwrap_or("?"),
                r.json["started"].as_str().unwrap_or("?"),
                r.json["git"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Judged by `authbridge-bench targets` from the figures of the {} below (command: `{command}`). Ratios are authbridge's figure over the other one's, measured side by side in the same run. The last column gives the figures around the result: for a missed target, where the cost is.\n",
        desc.join(" and ")
    );
    let _ = writeln!(out, "| target | result | met | figures around it |");
    let _ = writeln!(out, "|---|---|---|---|");
    for c in checks(lo, wan) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            c.target,
            c.result,
            match c.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            },
            c.context
        );
    }
    let info = informational(lo);
    if !info.is_empty() {
        let _ = writeln!(
            out,
            "\nInformational, no target set (issue 19 asks only that the Graph backend be measured):\n"
        );
        let _ = writeln!(out, "| measure | result | figures around it |");
        let _ = writeln!(out, "|---|---|---|");
        for c in info {
            let _ = writeln!(out, "| {} | {} | {} |", c.target, c.result, c.context);
        }
    }
    out
}

/// `authbridge-bench targets --results FILE [--command TEXT] FIGURES.json...`
pub fn main(args: Vec<String>) -> ExitCode {
    let mut results = None;
    let mut command = String::from("bench/run.sh");
    let mut files = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--results" => results = it.next(),
            "--command" => command = it.next().unwrap_or_default(),
            _ => files.push(a),
        }
    }
    let run = || -> std::io::Result<()> {
        let results = results.ok_or_else(|| err("--results FILE is required"))?;
        let mut runs = Vec::new();
        for f in &files {
            let text =
                std::fs::read_to_string(f).map_err(|e| err(format!("cannot read {f}: {e}")))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| err(format!("{f}: {e}")))?;
            runs.push(Run {
                rtt_ms: json["rtt_ms"].as_u64().unwrap_or(0),
                json,
            });
        }
        let text = render(&runs, &command);
        print!("{text}");
        crate::report::write(std::path::Path::new(&results), "targets", &text)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authbridge-bench targets: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rtt: u64, figures: Value) -> Run {
        Run {
            rtt_ms: rtt,
            json: json!({"block": "x", "burst": 1000, "burst_tokens_authbridge": [1, 1, 2],
                         "replica_tokens": [1], "figures": figures}),
        }
    }

    fn find<'a>(c: &'a [Check], prefix: &str) -> &'a Check {
        c.iter()
            .find(|c| c.target.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
    }

    #[test]
    fn judges_from_the_figures() {
        let lo = run(
            0,
            json!({
                "login.imap.authbridge.p50": 0.9, "login.imap.relay.p50": 1.0, "login.imap.direct.p50": 0.6,
                "login.smtp.authbridge.p50": 1.2, "login.smtp.relay.p50": 1.1, "login.smtp.direct.p50": 0.7,
                "transfer.fetch.authbridge.mbps": 700.0, "transfer.fetch.relay.mbps": 690.0,
                "transfer.fetch.direct.mbps": 800.0, "transfer.fetch.authbridge.cpu_s_per_gb": 1.6,
                "burst.authbridge.max_token_requests": 2.0, "burst.authbridge.failed": 0.0,
                "burst.authbridge.p99": 500.0, "burst.direct.p99": 400.0,
                "replicas.max_token_requests": 1.0, "replicas.failed": 0.0, "replicas.count": 3.0,
            }),
        );
        let wan = run(
            20,
            json!({"login.imap.authbridge.p50": 111.0, "login.imap.direct.p50": 88.0}),
        );
        let c = checks(Some(&lo), Some(&wan));
        let imap_wan = find(&c, "warm IMAP login, 20 ms");
        assert_eq!(imap_wan.met, Some(false));
        assert!(
            imap_wan.context.contains("1.15 round trips"),
            "{imap_wan:?}"
        );
        assert_eq!(find(&c, "warm SMTP login, 20 ms").met, None);
        assert_eq!(find(&c, "warm IMAP login, loopback").met, Some(true));
        assert_eq!(find(&c, "warm SMTP login, loopback").met, Some(false));
        assert_eq!(
            find(&c, "IMAP FETCH 100 MB: throughput ≥ 1.0×").met,
            Some(true)
        );
        assert_eq!(
            find(&c, "IMAP FETCH 100 MB: throughput ≥ 0.9×").met,
            Some(false)
        );
        assert_eq!(find(&c, "IMAP FETCH 100 MB: ≤ 1.5").met, Some(false));
        assert_eq!(find(&c, "SMTP DATA 50 MB: throughput").met, None);
        let b = find(&c, "cold burst of 1,000 logins: 1 token");
        assert_eq!(b.met, Some(false));
        assert!(b.result.contains("1, 1, 2"), "{b:?}");
        assert_eq!(find(&c, "cold burst of 1,000 logins: p99").met, Some(false));
        assert_eq!(find(&c, "3 replicas").met, Some(true));
        assert_eq!(find(&c, "idle").met, None);
        let text = render(&[lo, wan], "bench/run.sh");
        assert!(text.contains("| **no** |") && text.contains("| yes |"));
        assert!(
            !text.contains("Informational"),
            "no Graph figures, no table"
        );
    }

    #[test]
    fn graph_figures_are_informational() {
        let lo = run(
            0,
            json!({
                "graph.small_bytes": 2018.0, "graph.large_bytes": 2999948.0, "graph.parallel": 8.0,
                "graph.small.c1.graph.p50": 3.0, "graph.small.c1.smtp.p50": 2.0,
                "graph.small.c1.direct.p50": 1.0, "graph.small.c1.graph.p99": 6.0,
                "graph.small.c1.smtp.p99": 4.0,
                "graph.small.c16.graph.p50": 9.0, "graph.small.c16.smtp.p50": 10.0,
                "graph.small.c16.direct.p50": 5.0, "graph.small.c16.graph.p99": 20.0,
                "graph.small.c16.smtp.p99": 30.0,
                "graph.large.graph.mbps": 50.0, "graph.large.smtp.mbps": 200.0,
                "graph.large.direct.mbps": 250.0,
                "graph.large.graph.cpu_s_per_gb": 4.0, "graph.large.smtp.cpu_s_per_gb": 0.8,
                "graph.large.graph.peak_mib": 80.0, "graph.large.smtp.peak_mib": 20.0,
            }),
        );
        let info = informational(Some(&lo));
        assert_eq!(info.len(), 5, "{info:?}");
        assert!(info.iter().all(|c| c.met.is_none()));
        assert!(info[0].target.contains("concurrency 1,"), "{:?}", info[0]);
        assert!(info[0].result.starts_with("**1.50×**"), "{:?}", info[0]);
        assert!(info[1].target.contains("concurrency 16,"), "{:?}", info[1]);
        assert!(info[2].result.starts_with("**0.25×**"), "{:?}", info[2]);
        assert!(info[4].target.contains("8 × 3.0 MB"), "{:?}", info[4]);
        let text = render(&[lo], "bench/run.sh");
        assert!(text.contains("Informational, no target set"), "{text}");
        // Not judged: the targets table has no row for the Graph backend.
        assert!(
            !checks(None, None)
                .iter()
                .any(|c| c.target.contains("Graph"))
        );
    }
}
