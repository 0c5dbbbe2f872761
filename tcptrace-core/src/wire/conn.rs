//! The `conn` line: one finished connection lifecycle and its diagnoses. The fast writer and
//! [`ConnLine`], the same line read back, side by side.
use std::{collections::BTreeMap, net::IpAddr};

use serde::Deserialize;

use super::{
    diagnosis::{self, DiagnosisLine},
    json::{
        head, ident, key, null, num, object, opt_bool, opt_ms, opt_num, push_hex, push_int,
        push_ip, push_name, push_str, push_time, text,
    },
};
use crate::{
    context::Context,
    diagnose::Diagnosis,
    lifecycle::{Conn, Owner},
    tcp::errno_name,
};

fn owner(buf: &mut Vec<u8>, k: &str, o: Option<Owner>) {
    match o {
        Some(o) => {
            key(buf, k);
            buf.extend_from_slice(b"{\"pid\":");
            push_int(buf, o.pid);
            buf.extend_from_slice(b",\"comm\":");
            push_str(buf, o.comm.bytes());
            buf.push(b'}');
        }
        None => null(buf, k),
    }
}

/// `,"netns_name":"…"`, or null when the namespace has no recorded name.
pub(super) fn netns_name(buf: &mut Vec<u8>, ctx: &Context, netns: Option<u32>) {
    match netns.and_then(|ns| ctx.netns_name(ns)) {
        Some(n) => text(buf, "netns_name", n),
        None => null(buf, "netns_name"),
    }
}

/// `{"a":1,"b":2}` from `(name, count)` pairs.
fn counts<'a>(buf: &mut Vec<u8>, k: &str, items: impl Iterator<Item = (&'a str, u16)>) {
    object(buf, k, items, push_int);
}

