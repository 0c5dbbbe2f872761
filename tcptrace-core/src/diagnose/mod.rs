//! Diagnoses: small pure rules that explain a finished lifecycle (or a namespace's state) by
//! the sysctls and socket options that governed it, with the kernel's arithmetic
//! ([`crate::budget`]) compared against what actually happened.
pub mod budgets;
mod close;
mod handshake;
pub mod netns;
mod open;
pub mod rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_normal;

use crate::{
    lifecycle::Conn,
    snapshot::Field,
    sysctl::{Source, Sysctls},
};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Explains normal behaviour (negotiated options, TIME_WAIT).
    Info,
    /// Something went wrong for this connection, or is about to for the namespace.
    Warning,
    /// A failure the application saw (timeout, exhaustion).
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// A number, flag or text in `observed` / `expected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Text(String),
    Ints(Vec<u64>),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v as i64)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}
impl From<Vec<u64>> for Value {
    fn from(v: Vec<u64>) -> Self {
        Self::Ints(v)
    }
}

/// One explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub rule: &'static str,
    pub severity: Severity,
    /// The governing sysctls, as the kernel prints them.
    pub sysctl: Vec<(&'static str, String)>,
    /// Socket options the application set that replace a sysctl (e.g. `TCP_KEEPIDLE`).
    pub overrides: Vec<(&'static str, String)>,
    pub observed: Vec<(&'static str, Value)>,
    pub expected: Vec<(&'static str, Value)>,
    /// Whether what happened matches the kernel's arithmetic (None: nothing to compare).
    pub agrees: Option<bool>,
    /// The sysctls could not be read in the connection's namespace: defaults were assumed.
    pub assumed_defaults: bool,
    pub message: String,
}

impl Diagnosis {
    fn new(rule: &'static str, severity: Severity, sys: &Sysctls) -> Self {
        Self {
            rule,
            severity,
            sysctl: Vec::new(),
            overrides: Vec::new(),
            observed: Vec::new(),
            expected: Vec::new(),
            agrees: None,
            assumed_defaults: sys.source == Source::Defaults,
            message: String::new(),
        }
    }
}

/// What the rules may consult beyond the connection.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The sysctls of the connection's namespace.
    pub sys: &'a Sysctls,
    /// Name of the connection's reset reason (`enum sk_rst_reason`), when known.
    pub reset_reason: Option<&'a str>,
    /// MTU of the interface holding the local address, when known.
    pub mtu: Option<u32>,
}

/// Runs every connection rule of [`rules::RULES`] at or above `min`.
pub fn diagnose(c: &Conn, inp: &Inputs, min: Severity, out: &mut Vec<Diagnosis>) {
    for r in rules::RULES.iter().filter(|r| r.severity >= min) {
        (r.check)(c, inp, out);
    }
}

/// Values within `max(abs_ms, pct %)` of each other.
fn close_enough(observed: u64, expected: u64, abs_ms: u64, pct: u64) -> bool {
    observed.abs_diff(expected) <= abs_ms.max(expected * pct / 100)
}

/// Whether `sent` retransmits over `elapsed_ms` match the schedule, with or without a tail
/// loss probe (one extra retransmit one RTO early).
fn matches_schedule(sent: u32, elapsed_ms: u64, s: &crate::budget::Schedule, rto_ms: u64) -> bool {
    let n = s.retransmits();
    (sent == n && close_enough(elapsed_ms, s.give_up_ms, 300, 10))
        || (sent == n + 1 && close_enough(elapsed_ms, s.give_up_ms + rto_ms, 300, 10))
}

/// A per-socket override in ms from a jiffies field (0 means "use the sysctl").
fn jiffies_override(c: &Conn, sys: &Sysctls, f: Field) -> Option<u64> {
    let j = c.cold().sock?.get(f).filter(|v| *v != 0)?;
    sys.jiffies_to_ms(j)
}

/// The connection's RTO when the loss began: `srtt + max(rttvar, rto_min)` ≈ srtt + rto_min.
fn first_rto_ms(c: &Conn, sys: &Sysctls) -> u64 {
    sys.rto_min_ms() + c.srtt_us().unwrap_or(0) / 1000
}

/// Whether the application had closed the socket (`SOCK_DEAD`), when the snapshot says.
fn orphan(c: &Conn) -> Option<bool> {
    c.cold().sock?.get(Field::Orphan).map(|v| v != 0)
}

fn sock_value(c: &Conn, f: Field) -> Option<u64> {
    c.cold().sock?.get(f).filter(|v| *v != 0)
}

/// "10.0.0.2:80" or "[fd00::2]:80".
fn peer(c: &Conn) -> String {
    if c.raddr.is_ipv6() {
        format!("[{}]:{}", c.raddr, c.rport)
    } else {
        format!("{}:{}", c.raddr, c.rport)
    }
}
