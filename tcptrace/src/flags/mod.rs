//! Command-line flags: clap parses them (`args`), `config` validates them into what the rest of
//! the program needs, so nothing past this module sees raw strings.
mod args;
mod config;

pub use args::Args;
pub use config::{Action, Config, Format, TracepointMode};
