//! `cargo xtask bench`: the loopback churn untraced and under each tracer setup (tcptrace's
//! modes and sinks, libbpf-tools' `tcpstates`), interleaved over rounds so drift hits all alike;
//! then the scale figures (memory per held connection, replay throughput). Prints a Markdown
//! report and keeps it in `target/bench/report.md`. Measures; never fails on the numbers.
mod complete;
mod metrics;
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
    /// A tcptrace binary to measure instead of building this checkout's (e.g. an older commit).
    pub tcptrace: Option<PathBuf>,
}

fn setups(tcptrace: &std::path::Path, metrics_port: u16) -> Vec<Setup> {
    let t = |name, args: &[&str], sink| Setup::tcptrace(name, tcptrace, args, sink);
    vec![
        t("lifecycle-text-null", &[], Sink::DevNull),
        t("lifecycle-json-null", &["--format", "json"], Sink::DevNull),
        t("lifecycle-text-file", &[], Sink::File),
        t("lifecycle-json-file", &["--format", "json"], Sink::File),
        // Beside records-only: the same with metrics served and scraped every second, and
        // metrics alone.
        t(
            "lifecycle-json-file-metrics",
            &["--format", "json"],
            Sink::File,
        )
        .with_metrics(metrics_port),
        t("metrics-only", &["--format", "none"], Sink::DevNull).with_metrics(metrics_port),
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
            scrape: None,
        },
    ]
}

/// One setup's measurements over all rounds.
#[derive(Default)]
struct Series {
    rates: Vec<f64>,
    costs: Vec<Cost>,
    /// Connections the churn made while this setup traced.
    made: u64,
    /// Its records of them (JSON setups), summed over rounds.
    records: Option<complete::Completeness>,
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

fn churn_once(opts: &Options) -> anyhow::Result<churn::ChurnResult> {
    let r = churn::churn(opts.threads, opts.duration)?;
    if r.errors > 0 {
        eprintln!("    ({} connects failed)", r.errors);
    }
    Ok(r)
}

/// The churn's connection records a setup wrote (lifecycle JSON) or recorded (raw, replayed).
fn records_of(
    setup: &Setup,
    out: &std::path::Path,
    tcptrace: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
) -> anyhow::Result<Option<complete::Completeness>> {
    if setup.kind != Kind::Tcptrace || setup.sink != Sink::File {
        return Ok(None);
    }
    let has = |a: &str| setup.args.iter().any(|x| x == a);
    if has("raw") {
        complete::of_recording(tcptrace, out, port, dir).map(Some)
    } else if has("json") && !has("--events") {
        complete::of_json(out, port).map(Some)
    } else {
        Ok(None)
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    crate::setup::setup()?;
    let tcptrace = match &opts.tcptrace {
        Some(path) => path.clone(),
        None => {
            eprintln!("==> cargo build --release -p tcptrace");
            let mut build = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            build
                .current_dir(exec::repo_root())
                .args(["build", "--release", "-p", "tcptrace"]);
            if !exec::inherit(&mut build)? {
                anyhow::bail!("building tcptrace failed");
            }
            exec::repo_root().join("target/release/tcptrace")
        }
    };
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
    if let Some(bin) = &opts.tcptrace {
        writeln!(
            md,
            "tcptrace measured: `{}` (not this checkout's build)\n",
            bin.display()
        )?;
    }
    writeln!(md, "Load average at the start: {}\n", load_average())?;
    if !opts.skip_churn {
        let setups = setups(tcptrace, metrics::free_port()?);
        let mut baseline = Vec::new();
        let mut series: Vec<Series> = setups.iter().map(|_| Series::default()).collect();
        for round in 1..=opts.rounds {
            eprintln!("==> round {round}/{}", opts.rounds);
            let rate = churn_once(opts)?.rate();
            eprintln!("    untraced: {rate:.0} connections/s");
            baseline.push(rate);
            for (setup, s) in setups.iter().zip(&mut series) {
                let mut t = Running::start(setup, dir)?;
                t.mark()?;
                let churned = churn_once(opts)?;
                let out = t.out.clone();
                let cost = t.stop()?;
                let rate = churned.rate();
                eprintln!(
                    "    {}: {rate:.0} connections/s, {} events, {} lost, {} skipped runs ({} caught), {:.2} s CPU",
                    setup.name, cost.events, cost.lost, cost.skipped, cost.caught, cost.cpu_secs
                );
                if let Some(c) = records_of(setup, &out, tcptrace, churned.port, dir)? {
                    eprintln!(
                        "      {} records of {} connections, {} with a gap, {} open at exit",
                        c.records, churned.connections, c.gaps, c.open
                    );
                    s.records.get_or_insert_default().add(c);
                }
                s.made += churned.connections;
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
        let labels = metrics::label_memory(tcptrace, dir)?;
        writeln!(md, "{labels}")?;
    }
    Ok(md)
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures: others' work on a shared machine skews rates.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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
    let mut losses = String::new();
    let mut scraped = String::new();
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
        if setup.scrape.is_some() {
            let answered: u64 = s.costs.iter().map(|c| c.scrapes.answered).sum();
            let failed: u64 = s.costs.iter().map(|c| c.scrapes.failed).sum();
            let bytes = s
                .costs
                .iter()
                .map(|c| c.scrapes.max_bytes)
                .max()
                .unwrap_or(0);
            let slowest = s
                .costs
                .iter()
                .map(|c| c.scrapes.max_secs)
                .fold(0.0, f64::max);
            writeln!(
                scraped,
                "| {} | {answered} | {failed} | {:.1} | {:.1} |",
                setup.name,
                bytes as f64 / 1e3,
                slowest * 1e3
            )?;
        }
        let skipped: u64 = s.costs.iter().map(|c| c.skipped).sum();
        let caught: u64 = s.costs.iter().map(|c| c.caught).sum();
        let (records, gaps, open) = s.records.map_or(Default::default(), |c| {
            (
                c.records.to_string(),
                c.gaps.to_string(),
                c.open.to_string(),
            )
        });
        writeln!(
            losses,
            "| {} | {} | {records} | {gaps} | {open} | {lost} | {skipped} | {caught} | {:.1} | {:.1} |",
            setup.name,
            s.made,
            per_m(skipped as f64),
            per_m(lost as f64),
        )?;
    }
    writeln!(
        md,
        "\nLoad average at the end of the churn: {}\n",
        load_average()
    )?;
    writeln!(
        md,
        "### Losses and records\n\n\
         Runs the kernel skipped (`recursion_misses` of the programs whose runs are events; a \
         program is not run nested in itself, and a classic tracepoint program not while any \
         other runs on that CPU), those tcptrace caught with its nested-run program, the events \
         each tracer says it lost, and the churn's connection records: lifecycle JSON as written, \
         raw recordings rebuilt by `tcptrace replay` (two records per connection; a gap is a \
         record with a `missed_*` or `lost_events` note; `open`: still closing when tracing \
         stopped, right after the churn).\n\n\
         | setup | connections made | records | with a gap | open | lost | skipped runs | caught | skipped / M events | lost / M events |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{losses}"
    )?;
    if !scraped.is_empty() {
        writeln!(
            md,
            "\n### Metrics scrapes\n\n\
             `GET /metrics` every second during the churn (OpenMetrics, no optional labels), as \
             a Prometheus server would:\n\n\
             | setup | answered | failed | largest KB | slowest ms |\n|---|---:|---:|---:|---:|\n{scraped}"
        )?;
    }
    Ok(())
}
