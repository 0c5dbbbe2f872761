//! Event lines (`state`, `retransmit`, `retransmit_failed`, `reset`, `error`, and the
//! userspace facts `timewait`, `request_gone`, `existing`): the fast writer and the reader,
//! side by side, so `--events --format json` and `replay` agree by construction (the round
//! trip of every kind is tested in `wire::tests`).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::Deserialize;

use super::{
    WireError,
    json::{
        head, ident, key, null, num, opt_ms, opt_num, opt_state, push_hex, push_int, push_ip,
        push_str, text,
    },
};
use crate::{
    context::Context,
    event::{Comm, Event, EventKind, Family, ResetDirection},
    snapshot::{Field, SockSnapshot},
    tcp::{SegmentKind, TcpState, errno_from_name, errno_name},
};

/// The `"type"` of every event line.
pub const TYPES: [&str; 8] = [
    "state",
    "retransmit",
    "retransmit_failed",
    "reset",
    "error",
    "timewait",
    "request_gone",
    "existing",
];

fn errno(buf: &mut Vec<u8>, code: i32) {
    match errno_name(code) {
        Some(n) => text(buf, "errno", n),
        None => null(buf, "errno"),
    }
    num(buf, "errno_code", code);
}

/// `,"sock":{...}`: the socket numbers a state change (or a dumped socket) carried.
fn sock(buf: &mut Vec<u8>, s: &SockSnapshot) {
    key(buf, "sock");
    buf.push(b'{');
    for (i, (f, v)) in s.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(f.name().as_bytes());
        buf.extend_from_slice(b"\":");
        match f {
            Field::Timestamps | Field::WscaleOk | Field::KeepOpen => {
                buf.extend_from_slice(if v != 0 { b"true" } else { b"false" })
            }
            Field::Linger2Jiffies => push_int(buf, v as i64),
            _ => push_int(buf, v),
        }
    }
    buf.push(b'}');
}

/// Writes one event line (without the trailing newline). `prev_ns` is the time spent in the
/// old state of a state change, when known.
pub fn write(buf: &mut Vec<u8>, ctx: &Context, ev: &Event, prev_ns: Option<u64>) {
    head(buf, ctx, ev.kind.type_name(), ev.ts_ns);
    key(buf, "sk");
    push_hex(buf, ev.sk);
    opt_num(buf, "netns", ev.netns);
    opt_num(buf, "cgroup_id", ev.cgroup);
    match ev.task() {
        Some((pid, tid, comm)) => {
            num(buf, "pid", pid);
            num(buf, "tid", tid);
            key(buf, "comm");
            push_str(buf, comm.bytes());
        }
        None => {
            null(buf, "pid");
            null(buf, "tid");
            null(buf, "comm");
        }
    }
    ident(buf, "family", ev.family.name());
    key(buf, "laddr");
    push_ip(buf, &ev.laddr);
    num(buf, "lport", ev.lport);
    key(buf, "raddr");
    push_ip(buf, &ev.raddr);
    num(buf, "rport", ev.rport);
    match ev.kind {
        EventKind::State { old, new, sock: s } => {
            ident(buf, "old", old.name());
            ident(buf, "new", new.name());
            opt_ms(buf, "prev_ms", prev_ns);
            if let Some(s) = &s {
                sock(buf, s);
            }
        }
        EventKind::Retransmit {
            state,
            kind,
            from_flags,
        } => {
            opt_state(buf, "state", state);
            ident(buf, "kind", kind.name());
            ident(buf, "kind_from", if from_flags { "flags" } else { "state" });
        }
        EventKind::RetransmitFailed {
            state,
            kind,
            from_flags,
            errno: code,
        } => {
            opt_state(buf, "state", state);
            ident(buf, "kind", kind.name());
            ident(buf, "kind_from", if from_flags { "flags" } else { "state" });
            errno(buf, code);
        }
        EventKind::SynAckRetransmit { listener } => {
            ident(buf, "state", TcpState::NEW_SYN_RECV.name());
            ident(buf, "kind", "synack");
            ident(buf, "kind_from", "tracepoint");
            key(buf, "listener");
            push_hex(buf, listener);
        }
        EventKind::Reset {
            direction,
            state,
            reason,
        } => {
            ident(buf, "direction", direction.name());
            opt_state(buf, "state", state);
            match reason {
                Some(code) => {
                    match ctx.reason_name(code) {
                        Some(n) => text(buf, "reason", n),
                        None => null(buf, "reason"),
                    }
                    num(buf, "reason_code", code);
                }
                None => {
                    null(buf, "reason");
                    null(buf, "reason_code");
                }
            }
        }
        EventKind::Error { errno: code, state } => {
            errno(buf, code);
            opt_state(buf, "state", state);
        }
        EventKind::TimeWait { state, timer_ms } => {
            opt_state(buf, "state", state);
            opt_num(buf, "timer_ms", timer_ms);
        }
        EventKind::RequestGone => {}
        EventKind::Existing {
            state,
            at_exit,
            sock: s,
        } => {
            ident(buf, "state", state.name());
            key(buf, "at_exit");
            buf.extend_from_slice(if at_exit { b"true" } else { b"false" });
            if let Some(s) = &s {
                sock(buf, s);
            }
        }
    }
    buf.push(b'}');
}

