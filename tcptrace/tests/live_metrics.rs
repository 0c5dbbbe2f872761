//! Privileged end-to-end test of `--metrics` against a real Prometheus server (Debian's
//! `prometheus`, installed by `cargo xtask setup`): tcptrace serves metrics on a port below
//! 1024 of loopback (bound before it drops its capabilities) beside its JSON records; a
//! Prometheus started here scrapes it every second; a refused connect, a SYN timeout, an
//! orderly close and a reset over IPv6 between two test namespaces must then be what
//! Prometheus' query
//! API answers — ends by role and port, the connect-latency histogram's count, retransmits,
//! resets by reason, diagnoses, TIME_WAIT, no lost events — and agree with the records the same
//! tracer printed.
mod harness;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use harness::{NetPair, Peer, Tracer, conns, privileged};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const WAIT: Duration = Duration::from_secs(40);

/// A Prometheus server with its own config and storage in a temporary directory; killed and
/// removed on drop, also when the test fails.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let port = free_port(10000..20000);
        let dir = std::env::temp_dir().join(format!("tcptrace-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tcptrace\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Self { child, dir, port };
        let end = Instant::now() + Duration::from_secs(30);
        while http_get(p.port, "/-/ready").is_none_or(|(code, _)| code != 200) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}): {}", p.log());
            }
            assert!(Instant::now() < end, "prometheus not ready: {}", p.log());
            sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (code, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(expr)))
            .unwrap_or_else(|| panic!("query {expr}: no answer"));
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {expr}: {e}: {body}"));
        assert!(
            code == 200 && v["status"] == "success",
            "query {expr}: {body}"
        );
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The value of an expression that yields one series (None: no series).
    fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        assert!(r.len() <= 1, "{expr}: {r:?}");
        r.first().map(|(_, v)| *v)
    }

    /// Polls until `expr` is `want`; returns what it was last.
    fn wait_for(&self, expr: &str, want: f64) -> Option<f64> {
        let end = Instant::now() + WAIT;
        loop {
            let got = self.scalar(expr);
            if got == Some(want) || Instant::now() > end {
                return got;
            }
            sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port in `range` nothing listens on now, tried from a place that depends on
/// the process, so that test runs side by side on one machine rarely pick the same.
fn free_port(range: std::ops::Range<u16>) -> u16 {
    let len = u32::from(range.end - range.start);
    let from = std::process::id() % len;
    (0..len)
        .map(|i| range.start + ((from + i) % len) as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free loopback port")
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on a loopback port: status and body (None when nothing answers).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn prometheus_installed() -> bool {
    if std::path::Path::new(PROMETHEUS).exists() {
        return true;
    }
    let why = format!("{PROMETHEUS} not found (cargo xtask setup installs Debian's prometheus)");
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

#[test]
fn prometheus_scrapes_what_the_connections_did() {
    if !privileged() || !prometheus_installed() {
        return;
    }
    let net = NetPair::new();
    let (srv, cli) = (NetPair::inode(&net.srv), NetPair::inode(&net.cli));
    let (refused, timeout, closed, reset) = (9851u16, 9852u16, 9853u16, 9854u16);
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "1");
    let p = timeout.to_string();
    NetPair::exec(
        &net.srv,
        &[
            "ip6tables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &p,
            "-j",
            "DROP",
        ],
    );

    // Below 1024: only bindable before the tracer drops CAP_NET_BIND_SERVICE.
    let metrics_port = free_port(900..1024);
    let addr = format!("127.0.0.1:{metrics_port}");
    // IPv6 between the namespaces, traced alone: other tests' IPv4 loopback churn on a shared
    // machine is filtered out in the kernel.
    let tracer = Tracer::lifecycle(&["-6", "--metrics", &addr, "--metrics-labels", "netns,port"]);
    let prom = Prometheus::start(metrics_port);
    assert_eq!(
        prom.wait_for("up{job=\"tcptrace\"}", 1.0),
        Some(1.0),
        "prometheus does not scrape tcptrace: {}",
        prom.log()
    );

    // A refused connect, a SYN timeout, an orderly close (client first), an abortive close.
    let srv6 = net.srv6.as_str();
    Peer::start(&net.cli, "refused", srv6, refused, 0).finish();
    let script = format!(
        "import socket,errno\ns=socket.socket(socket.AF_INET6)\ntry:\n    s.connect(('{srv6}',{timeout}))\nexcept OSError as e:\n    assert e.errno==errno.ETIMEDOUT, e\nelse:\n    raise SystemExit('connected')"
    );
    NetPair::exec(&net.cli, &["python3", "-c", &script]);
    let server = Peer::start(&net.srv, "serve", srv6, closed, 100);
    assert_eq!(
        Peer::start(&net.cli, "send", srv6, closed, 200).finish(),
        "100"
    );
    server.finish();
    let server = Peer::start(&net.srv, "serve", srv6, reset, 0);
    Peer::start(&net.cli, "abort", srv6, reset, 0).finish();
    server.finish();

    let ended = |ns: u64, role: &str, end: &str, port: u16| {
        format!(
            "tcptrace_connections_ended_total{{netns=\"{ns}\",role=\"{role}\",end=\"{end}\",port=\"{port}\"}}"
        )
    };
    let quirks = harness::kernel_quirks();
    let expected = [
        (ended(cli, "client", "refused", refused), 1.0),
        (ended(cli, "client", "timeout", timeout), 1.0),
        (ended(cli, "client", "closed", closed), 1.0),
        (ended(srv, "server", "closed", closed), 1.0),
        (ended(cli, "client", "reset_sent", reset), 1.0),
        (ended(srv, "server", "reset_received", reset), 1.0),
        (
            format!("sum(tcptrace_connect_latency_seconds_count{{netns=\"{cli}\"}})"),
            2.0,
        ),
        (
            format!("sum(tcptrace_server_handshake_seconds_count{{netns=\"{srv}\"}})"),
            2.0,
        ),
        (
            format!(
                "sum(tcptrace_connection_lifetime_seconds_count{{netns=\"{cli}\",role=\"client\"}})"
            ),
            4.0,
        ),
        // The server's RST refusing the SYN: traced from 6.10 (README, Kernel support).
        if quirks.resets_without_socket {
            (
                format!(
                    "tcptrace_resets_total{{netns=\"{srv}\",direction=\"sent\",reason=\"NO_SOCKET\"}}"
                ),
                1.0,
            )
        } else {
            (
                format!(
                    "sum(tcptrace_resets_total{{netns=\"{srv}\",direction=\"sent\"}}) or vector(0)"
                ),
                0.0,
            )
        },
        (
            format!(
                "tcptrace_resets_total{{netns=\"{cli}\",direction=\"sent\",reason=\"{}\"}}",
                if quirks.reset_reasons {
                    "TCP_STATE"
                } else {
                    "none"
                }
            ),
            1.0,
        ),
        (
            format!("sum(tcptrace_resets_total{{netns=~\"{cli}|{srv}\",direction=\"received\"}})"),
            2.0,
        ),
        (
            format!(
                "tcptrace_diagnoses_total{{netns=\"{cli}\",port=\"{timeout}\",rule=\"connect_timeout\",severity=\"error\"}}"
            ),
            1.0,
        ),
        (
            format!(
                "tcptrace_diagnoses_total{{netns=\"{cli}\",port=\"{refused}\",rule=\"refused\"}}"
            ),
            1.0,
        ),
        // The client closed first: its side holds the TIME_WAIT socket.
        (
            format!("tcptrace_time_wait_sockets{{netns=\"{cli}\"}}"),
            1.0,
        ),
        (
            format!("tcptrace_time_wait_sockets{{netns=\"{srv}\"}}"),
            0.0,
        ),
        // The tracer sees the whole host: this holds where no other heavy TCP churn runs (CI
        // runs one test binary at a time).
        ("sum(tcptrace_events_lost_total)".to_string(), 0.0),
        ("tcptrace_metrics_overflow_total".to_string(), 0.0),
    ];
    let mut wrong = Vec::new();
    for (expr, want) in &expected {
        let got = prom.wait_for(expr, *want);
        if got != Some(*want) {
            wrong.push(format!("{expr} = {got:?}, expected {want}"));
        }
    }
    // The SYN retransmits of the timed-out connect, as they happened.
    let syn_retransmits = prom.scalar(&format!(
        "tcptrace_retransmits_total{{netns=\"{cli}\",state=\"SYN_SENT\",kind=\"syn\"}}"
    ));
    let ends = prom.query(&format!(
        "tcptrace_connections_ended_total{{netns=~\"{cli}|{srv}\"}} > 0"
    ));
    let cpu = prom.scalar("process_cpu_seconds_total{job=\"tcptrace\"}");
    let rss = prom.scalar("process_resident_memory_bytes{job=\"tcptrace\"}");
    let (records, stderr) = tracer.stop();
    assert!(wrong.is_empty(), "{}\n{stderr}", wrong.join("\n"));
    assert!(cpu.is_some_and(|c| c > 0.0), "{cpu:?}");
    assert!(rss.is_some_and(|r| r > 1e6), "{rss:?}");

    // Prometheus agrees with the records the same tracer printed.
    let mut from_records: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for port in [refused, timeout, closed, reset] {
        for r in conns(&records, port.into()) {
            let key = (
                r["netns"].to_string(),
                r["role"].as_str().unwrap().to_string(),
                r["end"].as_str().unwrap().to_string(),
                port.to_string(),
            );
            *from_records.entry(key).or_default() += 1.0;
        }
    }
    let from_prometheus: BTreeMap<(String, String, String, String), f64> = ends
        .into_iter()
        .map(|(l, v)| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            ((get("netns"), get("role"), get("end"), get("port")), v)
        })
        .collect();
    assert_eq!(from_prometheus, from_records);
    let timed_out = conns(&records, timeout.into());
    let retransmits = timed_out[0]["retransmits"]["by_state"]["SYN_SENT"].as_f64();
    assert!(retransmits.is_some_and(|n| n >= 1.0), "{timed_out:?}");
    assert_eq!(syn_retransmits, retransmits);
}

/// With `--events` the output is the event stream, yet the metrics still count connection
/// records: the connection table runs for them, and no record reaches the output.
#[test]
fn metrics_count_connections_beside_the_event_stream() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let cli = NetPair::inode(&net.cli);
    let port = 9861u16;
    let metrics_port = free_port(20000..30000);
    let addr = format!("127.0.0.1:{metrics_port}");
    let tracer = Tracer::start(&["-6", "--metrics", &addr, "--metrics-labels", "netns"]);
    let server = Peer::start(&net.srv, "serve", &net.srv6, port, 10);
    assert_eq!(
        Peer::start(&net.cli, "send", &net.srv6, port, 20).finish(),
        "10"
    );
    server.finish();
    let want = format!(
        "tcptrace_connections_ended_total{{role=\"client\",end=\"closed\",netns=\"{cli}\"}} 1\n"
    );
    let end = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < end {
        last = http_get(metrics_port, "/metrics").map_or_else(String::new, |(_, b)| b);
        if last.contains(&want) {
            break;
        }
        sleep(Duration::from_millis(250));
    }
    let (events, stderr) = tracer.stop();
    assert!(last.contains(&want), "no {want:?} in\n{last}\n{stderr}");
    let ours = harness::on_port(&events, port.into());
    assert!(ours.iter().any(|e| e["type"] == "state"), "{ours:?}");
    assert!(
        events.iter().all(|e| e["type"] != "conn"),
        "a record in the event stream"
    );
}
