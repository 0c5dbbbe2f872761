//! The JSON `"type":"conn"` record: one finished connection lifecycle; schema in README.md.
use tcptrace_core::{
    diagnose::Diagnosis,
    lifecycle::{Conn, Owner},
    tcp::errno_name,
};

use super::{
    RenderCtx,
    json::{head, ident, key, null, num, object, opt_ms, push_hex, push_ip, push_str, text},
};

fn opt_num(buf: &mut Vec<u8>, k: &str, v: Option<impl itoa::Integer>) {
    match v {
        Some(v) => num(buf, k, v),
        None => null(buf, k),
    }
}

fn opt_bool(buf: &mut Vec<u8>, k: &str, v: Option<bool>) {
    key(buf, k);
    buf.extend_from_slice(match v {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
}

fn owner(buf: &mut Vec<u8>, k: &str, o: Option<Owner>) {
    match o {
        Some(o) => {
            key(buf, k);
            buf.extend_from_slice(b"{\"pid\":");
            buf.extend_from_slice(itoa::Buffer::new().format(o.pid).as_bytes());
            buf.extend_from_slice(b",\"comm\":");
            push_str(buf, o.comm.bytes());
            buf.push(b'}');
        }
        None => null(buf, k),
    }
}

/// `{"a":1,"b":2}` from `(name, count)` pairs.
fn counts<'a>(buf: &mut Vec<u8>, k: &str, items: impl Iterator<Item = (&'a str, u16)>) {
    object(buf, k, items, |b, n| {
        b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes())
    });
}

/// Renders one connection record (without the trailing newline).
pub fn render(buf: &mut Vec<u8>, ctx: &RenderCtx, c: &Conn, diagnosis: &[Diagnosis]) {
    let end_ns = c.end_ns.unwrap_or(c.last_ns);
    head(buf, ctx, "conn", end_ns);
    key(buf, "sk");
    push_hex(buf, c.sk);
    opt_num(buf, "netns", c.netns);
    opt_num(buf, "pid", c.owner.map(|o| o.pid));
    match c.owner {
        Some(o) => {
            key(buf, "comm");
            push_str(buf, o.comm.bytes());
        }
        None => null(buf, "comm"),
    }
    super::json_cgroup::member(buf, ctx, c.cgroup.map(|id| id.get()));
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
            buf.push(b'"');
            ctx.times.write(buf, ctx.clock.unix_ns(ns));
            buf.push(b'"');
        }
        None => null(buf, "start"),
    }
    opt_ms(buf, "duration_ms", c.duration_ns());
    key(buf, "states");
    buf.push(b'[');
    for (i, (state, ns)) in c.spans().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"state\":");
        push_str(buf, state.name().as_bytes());
        opt_ms(buf, "ms", ns);
        buf.push(b'}');
    }
    buf.push(b']');
    let r = &c.cold().retransmits;
    key(buf, "retransmits");
    buf.extend_from_slice(b"{\"total\":");
    buf.extend_from_slice(itoa::Buffer::new().format(r.total).as_bytes());
    num(buf, "failed", r.failed);
    counts(buf, "by_state", r.states().map(|(s, n)| (s.name(), n)));
    counts(buf, "by_kind", r.kinds().map(|(k, n)| (k.name(), n)));
    buf.push(b'}');
    key(buf, "resets");
    buf.extend_from_slice(b"{\"sent\":");
    buf.extend_from_slice(itoa::Buffer::new().format(c.cold().resets_sent).as_bytes());
    num(buf, "received", c.cold().resets_received);
    match c.cold().reset_reason {
        Some(code) => match ctx.reason_name(code) {
            Some(n) => text(buf, "reason", n),
            None => num(buf, "reason", code),
        },
        None => null(buf, "reason"),
    }
    buf.push(b'}');
    match c.cold().error.and_then(errno_name) {
        Some(n) => text(buf, "error", n),
        None => opt_num(buf, "error", c.cold().error),
    }
    opt_num(buf, "bytes_sent", c.bytes_sent());
    opt_num(buf, "bytes_received", c.bytes_received());
    opt_ms(buf, "srtt_ms", c.srtt_us().map(|us| us * 1000));
    text(buf, "end", c.end.map_or("open", |e| e.name()));
    match c.cold().time_wait {
        Some((state, timer)) => {
            text(buf, "time_wait_state", state.name());
            opt_num(buf, "time_wait_ms", timer);
        }
        None => {
            null(buf, "time_wait_state");
            null(buf, "time_wait_ms");
        }
    }
    let o = &c.options;
    key(buf, "options");
    buf.push(b'{');
    match o.mss {
        Some(m) => {
            buf.extend_from_slice(b"\"mss\":");
            buf.extend_from_slice(itoa::Buffer::new().format(m).as_bytes());
        }
        None => buf.extend_from_slice(b"\"mss\":null"),
    }
    opt_num(buf, "snd_wscale", o.snd_wscale);
    opt_num(buf, "rcv_wscale", o.rcv_wscale);
    opt_bool(buf, "sack", o.sack);
    opt_bool(buf, "timestamps", o.timestamps);
    buf.push(b'}');
    owner(buf, "closer", c.cold().closer);
    key(buf, "notes");
    buf.push(b'[');
    for (i, n) in c.note_names().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_str(buf, n.as_bytes());
    }
    buf.push(b']');
    super::json_diag::diagnoses(buf, diagnosis);
    buf.push(b'}');
}
