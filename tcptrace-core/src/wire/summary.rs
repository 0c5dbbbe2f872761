//! `{"type":"summary",...}`: one row of a summary table (`--summary`), written and read as one
//! serde type. A table is several lines with the same `period`, `start` and `ts_ns`: the
//! `all` row first, then each grouping's rows, most connections first, and its `other` row.
use serde::{Deserialize, Serialize};

use super::{namespace::time_text, ordered};
use crate::{
    context::Context,
    summary::{By, Histogram, Key, Row},
};

/// Which stretch of time a table covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Records that ended in one `--summary` interval.
    Interval,
    /// Every record of the run (printed at exit).
    Run,
}

/// Percentiles of a set of durations, in milliseconds (estimates within 1.6 %).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// How many connections were measured.
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
}

impl Quantiles {
    /// p50 and p99 of `h` (None when it is empty).
    pub fn of(h: &Histogram) -> Option<Self> {
        // Milliseconds with three decimals, like connection records.
        let ms = |q| h.quantile(q).map(|ns| (ns as f64 / 1e3).round() / 1e3);
        Some(Self {
            n: h.count(),
            p50: ms(0.5)?,
            p99: ms(0.99)?,
        })
    }
}

/// One row of a summary table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// When the period ends (the run: when it stopped).
    pub ts_ns: u64,
    pub time: String,
    /// When the period starts.
    pub start_ns: u64,
    pub start: String,
    pub period: Period,
    /// `all`, `destination`, `process` or `unit`.
    pub by: String,
    /// The group: `10.0.0.1:443` (a client's destination), `:80` (a server's port), a command
    /// name, a container or unit; null for `all`, the `other` row, and an unknown owner or
    /// cgroup.
    pub key: Option<String>,
    /// Destinations: `client`, `server` or `unknown` (the side the records were on).
    pub role: Option<String>,
    /// The row of groups beyond the cap.
    pub other: bool,
    pub conns: u64,
    /// Connections that ended timeout, refused, reset_sent, reset_received or aborted.
    pub failed: u64,
    /// Connections by how they ended (only ends that occurred).
    #[serde(with = "ordered")]
    pub ends: Vec<(String, u64)>,
    pub retransmits: u64,
    /// Clients' SYN_SENT to ESTABLISHED (null when none completed a handshake).
    pub connect_ms: Option<Quantiles>,
    /// Lifetimes of the connections that ended (null when none did).
    pub duration_ms: Option<Quantiles>,
}

/// The stretch of time and which table.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: u64,
    pub period: Period,
}

impl SummaryLine {
    /// The line of `row`; `key` None for `all` and `other`.
    pub fn new(ctx: &Context, span: Span, by: By, key: Option<&Key>, row: &Row) -> Self {
        Self {
            ts_ns: span.end_ns,
            time: time_text(ctx, span.end_ns),
            start_ns: span.start_ns,
            start: time_text(ctx, span.start_ns),
            period: span.period,
            by: by.name().to_string(),
            key: key.and_then(|k| k.name.clone()),
            role: key.and_then(|k| k.role).map(str::to_string),
            other: key.is_none() && by != By::All,
            conns: row.conns,
            failed: row.failed(),
            ends: row.ends().map(|(e, n)| (e.name().to_string(), n)).collect(),
            retransmits: row.retransmits,
            connect_ms: Quantiles::of(&row.connect),
            duration_ms: Quantiles::of(&row.duration),
        }
    }
}
