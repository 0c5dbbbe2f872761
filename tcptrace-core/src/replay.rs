//! Reads back the JSON lines `tcptrace --events --format json` writes, as [`Event`]s, so a
//! recorded stream goes through the same table as live tracing.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::Deserialize;

use crate::{
    clock::parse_rfc3339,
    diagnose::netns::{Listener, NetnsSample},
    event::{Comm, Event, EventKind, Family, ResetDirection},
    snapshot::{Field, SockSnapshot},
    sysctl::{Source, Sysctls},
    tcp::{SegmentKind, TcpState, errno_from_name},
};

/// Why a line could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("bad {0} value")]
    Field(&'static str),
}

/// What one line held. (`Event` is large, but lines are consumed one at a time.)
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Line {
    Event(Event),
    /// The kernel dropped `count` records here.
    Lost {
        ts_ns: u64,
        count: u64,
    },
    /// The sysctls of a namespace as read then (`sysctl` lines).
    Sysctl {
        netns: u32,
        sysctls: Sysctls,
    },
    /// A periodic look at a namespace (`netns_sample` lines).
    NetnsSample(NetnsSample),
    /// What a cgroup id's path was (`cgroup` lines); null when it could not be resolved.
    Cgroup {
        ts_ns: u64,
        id: u64,
        path: Option<String>,
    },
    /// A record type replay does not consume (e.g. `conn`).
    Other,
}

/// One parsed line plus the context it carries (wall time, reset reason name).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub line: Line,
    /// `time` minus `ts_ns`: the recording host's wall-clock offset.
    pub clock_offset_ns: Option<i128>,
    /// `(reason_code, reason)` of a reset.
    pub reason: Option<(u32, String)>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    ts_ns: Option<u64>,
    #[serde(borrow)]
    time: Option<&'a str>,
    #[serde(borrow)]
    sk: Option<&'a str>,
    netns: Option<u32>,
    cgroup_id: Option<u64>,
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<String>,
    #[serde(borrow)]
    family: Option<&'a str>,
    laddr: Option<IpAddr>,
    lport: Option<u16>,
    raddr: Option<IpAddr>,
    rport: Option<u16>,
    #[serde(borrow)]
    old: Option<&'a str>,
    #[serde(borrow)]
    new: Option<&'a str>,
    #[serde(borrow)]
    state: Option<&'a str>,
    #[serde(borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    kind_from: Option<&'a str>,
    #[serde(borrow)]
    listener: Option<&'a str>,
    #[serde(borrow)]
    direction: Option<&'a str>,
    reason: Option<String>,
    reason_code: Option<u32>,
    #[serde(borrow)]
    errno: Option<&'a str>,
    errno_code: Option<i32>,
    timer_ms: Option<u32>,
    at_exit: Option<bool>,
    sock: Option<HashMap<&'a str, serde_json::Value>>,
    count: Option<u64>,
    id: Option<u64>,
    path: Option<String>,
}

fn hex(s: Option<&str>, what: &'static str) -> Result<u64, ReplayError> {
    let s = s.ok_or(ReplayError::Field(what))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| ReplayError::Field(what))
}

fn state(s: Option<&str>, what: &'static str) -> Result<TcpState, ReplayError> {
    s.and_then(TcpState::from_name)
        .ok_or(ReplayError::Field(what))
}

fn errno(raw: &Raw) -> Result<i32, ReplayError> {
    raw.errno_code
        .or_else(|| raw.errno.and_then(errno_from_name))
        .ok_or(ReplayError::Field("errno"))
}

fn sock(map: &Option<HashMap<&str, serde_json::Value>>) -> Option<SockSnapshot> {
    let map = map.as_ref()?;
    let mut s = SockSnapshot::default();
    for (k, v) in map {
        let Some(f) = Field::from_name(k) else {
            continue;
        };
        let v = match v {
            serde_json::Value::Bool(b) => Some(u64::from(*b)),
            serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|i| i as u64)),
            _ => None,
        };
        if let Some(v) = v {
            s.set(f, v);
        }
    }
    Some(s)
}

