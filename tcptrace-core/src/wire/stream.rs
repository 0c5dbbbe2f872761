//! The lines about the stream itself: its header (`stream`, first line of every JSON stream,
//! carrying the schema version), kernel-side losses (`lost`) and the daemon's own messages
//! (`log`, written to stderr when the output is JSON).
use serde::{Deserialize, Serialize};

use super::namespace::time_text;
use crate::context::Context;

/// Version of the line schema. Bumped when a member changes meaning or disappears (members are
/// added without a bump; readers ignore what they do not know).
pub const SCHEMA_VERSION: u32 = 1;

/// What a stream holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Every event as it happened, with the facts `replay` needs (`--events`).
    Events,
    /// One record per connection, diagnoses and findings (the default).
    Records,
}

/// `{"type":"stream",...}`: the first line of a JSON stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamHeader {
    pub ts_ns: u64,
    pub time: String,
    pub schema: u32,
    pub tool: String,
    pub version: String,
    pub content: Content,
}

impl StreamHeader {
    pub fn new(ctx: &Context, ts_ns: u64, content: Content) -> Self {
        Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            schema: SCHEMA_VERSION,
            tool: "tcptrace".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            content,
        }
    }
}

/// Why kernel events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostCause {
    /// The ring buffer was full: the reader fell behind (a larger `--ring-buffer` helps).
    RingFull,
    /// The kernel skipped a program run because another of ours was running on that CPU.
    Recursion,
}

impl LostCause {
    pub const ALL: [Self; 2] = [Self::RingFull, Self::Recursion];

    pub fn name(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::Recursion => "recursion",
        }
    }
}

/// `{"type":"lost",...}`: `count` kernel events of `cause` were lost since the last report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LostLine {
    pub ts_ns: u64,
    #[serde(default)]
    pub time: String,
    pub count: u64,
    /// Absent in recordings older than the cause: those counted full ring buffers only.
    #[serde(default = "ring_full")]
    pub cause: LostCause,
}

fn ring_full() -> LostCause {
    LostCause::RingFull
}

impl LostLine {
    pub fn new(ctx: &Context, ts_ns: u64, count: u64, cause: LostCause) -> Self {
        Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            count,
            cause,
        }
    }
}

/// Severity of a daemon message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// `{"type":"log",...}`: one of the daemon's own messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: String,
    pub level: Level,
    pub message: String,
}
