//! `cargo xtask bench`: the loopback churn untraced and under each tracer setup (tcptrace's
//! modes and sinks, libbpf-tools' `tcpstates`), interleaved over rounds so drift hits all alike;
//! then the scale figures (memory per held connection, replay throughput). Prints a Markdown
//! report and keeps it in `target/bench/report.md`. Measures; never fails on the numbers.
mod scale;
mod tracer;
mod wire;

use std::{fmt::Write as _, fs, path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{churn, exec};
use tracer::{Cost, Kind, Running, Setup, Sink};

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub duration: Duration,
    pub threads: usize,
    pub conns: usize,
    pub skip_churn: bool,
    pub skip_scale: bool,
}

fn setups(tcptrace: &std::path::Path) -> Vec<Setup> {
    let t = |name, args: &[&str], sink| Setup::tcptrace(name, tcptrace, args, sink);
    vec![
        t("lifecycle-text-null", &[], Sink::DevNull),
        t("lifecycle-json-null", &["--format", "json"], Sink::DevNull),
        t("lifecycle-text-file", &[], Sink::File),
        t("lifecycle-json-file", &["--format", "json"], Sink::File),
        t("events-text-file", &["--events"], Sink::File),
        t(
            "events-json-file",
            &["--events", "--format", "json"],
            Sink::File,
        ),
        t(
            "events-raw-file",
            &["--events", "--format", "raw"],
            Sink::File,
        ),
        Setup {
            name: "tcpstates-file",
            program: PathBuf::from("/usr/sbin/tcpstates"),
            args: Vec::new(),
            sink: Sink::File,
            kind: Kind::Tcpstates,
        },
    ]
}

/// One setup's measurements over all rounds.
#[derive(Default)]
struct Series {
    rates: Vec<f64>,
    costs: Vec<Cost>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn churn_once(opts: &Options) -> anyhow::Result<f64> {
    let r = churn::churn(opts.threads, opts.duration)?;
    if r.errors > 0 {
        eprintln!("    ({} connects failed)", r.errors);
    }
    Ok(r.rate())
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    crate::setup::setup()?;
    eprintln!("==> cargo build --release -p tcptrace");
    let mut build =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(exec::repo_root())
        .args(["build", "--release", "-p", "tcptrace"]);
    if !exec::inherit(&mut build)? {
        anyhow::bail!("building tcptrace failed");
    }
    let tcptrace = exec::repo_root().join("target/release/tcptrace");
    let dir = exec::repo_root().join("target/bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let old_stats = tracer::enable_bpf_stats()?;
    let result = measure(opts, &tcptrace, &dir);
    tracer::restore_bpf_stats(&old_stats);
    let report = result?;
    let path = dir.join("report.md");
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("{report}");
    eprintln!("==> report kept in {}", path.display());
    Ok(())
}

fn measure(
    opts: &Options,
    tcptrace: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "{}", scale::machine())?;
    if !opts.skip_churn {
        let setups = setups(tcptrace);
        let mut baseline = Vec::new();
        let mut series: Vec<Series> = setups.iter().map(|_| Series::default()).collect();
        for round in 1..=opts.rounds {
            eprintln!("==> round {round}/{}", opts.rounds);
            let rate = churn_once(opts)?;
            eprintln!("    untraced: {rate:.0} connections/s");
            baseline.push(rate);
            for (setup, s) in setups.iter().zip(&mut series) {
                let mut t = Running::start(setup, dir)?;
                t.mark()?;
                let rate = churn_once(opts)?;
                let cost = t.stop()?;
                eprintln!(
                    "    {}: {rate:.0} connections/s, {} events, {} lost, {:.2} s CPU",
                    setup.name, cost.events, cost.lost, cost.cpu_secs
                );
                s.rates.push(rate);
                s.costs.push(cost);
            }
        }
        churn_table(&mut md, opts, &setups, &baseline, &series)?;
    }
    writeln!(md, "{}", writers_release()?)?;
    if !opts.skip_scale {
        let per_conn = scale::memory_per_conn(tcptrace, dir, opts.conns)?;
        writeln!(md, "{per_conn}")?;
        let replay = scale::replay_throughput(tcptrace, dir, opts)?;
        writeln!(md, "{replay}")?;
    }
    Ok(md)
}

/// The writer comparison, in an optimised build of xtask (the dev profile does not optimise
/// the core).
fn writers_release() -> anyhow::Result<String> {
    eprintln!("==> JSON writers (cargo run --release -p xtask -- bench-writers)");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(exec::repo_root())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--",
            "bench-writers",
        ])
        .output()
        .context("running bench-writers")?;
    if !out.status.success() {
        anyhow::bail!(
            "bench-writers failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The writer comparison (`bench-writers`).
pub fn writers() -> String {
    wire::writers()
}

fn churn_table(
    md: &mut String,
    opts: &Options,
    setups: &[Setup],
    baseline: &[f64],
    series: &[Series],
) -> anyhow::Result<()> {
    let base = median(baseline);
    writeln!(
        md,
        "### Connection churn ({} threads, {} rounds of {:.0} s, medians)\n",
        opts.threads,
        opts.rounds,
        opts.duration.as_secs_f64()
    )?;
    writeln!(
        md,
        "| setup | connections/s | of untraced | events | lost | tracer CPU s / M events | eBPF ns / event | peak RSS MiB | output MB/s |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    writeln!(md, "| untraced | {base:.0} | 100 % | | | | | | |")?;
    for (setup, s) in setups.iter().zip(series) {
        let rate = median(&s.rates);
        let events: u64 = s.costs.iter().map(|c| c.events).sum();
        let lost: u64 = s.costs.iter().map(|c| c.lost).sum();
        let cpu: f64 = s.costs.iter().map(|c| c.cpu_secs).sum();
        let bpf: u64 = s.costs.iter().map(|c| c.bpf_ns).sum();
        let rss = s.costs.iter().map(|c| c.peak_rss).max().unwrap_or(0);
        let out: u64 = s.costs.iter().map(|c| c.out_bytes).sum();
        let secs = opts.duration.as_secs_f64() * s.costs.len() as f64;
        let per_m = |x: f64| {
            if events == 0 {
                0.0
            } else {
                x / (events as f64 / 1e6)
            }
        };
        writeln!(
            md,
            "| {} | {rate:.0} | {:.0} % | {events} | {lost} | {:.2} | {:.0} | {:.1} | {:.1} |",
            setup.name,
            100.0 * rate / base,
            per_m(cpu),
            per_m(bpf as f64) / 1e6,
            rss as f64 / (1 << 20) as f64,
            out as f64 / 1e6 / secs,
        )?;
    }
    writeln!(md)?;
    Ok(())
}
