//! Turns the running kernel's BTF and tracepoint formats into the ABI globals the eBPF programs
//! read (`KernelOffsets`, `TpLayout`). All kernel-version quirks of layout live here.
use tcptrace_common::{KernelOffsets, NO_FIELD, NO_OFFSET, TpLayout};

use crate::{
    btf::{Btf, Member},
    tp_format::TpFormat,
};

/// A required struct member is missing from this kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("BTF has no {0}")]
    Missing(String),
    #[error("{0}")]
    Unsupported(String),
}

fn required(btf: &Btf, st: &str, path: &str) -> Result<Member, LayoutError> {
    btf.member(st, path)
        .ok_or_else(|| LayoutError::Missing(format!("{st}.{path}")))
}

fn optional(btf: &Btf, st: &str, path: &str) -> u32 {
    btf.member(st, path).map_or(NO_OFFSET, |m| m.byte_offset)
}

/// Resolves every offset the programs use.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, LayoutError> {
    let skc = |f: &str| required(btf, "sock", &format!("__sk_common.{f}")).map(|m| m.byte_offset);
    if let Some(req) = btf.member("request_sock", "__req_common")
        && req.byte_offset != 0
    {
        return Err(LayoutError::Unsupported(format!(
            "request_sock.__req_common at offset {}, expected 0",
            req.byte_offset
        )));
    }
    let proto = required(btf, "sock", "sk_protocol")?;
    // 5.6+: a plain u16. Older kernels: a bitfield; read the aligned 32-bit word holding it.
    let (protocol, shift, bits) = if proto.bit_size == 0 {
        (proto.byte_offset, 0, 16)
    } else {
        let bit = proto.byte_offset * 8 + proto.bit_offset;
        let word = bit / 32 * 4;
        (word, bit - word * 8, proto.bit_size)
    };
    Ok(KernelOffsets {
        valid: 1,
        skc_family: skc("skc_family")?,
        skc_state: skc("skc_state")?,
        skc_num: skc("skc_num")?,
        skc_dport: skc("skc_dport")?,
        skc_rcv_saddr: skc("skc_rcv_saddr")?,
        skc_daddr: skc("skc_daddr")?,
        skc_v6_rcv_saddr: skc("skc_v6_rcv_saddr")?,
        skc_v6_daddr: skc("skc_v6_daddr")?,
        inet_sport: optional(btf, "inet_sock", "inet_sport"),
        skc_net: skc("skc_net.net")?,
        net_ns_inum: required(btf, "net", "ns.inum")?.byte_offset,
        sk_protocol: protocol,
        sk_protocol_shift: shift,
        sk_protocol_bits: bits,
        sk_err: optional(btf, "sock", "sk_err"),
        skb_cb: optional(btf, "sk_buff", "cb"),
        tcp_skb_cb_flags: optional(btf, "tcp_skb_cb", "tcp_flags"),
        skb_head: optional(btf, "sk_buff", "head"),
        skb_network_header: optional(btf, "sk_buff", "network_header"),
        skb_transport_header: optional(btf, "sk_buff", "transport_header"),
        skb_dev: optional(btf, "sk_buff", "dev"),
        dev_nd_net: optional(btf, "net_device", "nd_net.net"),
        ..cgroup_offsets(|st, path| btf.member(st, path))
    })
}

/// Where a socket's cgroup v2 id is, by kernel:
/// - `sock.sk_cgrp_data`: since 5.15 a struct whose `cgroup` member is the v2 cgroup pointer;
///   4.5 to 5.14 a union whose word `val` holds that pointer only while its low bit
///   (`is_data`, set when net_cls/net_prio v1 data displaced it) is clear.
/// - `cgroup.kn->id`: a `u64` since 5.5 (before, a union of ino and generation; unsupported).
/// - the ancestors for the subtree filter: `cgroup.ancestors[]` pointers since 6.1, the ids
///   themselves in `cgroup.ancestor_ids[]` before.
///
/// Anything missing leaves the cgroup unknown (records without one), never an error: no
/// cgroup support (`CONFIG_SOCK_CGROUP_DATA` off) is a kernel tcptrace still traces.
pub fn cgroup_offsets(member: impl Fn(&str, &str) -> Option<Member>) -> KernelOffsets {
    let none = KernelOffsets::none();
    let off = |st: &str, path: &str| member(st, path).map_or(NO_OFFSET, |m| m.byte_offset);
    let (sk_cgrp, tagged) = match member("sock", "sk_cgrp_data.cgroup") {
        Some(m) if m.size == 8 => (m.byte_offset, 0),
        _ => match member("sock", "sk_cgrp_data.val") {
            Some(m) if m.size == 8 => (m.byte_offset, 1),
            _ => return none,
        },
    };
    let kn_id = match member("kernfs_node", "id") {
        Some(m) if m.size == 8 => m.byte_offset,
        _ => return none,
    };
    let cgroup_kn = off("cgroup", "kn");
    if cgroup_kn == NO_OFFSET {
        return none;
    }
    KernelOffsets {
        sk_cgrp,
        sk_cgrp_tagged: tagged,
        cgroup_kn,
        kn_id,
        cgroup_level: off("cgroup", "level"),
        cgroup_ancestors: off("cgroup", "ancestors"),
        cgroup_ancestor_ids: off("cgroup", "ancestor_ids"),
        ..none
    }
}

