//! `cargo xtask`: the two README commands (`run`, `test`) and the `setup` both start with.
mod exec;
mod setup;
mod tasks;

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
    /// Set up, then cargo fmt --check, clippy -D warnings and every test (privileged ones need root).
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
