//! The targets as checks, the Markdown table on stdout and the JSON in bench-results/.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::scenarios::{Check, ScenarioResult};
use crate::{Opts, Res};

fn check(target: &str, measured: f64, limit: String, unit: &'static str, pass: bool) -> Check {
    Check {
        target: target.into(),
        measured,
        limit,
        unit,
        pass: pass && measured.is_finite(),
    }
}

/// Sum of numeric fields whose key mentions "drop" in llmtap's /healthz export document.
fn dropped(v: &Value) -> Option<u64> {
    match v {
        Value::Object(m) => {
            let mut found = None;
            for (k, x) in m {
                let here = if k.to_ascii_lowercase().contains("drop") {
                    x.as_u64()
                } else {
                    None
                };
                let below = dropped(x);
                for n in [here, below].into_iter().flatten() {
                    found = Some(found.unwrap_or(0) + n);
                }
            }
            found
        }
        _ => None,
    }
}

/// The soak's targets: no record lost (with a spool), none twice, RSS flat, no call failed while
/// the receiver was down, and the spool empty again at the end.
fn soak_checks(r: &mut ScenarioResult, o: &Opts) {
    let (Some(s), Some(l)) = (r.soak.as_deref(), r.llmtap.as_ref()) else {
        return;
    };
    let x = &s.records;
    let c = &mut r.checks;
    if s.spool_dir.is_some() {
        c.push(check(
            "soak: LLM-call records lost (expected − received, with a spool)",
            x.lost as f64,
            "= 0".into(),
            "",
            x.lost == 0 && x.expected > 0,
        ));
    }
    c.push(check(
        "soak: LLM-call records received more than once",
        x.duplicated as f64,
        "= 0".into(),
        "",
        x.duplicated == 0,
    ));
    let limit = crate::soak::rss_limit(s.rss.steady_first_mean_mib);
    c.push(check(
        &format!(
            "soak: RSS flat (last {0:.0} s mean ≤ 1.2 × mean of the {0:.0} s after {1:.0} s warm-up + 8 MiB)",
            s.rss.window_s, s.rss.warmup_s
        ),
        s.rss.last_mean_mib,
        format!("≤ {limit:.1}"),
        "MiB",
        s.rss.last_mean_mib <= limit,
    ));
    c.push(check(
        "soak: client calls failed (the receiver's outages must not reach clients)",
        l.errors as f64,
        "= 0".into(),
        "",
        l.errors == 0,
    ));
    let left = s
        .export_end
        .get("spool_pending")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + s.export_end
            .get("queue_len")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    c.push(check(
        &format!(
            "soak: records still queued or spooled {:.0} s after the receiver is back for good",
            o.soak_drain.as_secs_f64()
        ),
        left as f64,
        "= 0".into(),
        "",
        left == 0 && s.drained,
    ));
}