fn kind(raw: &Raw) -> Result<EventKind, ReplayError> {
    let seg = || {
        raw.kind
            .and_then(SegmentKind::from_name)
            .ok_or(ReplayError::Field("kind"))
    };
    let opt_state = || raw.state.and_then(TcpState::from_name);
    Ok(match raw.ty {
        "state" => EventKind::State {
            old: state(raw.old, "old")?,
            new: state(raw.new, "new")?,
            sock: sock(&raw.sock),
        },
        "retransmit" if raw.listener.is_some() => EventKind::SynAckRetransmit {
            listener: hex(raw.listener, "listener")?,
        },
        "retransmit" => EventKind::Retransmit {
            state: opt_state(),
            kind: seg()?,
            from_flags: raw.kind_from == Some("flags"),
        },
        "retransmit_failed" => EventKind::RetransmitFailed {
            state: opt_state(),
            kind: seg()?,
            from_flags: raw.kind_from == Some("flags"),
            errno: errno(raw)?,
        },
        "reset" => EventKind::Reset {
            direction: match raw.direction {
                Some("sent") => ResetDirection::Sent,
                Some("received") => ResetDirection::Received,
                _ => return Err(ReplayError::Field("direction")),
            },
            state: opt_state(),
            reason: raw.reason_code,
        },
        "error" => EventKind::Error {
            errno: errno(raw)?,
            state: opt_state(),
        },
        "timewait" => EventKind::TimeWait {
            state: opt_state(),
            timer_ms: raw.timer_ms,
        },
        "request_gone" => EventKind::RequestGone,
        "existing" => EventKind::Existing {
            state: state(raw.state, "state")?,
            at_exit: raw.at_exit.unwrap_or(false),
            sock: sock(&raw.sock),
        },
        _ => return Err(ReplayError::Field("type")),
    })
}

const EVENT_TYPES: [&str; 8] = [
    "state",
    "retransmit",
    "retransmit_failed",
    "reset",
    "error",
    "timewait",
    "request_gone",
    "existing",
];

#[derive(Deserialize)]
struct RawSysctl {
    netns: u32,
    hz: Option<u32>,
    source: Option<String>,
    values: HashMap<String, String>,
}

#[derive(Deserialize)]
struct RawDest {
    raddr: IpAddr,
    rport: u16,
    count: u64,
}

#[derive(Deserialize)]
struct RawSample {
    netns: u32,
    ts_ns: u64,
    #[serde(default)]
    tcpext: HashMap<String, u64>,
    #[serde(default)]
    time_wait_total: u64,
    #[serde(default)]
    time_wait_by_dest: Vec<RawDest>,
    #[serde(default)]
    listeners: Vec<Listener>,
}

fn namespace_line(ty: &str, text: &str) -> Result<Line, ReplayError> {
    let bad = |e: serde_json::Error| ReplayError::Json(e.to_string());
    if ty == "sysctl" {
        let r: RawSysctl = serde_json::from_str(text).map_err(bad)?;
        let mut sysctls =
            Sysctls::from_read(r.values.iter().map(|(k, v)| (k.as_str(), v.as_str())), r.hz);
        if r.source.as_deref() == Some("defaults") {
            sysctls.source = Source::Defaults;
        }
        return Ok(Line::Sysctl {
            netns: r.netns,
            sysctls,
        });
    }
    let r: RawSample = serde_json::from_str(text).map_err(bad)?;
    let mut tcpext: Vec<(String, u64)> = r.tcpext.into_iter().collect();
    tcpext.sort();
    Ok(Line::NetnsSample(NetnsSample {
        netns: r.netns,
        ts_ns: r.ts_ns,
        tcpext,
        time_wait_total: r.time_wait_total,
        time_wait_by_dest: r
            .time_wait_by_dest
            .into_iter()
            .map(|d| (d.raddr, d.rport, d.count))
            .collect(),
        listeners: r.listeners,
    }))
}

