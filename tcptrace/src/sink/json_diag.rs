//! JSON for explanations: a connection record's `"diagnosis"` list, namespace findings
//! (`"type":"diagnosis"`), and the namespace facts a recording needs to be diagnosed again in
//! `replay` (`"type":"sysctl"`, `"type":"netns_sample"`). Schema in README.md.
use std::io::Write as _;

use tcptrace_core::{
    diagnose::{
        Diagnosis, Value,
        netns::{NetnsFinding, NetnsSample},
    },
    sysctl::{Source, Sysctls},
};

use super::{
    RenderCtx,
    json::{head, key, num, object, push_str, text},
};

fn value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Text(s) => push_str(buf, s.as_bytes()),
        Value::Ints(list) => {
            buf.push(b'[');
            for (i, n) in list.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            }
            buf.push(b']');
        }
    }
}

/// The members of one diagnosis after `"rule"` (shared by both record kinds).
fn body(buf: &mut Vec<u8>, d: &Diagnosis) {
    text(buf, "severity", d.severity.name());
    object(
        buf,
        "sysctl",
        d.sysctl.iter().map(|(k, v)| (*k, v)),
        |b, v| push_str(b, v.as_bytes()),
    );
    if !d.overrides.is_empty() {
        object(
            buf,
            "overrides",
            d.overrides.iter().map(|(k, v)| (*k, v)),
            |b, v| push_str(b, v.as_bytes()),
        );
    }
    object(
        buf,
        "observed",
        d.observed.iter().map(|(k, v)| (*k, v)),
        value,
    );
    object(
        buf,
        "expected",
        d.expected.iter().map(|(k, v)| (*k, v)),
        value,
    );
    key(buf, "agrees");
    buf.extend_from_slice(match d.agrees {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
    if d.assumed_defaults {
        key(buf, "assumed_defaults");
        buf.extend_from_slice(b"true");
    }
    text(buf, "message", &d.message);
}

/// `,"diagnosis":[...]` for a connection record.
pub fn diagnoses(buf: &mut Vec<u8>, list: &[Diagnosis]) {
    key(buf, "diagnosis");
    buf.push(b'[');
    for (i, d) in list.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"rule\":");
        push_str(buf, d.rule.as_bytes());
        body(buf, d);
        buf.push(b'}');
    }
    buf.push(b']');
}

/// `{"type":"diagnosis","netns":..,"rule":..,...}`.
pub fn finding(buf: &mut Vec<u8>, ctx: &RenderCtx, f: &NetnsFinding) {
    head(buf, ctx, "diagnosis", f.ts_ns);
    num(buf, "netns", f.netns);
    text(buf, "rule", f.diagnosis.rule);
    body(buf, &f.diagnosis);
    buf.push(b'}');
}

/// `{"type":"sysctl","netns":..,"hz":..,"source":..,"values":{..}}`.
pub fn sysctl(buf: &mut Vec<u8>, ctx: &RenderCtx, ts_ns: u64, netns: u32, s: &Sysctls) {
    head(buf, ctx, "sysctl", ts_ns);
    num(buf, "netns", netns);
    match s.hz {
        Some(hz) => num(buf, "hz", hz),
        None => {
            key(buf, "hz");
            buf.extend_from_slice(b"null");
        }
    }
    text(
        buf,
        "source",
        match s.source {
            Source::Read => "read",
            Source::Defaults => "defaults",
        },
    );
    let values: Vec<(&str, String)> = s.iter().map(|(k, v)| (k, v.to_string())).collect();
    object(
        buf,
        "values",
        values.iter().map(|(k, v)| (*k, v)),
        |b, v| push_str(b, v.as_bytes()),
    );
    buf.push(b'}');
}

/// `{"type":"netns_sample",...}`: the counters and queues namespace rules judge.
pub fn sample(buf: &mut Vec<u8>, ctx: &RenderCtx, s: &NetnsSample) {
    head(buf, ctx, "netns_sample", s.ts_ns);
    num(buf, "netns", s.netns);
    object(
        buf,
        "tcpext",
        s.tcpext.iter().map(|(k, v)| (k.as_str(), v)),
        |b, v| b.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
    );
    num(buf, "time_wait_total", s.time_wait_total);
    key(buf, "time_wait_by_dest");
    buf.push(b'[');
    for (i, (addr, port, n)) in s.time_wait_by_dest.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let _ = write!(
            buf,
            "{{\"raddr\":\"{addr}\",\"rport\":{port},\"count\":{n}}}"
        );
    }
    buf.push(b']');
    key(buf, "listeners");
    buf.push(b'[');
    for (i, l) in s.listeners.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let _ = write!(
            buf,
            "{{\"addr\":\"{}\",\"port\":{},\"queued\":{},\"backlog\":{}}}",
            l.addr, l.port, l.queued, l.backlog
        );
    }
    buf.push(b']');
    buf.push(b'}');
}