pub fn add_checks(r: &mut ScenarioResult, o: &Opts) {
    if r.soak.is_some() {
        soak_checks(r, o);
        return;
    }
    let (Some(d), Some(l), Some(p)) = (r.direct.clone(), r.llmtap.clone(), r.proc.clone()) else {
        return;
    };
    let ratio = if d.rps > 0.0 { l.rps / d.rps } else { 0.0 };
    let errors_ok = l.errors == 0;
    let c = &mut r.checks;
    match r.name.as_str() {
        "json_c1" => {
            let added = l.latency_ms.p50 - d.latency_ms.p50;
            c.push(check(
                "1 client: p50 latency added",
                added,
                "≤ 0.15".into(),
                "ms",
                added <= 0.15,
            ));
        }
        "json_c32" => {
            c.push(check(
                "32 clients: throughput vs direct",
                ratio * 100.0,
                "≥ 40".into(),
                "%",
                ratio >= 0.40 && errors_ok,
            ));
            c.push(check(
                "32 clients: llmtap CPU per request",
                p.cpu_s_per_1k,
                "≤ 0.15".into(),
                "ms",
                p.cpu_s_per_1k <= 0.15,
            ));
        }
        "newconn_c8" => {
            c.push(check(
                "new connection per request: throughput vs direct",
                ratio * 100.0,
                "≥ 30".into(),
                "%",
                ratio >= 0.30 && errors_ok,
            ));
        }
        "sse_c8" => {
            let added = l.ttfb_ms.p99 - d.ttfb_ms.p99;
            c.push(check(
                "SSE: time to first event p99 added",
                added,
                "≤ 2".into(),
                "ms",
                added <= 2.0 && errors_ok,
            ));
            let total = (l.latency_ms.p50 / d.latency_ms.p50 - 1.0) * 100.0;
            c.push(check(
                "SSE: total time p50 change (unchanged = within 2 %)",
                total,
                "≤ 2".into(),
                "%",
                total <= 2.0,
            ));
        }
        "big_5mb" => {
            let added = l.latency_ms.p50 - d.latency_ms.p50;
            c.push(check(
                "5 MB: p50 latency added",
                added,
                "≤ 15".into(),
                "ms",
                added <= 15.0 && errors_ok,
            ));
            let growth = p.peak_rss_mib - p.rss_before_mib;
            let cap = o.max_body_size as f64 / 1048576.0;
            let limit = cap + 1.0;
            c.push(check(
                "5 MB: RSS growth (capture cap + 1 MiB I/O buffers)",
                growth,
                format!("≤ {limit:.1}"),
                "MiB",
                growth <= limit,
            ));
        }
        "tunnel_c32" => {
            c.push(check(
                "tunnel, 32 clients: throughput vs direct",
                ratio * 100.0,
                "≥ 60".into(),
                "%",
                ratio >= 0.60 && errors_ok,
            ));
        }
        "streams_1000" => {
            c.push(check(
                "1,000 open SSE streams: RSS",
                p.peak_rss_mib,
                "≤ 150".into(),
                "MiB",
                p.peak_rss_mib <= 150.0 && l.ok == o.streams as u64,
            ));
        }
        "otlp_5k" => {
            let sustained = l.rps / o.otlp_rate * 100.0;
            c.push(check(
                &format!("OTLP: {} calls/s sustained", o.otlp_rate),
                sustained,
                "≥ 99".into(),
                "% of rate",
                sustained >= 99.0 && errors_ok,
            ));
            let exported = if p.calls > 0 {
                p.otlp.records as f64 / p.calls as f64 * 100.0
            } else {
                0.0
            };
            c.push(check(
                "OTLP: calls exported (records received / calls sent)",
                exported,
                "= 100".into(),
                "%",
                p.otlp.records >= p.calls && p.calls > 0,
            ));
            let drops = dropped(&p.export);
            c.push(check(
                "OTLP: records dropped (llmtap /healthz)",
                drops.map_or(f64::NAN, |d| d as f64),
                "= 0".into(),
                "",
                drops == Some(0),
            ));
        }
        _ => {}
    }
    if r.name == "json_c1" {
        c.push(check(
            "idle RSS after start",
            p.idle_rss_mib,
            "≤ 20".into(),
            "MiB",
            p.idle_rss_mib <= 20.0,
        ));
    }
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

fn with_ratio(l: f64, d: f64, digits: usize) -> String {
    if d > 0.0 && l.is_finite() {
        format!("{} (×{:.2})", f(l, digits), l / d)
    } else {
        f(l, digits)
    }
}

pub fn markdown(results: &[ScenarioResult], env: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} cores ({}), {} GiB, Linux {}; export: {}; {} s measured + {} s warmup per run; OTLP run {} s.\n",
        env["cores"],
        env["cpu"].as_str().unwrap_or(""),
        env["mem_gib"],
        env["kernel"].as_str().unwrap_or(""),
        env["export"].as_str().unwrap_or(""),
        env["duration_s"],
        env["warmup_s"],
        env["otlp_duration_s"]
    );
    s.push_str("| scenario | req/s direct | req/s llmtap (×direct) | p50 ms direct | p50 ms llmtap | p99 ms direct | p99 ms llmtap | TTFB p99 ms direct | TTFB p99 ms llmtap | llmtap CPU s/1k req | llmtap RSS idle / peak MiB | errors d / l | records / calls | other load d / l (cores) |\n");
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let no_direct = crate::load::Outcome::default();
    for r in results {
        let d = match (&r.direct, &r.soak) {
            (Some(d), _) => d,
            (None, Some(_)) => &no_direct,
            (None, None) => {
                let _ = writeln!(s, "| {} | {} |||||||||||", r.name, r.notes.join("; "));
                continue;
            }
        };
        let (Some(l), Some(p)) = (&r.llmtap, &r.proc) else {
            let _ = writeln!(s, "| {} | {} |||||||||||", r.name, r.notes.join("; "));
            continue;
        };
        let records = if let Some(k) = &r.soak {
            format!("{} / {}", k.records.received_unique, k.records.expected)
        } else if r.llm_calls {
            format!("{} / {}", p.otlp.records, p.calls)
        } else {
            format!("{} / 0", p.otlp.records)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {:.2} / {:.2} |",
            r.name,
            f(d.rps, 0),
            with_ratio(l.rps, d.rps, 0),
            f(d.latency_ms.p50, 3),
            with_ratio(l.latency_ms.p50, d.latency_ms.p50, 3),
            f(d.latency_ms.p99, 3),
            with_ratio(l.latency_ms.p99, d.latency_ms.p99, 3),
            f(d.ttfb_ms.p99, 3),
            with_ratio(l.ttfb_ms.p99, d.ttfb_ms.p99, 3),
            f(p.cpu_s_per_1k, 3),
            f(p.idle_rss_mib, 1),
            f(p.peak_rss_mib, 1),
            d.errors,
            l.errors,
            records,
            d.other_cores,
            l.other_cores
        );
    }
    s.push_str("\n| target | measured | limit | result |\n|---|--:|--:|---|\n");
    for r in results {
        for c in &r.checks {
            let _ = writeln!(
                s,
                "| {} | {} {} | {} {} | {} |",
                c.target,
                f(c.measured, 3),
                c.unit,
                c.limit,
                c.unit,
                if c.pass { "PASS" } else { "**FAIL**" }
            );
        }
    }
    for r in results {
        if let Some(k) = &r.soak {
            soak_markdown(&mut s, k);
        }
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("- {}: {n}", r.name)))
        .collect();
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}

