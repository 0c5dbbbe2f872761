//! One readable line per finished connection: who, where, how it ended, and its state timeline.
use std::io::Write as _;

use tcptrace_core::{
    diagnose::{Diagnosis, Severity},
    lifecycle::{Conn, End, Role},
    tcp::{TcpState, errno_name},
};

use super::escape::{escaped, push_escaped};
use tcptrace_core::context::Context;

/// A duration for people, one way at every size: `0.05ms`, `12.3ms`, `3.2s`, `60.0s`,
/// `7875.0s` (seconds never turn into minutes, so timers compare at a glance).
pub fn human_ns(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 999.95 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// `1 connection`, `2 connections`: a count and its noun, singular for exactly one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Bytes for people: `512 B`, `1.2 KB`, `3.4 MB` (powers of 1000, like `ss`).
pub fn human_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.1} GB", b as f64 / 1e9),
    }
}

fn end_colour(end: End) -> &'static str {
    match end {
        End::Closed => "\x1b[32m",
        End::Open => "\x1b[33m",
        _ => "\x1b[31m",
    }
}

fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// Renders the line (without the trailing newline). `time` is the time-of-day prefix;
/// `timeline` adds every state with its time.
pub fn render(
    buf: &mut Vec<u8>,
    ctx: &Context,
    c: &Conn,
    colour: bool,
    timeline: bool,
    time: &[u8],
) {
    buf.extend_from_slice(time);
    let who = match c.owner {
        Some(o) => format!("{}({})", escaped(o.comm.bytes()), o.pid),
        None => "?".to_string(),
    };
    let (l, r) = (endpoint(c.laddr, c.lport), endpoint(c.raddr, c.rport));
    let arrow = match c.role {
        Role::Server => format!("{l} <- {r}"),
        _ => format!("{l} -> {r}"),
    };
    let end = c.end.unwrap_or(End::Open);
    let (on, off) = if colour {
        (end_colour(end), "\x1b[0m")
    } else {
        ("", "")
    };
    let _ = write!(buf, " {who} {} {arrow}", c.role.name());
    if let Some(ns) = c.netns {
        let _ = write!(buf, " netns {}", netns_shown(ctx, ns));
    }
    if let Some(shown) = cgroup_short(ctx, c.cgroup.map(|id| id.get())) {
        let _ = write!(buf, " in {shown}");
    }
    let _ = write!(buf, " {on}{}{off}", end.name());
    if let Some(d) = c.duration_ns() {
        let _ = write!(buf, " after {}", human_ns(d));
    }
    if timeline {
        buf.extend_from_slice(b": ");
        timeline_of(buf, c);
    }
    facts(buf, ctx, c);
}

/// `SYN_SENT 0.10ms → ESTABLISHED 0.07ms → … → TIME_WAIT 60.0s`.
fn timeline_of(buf: &mut Vec<u8>, c: &Conn) {
    for (i, (state, ns)) in c.spans().enumerate() {
        if i > 0 {
            buf.extend_from_slice(" → ".as_bytes());
        }
        let _ = match ns {
            Some(ns) => write!(buf, "{state} {}", human_ns(ns)),
            None => write!(buf, "{state} ?"),
        };
    }
    if let Some((state, timer)) = c.cold().time_wait {
        let what = if state == TcpState::TIME_WAIT {
            "TIME_WAIT".to_string()
        } else {
            format!("{state} (orphan, timewait socket)")
        };
        let _ = match timer {
            Some(ms) => write!(buf, " → {what} {}", human_ns(u64::from(ms) * 1_000_000)),
            None => write!(buf, " → {what}"),
        };
    }
}

/// ` | 4.3 KB out, 777 B in; rtt 0.05ms; 2 retransmits (…); …`.
fn facts(buf: &mut Vec<u8>, ctx: &Context, c: &Conn) {
    let mut facts: Vec<String> = Vec::new();
    if let (Some(tx), Some(rx)) = (c.bytes_sent(), c.bytes_received()) {
        facts.push(format!("{} out, {} in", human_bytes(tx), human_bytes(rx)));
    }
    if let Some(us) = c.srtt_us().filter(|us| *us > 0) {
        facts.push(format!("rtt {}", human_ns(us * 1000)));
    }
    let rt = &c.cold().retransmits;
    if rt.total > 0 {
        let parts: Vec<String> = rt.states().map(|(s, n)| format!("{n} in {s}")).collect();
        facts.push(format!(
            "{} ({})",
            count(rt.total.into(), "retransmit"),
            parts.join(", ")
        ));
    }
    if c.cold().resets_sent + c.cold().resets_received > 0 {
        let reason = c
            .cold()
            .reset_reason
            .map(|r| {
                ctx.reason_name(r)
                    .map_or_else(|| format!(" reason {r}"), |n| format!(" {n}"))
            })
            .unwrap_or_default();
        facts.push(format!(
            "RST sent {} received {}{reason}",
            c.cold().resets_sent,
            c.cold().resets_received
        ));
    }
    if let Some(e) = c.cold().error {
        facts.push(format!("error {}", errno_name(e).unwrap_or("?")));
    }
    if let Some(cl) = c.cold().closer
        && c.owner.is_none_or(|o| o.pid != cl.pid)
    {
        facts.push(format!(
            "closed by {}({})",
            escaped(cl.comm.bytes()),
            cl.pid
        ));
    }
    let notes: Vec<&str> = c.note_names().collect();
    if !notes.is_empty() {
        facts.push(format!("[{}]", notes.join(", ")));
    }
    if !facts.is_empty() {
        let _ = write!(buf, " | {}", facts.join("; "));
    }
}

