//! The spool (`--spool-dir`): records the OTLP endpoint does not take wait on disk and arrive,
//! each exactly once and in order, when it is back, also across restarts and a SIGKILL; damaged
//! spool files are read up to the damage; the byte bound drops the oldest and counts them.
//!
//! Every endpoint is a real OTLP/HTTP receiver on loopback that the test takes down (connection
//! refused), makes answer 503/429, and brings back on the same port. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/exchange.rs"]
mod kit;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use llmtap::capture::Exchange;
use llmtap::export::attributes as key;
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle, ExportStats, SpoolSettings};
use llmtap::redact::{RedactionConfig, Redactor};
use otlp_receiver::{OtlpReceiver, Received, Reply, Val};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The export pipeline used directly
// ---------------------------------------------------------------------------------------------

fn config(endpoint: &str, spool: &Path, max_bytes: u64) -> ExportConfig {
    let vars: HashMap<&str, String> = [("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", endpoint.to_owned())]
        .into_iter()
        .collect();
    let mut config =
        ExportConfig::from_env_and_flags(&|name| vars.get(name).cloned(), &ExportFlags::default())
            .unwrap();
    // Fast timings so an outage plays out in milliseconds.
    config.batch.max_delay = Duration::from_millis(20);
    config.batch.max_records = 16;
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_backoff = Duration::from_millis(80);
    // Long enough that a loaded machine never times out a request the receiver did take.
    config.retry.request_timeout = Duration::from_secs(5);
    config.spool = Some(SpoolSettings {
        dir: spool.to_path_buf(),
        max_bytes,
    });
    config
}

fn start(config: ExportConfig) -> ExportHandle {
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    ExportHandle::start(config, redactor).unwrap()
}

/// An exchange whose `llmtap.exchange.id` is `id` (unique within a test).
fn exchange(id: u64, response_bytes: usize) -> Exchange {
    kit::marked_call(id, response_bytes)
}

/// Polls the stats until `done` holds (panics after WAIT).
async fn wait_stats(handle: &ExportHandle, done: impl Fn(&ExportStats) -> bool) -> ExportStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The exchange ids of the call records received, in arrival order.
fn ids(records: &[Received]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.record.event_name == key::EVENT_INFERENCE_DETAILS)
        .map(|r| match r.attrs()[key::LLMTAP_EXCHANGE_ID] {
            Val::Int(id) => id as u64,
            ref other => panic!("exchange id {other:?}"),
        })
        .collect()
}