/// Writes one connection record (without the trailing newline).
pub fn write(buf: &mut Vec<u8>, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) {
    // Most records fit: one capacity check instead of one per member.
    buf.reserve(1024);
    let end_ns = c.end_ns.unwrap_or(c.last_ns);
    head(buf, ctx, "conn", end_ns);
    key(buf, "sk");
    push_hex(buf, c.sk);
    opt_num(buf, "netns", c.netns);
    netns_name(buf, ctx, c.netns);
    match c.owner {
        Some(o) => {
            num(buf, "pid", o.pid);
            key(buf, "comm");
            push_str(buf, o.comm.bytes());
        }
        None => buf.extend_from_slice(b",\"pid\":null,\"comm\":null"),
    }
    super::cgroup::member(buf, ctx, c.cgroup.map(|id| id.get()));
    ident(buf, "family", c.family.name());
    key(buf, "laddr");
    push_ip(buf, &c.laddr);
    num(buf, "lport", c.lport);
    key(buf, "raddr");
    push_ip(buf, &c.raddr);
    num(buf, "rport", c.rport);
    num(buf, "id", c.id);
    ident(buf, "role", c.role.name());
    match c.start_ns {
        Some(ns) => {
            key(buf, "start");
            push_time(buf, ctx, ns);
        }
        None => null(buf, "start"),
    }
    opt_ms(buf, "duration_ms", c.duration_ns());
    key(buf, "states");
    buf.push(b'[');
    for (i, (state, ns)) in c.spans().enumerate() {
        buf.extend_from_slice(if i > 0 {
            b",{\"state\":"
        } else {
            b"{\"state\":"
        });
        push_name(buf, state.name());
        opt_ms(buf, "ms", ns);
        buf.push(b'}');
    }
    buf.push(b']');
    let cold = c.cold();
    let r = &cold.retransmits;
    if r.total == 0 && r.failed == 0 {
        buf.extend_from_slice(
            b",\"retransmits\":{\"total\":0,\"failed\":0,\"by_state\":{},\"by_kind\":{}}",
        );
    } else {
        key(buf, "retransmits");
        buf.extend_from_slice(b"{\"total\":");
        push_int(buf, r.total);
        num(buf, "failed", r.failed);
        counts(buf, "by_state", r.states().map(|(s, n)| (s.name(), n)));
        counts(buf, "by_kind", r.kinds().map(|(k, n)| (k.name(), n)));
        buf.push(b'}');
    }
    key(buf, "resets");
    buf.extend_from_slice(b"{\"sent\":");
    push_int(buf, cold.resets_sent);
    num(buf, "received", cold.resets_received);
    match cold.reset_reason {
        Some(code) => match ctx.reason_name(code) {
            Some(n) => text(buf, "reason", n),
            None => num(buf, "reason", code),
        },
        None => null(buf, "reason"),
    }
    buf.push(b'}');
    match cold.error {
        Some(e) => match errno_name(e) {
            Some(n) => {
                key(buf, "error");
                push_name(buf, n);
            }
            None => num(buf, "error", e),
        },
        None => null(buf, "error"),
    }
    opt_num(buf, "bytes_sent", c.bytes_sent());
    opt_num(buf, "bytes_received", c.bytes_received());
    opt_ms(buf, "srtt_ms", c.srtt_us().map(|us| us * 1000));
    ident(buf, "end", c.end.map_or("open", |e| e.name()));
    match cold.time_wait {
        Some((state, timer)) => {
            ident(buf, "time_wait_state", state.name());
            opt_num(buf, "time_wait_ms", timer);
        }
        None => buf.extend_from_slice(b",\"time_wait_state\":null,\"time_wait_ms\":null"),
    }
    let o = &c.options;
    key(buf, "options");
    buf.extend_from_slice(b"{\"mss\":");
    match o.mss {
        Some(m) => push_int(buf, m),
        None => buf.extend_from_slice(b"null"),
    }
    opt_num(buf, "snd_wscale", o.snd_wscale);
    opt_num(buf, "rcv_wscale", o.rcv_wscale);
    opt_bool(buf, "sack", o.sack);
    opt_bool(buf, "timestamps", o.timestamps);
    buf.push(b'}');
    owner(buf, "closer", cold.closer);
    key(buf, "notes");
    buf.push(b'[');
    for (i, n) in c.note_names().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_name(buf, n);
    }
    buf.push(b']');
    diagnosis::write_list(buf, diagnoses);
    buf.push(b'}');
}

/// One `{"state","ms"}` of a record's timeline.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StateSpan {
    pub state: String,
    pub ms: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RetransmitCounts {
    pub total: u32,
    pub failed: u32,
    pub by_state: BTreeMap<String, u32>,
    pub by_kind: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ResetCounts {
    pub sent: u32,
    pub received: u32,
    /// The reason's name, or its number when the name is unknown.
    pub reason: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Options {
    pub mss: Option<u32>,
    pub snd_wscale: Option<u8>,
    pub rcv_wscale: Option<u8>,
    pub sack: Option<bool>,
    pub timestamps: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

/// A `conn` line read back: the schema of connection records (README.md documents it).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ConnLine {
    pub ts_ns: u64,
    pub time: String,
    pub sk: String,
    pub netns: Option<u32>,
    /// Absent in records written before namespace names were.
    #[serde(default)]
    pub netns_name: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Absent in records written before cgroups were.
    #[serde(default)]
    pub cgroup: Option<super::cgroup::CgroupMember>,
    pub family: String,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub id: u64,
    pub role: String,
    pub start: Option<String>,
    pub duration_ms: Option<f64>,
    pub states: Vec<StateSpan>,
    pub retransmits: RetransmitCounts,
    pub resets: ResetCounts,
    /// Errno name, or its number when the name is unknown.
    pub error: Option<serde_json::Value>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub srtt_ms: Option<f64>,
    pub end: String,
    pub time_wait_state: Option<String>,
    pub time_wait_ms: Option<u32>,
    pub options: Options,
    pub closer: Option<Process>,
    pub notes: Vec<String>,
    pub diagnosis: Vec<DiagnosisLine>,
}