/// How text output names a namespace: its /run/netns name (escaped) when it has one, else
/// its inode.
pub fn netns_shown(ctx: &Context, ns: u32) -> String {
    match ctx.netns_name(ns) {
        Some(n) => escaped(n.as_bytes()),
        None => ns.to_string(),
    }
}

/// How text output names a cgroup, escaped: `docker 4c01db0b339c`, `nginx.service`, a path,
/// or the bare id while its path is unknown; nothing for the root cgroup.
pub fn cgroup_short(ctx: &Context, id: Option<u64>) -> Option<String> {
    let id = id?;
    match ctx.cgroup(id) {
        Some(info) => info.short().map(|s| escaped(s.as_bytes())),
        None => Some(format!("cgroup {id}")),
    }
}

/// ` ! [connect_timeout, refused]`: the rules that explained a record, on its own line
/// (`--format line`), coloured by the most severe.
pub fn rule_names(buf: &mut Vec<u8>, diagnoses: &[Diagnosis], colour: bool) {
    let Some(worst) = diagnoses.iter().map(|d| d.severity).max() else {
        return;
    };
    let (mark, paint) = severity_style(worst);
    let rules: Vec<&str> = diagnoses.iter().map(|d| d.rule).collect();
    if colour {
        buf.extend_from_slice(paint.as_bytes());
    }
    let _ = write!(buf, " {mark} [{}]", rules.join(", "));
    if colour {
        buf.extend_from_slice(b"\x1b[0m");
    }
}

fn severity_style(s: Severity) -> (&'static str, &'static str) {
    match s {
        Severity::Error => ("!", "\x1b[31m"),
        Severity::Warning => ("!", "\x1b[33m"),
        Severity::Info => ("·", "\x1b[2m"),
    }
}

/// One explanation under a connection line: `  ! [connect_timeout] connect() to … (agrees)`.
pub fn diagnosis_line(buf: &mut Vec<u8>, d: &Diagnosis, colour: bool, indent: &str) {
    let (mark, paint) = severity_style(d.severity);
    buf.extend_from_slice(indent.as_bytes());
    if colour {
        buf.extend_from_slice(paint.as_bytes());
    }
    let _ = write!(buf, "{mark} [{}] ", d.rule);
    push_escaped(buf, d.message.as_bytes());
    if d.assumed_defaults {
        buf.extend_from_slice(b" (sysctls unreadable: kernel defaults assumed)");
    }
    if colour {
        buf.extend_from_slice(b"\x1b[0m");
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_shown_compactly_and_escaped() {
        let mut ctx = Context::default();
        ctx.learn_cgroup(1, "/");
        ctx.learn_cgroup(2, "/system.slice/nginx.service");
        ctx.learn_cgroup(3, "/evil\u{1b}[2J\n\u{7}");
        assert_eq!(cgroup_short(&ctx, Some(1)), None);
        assert_eq!(cgroup_short(&ctx, None), None);
        assert_eq!(
            cgroup_short(&ctx, Some(2)).as_deref(),
            Some("nginx.service")
        );
        assert_eq!(cgroup_short(&ctx, Some(4)).as_deref(), Some("cgroup 4"));
        let evil = cgroup_short(&ctx, Some(3)).unwrap();
        assert_eq!(evil, "/evil\\x1b[2J\\n\\x07");
        assert!(!evil.chars().any(char::is_control));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(50_000), "0.05ms");
        assert_eq!(human_ns(12_340_000), "12.3ms");
        assert_eq!(human_ns(3_200_000_000), "3.2s");
        assert_eq!(human_ns(999_990_000), "1.0s");
        // TIME_WAIT's 60000 ms timer and a 59999 ms one print alike.
        assert_eq!(human_ns(60_000_000_000), "60.0s");
        assert_eq!(human_ns(59_999_000_000), "60.0s");
        assert_eq!(human_ns(123_000_000_000), "123.0s");
        assert_eq!(human_ns(7_875_000_000_000), "7875.0s");
        assert_eq!(count(1, "retransmit"), "1 retransmit");
        assert_eq!(count(0, "connection"), "0 connections");
        assert_eq!(count(2, "connection"), "2 connections");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_200_000), "1.2 MB");
    }
}