impl CgroupSupport {
    /// What these offsets allow.
    pub fn of(o: &KernelOffsets) -> Self {
        if o.sk_cgrp == NO_OFFSET {
            Self::None
        } else if o.cgroup_level == NO_OFFSET
            || (o.cgroup_ancestors == NO_OFFSET && o.cgroup_ancestor_ids == NO_OFFSET)
        {
            Self::IdOnly
        } else {
            Self::Filter
        }
    }
}

/// How much of the cgroup attribution this kernel's layout supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupSupport {
    /// Records carry no cgroup.
    None,
    /// Records carry the id; `--cgroup` cannot be applied in the kernel.
    IdOnly,
    /// Ids and the in-kernel subtree filter.
    Filter,
}

/// Field offsets of a classic tracepoint record.
pub fn tp_layout(fmt: &TpFormat) -> TpLayout {
    let off = |name: &str| fmt.field(name).map_or(NO_FIELD, |f| f.offset);
    TpLayout {
        skaddr: off("skaddr"),
        skbaddr: off("skbaddr"),
        req: off("req"),
        oldstate: off("oldstate"),
        newstate: off("newstate"),
        state: off("state"),
        sport: off("sport"),
        dport: off("dport"),
        family: off("family"),
        protocol: off("protocol"),
        saddr: off("saddr"),
        daddr: off("daddr"),
        saddr_v6: off("saddr_v6"),
        daddr_v6: off("daddr_v6"),
        err: off("err"),
        error: off("error"),
        reason: off("reason"),
        // Since 6.x `tcp_send_reset` stores whole `sockaddr_in6`-sized addresses.
        sockaddr: u16::from(fmt.field("saddr").is_some_and(|f| f.size >= 16)),
    }
}

