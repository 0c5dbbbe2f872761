//! tcptrace: an always-on eBPF TCP tracer. `main` parses flags, loads the tracer, runs the live
//! loop and maps every failure to one line on stderr and a non-zero exit (a closed output pipe
//! is a normal end).
mod augment;
mod cgroups;
mod diag;
mod flags;
mod lab;
mod loader;
mod logging;
mod namespaces;
mod pipeline;
mod replay;
mod run;
mod select;
mod sink;
mod stats;
mod sysctl_cmd;

use std::{io, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _, error::ErrorKind};

use crate::{
    augment::Augmenter,
    flags::{Args, Config},
    pipeline::Pipeline,
    sink::Backpressure,
};

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn wall_clock() -> tcptrace_core::clock::WallClock {
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    let real = clock_ns(libc::CLOCK_REALTIME);
    tcptrace_core::clock::WallClock::from_samples(real, mono)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(cfg: Config) -> anyhow::Result<()> {
    match &cfg.action {
        flags::Action::Sysctl => return sysctl_cmd::run(&cfg),
        flags::Action::Lab(name) => return lab::run(&cfg, name.as_deref()),
        _ => {}
    }
    if let Some(path) = &cfg.replay {
        let mut sinks = sink::build(&cfg, Backpressure::Block)?;
        let mut pipeline = Pipeline::new(
            cfg.table.clone(),
            cfg.conn_filter.clone(),
            cfg.diagnose,
            &mut sinks,
        );
        let (stats, damage) = replay::replay(path, &mut pipeline)?;
        return match damage {
            None => {
                log::info!("{stats}");
                Ok(())
            }
            Some(e) if is_broken_pipe(&e) => Err(e),
            // One line: what is wrong, and how much came before it.
            Some(e) => Err(anyhow::anyhow!(
                "{e:#} ({} replayed before it)",
                sink::count(stats.total() + stats.facts, "event")
            )),
        };
    }
    let mut sinks = sink::build(&cfg, Backpressure::Drop)?;
    let stats = trace(&cfg, &mut sinks, None, None)?;
    log::info!("{stats}");
    Ok(())
}

/// Hands the heap freed after loading (parsed BTF, the eBPF object's copies) back to the
/// system, so a long-running tracer's resident memory is its tables, not its start-up.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; no live allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads the tracer and runs the live loop into `sink` until a signal, `--duration`, or `stop`.
pub fn trace(
    cfg: &Config,
    sink: &mut sink::Fanout,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
    attached: Option<std::sync::mpsc::Sender<()>>,
) -> anyhow::Result<stats::Stats> {
    let tracer = loader::load(cfg, sink::Sink::interest(sink).events)?;
    // The lab builds namespaces and runs iptables while it traces: it keeps its privileges.
    if cfg.action == flags::Action::Trace {
        loader::drop_after_attach()?;
    }
    release_startup_memory();
    for w in &tracer.warnings {
        log::warn!("{w}");
    }
    let hooks: Vec<String> = tracer
        .attached
        .iter()
        .map(|(tp, how)| format!("{tp}/{}", how.name()))
        .collect();
    let mut table = cfg.table.clone();
    for (code, name) in &tracer.reset_reasons {
        if tcptrace_core::lifecycle::table::ABORT_REASON_NAMES.contains(&name.as_str()) {
            table.abort_reasons.push(*code);
        }
    }
    let mut pipeline = Pipeline::new(table, cfg.conn_filter.clone(), cfg.diagnose, sink);
    pipeline.set_clock(wall_clock());
    for (code, name) in &tracer.reset_reasons {
        pipeline.learn_reason(*code, name);
    }
    let hz = diag::kernel_hz();
    pipeline.set_hz(hz);
    pipeline.set_kernel_knobs(|name| {
        std::path::Path::new("/proc/sys")
            .join(tcptrace_core::sysctl::proc_path(name))
            .exists()
    });
    let with_netns = tracer.snap_available();
    let mut augment = Augmenter::new(with_netns, cfg.conn_filter.netns.clone(), cfg.filter);
    augment.set_cgroup_filter(cfg.cgroup.clone());
    let mut cgroups = cgroups::Cgroups::new();
    let mut namespaces = namespaces::Namespaces::new(
        with_netns,
        with_netns && cfg.diagnose.is_some(),
        hz,
        cfg.conn_filter.netns.clone(),
    );
    log::info!(
        "attached {}; {}; tracing (Ctrl-C to stop)",
        hooks.join(" "),
        cgroups.describe()
    );
    let missing = tracer.quirks.missing();
    if !missing.is_empty() {
        log::info!("this kernel does not report {}", missing.join("; "));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::run(
        tracer,
        &mut pipeline,
        &mut augment,
        &mut namespaces,
        &mut cgroups,
        run::Control {
            duration: cfg.duration,
            reopen_on_hup: cfg.output.is_some(),
            stop,
            seeded: attached,
        },
    ))
}

/// Parses the command line; `lab --help` lists the scenarios. Help and version are printed
/// as clap renders them; a usage error is one `tcptrace: ...` line and status 2.
fn parse_args() -> Result<Args, ExitCode> {
    let cmd = Args::command().mut_subcommand("lab", |c| c.after_help(lab::scenario_list()));
    let parsed = cmd.clone().try_get_matches().and_then(|m| {
        trace_flag_before_subcommand(&cmd, &m)?;
        Args::from_arg_matches(&m)
    });
    parsed.map_err(|e| {
        if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        let what = first.strip_prefix("error: ").unwrap_or(first);
        // The subcommand whose help to see, if one was named.
        let sub = std::env::args()
            .skip(1)
            .find(|a| Args::command().find_subcommand(a).is_some())
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        log::error!("{what} (see tcptrace{sub} --help)");
        ExitCode::from(2)
    })
}

/// Tracing's flags are not a subcommand's: `tcptrace --events replay F` is a usage error
/// (global flags such as `--log-level` may stand anywhere).
fn trace_flag_before_subcommand(
    cmd: &clap::Command,
    m: &clap::ArgMatches,
) -> Result<(), clap::Error> {
    let Some(sub) = m.subcommand_name() else {
        return Ok(());
    };
    for arg in cmd.get_arguments().filter(|a| !a.is_global_set()) {
        if m.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine) {
            let name = arg
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| arg.get_id().to_string());
            return Err(cmd.clone().error(
                ErrorKind::ArgumentConflict,
                format!("{name} before `{sub}`: a subcommand's flags come after its name"),
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    logging::init(false, log::LevelFilter::Info);
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let result = Config::from_args(args).and_then(|cfg| {
        logging::init(cfg.format == flags::Format::Json, cfg.log_level);
        run(cfg)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
