//! Privileged test that nothing is lost silently under load: a two-thread loopback churn is
//! recorded with `--events --format raw`; every break in a churn socket's chain of state
//! transitions must be covered by a loss tcptrace reported (ring buffer full, or runs of a
//! program the kernel skipped because it was already running on that CPU), and every
//! connection record rebuilt from the recording that is missing states must say so.
mod harness;

use std::{
    collections::HashMap,
    io::Read as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use harness::{privileged, spawn_attached, states};
use serde_json::Value;

/// The churns load the whole machine: one test at a time, or their timings mean nothing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections the churn must make for the test to mean something.
const MIN_CONNS: u64 = 1000;

/// Connect-and-wait-for-FIN clients against accept-and-close servers, `threads` of each, for
/// `secs`; where the machine is emulated (a vm-test guest under TCG) longer, up to
/// [`harness::patience`] times, until [`MIN_CONNS`] connections were made.
fn churn(listener: &TcpListener, threads: usize, secs: f64) -> u64 {
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptors: Vec<_> = (0..threads)
        .map(|_| {
            let l = listener.try_clone().unwrap();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    drop(l.accept());
                }
            })
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let last = start + harness::patient(Duration::from_secs_f64(secs));
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let total = total.clone();
            thread::spawn(move || {
                loop {
                    let now = Instant::now();
                    if now >= last || (now >= end && total.load(Ordering::Relaxed) >= MIN_CONNS) {
                        break;
                    }
                    let ok = TcpStream::connect(addr).and_then(|mut s| s.read(&mut [0u8; 1]));
                    total.fetch_add(u64::from(ok.is_ok()), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let done = total.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for _ in &acceptors {
        drop(TcpStream::connect(addr));
    }
    for a in acceptors {
        a.join().unwrap();
    }
    done
}

fn replay(path: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .arg("replay")
        .arg(path)
        .args(["--format", "json"])
        .args(args)
        .output()
        .expect("run tcptrace replay");
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Transitions of sockets on `port` that do not continue from the state the socket was last
/// seen in (a fresh socket starts from CLOSE or LISTEN), plus chains left unfinished.
fn chain_breaks(events: &[Value], port: u64) -> (u64, Vec<String>) {
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut breaks = 0;
    let mut examples = Vec::new();
    for e in events {
        if e["type"] != "state" || (e["lport"] != port && e["rport"] != port) {
            continue;
        }
        let (sk, old, new) = (
            e["sk"].as_str().unwrap(),
            e["old"].as_str().unwrap(),
            e["new"].as_str().unwrap(),
        );
        if new == "LISTEN" || old == "LISTEN" && new == "CLOSE" {
            continue;
        }
        let expected = last.get(sk).copied().unwrap_or("");
        let fresh = matches!(old, "CLOSE" | "LISTEN") && matches!(expected, "" | "CLOSE");
        if old != expected && !fresh {
            breaks += 1;
            if examples.len() < 5 {
                examples.push(format!("{sk}: {expected} then {old} -> {new}"));
            }
        }
        last.insert(sk, new);
    }
    let unfinished = last.values().filter(|s| **s != "CLOSE").count() as u64;
    (breaks + unfinished, examples)
}

/// The number just before `marker` in the exit summary (0 when the summary does not say).
fn summary_count(stderr: &str, marker: &str) -> u64 {
    let line = stderr
        .lines()
        .rfind(|l| l.contains(" events: "))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let Some((before, _)) = line.split_once(marker) else {
        return 0;
    };
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Runs of `pid`'s eBPF programs the kernel skipped so far (`recursion_misses` in fdinfo).
fn kernel_skipped(pid: u32) -> u64 {
    let mut by_prog = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(misses)) = (field("prog_id:"), field("recursion_misses:")) {
            by_prog.insert(id, misses);
        }
    }
    by_prog.values().sum()
}

#[test]
fn churn_loses_nothing_silently_btf() {
    churn_loses_nothing_silently("btf");
}

/// Classic tracepoints cannot catch nested runs (the kernel skips every program on a CPU that
/// runs one), so here the losses are real and must all be reported.
#[test]
fn churn_loses_nothing_silently_classic() {
    churn_loses_nothing_silently("classic");
}

fn churn_loses_nothing_silently(tracepoints: &str) {
    if !privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!(
        "tcptrace-loss-{tracepoints}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("churn.raw");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());

    let (mut child, mut err) =
        spawn_attached(&["--events", "--format", "raw", "--tracepoints", tracepoints]);
    let mut out = child.stdout.take().unwrap();
    let file = std::fs::File::create(&rec).unwrap();
    let copier = thread::spawn(move || {
        let mut f = file;
        std::io::copy(&mut out, &mut f).unwrap();
    });
    thread::sleep(Duration::from_millis(500));
    let conns = churn(&listener, 2, 3.0);
    // Connections still queued (a wake-up connect an exiting accept loop left) are reset, so
    // every chain on the port ends; then let the last FINs land before tracing stops.
    drop(listener);
    thread::sleep(Duration::from_millis(300));
    let skipped = kernel_skipped(child.id());
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    copier.join().unwrap();
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "tcptrace: {stderr}");
    assert!(
        conns >= MIN_CONNS,
        "the churn made only {conns} connections"
    );
    eprintln!("{tracepoints}: {conns} connections, {skipped} skipped runs seen: {stderr}");
    let lost = summary_count(&stderr, " lost,");
    let lost_recursion = summary_count(&stderr, " in runs the kernel skipped");
    if tracepoints == "classic" {
        // Every skipped run is an event lost (the tracer reads its counters after the test).
        assert!(
            lost_recursion >= skipped,
            "the kernel skipped {skipped} runs, {lost_recursion} reported lost: {stderr}"
        );
    }

    let events = replay(&rec, &["--events"]);
    let stream_lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(stream_lost, lost, "lost lines vs summary: {stderr}");
    let (breaks, examples) = chain_breaks(&events, port);
    if tracepoints == "classic" && !harness::kernel_counts_classic_misses() {
        // Before 6.7 the kernel skips classic runs without counting them: tcptrace cannot
        // know what it lost, and must say so.
        assert!(
            stderr.contains("count the runs of classic tracepoint programs it skips"),
            "no warning that skipped classic runs go uncounted: {stderr}"
        );
        return;
    }
    assert!(
        breaks <= lost,
        "{breaks} broken transition chains on port {port} ({examples:?}) but {lost} lost \
         reported over {conns} connections: {stderr}"
    );

    // Rebuilt records: every churn connection closed while traced, so one left open or
    // without its start says what it missed.
    let records = replay(&rec, &[]);
    let complete = |r: &Value| {
        let first = states(r).first().cloned().unwrap_or_default();
        r["end"] != "open" && (first == "SYN_SENT" || first == "SYN_RECV")
    };
    let silent: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "conn" && (r["lport"] == port || r["rport"] == port))
        .filter(|r| !complete(r) && r["notes"].as_array().is_none_or(|n| n.is_empty()))
        .collect();
    assert!(
        silent.is_empty(),
        "{} incomplete records without a note, e.g. {}",
        silent.len(),
        silent[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// eBPF links (`link_type:` in fdinfo) `pid` holds: its attached programs.
fn links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("link_type:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A tracer that cannot keep up (this unoptimised build, given the CPU last under a two-thread
/// churn, like one on a host busier than it can follow) reads the ring in bounded turns and
/// sees its signals in between: on SIGINT it detaches promptly while the kernel is still
/// refilling the ring, then drains what was queued and says what it lost.
#[test]
fn stops_promptly_while_the_ring_refills() {
    if !privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (mut child, mut err) = spawn_attached(&["--events", "--format", "json"]);
    Command::new("renice")
        .args(["-n", "19", "-p", &child.id().to_string()])
        .output()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let sink = thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    // Longer than the wait below can take: the churn must still run when the tracer detaches.
    let secs = 12.0 * f64::from(harness::patience());
    let load = thread::spawn(move || churn(&listener, 2, secs));
    thread::sleep(Duration::from_secs(2));
    assert!(links(child.id()) > 0, "not attached");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let signalled = Instant::now();
    let limit = harness::patient(Duration::from_secs(6));
    while links(child.id()) > 0 {
        assert!(
            signalled.elapsed() < limit,
            "still attached {limit:?} after SIGINT while the churn went on"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!load.is_finished(), "the churn ended first");
    let status = child.wait().unwrap();
    load.join().unwrap();
    sink.join().unwrap().unwrap();
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "tcptrace: {stderr}");
    assert!(stderr.contains(" events: "), "no summary: {stderr}");
}