/// `enum sk_rst_reason` names without their `SK_RST_REASON_` prefix (empty before 6.10).
pub fn rst_reason_names(btf: &Btf) -> Vec<(u32, String)> {
    btf.enum_values("sk_rst_reason")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, v)| {
            let short = name.strip_prefix("SK_RST_REASON_").unwrap_or(&name);
            Some((u32::try_from(v).ok()?, short.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tp_format;

    fn live(path: &str) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if std::env::var_os("CI").is_some() => panic!("{path}: {e}"),
            Err(e) => {
                eprintln!("skipping: {path}: {e}");
                None
            }
        }
    }

    #[test]
    fn live_kernel_offsets() {
        let Some(bytes) = live("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let btf = Btf::parse(&bytes).unwrap();
        let o = kernel_offsets(&btf).unwrap();
        assert_eq!(o.valid, 1);
        assert_eq!(o.skc_family, 16);
        assert_eq!(o.skc_state, 18);
        assert_eq!((o.sk_protocol_shift, o.sk_protocol_bits), (0, 16));
        for v in [
            o.skb_cb,
            o.tcp_skb_cb_flags,
            o.skb_head,
            o.skb_dev,
            o.dev_nd_net,
            o.sk_err,
        ] {
            assert_ne!(v, NO_OFFSET);
        }
        let reasons = rst_reason_names(&btf);
        assert!(reasons.contains(&(1, "NO_SOCKET".to_string())));
    }

    fn member(byte_offset: u32, size: u32) -> Member {
        Member {
            byte_offset,
            bit_offset: 0,
            bit_size: 0,
            size,
        }
    }

    /// The cgroup members of one kernel's BTF: (struct, path, offset, size).
    fn shape<'a>(
        members: &'a [(&str, &str, u32, u32)],
    ) -> impl Fn(&str, &str) -> Option<Member> + 'a {
        move |st, path| {
            members
                .iter()
                .find(|m| m.0 == st && m.1 == path)
                .map(|m| member(m.2, m.3))
        }
    }

    #[test]
    fn cgroup_layouts_of_each_kernel_generation() {
        // 6.1 and later (6.12, 6.18): a cgroup pointer, ancestors as pointers.
        let o = cgroup_offsets(shape(&[
            ("sock", "sk_cgrp_data.cgroup", 664, 8),
            ("kernfs_node", "id", 72, 8),
            ("cgroup", "kn", 256, 8),
            ("cgroup", "level", 224, 4),
            ("cgroup", "ancestors", 1984, 0),
        ]));
        assert_eq!(
            (o.sk_cgrp, o.sk_cgrp_tagged, o.cgroup_kn, o.kn_id),
            (664, 0, 256, 72)
        );
        assert_eq!(
            (o.cgroup_ancestors, o.cgroup_ancestor_ids),
            (1984, NO_OFFSET)
        );
        assert_eq!(CgroupSupport::of(&o), CgroupSupport::Filter);
        // 5.15 to 6.0: a cgroup pointer, ancestor ids.
        let o = cgroup_offsets(shape(&[
            ("sock", "sk_cgrp_data.cgroup", 648, 8),
            ("kernfs_node", "id", 64, 8),
            ("cgroup", "kn", 256, 8),
            ("cgroup", "level", 232, 4),
            ("cgroup", "ancestor_ids", 2000, 0),
        ]));
        assert_eq!((o.sk_cgrp_tagged, o.cgroup_ancestors), (0, NO_OFFSET));
        assert_eq!(o.cgroup_ancestor_ids, 2000);
        assert_eq!(CgroupSupport::of(&o), CgroupSupport::Filter);
        // 4.5 to 5.14: the tagged union word.
        let o = cgroup_offsets(shape(&[
            ("sock", "sk_cgrp_data.val", 640, 8),
            ("kernfs_node", "id", 64, 8),
            ("cgroup", "kn", 256, 8),
        ]));
        assert_eq!((o.sk_cgrp, o.sk_cgrp_tagged), (640, 1));
        assert_eq!(CgroupSupport::of(&o), CgroupSupport::IdOnly);
        // Before 5.5 `kernfs_node.id` is a union of two u32s under another name; no
        // `sk_cgrp_data` at all without CONFIG_SOCK_CGROUP_DATA.
        for members in [
            &[
                ("sock", "sk_cgrp_data.val", 640, 8),
                ("kernfs_node", "id", 64, 4),
                ("cgroup", "kn", 256, 8),
            ][..],
            &[("kernfs_node", "id", 64, 8), ("cgroup", "kn", 256, 8)][..],
        ] {
            let o = cgroup_offsets(shape(members));
            assert_eq!(o, KernelOffsets::none());
            assert_eq!(CgroupSupport::of(&o), CgroupSupport::None);
        }
    }

    #[test]
    fn live_cgroup_offsets() {
        let Some(bytes) = live("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let o = kernel_offsets(&Btf::parse(&bytes).unwrap()).unwrap();
        assert_eq!(o.sk_cgrp_tagged, 0);
        assert_ne!(o.cgroup_ancestors, NO_OFFSET);
        assert_eq!(CgroupSupport::of(&o), CgroupSupport::Filter);
    }

    #[test]
    fn live_tracepoint_layouts() {
        let Some(text) = live("/sys/kernel/tracing/events/sock/inet_sock_set_state/format") else {
            return;
        };
        let l = tp_layout(&tp_format::parse(&String::from_utf8_lossy(&text)).unwrap());
        assert_eq!((l.skaddr, l.oldstate, l.newstate), (8, 16, 20));
        assert_eq!((l.sport, l.dport, l.family, l.protocol), (24, 26, 28, 30));
        assert_eq!((l.saddr, l.daddr, l.saddr_v6, l.daddr_v6), (32, 36, 40, 56));
        assert_eq!(l.sockaddr, 0);
        let Some(text) = live("/sys/kernel/tracing/events/tcp/tcp_send_reset/format") else {
            return;
        };
        let l = tp_layout(&tp_format::parse(&String::from_utf8_lossy(&text)).unwrap());
        assert_eq!(l.sockaddr, 1);
        assert_ne!(l.reason, NO_FIELD);
        let Some(text) = live("/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format") else {
            return;
        };
        let l = tp_layout(&tp_format::parse(&String::from_utf8_lossy(&text)).unwrap());
        assert_eq!(l.err, 76);
    }
}
