//! JSON lines: one object per event with a `"type"` tag; schema in README.md.
use std::{
    io::{self, Write},
    net::IpAddr,
};

use tcptrace_core::{
    diagnose::{
        Diagnosis,
        netns::{NetnsFinding, NetnsSample},
    },
    event::{Event, EventKind},
    lifecycle::Conn,
    snapshot::{Field, SockSnapshot},
    sysctl::Sysctls,
    tcp::{TcpState, errno_name},
};

use super::{Out, RenderCtx, Sink};

pub struct JsonSink<W: Write> {
    out: Out<W>,
    ctx: RenderCtx,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: Out<W>, ctx: RenderCtx) -> Self {
        Self { out, ctx }
    }
}

/// Appends `s` as a JSON string (lossy UTF-8, control characters escaped).
pub fn push_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    // Fast path: names and addresses are plain printable ASCII.
    if s.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        buf.extend_from_slice(s);
        buf.push(b'"');
        return;
    }
    for ch in String::from_utf8_lossy(s).chars() {
        match ch {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

pub(super) fn key(buf: &mut Vec<u8>, k: &str) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(k.as_bytes());
    buf.extend_from_slice(b"\":");
}

pub(super) fn num(buf: &mut Vec<u8>, k: &str, v: impl itoa::Integer) {
    key(buf, k);
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `,"k":{"a":..,"b":..}`, each value written by `put`.
pub(super) fn object<'a, V>(
    buf: &mut Vec<u8>,
    k: &str,
    items: impl Iterator<Item = (&'a str, V)>,
    mut put: impl FnMut(&mut Vec<u8>, V),
) {
    key(buf, k);
    buf.push(b'{');
    for (i, (name, v)) in items.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_str(buf, name.as_bytes());
        buf.push(b':');
        put(buf, v);
    }
    buf.push(b'}');
}

/// `,"k":"v"` for a value known to need no escaping (state, family, kind names).
pub(super) fn ident(buf: &mut Vec<u8>, k: &str, v: &'static str) {
    key(buf, k);
    buf.push(b'"');
    buf.extend_from_slice(v.as_bytes());
    buf.push(b'"');
}

/// `"0x…"`: a kernel address.
pub(super) fn push_hex(buf: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut n = 0;
    let mut x = v;
    loop {
        tmp[15 - n] = DIGITS[(x & 0xf) as usize];
        n += 1;
        x >>= 4;
        if x == 0 {
            break;
        }
    }
    buf.extend_from_slice(b"\"0x");
    buf.extend_from_slice(&tmp[16 - n..]);
    buf.push(b'"');
}

/// `"a.b.c.d"` (or an IPv6 address) without the formatting machinery for the common case.
pub(super) fn push_ip(buf: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            buf.push(b'"');
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                buf.extend_from_slice(itoa::Buffer::new().format(o).as_bytes());
            }
            buf.push(b'"');
        }
        IpAddr::V6(_) => {
            let _ = write!(buf, "\"{addr}\"");
        }
    }
}

pub(super) fn text(buf: &mut Vec<u8>, k: &str, v: &str) {
    key(buf, k);
    push_str(buf, v.as_bytes());
}

pub(super) fn null(buf: &mut Vec<u8>, k: &str) {
    key(buf, k);
    buf.extend_from_slice(b"null");
}

pub(super) fn opt_state(buf: &mut Vec<u8>, k: &str, s: Option<TcpState>) {
    match s {
        Some(s) => text(buf, k, s.name()),
        None => null(buf, k),
    }
}

fn errno(buf: &mut Vec<u8>, code: i32) {
    match errno_name(code) {
        Some(n) => text(buf, "errno", n),
        None => null(buf, "errno"),
    }
    num(buf, "errno_code", code);
}

/// `"k":1.234` (milliseconds with microsecond precision) or `"k":null`.
pub(super) fn opt_ms(buf: &mut Vec<u8>, k: &str, ns: Option<u64>) {
    match ns {
        Some(ns) => {
            key(buf, k);
            push_ms(buf, ns);
        }
        None => null(buf, k),
    }
}

/// Nanoseconds as milliseconds with three decimals (`1.235`), rounded to the nearest
/// microsecond, without going through floating point.
pub fn push_ms(buf: &mut Vec<u8>, ns: u64) {
    let us = ns.saturating_add(500) / 1000;
    let mut b = itoa::Buffer::new();
    buf.extend_from_slice(b.format(us / 1000).as_bytes());
    let frac = (us % 1000) as u16;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `"sock":{...}`: the socket numbers a state change carried.
pub(super) fn sock(buf: &mut Vec<u8>, s: &SockSnapshot) {
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
            Field::Linger2Jiffies => {
                buf.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes())
            }
            _ => buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        }
    }
    buf.push(b'}');
}

/// The opening of every record: type, times.
pub(super) fn head(buf: &mut Vec<u8>, ctx: &RenderCtx, ty: &str, ts_ns: u64) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(ty.as_bytes());
    buf.push(b'"');
    num(buf, "ts_ns", ts_ns);
    key(buf, "time");
    buf.push(b'"');
    ctx.times.write(buf, ctx.clock.unix_ns(ts_ns));
    buf.push(b'"');
}