/// Submits exchanges `ids`, one every `gap`.
async fn steady(handle: &ExportHandle, ids: std::ops::Range<u64>, gap: Duration) {
    for id in ids {
        handle.submit(exchange(id, 200));
        tokio::time::sleep(gap).await;
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn an_outage_under_steady_traffic_loses_nothing_and_keeps_the_order() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    let gap = Duration::from_millis(3);

    // Up: records go straight out, nothing touches the disk.
    steady(&handle, 0..40, gap).await;
    receiver.wait_for_records(40, WAIT).await;
    assert_eq!(handle.stats().spooled, 0);

    // Down (connection refused): the queue drains into the spool.
    receiver.down().await;
    steady(&handle, 40..120, gap).await;
    let stats = wait_stats(&handle, |s| s.spool_pending == 80 && s.queue_len == 0).await;
    assert!(stats.spool_bytes > 0, "{stats:?}");
    assert!(!segments(dir.path()).is_empty());

    // Up but refusing: 503s, then a 429 with Retry-After; traffic goes on behind the spool.
    receiver.set_default(Reply::Status(503));
    receiver.up().await;
    let hits = receiver.hits().len();
    steady(&handle, 120..160, gap).await;
    receiver.wait_for_hits(hits + 3, WAIT).await;
    receiver.push_replies([Reply::RetryAfter(429, 0)]);
    receiver.set_default(Reply::Accept);
    steady(&handle, 160..200, gap).await;

    let records = receiver.wait_for_records(200, WAIT).await;
    assert_eq!(ids(&records), (0..200).collect::<Vec<_>>());
    let stats = wait_stats(&handle, |s| s.exported == 200 && s.spool_pending == 0).await;
    assert_eq!(
        (
            stats.dropped_export_failed,
            stats.dropped_queue_full,
            stats.dropped_spool_full
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.spooled >= 80 && stats.export_retries > 0, "{stats:?}");
    // Delivered segments are deleted.
    assert!(
        segments(dir.path()).is_empty(),
        "{:?}",
        segments(dir.path())
    );
    assert_eq!(stats.spool_bytes, 0);
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.dropped_shutdown, 0, "{stats:?}");
    assert_eq!(receiver.records().len(), 200);
}

#[tokio::test]
async fn records_still_queued_at_shutdown_wait_on_disk_for_the_next_start() {
    let receiver = OtlpReceiver::start().await;
    receiver.down().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = config(&receiver.endpoint(), dir.path(), 64 << 20);
    // Records would sit in the batch for a minute: only the shutdown moves them.
    first.batch.max_delay = Duration::from_secs(60);
    first.batch.max_records = 1000;
    let handle = start(first);
    for id in 0..20 {
        handle.submit(exchange(id, 100));
    }
    let stats = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (stats.spooled, stats.spool_pending, stats.dropped_shutdown),
        (20, 20, 0),
        "{stats:?}"
    );

    // Next start, endpoint back: the spool goes out first, then what is new.
    receiver.up().await;
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    assert_eq!(handle.stats().spool_recovered, 20);
    handle.submit(exchange(20, 100));
    let records = receiver.wait_for_records(21, WAIT).await;
    assert_eq!(ids(&records), (0..21).collect::<Vec<_>>());
    wait_stats(&handle, |s| s.exported == 21 && s.spool_pending == 0).await;
    handle.shutdown(WAIT).await;

    // A third start finds nothing to send again.
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    assert_eq!(handle.stats().spool_recovered, 0);
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.exported, 0);
    assert_eq!(receiver.records().len(), 21);
}

#[tokio::test]
async fn a_bad_request_is_dropped_not_retried_forever() {
    let receiver = OtlpReceiver::start().await;
    receiver.down().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    for id in 0..5 {
        handle.submit(exchange(id, 100));
    }
    wait_stats(&handle, |s| s.spool_pending == 5).await;
    // Back, but refusing the spooled batch as Loki does a record too big: 400, once.
    receiver.set_default(Reply::Status(400));
    receiver.up().await;
    wait_stats(&handle, |s| {
        s.dropped_export_failed == 5 && s.spool_pending == 0
    })
    .await;
    let hits = receiver.hits().len();
    assert!(
        (1..=5).contains(&hits),
        "refused batches are not retried: {hits} requests"
    );
    receiver.set_default(Reply::Accept);
    handle.submit(exchange(5, 100));
    let records = receiver.wait_for_records(1, WAIT).await;
    assert_eq!(ids(&records), vec![5]);
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn what_the_endpoint_took_is_not_sent_again_after_a_restart() {
    let receiver = OtlpReceiver::start().await;
    receiver.down().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = receiver.endpoint();
    spool_while_down(dir.path(), &endpoint, 0..10).await;

    // Back for one request only: the first 4 spooled records are delivered, then 503s.
    receiver.push_replies([Reply::Accept]);
    receiver.set_default(Reply::Status(503));
    receiver.up().await;
    let mut small = config(&endpoint, dir.path(), 64 << 20);
    small.batch.max_records = 4;
    let handle = start(small);
    let stats = wait_stats(&handle, |s| s.exported == 4 && s.export_retries > 0).await;
    assert_eq!(stats.spool_pending, 6, "{stats:?}");
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.spool_pending, 6, "{stats:?}");

    // The next run starts after them, inside the same segment file.
    receiver.set_default(Reply::Accept);
    let handle = start(config(&endpoint, dir.path(), 64 << 20));
    assert_eq!(handle.stats().spool_recovered, 6);
    let records = receiver.wait_for_records(10, WAIT).await;
    wait_stats(&handle, |s| s.spool_pending == 0).await;
    handle.shutdown(WAIT).await;
    assert_eq!(ids(&records), (0..10).collect::<Vec<_>>());
    assert_eq!(receiver.records().len(), 10);
}