fn soak_markdown(s: &mut String, k: &crate::soak::SoakReport) {
    let _ = writeln!(
        s,
        "\n**soak**: {:.0} s, {} calls/s ({}), receiver down/up every {:.0} s ({}), spool {}; added latency vs {}; schedule lag max {:.1} ms.\n",
        k.duration_s,
        k.rate,
        k.mix,
        k.flap_s,
        k.down,
        k.spool_dir.as_deref().unwrap_or("off"),
        k.baseline,
        k.max_lag_ms
    );
    s.push_str("| kind | calls | errors | p50 ms direct | p50 ms llmtap | p99 ms direct | p99 ms llmtap | p99 added ms | first-event p99 added ms | p99 first / last window ms | connects |\n");
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for x in &k.kinds {
        let (dp50, dp99) = x
            .direct_ms
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |d| (d.p50, d.p99));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            x.kind,
            x.calls,
            x.errors,
            f(dp50, 3),
            f(x.llmtap_ms.p50, 3),
            f(dp99, 3),
            f(x.llmtap_ms.p99, 3),
            f(x.p99_added_ms, 3),
            f(x.ttfb_p99_added_ms, 3),
            f(x.llmtap_first_window_ms.p99, 3),
            f(x.llmtap_last_window_ms.p99, 3),
            x.connects
        );
    }
    let r = &k.records;
    let _ = writeln!(
        s,
        "\nRecords: {} expected, {} received, **{} lost**, **{} duplicated**; {} calls unanswered, {} ids unexpected; egress records {} for {} connections; receiver answered 503 {} times. Drained {} after {:.1} s.",
        r.expected,
        r.received_unique,
        r.lost,
        r.duplicated,
        r.unanswered,
        r.unexpected,
        r.egress_received,
        r.connects,
        k.receiver_503,
        if k.drained { "yes" } else { "**no**" },
        k.drain_s
    );
    let e = &k.export_end;
    let g = |key: &str| e.get(key).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        s,
        "\nExport (`/healthz`): submitted {}, exported {}, spooled {}, spool pending {} ({} bytes), retries {}, dropped: queue full {}, export failed {}, shutdown {}, spool full {}, spool damaged {}.",
        g("submitted"),
        g("exported"),
        g("spooled"),
        g("spool_pending"),
        g("spool_bytes"),
        g("export_retries"),
        g("dropped_queue_full"),
        g("dropped_export_failed"),
        g("dropped_shutdown"),
        g("dropped_spool_full"),
        g("dropped_spool_damaged")
    );
    let means: Vec<String> = k.rss.window_means_mib.iter().map(|m| f(*m, 1)).collect();
    let _ = writeln!(
        s,
        "\nRSS: first {w:.0} s mean {} MiB ({w:.0} s after {:.0} s warm-up: {} MiB), last {w:.0} s mean {} MiB, max {} MiB (VmHWM {}); per {w:.0} s: {}.",
        f(k.rss.first_mean_mib, 1),
        k.rss.warmup_s,
        f(k.rss.steady_first_mean_mib, 1),
        f(k.rss.last_mean_mib, 1),
        f(k.rss.max_mib, 1),
        f(k.rss.hwm_mib, 1),
        means.join(", "),
        w = k.rss.window_s
    );
}

pub fn write(results: &[ScenarioResult], env: &Value, out: &Path, stamp: u64) -> Res<()> {
    let md = markdown(results, env);
    println!("{md}");
    let json = serde_json::json!({"environment": env, "scenarios": results});
    let text = serde_json::to_string_pretty(&json)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(format!("bench-{stamp}.json")), &text)?;
    std::fs::write(out.join("latest.json"), &text)?;
    std::fs::write(out.join("latest.md"), &md)?;
    eprintln!(
        "bench: wrote {}/bench-{stamp}.json, latest.json, latest.md",
        out.display()
    );
    Ok(())
}
