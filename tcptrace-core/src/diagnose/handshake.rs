//! The handshake's negotiated options, and which sysctl (here) or which peer switched each
//! one off; the peer's MSS against what the local interface's MTU allows.
use super::{Diagnosis, Inputs, Severity, Value, peer};
use crate::{
    lifecycle::Conn,
    sysctl::{self as sc},
    tcp::TcpState,
};

/// IPv4 + TCP headers (20 + 20); IPv6 has 40 + 20.
fn header_bytes(c: &Conn) -> u32 {
    if c.laddr.is_ipv6() { 60 } else { 40 }
}

pub fn options(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let o = &c.options;
    if !c.visited(TcpState::ESTABLISHED) || !o.is_known() {
        return;
    }
    let mut d = Diagnosis::new("handshake", Severity::Info, sys);
    d.sysctl = sys.pick(&[sc::SACK, sc::TIMESTAMPS, sc::WINDOW_SCALING]);
    let mut parts = Vec::new();
    let mut explain = |name: &str, on: Option<bool>, knob: &'static str, detail: String| {
        let Some(on) = on else { return };
        let local = sys.int(knob);
        parts.push(match (on, local) {
            (true, _) => format!("{name} on{detail}"),
            (false, Some(0)) => format!("{name} OFF, switched off here by {knob}=0"),
            (false, _) => format!(
                "{name} OFF: the peer did not offer it ({knob}={} here)",
                local.map_or("?".into(), |v| v.to_string())
            ),
        });
    };
    explain("SACK", o.sack, sc::SACK, String::new());
    explain("timestamps", o.timestamps, sc::TIMESTAMPS, String::new());
    let ws = match (o.snd_wscale, o.rcv_wscale) {
        (Some(s), Some(r)) if s > 0 || r > 0 => Some(true),
        (Some(0), Some(0)) => Some(false),
        _ => None,
    };
    explain(
        "window scaling",
        ws,
        sc::WINDOW_SCALING,
        match (o.rcv_wscale, o.snd_wscale) {
            (Some(r), Some(s)) => format!(" (ours ×2^{r}, peer's ×2^{s})"),
            _ => String::new(),
        },
    );
    if let Some(v) = o.sack {
        d.observed.push(("sack", v.into()));
    }
    if let Some(v) = o.timestamps {
        d.observed.push(("timestamps", v.into()));
    }
    if let Some(v) = o.snd_wscale {
        d.observed.push(("snd_wscale", Value::Int(i64::from(v))));
    }
    if let Some(v) = o.rcv_wscale {
        d.observed.push(("rcv_wscale", Value::Int(i64::from(v))));
    }
    let mut mss_text = String::new();
    if let Some(mss) = o.mss {
        d.observed.push(("peer_mss", u32::from(mss).into()));
        if let Some(mtu) = inp.mtu {
            let allowed = mtu.saturating_sub(header_bytes(c));
            d.expected.push(("mtu", mtu.into()));
            d.expected.push(("mss", allowed.into()));
            d.agrees = Some(u32::from(mss) == allowed);
            mss_text = if u32::from(mss) < allowed {
                format!(
                    "; the peer announced MSS {mss}, less than the {allowed} our interface MTU {mtu} allows: its MTU or an MSS clamp on the path is smaller"
                )
            } else {
                format!(
                    "; MSS {mss} (= MTU {mtu} − {} header bytes)",
                    header_bytes(c)
                )
            };
        } else {
            mss_text = format!("; the peer announced MSS {mss}");
        }
    }
    d.message = format!(
        "Handshake with {}: {}{mss_text}.",
        peer(c),
        parts.join(", ")
    );
    out.push(d);
}