/// Renders one event (without the trailing newline).
pub fn render(buf: &mut Vec<u8>, ctx: &RenderCtx, ev: &Event, prev_ns: Option<u64>) {
    head(buf, ctx, ev.kind.type_name(), ev.ts_ns);
    key(buf, "sk");
    push_hex(buf, ev.sk);
    match ev.netns {
        Some(ns) => num(buf, "netns", ns),
        None => null(buf, "netns"),
    }
    match ev.cgroup {
        Some(id) => num(buf, "cgroup_id", id),
        None => null(buf, "cgroup_id"),
    }
    num(buf, "pid", ev.pid);
    num(buf, "tid", ev.tid);
    key(buf, "comm");
    push_str(buf, ev.comm.bytes());
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
            match timer_ms {
                Some(ms) => num(buf, "timer_ms", ms),
                None => null(buf, "timer_ms"),
            }
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

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        render(&mut self.out.buf, &self.ctx, ev, prev_ns);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn conn(&mut self, c: &Conn, diagnosis: &[Diagnosis]) -> io::Result<()> {
        super::json_conn::render(&mut self.out.buf, &self.ctx, c, diagnosis);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn finding(&mut self, f: &NetnsFinding) -> io::Result<()> {
        super::json_diag::finding(&mut self.out.buf, &self.ctx, f);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn sysctl(&mut self, ts_ns: u64, netns: u32, s: &Sysctls) -> io::Result<()> {
        super::json_diag::sysctl(&mut self.out.buf, &self.ctx, ts_ns, netns, s);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn cgroup(&mut self, ts_ns: u64, id: u64) -> io::Result<()> {
        super::json_cgroup::line(&mut self.out.buf, &self.ctx, ts_ns, id);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn sample(&mut self, s: &NetnsSample) -> io::Result<()> {
        super::json_diag::sample(&mut self.out.buf, &self.ctx, s);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()> {
        head(&mut self.out.buf, &self.ctx, "lost", ts_ns);
        num(&mut self.out.buf, "count", count);
        self.out.buf.extend_from_slice(b"}\n");
        self.out.end_line()
    }

    fn ctx_mut(&mut self) -> &mut RenderCtx {
        &mut self.ctx
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use tcptrace_core::{
        event::{Comm, Family, ResetDirection},
        tcp::SegmentKind,
    };

    fn ev(kind: EventKind) -> Event {
        Event {
            ts_ns: 1_000_000_000,
            sk: 0xffff_8880_0000_1000,
            netns: Some(4026531840),
            cgroup: None,
            pid: 7,
            tid: 8,
            comm: Comm::new("n\"c\n"),
            family: Family::Inet,
            laddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            lport: 40000,
            raddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            rport: 9527,
            kind,
        }
    }

    fn json(e: &Event, prev: Option<u64>, ctx: &RenderCtx) -> serde_json::Value {
        let mut b = Vec::new();
        render(&mut b, ctx, e, prev);
        serde_json::from_slice(&b).expect("valid JSON")
    }

    #[test]
    fn state_record_has_contract_fields() {
        let ctx = RenderCtx::default();
        let v = json(
            &ev(EventKind::State {
                old: TcpState::SYN_SENT,
                new: TcpState::ESTABLISHED,
                sock: None,
            }),
            Some(1_500_000),
            &ctx,
        );
        assert_eq!(v["type"], "state");
        assert_eq!(v["ts_ns"], 1_000_000_000u64);
        assert_eq!(v["time"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(v["sk"], "0xffff888000001000");
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["pid"], 7);
        assert_eq!(v["comm"], "n\"c\n");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["laddr"], "10.0.0.2");
        assert_eq!(v["lport"], 40000);
        assert_eq!(v["raddr"], "10.0.0.1");
        assert_eq!(v["rport"], 9527);
        assert_eq!(v["old"], "SYN_SENT");
        assert_eq!(v["new"], "ESTABLISHED");
        assert_eq!(v["prev_ms"], 1.5);
        let v = json(
            &ev(EventKind::State {
                old: TcpState::CLOSE,
                new: TcpState::SYN_SENT,
                sock: None,
            }),
            None,
            &ctx,
        );
        assert!(v["prev_ms"].is_null());
    }

    #[test]
    fn other_kinds() {
        let mut ctx = RenderCtx::default();
        ctx.reset_reasons.insert(1, "NO_SOCKET".into());
        let v = json(
            &ev(EventKind::Reset {
                direction: ResetDirection::Sent,
                state: None,
                reason: Some(1),
            }),
            None,
            &ctx,
        );
        assert_eq!(
            (v["type"].as_str(), v["direction"].as_str()),
            (Some("reset"), Some("sent"))
        );
        assert_eq!(v["reason"], "NO_SOCKET");
        assert!(v["state"].is_null());
        let v = json(
            &ev(EventKind::Error {
                errno: 110,
                state: Some(TcpState::SYN_SENT),
            }),
            None,
            &ctx,
        );
        assert_eq!(v["errno"], "ETIMEDOUT");
        assert_eq!(v["state"], "SYN_SENT");
        let v = json(
            &ev(EventKind::Retransmit {
                state: Some(TcpState::FIN_WAIT1),
                kind: SegmentKind::Fin,
                from_flags: true,
            }),
            None,
            &ctx,
        );
        assert_eq!(
            (v["type"].as_str(), v["kind"].as_str()),
            (Some("retransmit"), Some("fin"))
        );
        let v = json(
            &ev(EventKind::SynAckRetransmit { listener: 0x10 }),
            None,
            &ctx,
        );
        assert_eq!(v["kind"], "synack");
        assert_eq!(v["listener"], "0x10");
    }
}
