//! The hand-written JSON writer behind the hot line kinds (events and connection records):
//! appends keys and values straight into the output buffer, no intermediate values, no
//! formatting machinery for the common cases.
use std::{io::Write as _, net::IpAddr};

use crate::{context::Context, tcp::TcpState};

/// Whether `s` can be written as a JSON string as it is: printable ASCII without a quote or a
/// backslash.
/// Eight bytes at a time (names and paths are short, but on every record).
#[inline]
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        // A byte below 0x20, at or above 0x7f, a quote or a backslash.
        let bad = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | (w.wrapping_add(ONES) | w) & HIGH
            | has_zero(w ^ (ONES * u64::from(b'"')))
            | has_zero(w ^ (ONES * u64::from(b'\\')));
        if bad != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Appends `s` as a JSON string (lossy UTF-8, control characters escaped).
pub fn push_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    // Fast path: names and addresses are plain printable ASCII.
    if plain(s) {
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
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
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

/// `"name"` for a name of ours that needs no escaping (states, kinds, notes, errno names).
#[inline(always)]
pub fn push_name(buf: &mut Vec<u8>, name: &'static str) {
    debug_assert!(plain(name.as_bytes()), "{name}");
    buf.push(b'"');
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'"');
}

/// `,"k":`
#[inline(always)]
pub fn key(buf: &mut Vec<u8>, k: &str) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(k.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// An integer value.
#[inline(always)]
pub fn push_int(buf: &mut Vec<u8>, v: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `,"k":123`
#[inline(always)]
pub fn num(buf: &mut Vec<u8>, k: &str, v: impl itoa::Integer) {
    key(buf, k);
    push_int(buf, v);
}

/// `,"k":123` or `,"k":null`
#[inline(always)]
pub fn opt_num(buf: &mut Vec<u8>, k: &str, v: Option<impl itoa::Integer>) {
    match v {
        Some(v) => num(buf, k, v),
        None => null(buf, k),
    }
}

/// `,"k":true|false|null`
#[inline(always)]
pub fn opt_bool(buf: &mut Vec<u8>, k: &str, v: Option<bool>) {
    key(buf, k);
    buf.extend_from_slice(match v {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
}

/// `,"k":{"a":..,"b":..}`, each value written by `put`.
pub fn object<'a, V>(
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
#[inline(always)]
pub fn ident(buf: &mut Vec<u8>, k: &str, v: &'static str) {
    key(buf, k);
    buf.push(b'"');
    buf.extend_from_slice(v.as_bytes());
    buf.push(b'"');
}

/// `"0x…"`: a kernel address.
pub fn push_hex(buf: &mut Vec<u8>, v: u64) {
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
pub fn push_ip(buf: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            // At most 17 bytes: `"255.255.255.255"`, built in place.
            let mut text = [0u8; 17];
            text[0] = b'"';
            let mut n = 1;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    text[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    text[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + o % 10;
                n += 1;
            }
            text[n] = b'"';
            buf.extend_from_slice(&text[..n + 1]);
        }
        IpAddr::V6(_) => {
            let _ = write!(buf, "\"{addr}\"");
        }
    }
}

/// `,"k":"escaped text"`
#[inline(always)]
pub fn text(buf: &mut Vec<u8>, k: &str, v: &str) {
    key(buf, k);
    push_str(buf, v.as_bytes());
}

/// `,"k":null`
#[inline(always)]
pub fn null(buf: &mut Vec<u8>, k: &str) {
    key(buf, k);
    buf.extend_from_slice(b"null");
}

/// `,"k":"STATE"` or `,"k":null`
#[inline]
pub fn opt_state(buf: &mut Vec<u8>, k: &str, s: Option<TcpState>) {
    match s {
        Some(s) => text(buf, k, s.name()),
        None => null(buf, k),
    }
}

/// `,"k":1.234` (milliseconds with microsecond precision) or `,"k":null`.
#[inline(always)]
pub fn opt_ms(buf: &mut Vec<u8>, k: &str, ns: Option<u64>) {
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
    push_int(buf, us / 1000);
    let frac = (us % 1000) as u16;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `"2026-…Z"`: the RFC 3339 time of a monotonic stamp.
#[inline]
pub fn push_time(buf: &mut Vec<u8>, ctx: &Context, ts_ns: u64) {
    buf.push(b'"');
    ctx.write_time(buf, ts_ns);
    buf.push(b'"');
}

/// The opening of every record: `{"type":"…","ts_ns":…,"time":"…"`.
#[inline]
pub fn head(buf: &mut Vec<u8>, ctx: &Context, ty: &str, ts_ns: u64) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(ty.as_bytes());
    buf.push(b'"');
    num(buf, "ts_ns", ts_ns);
    key(buf, "time");
    push_time(buf, ctx, ts_ns);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> String {
        let mut v = Vec::new();
        push_str(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn strings_are_escaped_and_valid() {
        assert_eq!(s(b"nc"), "\"nc\"");
        assert_eq!(s(b"a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(s(b"\x1b[2J\x07\n"), "\"\\u001b[2J\\u0007\\n\"");
        assert_eq!(s(b"\x7f"), "\"\\u007f\"");
        let lossy = s(b"\xff");
        assert_eq!(serde_json::from_str::<String>(&lossy).unwrap(), "\u{fffd}");
    }

    #[test]
    fn word_check_agrees_with_the_byte_check() {
        let byte = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
        for len in [1usize, 7, 8, 9, 16, 17, 24] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    assert_eq!(plain(&s), byte(b), "{s:?}");
                    // A bad byte next to another one.
                    if pos + 1 < len {
                        s[pos + 1] = 0xff;
                        assert!(!plain(&s));
                    }
                }
            }
        }
        assert!(plain(b"") && plain(b"/system.slice/nginx.service"));
    }

    #[test]
    fn milliseconds_and_addresses() {
        let mut v = Vec::new();
        push_ms(&mut v, 1_234_567);
        push_hex(&mut v, 0);
        push_ip(&mut v, &"10.0.0.1".parse().unwrap());
        push_ip(&mut v, &"fd00::1".parse().unwrap());
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1.235\"0x0\"\"10.0.0.1\"\"fd00::1\""
        );
        for a in ["0.0.0.0", "255.255.255.255", "127.0.10.109", "9.99.100.1"] {
            let mut v = Vec::new();
            push_ip(&mut v, &a.parse().unwrap());
            assert_eq!(String::from_utf8(v).unwrap(), format!("\"{a}\""));
        }
    }
}