/// The members of an event line, as the reader takes them (all optional: which are required
/// depends on the type).
#[derive(Deserialize)]
pub(super) struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: &'a str,
    pub ts_ns: Option<u64>,
    #[serde(borrow)]
    pub time: Option<&'a str>,
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
}

fn hex(s: Option<&str>, what: &'static str) -> Result<u64, WireError> {
    let s = s.ok_or(WireError::Field(what))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| WireError::Field(what))
}

fn state(s: Option<&str>, what: &'static str) -> Result<TcpState, WireError> {
    s.and_then(TcpState::from_name)
        .ok_or(WireError::Field(what))
}

fn read_errno(f: &Fields) -> Result<i32, WireError> {
    f.errno_code
        .or_else(|| f.errno.and_then(errno_from_name))
        .ok_or(WireError::Field("errno"))
}

fn read_sock(map: &Option<HashMap<&str, serde_json::Value>>) -> Option<SockSnapshot> {
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

fn read_kind(f: &Fields) -> Result<EventKind, WireError> {
    let seg = || {
        f.kind
            .and_then(SegmentKind::from_name)
            .ok_or(WireError::Field("kind"))
    };
    let opt_state = || f.state.and_then(TcpState::from_name);
    Ok(match f.ty {
        "state" => EventKind::State {
            old: state(f.old, "old")?,
            new: state(f.new, "new")?,
            sock: read_sock(&f.sock),
        },
        "retransmit" if f.listener.is_some() => EventKind::SynAckRetransmit {
            listener: hex(f.listener, "listener")?,
        },
        "retransmit" => EventKind::Retransmit {
            state: opt_state(),
            kind: seg()?,
            from_flags: f.kind_from == Some("flags"),
        },
        "retransmit_failed" => EventKind::RetransmitFailed {
            state: opt_state(),
            kind: seg()?,
            from_flags: f.kind_from == Some("flags"),
            errno: read_errno(f)?,
        },
        "reset" => EventKind::Reset {
            direction: match f.direction {
                Some("sent") => ResetDirection::Sent,
                Some("received") => ResetDirection::Received,
                _ => return Err(WireError::Field("direction")),
            },
            state: opt_state(),
            reason: f.reason_code,
        },
        "error" => EventKind::Error {
            errno: read_errno(f)?,
            state: opt_state(),
        },
        "timewait" => EventKind::TimeWait {
            state: opt_state(),
            timer_ms: f.timer_ms,
        },
        "request_gone" => EventKind::RequestGone,
        "existing" => EventKind::Existing {
            state: state(f.state, "state")?,
            at_exit: f.at_exit.unwrap_or(false),
            sock: read_sock(&f.sock),
        },
        _ => return Err(WireError::Field("type")),
    })
}

/// Reads an event line's members into the event and, for resets, the reason name it
/// carried (`(code, name)`).
pub(super) fn read(f: &Fields) -> Result<(Event, Option<(u32, String)>), WireError> {
    let family = match f.family {
        Some("ipv4") => Family::Inet,
        Some("ipv6") => Family::Inet6,
        _ => Family::Unknown,
    };
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let ev = Event {
        ts_ns: f.ts_ns.ok_or(WireError::Field("ts_ns"))?,
        sk: hex(f.sk, "sk")?,
        netns: f.netns,
        cgroup: f.cgroup_id,
        pid: f.pid.unwrap_or(0),
        tid: f.tid.unwrap_or(0),
        comm: Comm::new(f.comm.as_deref().unwrap_or("")),
        family,
        laddr: f.laddr.unwrap_or(any),
        lport: f.lport.unwrap_or(0),
        raddr: f.raddr.unwrap_or(any),
        rport: f.rport.unwrap_or(0),
        kind: read_kind(f)?,
    };
    let reason = match (f.reason_code, &f.reason) {
        (Some(code), Some(name)) => Some((code, name.clone())),
        _ => None,
    };
    Ok((ev, reason))
}