// ---------------------------------------------------------------------------------------------
// Damaged spool files
// ---------------------------------------------------------------------------------------------

/// (offset, payload length) of each frame after the magic: two header frames, then records.
fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 16 + len;
    }
    out
}

/// Writes records `ids` into a new segment of `dir` (one llmtap run with the endpoint down).
async fn spool_while_down(dir: &Path, endpoint: &str, ids: std::ops::Range<u64>) {
    let handle = start(config(endpoint, dir, 64 << 20));
    let n = ids.end - ids.start;
    for id in ids {
        handle.submit(exchange(id, 300));
    }
    let stats = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.spooled, n, "{stats:?}");
}

#[tokio::test]
async fn damaged_spool_files_are_read_up_to_the_damage() {
    let receiver = OtlpReceiver::start().await;
    receiver.down().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = receiver.endpoint();
    spool_while_down(dir.path(), &endpoint, 0..10).await;
    spool_while_down(dir.path(), &endpoint, 10..20).await;
    spool_while_down(dir.path(), &endpoint, 20..30).await;
    let files = segments(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");

    // First file: one flipped byte inside record 5. Second: cut in the middle of its last
    // record, as a SIGKILL during a write leaves it. Third: intact. Plus a file of garbage.
    let mut data = std::fs::read(&files[0]).unwrap();
    let (at, len) = frames(&data)[2 + 5];
    data[at + 16 + len / 2] ^= 0x20;
    std::fs::write(&files[0], &data).unwrap();
    let data = std::fs::read(&files[1]).unwrap();
    let (at, len) = *frames(&data).last().unwrap();
    std::fs::write(&files[1], &data[..at + 16 + len / 2]).unwrap();
    std::fs::write(dir.path().join("00000000000000000999.seg"), b"not a spool").unwrap();

    receiver.up().await;
    let handle = start(config(&endpoint, dir.path(), 64 << 20));
    let stats = handle.stats();
    assert_eq!(stats.spool_damaged, 3, "{stats:?}");
    assert_eq!(stats.spool_recovered, 5 + 9 + 10, "{stats:?}");
    handle.submit(exchange(30, 300));
    let want: Vec<u64> = (0..5).chain(10..19).chain(20..31).collect();
    let records = receiver.wait_for_records(want.len(), WAIT).await;
    assert_eq!(ids(&records), want);
    let total = want.len() as u64;
    wait_stats(&handle, |s| s.spool_pending == 0 && s.exported == total).await;
    // The damaged files are gone once what they held was delivered; the garbage too.
    assert!(
        segments(dir.path()).is_empty(),
        "{:?}",
        segments(dir.path())
    );
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_spool_file_of_garbage_or_an_empty_one_never_stops_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in [
        ("00000000000000000001.seg", Vec::new()),
        ("00000000000000000002.seg", b"LLMTAPS1".to_vec()),
        ("00000000000000000003.seg", vec![0xff; 4096]),
        ("ack", vec![1, 2, 3]),
    ] {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let receiver = OtlpReceiver::start().await;
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    let stats = handle.stats();
    assert_eq!(
        (stats.spool_recovered, stats.spool_damaged),
        (0, 4),
        "{stats:?}"
    );
    handle.submit(exchange(1, 10));
    let records = receiver.wait_for_records(1, WAIT).await;
    assert_eq!(ids(&records), vec![1]);
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn one_spool_directory_serves_one_llmtap() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = start(config(&receiver.endpoint(), dir.path(), 64 << 20));
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    let second = ExportHandle::start(config(&receiver.endpoint(), dir.path(), 64 << 20), redactor);
    let error = second
        .err()
        .expect("a second exporter on the same spool")
        .to_string();
    assert!(error.contains("in use"), "{error}");
    handle.shutdown(WAIT).await;
}

// ---------------------------------------------------------------------------------------------
// The byte bound
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_byte_bound_drops_the_oldest_and_counts_them() {
    const BOUND: u64 = 64 * 1024;
    const N: u64 = 200;
    let receiver = OtlpReceiver::start().await;
    receiver.down().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = start(config(&receiver.endpoint(), dir.path(), BOUND));
    // About 2.5 KB a record: 200 of them are eight times the bound.
    for id in 0..N {
        handle.submit(exchange(id, 2000));
        if id % 16 == 15 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let stats = wait_stats(&handle, |s| {
        s.queue_len == 0 && s.spool_pending + s.dropped_spool_full == N
    })
    .await;
    assert!(stats.dropped_spool_full > 0, "{stats:?}");
    assert!(stats.spool_bytes <= BOUND, "{stats:?}");
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, stats.spool_bytes);
    // Let any send that was out while its segment was dropped come back refused.
    let retries = stats.export_retries;
    wait_stats(&handle, |s| s.export_retries >= retries + 2).await;

    receiver.up().await;
    let stats = wait_stats(&handle, |s| {
        s.spool_pending == 0 && s.exported + s.dropped_spool_full == N
    })
    .await;
    // What arrives is the newest records, each once, in order: the oldest were dropped.
    let got = ids(&receiver.records());
    assert_eq!(got, (N - stats.exported..N).collect::<Vec<_>>());
    handle.shutdown(WAIT).await;
}

// ---------------------------------------------------------------------------------------------
// The binary: receiver down, SIGKILL in the middle, restart, receiver back
// ---------------------------------------------------------------------------------------------

mod binary {
    use super::*;
    use common::upstream::ANTHROPIC_JSON;
    use common::{STEP, TestCa, Upstream, llmtap_bin};
    use std::process::{Child, Command, Stdio};

    const HOST: &str = "api.anthropic.com";

    /// A running `llmtap` process exporting to `endpoint` with its spool in `spool`.
    struct Llmtap {
        child: Child,
        addr: String,
    }

    impl Llmtap {
        fn start(
            endpoint: &str,
            spool: &Path,
            ca_dir: &Path,
            upstream: &Upstream,
            ca: &TestCa,
        ) -> Llmtap {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let child = Command::new(llmtap_bin())
                .env_clear()
                .env("PROXY_ADDONS_CONFIG", common::addons_dir())
                .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", endpoint)
                .env("OTEL_BLRP_SCHEDULE_DELAY", "20")
                .env("PROXY_SPOOL_DIR", spool)
                .env("LLMTAP_LOG", "llmtap=info,warn")
                .args([
                    "--listen",
                    &addr,
                    "--llm-hosts",
                    HOST,
                    "--allow-private",
                    "127.0.0.0/8",
                ])
                .arg("--ca-dir")
                .arg(ca_dir)
                .arg("--upstream-ca")
                .arg(ca.pem_path.path())
                .arg("--resolve")
                .arg(format!("{HOST}:{}:127.0.0.1", upstream.port()))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + STEP;
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(Instant::now() < deadline, "llmtap did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            }
            Llmtap { child, addr }
        }

        fn client(&self, ca_dir: &Path) -> reqwest::Client {
            let ca = std::fs::read(ca_dir.join("ca.pem")).unwrap();
            reqwest::Client::builder()
                .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .timeout(STEP)
                .build()
                .unwrap()
        }

        async fn export_stats(&self) -> serde_json::Value {
            let res = reqwest::Client::builder()
                .no_proxy()
                .timeout(STEP)
                .build()
                .unwrap()
                .get(format!("http://{}/healthz", self.addr))
                .send()
                .await
                .unwrap();
            res.json::<serde_json::Value>().await.unwrap()["export"].clone()
        }

        /// Polls `/healthz` until its export section satisfies `done` (panics after STEP).
        async fn wait_export(
            &self,
            what: &str,
            done: impl Fn(&serde_json::Value) -> bool,
        ) -> serde_json::Value {
            let deadline = Instant::now() + STEP;
            loop {
                let export = self.export_stats().await;
                if done(&export) {
                    return export;
                }
                assert!(
                    Instant::now() < deadline,
                    "/healthz never showed {what}: {export}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn sigkill(mut self) {
            self.child.kill().unwrap();
            self.child.wait().unwrap();
        }

        fn sigterm(mut self) -> std::process::ExitStatus {
            let pid = self.child.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            let deadline = Instant::now() + STEP;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(Instant::now() < deadline, "llmtap did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Llmtap {
        fn drop(&mut self) {
            if self.child.try_wait().ok().flatten().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// One call through llmtap, marked so its record can be found.
    async fn call(client: &reqwest::Client, port: u16, marker: &str) {
        let res = client
            .post(format!("https://{HOST}:{port}/v1/messages?marker={marker}"))
            .header("content-type", "application/json")
            .body(r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), ANTHROPIC_JSON);
    }

    /// The markers of the call records received, in arrival order.
    fn markers(records: &[Received]) -> Vec<String> {
        records
            .iter()
            .filter(|r| r.record.event_name == key::EVENT_INFERENCE_DETAILS)
            .map(|r| {
                let url = r.attrs()[key::URL_FULL].str().to_owned();
                url.split_once("marker=")
                    .map(|(_, m)| m.to_owned())
                    .unwrap_or(url)
            })
            .collect()
    }

    fn n(v: &serde_json::Value, key: &str) -> u64 {
        v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_during_an_outage_then_restart_delivers_every_record_once() {
        common::init_crypto();
        let ca = TestCa::new("upstream CA");
        let upstream = Upstream::https(&ca, &[HOST]).await;
        let receiver = OtlpReceiver::start().await;
        receiver.down().await;
        let spool = tempfile::tempdir().unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let endpoint = receiver.endpoint();
        let mut want = Vec::new();

        // Run 1, endpoint down: calls go through, their records into the spool ... then SIGKILL.
        let proxy = Llmtap::start(&endpoint, spool.path(), ca_dir.path(), &upstream, &ca);
        let client = proxy.client(ca_dir.path());
        for i in 0..15 {
            let marker = format!("run1-{i}");
            call(&client, upstream.port(), &marker).await;
            want.push(marker);
        }
        let export = proxy
            .wait_export("15 calls spooled", |e| {
                n(e, "queue_len") == 0
                    && n(e, "spooled") >= 15
                    && n(e, "spool_pending") == n(e, "submitted")
            })
            .await;
        let pending = n(&export, "spool_pending");
        proxy.sigkill();
        drop(client);

        // Run 2 on the same spool: it finds the records, takes more while still down ...
        let proxy = Llmtap::start(&endpoint, spool.path(), ca_dir.path(), &upstream, &ca);
        let export = proxy.export_stats().await;
        assert_eq!(n(&export, "spool_recovered"), pending, "{export}");
        let client = proxy.client(ca_dir.path());
        for i in 0..10 {
            let marker = format!("run2-{i}");
            call(&client, upstream.port(), &marker).await;
            want.push(marker);
        }
        proxy
            .wait_export("run 2's calls spooled", |e| {
                n(e, "spooled") >= 10 && n(e, "queue_len") == 0
            })
            .await;
        // ... and the endpoint comes back while traffic goes on.
        receiver.up().await;
        for i in 10..20 {
            let marker = format!("run2-{i}");
            call(&client, upstream.port(), &marker).await;
            want.push(marker);
        }
        let deadline = Instant::now() + STEP;
        while markers(&receiver.records()).len() < want.len() {
            assert!(
                Instant::now() < deadline,
                "records missing: {:?}",
                markers(&receiver.records())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            markers(&receiver.records()),
            want,
            "every record once, oldest first"
        );
        proxy
            .wait_export("an empty spool", |e| n(e, "spool_pending") == 0)
            .await;
        drop(client);
        assert_eq!(proxy.sigterm().code(), Some(0));

        // Run 3: nothing is left to send again.
        let proxy = Llmtap::start(&endpoint, spool.path(), ca_dir.path(), &upstream, &ca);
        let export = proxy.export_stats().await;
        assert_eq!(n(&export, "spool_recovered"), 0, "{export}");
        assert_eq!(proxy.sigterm().code(), Some(0));
        assert_eq!(markers(&receiver.records()), want);
    }
}
