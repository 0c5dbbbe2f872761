//! What `--metrics` costs: a scraper that fetches `/metrics` every second while a churn setup
//! runs (as a Prometheus server would), and the memory figure with the largest label set
//! allowed — every optional label, more service ports than the label-set cap — against the
//! same connections traced without metrics.
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::tracer::{self, Running, Setup, Sink};

/// Every optional label of `--metrics-labels`.
pub const ALL_LABELS: &str = "netns,unit,container,pod,port";
/// More service ports than tcptrace's label-set cap (256), so the overflow set is used too.
const PORTS: usize = 300;

/// A loopback port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// One `GET /metrics`: the body when the answer was 200.
pub fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Samples in an exposition (lines that are not comments).
fn series(body: &str) -> usize {
    body.lines().filter(|l| !l.starts_with('#')).count()
}

/// What the scraper saw over one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrapes {
    pub answered: u64,
    pub failed: u64,
    /// Largest answer, bytes.
    pub max_bytes: u64,
    /// Slowest answer.
    pub max_secs: f64,
}

/// Scrapes a port every second until stopped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Scrapes>,
}

impl Scraper {
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut s = Scrapes::default();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match scrape(port) {
                    Some(body) => {
                        s.answered += 1;
                        s.max_bytes = s.max_bytes.max(body.len() as u64);
                        s.max_secs = s.max_secs.max(t0.elapsed().as_secs_f64());
                    }
                    None => s.failed += 1,
                }
                next += Duration::from_secs(1);
                while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            s
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Scrapes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// A throwaway network namespace the label-set traffic runs in, so that `-N` keeps the rest
/// of the host (other work on a shared machine) out of the measurement, in the kernel.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Self> {
        let name = format!("tcptrace-bench-{}", std::process::id());
        let ok = |args: &[&str]| -> anyhow::Result<()> {
            let st = Command::new("ip")
                .args(args)
                .status()
                .context("running ip")?;
            if !st.success() {
                bail!("ip {} failed", args.join(" "));
            }
            Ok(())
        };
        ok(&["netns", "add", &name])?;
        let ns = Self(name);
        ok(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// One connection to each of [`PORTS`] loopback listeners inside it, each closed by the
    /// client: a label set per service port (client and server side share it), beyond the cap.
    fn connect_to_many_ports(&self) -> anyhow::Result<()> {
        let script = format!(
            "import socket\nls=[]\nfor i in range({PORTS}):\n    l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(4); ls.append(l)\n\
             for l in ls:\n    c=socket.create_connection(l.getsockname()); s,_=l.accept(); c.close(); s.close()\n"
        );
        let st = Command::new("ip")
            .args(["netns", "exec", &self.0, "python3", "-c", &script])
            .status()
            .context("running python3")?;
        if !st.success() {
            bail!("the connections in {} failed", self.0);
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A tracer's resident memory idle after attaching and after the connections (and a scrape),
/// and its peak.
fn rss_around(
    setup: &Setup,
    dir: &Path,
    ns: &Netns,
    metrics: Option<u16>,
) -> anyhow::Result<(u64, u64, u64)> {
    let t = Running::start(setup, dir)?;
    let before = tracer::rss(t.pid())?;
    ns.connect_to_many_ports()?;
    // Records are complete after the close grace; the sink publishes on its 1 s tick.
    thread::sleep(Duration::from_millis(2500));
    if let Some(port) = metrics {
        // A scrape renders the largest exposition (on the tracer's blocking pool).
        scrape(port).context("scraping the tracer")?;
    }
    thread::sleep(Duration::from_millis(500));
    let after = tracer::rss(t.pid())?;
    let cost = t.stop()?;
    Ok((before, after, cost.peak_rss))
}

/// The memory figure with every optional label and the label-set cap exceeded.
pub fn label_memory(tcptrace: &Path, dir: &Path) -> anyhow::Result<String> {
    eprintln!("==> metrics memory: {PORTS} service ports, labels {ALL_LABELS}");
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let ns = Netns::new()?;
    let only = ns.path();
    let with = Setup::tcptrace(
        "metrics-all-labels",
        tcptrace,
        &[
            "-N",
            &only,
            "--format",
            "none",
            "--metrics",
            &addr,
            "--metrics-labels",
            ALL_LABELS,
        ],
        Sink::DevNull,
    );
    let without = Setup::tcptrace(
        "records-only",
        tcptrace,
        &["-N", &only, "--format", "json"],
        Sink::DevNull,
    );
    let (m_before, m_after, m_peak) = rss_around(&with, dir, &ns, Some(port))?;
    let (r_before, r_after, r_peak) = rss_around(&without, dir, &ns, None)?;
    // What a scrape of the full label sets looks like (a fresh run, same connections).
    let t = Running::start(&with, dir)?;
    ns.connect_to_many_ports()?;
    thread::sleep(Duration::from_millis(2500));
    let body = scrape(port).context("scraping the tracer")?;
    t.stop()?;
    if !body.contains("port=\"overflow\"") {
        bail!("the label sets did not overflow: the cap was not reached");
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut md = String::from("### Metrics memory with the largest label set\n\n");
    writeln!(
        md,
        "One loopback connection to each of {PORTS} listeners in a throwaway network namespace \
         (traced alone, `-N`; a label set per service port, beyond the cap of 256: the rest \
         count under `overflow`), then one scrape \
         ({} series, {:.0} KB). Resident memory idle before the connections → after them and \
         the scrape (peak):\n\n\
         | tcptrace | RSS before MiB | RSS after MiB | peak MiB |\n|---|---:|---:|---:|\n\
         | `-N NS --format none --metrics ADDR --metrics-labels {ALL_LABELS}` | {:.1} | {:.1} | {:.1} |\n\
         | `-N NS --format json` (records only) | {:.1} | {:.1} | {:.1} |\n",
        series(&body),
        body.len() as f64 / 1e3,
        mib(m_before),
        mib(m_after),
        mib(m_peak),
        mib(r_before),
        mib(r_after),
        mib(r_peak),
    )?;
    Ok(md)
}
