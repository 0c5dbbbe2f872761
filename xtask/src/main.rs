//! `cargo xtask`: the two README commands (`run`, `test`) and the `setup` both start with.
mod bench;
mod churn;
mod docs;
mod exec;
mod rerun;
mod setup;
mod tasks;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "tcptrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (rust-src, LLVM dev, bpf-linker, test tools, tracefs).
    Setup,
    /// Set up, build in release mode and run tcptrace with ARGS (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Loopback connection churn (connect, accept, close) for a fixed time; prints the rate.
    Churn {
        /// Client threads, each with an accept thread (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// The JSON writer comparison of `bench`, alone (run by `bench` in release mode).
    #[command(hide = true)]
    BenchWriters,
    /// Hold N loopback connections open (both ends) until stdin closes.
    Hold {
        #[arg(default_value_t = 100_000)]
        conns: usize,
    },
    /// Benchmarks: churn untraced vs under tcptrace and tcpstates, memory per held
    /// connection, replay throughput (as root). Prints a Markdown report.
    Bench {
        /// Interleaved rounds over all setups (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of churn per measurement.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Client threads of the churn, each with an accept thread (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Connections held open for the memory figure.
        #[arg(long, default_value_t = 100_000)]
        conns: usize,
        /// Skip the churn comparison.
        #[arg(long)]
        skip_churn: bool,
        /// Skip the memory and replay figures.
        #[arg(long)]
        skip_scale: bool,
        /// Measure this tcptrace binary instead of building the checkout's.
        #[arg(long)]
        tcptrace: Option<std::path::PathBuf>,
    },
    /// Man pages and shell completions of tcptrace, from its clap definitions, into
    /// target/dist-docs/ (man/tcptrace.1 and one page per subcommand, completions/ for bash,
    /// zsh, fish and elvish).
    DistDocs {
        /// Write here instead.
        #[arg(long, default_value = "target/dist-docs")]
        out: std::path::PathBuf,
    },
    /// The privileged suite on each pinned Debian kernel under qemu (KVM when available):
    /// one line per kernel with passed/failed counts.
    VmTest {
        /// `6.1`, `6.12` or `all`.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// `kvm` or `tcg` (default: KVM when /dev/kvm works on a CPU with hardware
        /// virtualization, else TCG).
        #[arg(long)]
        accel: Option<String>,
        /// Extra arguments for every test binary in the guest (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Inside a vm-test guest: its init (mounts, modules, the suite, power-off).
    #[command(hide = true)]
    VmGuest,
    /// Set up, then cargo fmt --check, clippy -D warnings, every test (privileged ones need
    /// root), the replay fuzz target for 60 s and vm-test on every pinned kernel.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        skip_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Run { args } => tasks::run(&args),
        Task::Test { skip_lint, args } => tasks::test(skip_lint, &args),
        Task::VmTest {
            kernel,
            accel,
            args,
        } => setup::setup().and_then(|()| {
            vm::run(&vm::Options {
                kernel,
                accel: vm::qemu::parse_accel(accel.as_deref())?,
                test_args: args,
            })
        }),
        Task::VmGuest => vm::guest::run(),
        Task::Churn { threads, duration } => churn::churn(
            threads.unwrap_or_else(churn::cpus),
            std::time::Duration::from_secs_f64(duration),
        )
        .map(|r| {
            println!(
                "{:.0} connections/s ({} in {:.2} s, {} failed)",
                r.rate(),
                r.connections,
                r.secs,
                r.errors
            );
            ExitCode::SUCCESS
        }),
        Task::Bench {
            rounds,
            duration,
            threads,
            conns,
            skip_churn,
            skip_scale,
            tcptrace,
        } => bench::run(&bench::Options {
            rounds: rounds.max(1),
            duration: std::time::Duration::from_secs_f64(duration),
            threads: threads.unwrap_or_else(churn::cpus),
            conns,
            skip_churn,
            skip_scale,
            tcptrace,
        })
        .map(|()| ExitCode::SUCCESS),
        Task::BenchWriters => {
            print!("{}", bench::writers());
            Ok(ExitCode::SUCCESS)
        }
        Task::Hold { conns } => churn::hold(conns).map(|()| ExitCode::SUCCESS),
        Task::DistDocs { out } => docs::write_all(&out).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
