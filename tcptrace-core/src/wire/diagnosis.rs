//! Explanations on the wire: a connection record's `"diagnosis"` list and namespace-wide
//! findings (`"type":"diagnosis"`), written and read here.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::json::{head, key, num, object, push_int, push_str, text};
use crate::{
    context::Context,
    diagnose::{Diagnosis, Value, netns::NetnsFinding},
};

fn value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) => push_int(buf, *i),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Text(s) => push_str(buf, s.as_bytes()),
        Value::Ints(list) => {
            buf.push(b'[');
            for (i, n) in list.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                push_int(buf, *n);
            }
            buf.push(b']');
        }
    }
}

/// The members of one diagnosis after `"rule"` (shared by both line kinds).
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
pub fn write_list(buf: &mut Vec<u8>, list: &[Diagnosis]) {
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

/// `{"type":"diagnosis","netns":..,"rule":..,...}`: a namespace-wide finding.
pub fn write_finding(buf: &mut Vec<u8>, ctx: &Context, f: &NetnsFinding) {
    head(buf, ctx, "diagnosis", f.ts_ns);
    num(buf, "netns", f.netns);
    super::conn::netns_name(buf, ctx, Some(f.netns));
    text(buf, "rule", f.diagnosis.rule);
    body(buf, &f.diagnosis);
    buf.push(b'}');
}

/// One diagnosis read back.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DiagnosisLine {
    pub rule: String,
    pub severity: String,
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    pub observed: BTreeMap<String, serde_json::Value>,
    pub expected: BTreeMap<String, serde_json::Value>,
    pub agrees: Option<bool>,
    #[serde(default)]
    pub assumed_defaults: bool,
    pub message: String,
}

/// A namespace finding read back (`"type":"diagnosis"`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FindingLine {
    pub ts_ns: u64,
    pub netns: u32,
    #[serde(default)]
    pub netns_name: Option<String>,
    #[serde(flatten)]
    pub diagnosis: DiagnosisLine,
}
