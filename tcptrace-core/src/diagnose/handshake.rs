//! The handshake's negotiated options, and which sysctl (here) or which peer switched each
//! one off; the peer's MSS against what the local interface's MTU allows.
use super::{Diagnosis, Inputs, Severity, Value, peer};
use crate::{
    lifecycle::Conn,
    sysctl::{self as sc},
    tcp::TcpState,
};

/// IP + TCP headers without options: 20 + 20 for IPv4, 40 + 20 for IPv6.
fn header_bytes(ipv6: bool) -> u32 {
    if ipv6 { 60 } else { 40 }
}

/// The largest IP packet: the 16-bit total length (IPv4) or payload length (IPv6, without
/// jumbograms).
const IP_MAX_LEN: u32 = 65_535;

/// The MSS a host announces in its SYN for a route of `mtu` (`dst_metric_advmss`: IPv4's
/// `ipv4_default_advmss`, IPv6's `ip6_default_advmss`): the MTU less the IP and TCP headers
/// (TCP options are not subtracted: they shrink each segment's payload, not the announced
/// MSS), at least the route minimum (`min_adv_mss`: 256, and 1220 for IPv6), and capped by the
/// packet-length field: `65535 − 40` for IPv4, while IPv6 announces 65535 ("use path MTU
/// discovery") once `65535 − 20` is passed. So loopback (MTU 65536) announces 65495 over IPv4
/// and 65476 over IPv6.
pub fn advertised_mss(mtu: u32, ipv6: bool) -> u32 {
    let h = header_bytes(ipv6);
    let mss = mtu.saturating_sub(h);
    if ipv6 {
        let mss = mss.max(1280 - h);
        if mss > IP_MAX_LEN - 20 {
            IP_MAX_LEN
        } else {
            mss
        }
    } else {
        mss.max(256).min(IP_MAX_LEN - h)
    }
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
            let v6 = c.laddr.is_ipv6();
            let allowed = advertised_mss(mtu, v6);
            d.expected.push(("mtu", mtu.into()));
            d.expected.push(("mss", allowed.into()));
            d.agrees = Some(u32::from(mss) == allowed);
            let why = if allowed < mtu.saturating_sub(header_bytes(v6)) {
                format!(
                    "the most a {IP_MAX_LEN}-byte IP packet carries: {IP_MAX_LEN} − {} header bytes, below what MTU {mtu} would allow",
                    header_bytes(v6)
                )
            } else if allowed > mtu.saturating_sub(header_bytes(v6)) {
                format!("the kernel's floor for MTU {mtu}")
            } else {
                format!("MTU {mtu} − {} header bytes", header_bytes(v6))
            };
            mss_text = match u32::from(mss).cmp(&allowed) {
                std::cmp::Ordering::Less => format!(
                    "; the peer announced MSS {mss}, less than the {allowed} a host with our interface's MTU {mtu} announces ({why}): its MTU is smaller, or an MSS clamp (TCP_MAXSEG, a firewall's TCPMSS rule) is on the path"
                ),
                std::cmp::Ordering::Equal => format!("; MSS {mss} (= {why})"),
                std::cmp::Ordering::Greater => format!(
                    "; the peer announced MSS {mss}, more than the {allowed} our interface's MTU {mtu} gives ({why}): its MTU is larger; we send at most our own"
                ),
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

#[cfg(test)]
mod tests {
    use super::advertised_mss;

    /// `(mtu, IPv4 MSS, IPv6 MSS)` as the kernel announces them (`ipv4_default_advmss`,
    /// `ip6_default_advmss` with the default `min_adv_mss`), checked live for 1500 and 65536.
    const MSS_BY_MTU: [(u32, u32, u32); 9] = [
        (68, 256, 1220),
        (576, 536, 1220),
        (1280, 1240, 1220),
        (1400, 1360, 1340),
        (1500, 1460, 1440),
        (9000, 8960, 8940),
        (65_535, 65_495, 65_475),
        (65_536, 65_495, 65_476),
        (65_600, 65_495, 65_535),
    ];

    #[test]
    fn announced_mss_for_every_mtu() {
        for (mtu, v4, v6) in MSS_BY_MTU {
            assert_eq!(advertised_mss(mtu, false), v4, "IPv4 MTU {mtu}");
            assert_eq!(advertised_mss(mtu, true), v6, "IPv6 MTU {mtu}");
        }
    }
}