/// The context frame of a binary recording ([`crate::raw_stream::Tag::Context`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RawContext {
    pub clock_offset_ns: i64,
    pub snap: crate::snapshot::SnapLayout,
    pub reset_reasons: Vec<(u32, String)>,
}

#[derive(Deserialize)]
struct RawContextJson {
    clock_offset_ns: i64,
    snap: String,
    #[serde(default)]
    reset_reasons: HashMap<String, String>,
}

/// Parses a recording's context frame.
pub fn parse_context(text: &str) -> Result<RawContext, ReplayError> {
    let r: RawContextJson =
        serde_json::from_str(text).map_err(|e| ReplayError::Json(e.to_string()))?;
    let snap = crate::snapshot::SnapLayout::from_text(&r.snap).ok_or(ReplayError::Field("snap"))?;
    let mut reset_reasons = Vec::new();
    for (k, v) in r.reset_reasons {
        reset_reasons.push((
            k.parse().map_err(|_| ReplayError::Field("reset_reasons"))?,
            v,
        ));
    }
    reset_reasons.sort();
    Ok(RawContext {
        clock_offset_ns: r.clock_offset_ns,
        snap,
        reset_reasons,
    })
}

/// Parses one line. `want_clock` asks for the wall-clock offset (parsing `time` costs; the
/// caller needs it once).
pub fn parse_line(text: &str, want_clock: bool) -> Result<Parsed, ReplayError> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| ReplayError::Json(e.to_string()))?;
    let ts = raw.ts_ns;
    let clock_offset_ns = match (want_clock, raw.time, ts) {
        (true, Some(t), Some(ts)) => parse_rfc3339(t).map(|unix| unix - ts as i128),
        _ => None,
    };
    if raw.ty == "lost" {
        return Ok(Parsed {
            line: Line::Lost {
                ts_ns: ts.unwrap_or(0),
                count: raw.count.ok_or(ReplayError::Field("count"))?,
            },
            clock_offset_ns,
            reason: None,
        });
    }
    if raw.ty == "cgroup" {
        return Ok(Parsed {
            line: Line::Cgroup {
                ts_ns: ts.unwrap_or(0),
                id: raw.id.ok_or(ReplayError::Field("id"))?,
                path: raw.path,
            },
            clock_offset_ns,
            reason: None,
        });
    }
    if raw.ty == "sysctl" || raw.ty == "netns_sample" {
        return Ok(Parsed {
            line: namespace_line(raw.ty, text)?,
            clock_offset_ns,
            reason: None,
        });
    }
    if !EVENT_TYPES.contains(&raw.ty) {
        return Ok(Parsed {
            line: Line::Other,
            clock_offset_ns,
            reason: None,
        });
    }
    let family = match raw.family {
        Some("ipv4") => Family::Inet,
        Some("ipv6") => Family::Inet6,
        _ => Family::Unknown,
    };
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let ev = Event {
        ts_ns: ts.ok_or(ReplayError::Field("ts_ns"))?,
        sk: hex(raw.sk, "sk")?,
        netns: raw.netns,
        cgroup: raw.cgroup_id,
        pid: raw.pid.unwrap_or(0),
        tid: raw.tid.unwrap_or(0),
        comm: Comm::new(raw.comm.as_deref().unwrap_or("")),
        family,
        laddr: raw.laddr.unwrap_or(any),
        lport: raw.lport.unwrap_or(0),
        raddr: raw.raddr.unwrap_or(any),
        rport: raw.rport.unwrap_or(0),
        kind: kind(&raw)?,
    };
    let reason = match (raw.reason_code, raw.reason) {
        (Some(code), Some(name)) => Some((code, name)),
        _ => None,
    };
    Ok(Parsed {
        line: Line::Event(ev),
        clock_offset_ns,
        reason,
    })
}
