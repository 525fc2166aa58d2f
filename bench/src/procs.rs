//! Child processes (the mock, llmtap) and what /proc says about them: CPU seconds and RSS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Res;

/// utime + stime of a process, seconds (clock ticks at the usual 100 Hz).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / 100.0)
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Number of threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A free loopback port from the OS (bound to 127.0.0.1:0, then released for the child to bind).
pub fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The mock upstream, a subprocess of this binary.
pub struct Mock {
    child: Child,
    _stdin: ChildStdin,
    pub addr: SocketAddr,
    pub ca: PathBuf,
}

impl Mock {
    pub fn start(dir: &Path, threads: usize) -> Res<Mock> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["mock", "--dir"])
            .arg(dir)
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("mock stdin")?;
        let stdout = child.stdout.take().ok_or("mock stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("LISTEN ")
            .ok_or_else(|| format!("mock said {line:?}"))?
            .parse()?;
        Ok(Mock {
            child,
            _stdin: stdin,
            addr,
            ca: dir.join("ca.pem"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start llmtap.
#[derive(Clone, Debug)]
pub struct LlmtapCmd {
    pub bin: PathBuf,
    pub ca_dir: PathBuf,
    pub llm_host: String,
    pub tunnel_host: String,
    pub mock: SocketAddr,
    pub mock_ca: PathBuf,
    pub otlp: Option<SocketAddr>,
    pub max_body_size: usize,
    pub log_dir: PathBuf,
    pub extra_args: Vec<String>,
}

/// A running llmtap child.
pub struct Llmtap {
    child: Child,
    pub addr: SocketAddr,
}

impl Llmtap {
    pub fn start(cmd: &LlmtapCmd, label: &str) -> Res<Llmtap> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mp = cmd.mock.port();
        let stderr = std::fs::File::create(cmd.log_dir.join(format!("llmtap-{label}.stderr")))?;
        let mut c = Command::new(&cmd.bin);
        c.arg("--listen")
            .arg(addr.to_string())
            .arg("--ca-dir")
            .arg(&cmd.ca_dir)
            .arg("--llm-hosts")
            .arg(&cmd.llm_host)
            .arg("--upstream-ca")
            .arg(&cmd.mock_ca)
            .arg("--resolve")
            .arg(format!("{}:{mp}:{}", cmd.llm_host, cmd.mock.ip()))
            .arg("--resolve")
            .arg(format!("{}:{mp}:{}", cmd.tunnel_host, cmd.mock.ip()))
            .arg("--max-body-size")
            .arg(cmd.max_body_size.to_string())
            .args(&cmd.extra_args)
            .env_remove("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(o) = cmd.otlp {
            c.env(
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://{o}/v1/logs"),
            );
            c.env("OTEL_SERVICE_NAME", "llmtap-bench");
        }
        let child = c
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cmd.bin.display()))?;
        let mut me = Llmtap { child, addr };
        let t0 = Instant::now();
        loop {
            if health(addr).is_ok() {
                return Ok(me);
            }
            if let Ok(Some(st)) = me.child.try_wait() {
                return Err(format!(
                    "llmtap exited at start ({st}); see {}/llmtap-{label}.stderr",
                    cmd.log_dir.display()
                )
                .into());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("llmtap did not answer /healthz within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then wait up to `grace` for it to flush and exit; kill after that. Returns seconds taken.
    pub fn stop(mut self, grace: Duration) -> f64 {
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        while t0.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t0.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        t0.elapsed().as_secs_f64()
    }
}

impl Drop for Llmtap {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /healthz` on the proxy address (blocking, plain HTTP/1.1); the JSON document.
pub fn health(addr: SocketAddr) -> Res<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("healthz: {}", text.lines().next().unwrap_or("")).into());
    }
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // The body may be chunked; take from the first '{' to the last '}'.
    let (a, b) = (body.find('{'), body.rfind('}'));
    match (a, b) {
        (Some(a), Some(b)) if b > a => Ok(serde_json::from_str(&body[a..=b])?),
        _ => Ok(serde_json::Value::Null),
    }
}

/// CPU seconds used so far by every process on the machine except `exclude` (from /proc/<pid>/stat).
/// Processes that exit between two readings are missed, so this undercounts short-lived work a little.
pub fn others_cpu_seconds(exclude: &[u32]) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if exclude.contains(&pid) {
            continue;
        }
        if let Some(cpu) = cpu_seconds(pid) {
            out.insert(pid, cpu);
        }
    }
    out
}

/// Cores used by other processes between two `others_cpu_seconds` readings.
pub fn others_cores(
    before: &std::collections::HashMap<u32, f64>,
    after: &std::collections::HashMap<u32, f64>,
    seconds: f64,
) -> f64 {
    let used: f64 = after
        .iter()
        .map(|(pid, cpu)| cpu - before.get(pid).copied().unwrap_or(0.0))
        .filter(|d| *d > 0.0)
        .sum();
    used / seconds.max(1e-6)
}
