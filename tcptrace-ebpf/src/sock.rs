//! Reads `struct sock_common` fields (shared by full, request and timewait sockets) and packet
//! headers at the offsets userspace resolved from BTF.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use tcptrace_common::{AF_INET, AF_INET6, Header, NO_OFFSET, hdr_flags};

use crate::globals::get;

/// Reads a `T` at `base + off`; `None` when the offset is unknown or the read faults.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if off == NO_OFFSET || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and returns an error instead
    // of faulting; the result is only interpreted as plain integers.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Network namespace inode of a socket (`sk->__sk_common.skc_net.net->ns.inum`).
#[inline(always)]
pub fn netns_of_sock(sk: u64) -> Option<u32> {
    let net: u64 = read(sk, get!(OFFSETS.skc_net))?;
    read(net, get!(OFFSETS.net_ns_inum))
}

/// `sk->sk_protocol`, wherever this kernel keeps it.
#[inline(always)]
pub fn protocol(sk: u64) -> Option<u16> {
    let word: u32 = read(sk, get!(OFFSETS.sk_protocol))?;
    let bits = get!(OFFSETS.sk_protocol_bits) & 31;
    let shift = get!(OFFSETS.sk_protocol_shift) & 31;
    let mask = if bits == 0 {
        0xffff
    } else {
        (1u32 << bits) - 1
    };
    Some(((word >> shift) & mask) as u16)
}

/// `skc_state` of a socket, request socket or timewait socket.
#[inline(always)]
pub fn state(sk: u64) -> Option<u8> {
    read(sk, get!(OFFSETS.skc_state))
}

/// `TCP_TIME_WAIT` and `TCP_NEW_SYN_RECV`: mini sockets without an `inet_sock`.
const TIME_WAIT: u8 = 6;
const NEW_SYN_RECV: u8 = 12;

/// Bytes of `struct sock_common` copied with one helper call: addresses, ports, family, state
/// and namespace pointer all lie in its first 96 bytes on the kernels we know. A field found
/// beyond (another layout) is read on its own, so nothing depends on this being true.
const HEAD: usize = 96;

/// The start of a socket, as copied by [`Head::of`].
#[repr(C, align(8))]
struct Head([u8; HEAD]);

impl Head {
    #[inline(always)]
    fn of(sk: u64) -> Option<Self> {
        if sk == 0 {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel copies from any kernel address and reports faults
        // instead of taking them; any byte pattern is a valid `Head`.
        unsafe { bpf_probe_read_kernel(sk as *const Head).ok() }
    }

    /// The `T` at `off` of the socket: from the copy when it holds it, else read directly.
    #[inline(always)]
    fn get<T: Copy>(&self, sk: u64, off: u32) -> Option<T> {
        let o = off as usize;
        if off != NO_OFFSET && o <= HEAD - core::mem::size_of::<T>() {
            // SAFETY: `o + size_of::<T>() <= HEAD`, so the read stays inside the copy;
            // `read_unaligned` has no alignment requirement and `T` is a plain integer type.
            Some(unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(o).cast::<T>()) })
        } else {
            read(sk, off)
        }
    }
}

/// Fills family, ports, addresses and namespace of `hdr` from a socket. Returns false when the
/// socket's family could not be read (no BTF or a fault).
#[inline(always)]
pub fn fill_from_sock(hdr: &mut Header, sk: u64) -> bool {
    let Some(head) = Head::of(sk) else {
        return false;
    };
    let Some(family) = head.get::<u16>(sk, get!(OFFSETS.skc_family)) else {
        return false;
    };
    hdr.family = family as u8;
    // Local port: `inet_sport` for full sockets (it survives `inet_put_port` on the way to
    // CLOSE), `skc_num` for mini sockets, which have no `inet_sock`.
    let mini = matches!(
        head.get::<u8>(sk, get!(OFFSETS.skc_state)),
        Some(TIME_WAIT | NEW_SYN_RECV)
    );
    let sport = get!(OFFSETS.inet_sport);
    hdr.lport = if !mini && sport != NO_OFFSET {
        u16::from_be(read::<u16>(sk, sport).unwrap_or(0))
    } else {
        head.get::<u16>(sk, get!(OFFSETS.skc_num)).unwrap_or(0)
    };
    hdr.rport = u16::from_be(head.get::<u16>(sk, get!(OFFSETS.skc_dport)).unwrap_or(0));
    if hdr.family == AF_INET {
        let l: [u8; 4] = head.get(sk, get!(OFFSETS.skc_rcv_saddr)).unwrap_or([0; 4]);
        let r: [u8; 4] = head.get(sk, get!(OFFSETS.skc_daddr)).unwrap_or([0; 4]);
        hdr.laddr[..4].copy_from_slice(&l);
        hdr.raddr[..4].copy_from_slice(&r);
    } else if hdr.family == AF_INET6 {
        hdr.laddr = head
            .get(sk, get!(OFFSETS.skc_v6_rcv_saddr))
            .unwrap_or([0; 16]);
        hdr.raddr = head.get(sk, get!(OFFSETS.skc_v6_daddr)).unwrap_or([0; 16]);
    }
    hdr.flags |= hdr_flags::ADDRS;
    if let Some(net) = head.get::<u64>(sk, get!(OFFSETS.skc_net))
        && let Some(ns) = read::<u32>(net, get!(OFFSETS.net_ns_inum))
    {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
    if !mini {
        fill_cgroup(hdr, sk);
    }
    true
}

/// `kn->id` of a `struct cgroup *`: the cgroup's id.
#[inline(always)]
fn cgroup_id(cgrp: u64) -> Option<u64> {
    let kn: u64 = read(cgrp, get!(OFFSETS.cgroup_kn))?;
    read(kn, get!(OFFSETS.kn_id))
}

/// Whether `cgrp` is the filter's cgroup or below it: its ancestor at the filter's level is
/// the filter's cgroup (`ancestors[]` pointers on 6.1+, `ancestor_ids[]` before).
#[inline(always)]
fn under_filter(cgrp: u64, id: u64) -> bool {
    let want = get!(FILTER.cgroup);
    if id == want {
        return true;
    }
    let at = get!(FILTER.cgroup_level);
    let Some(level) = read::<i32>(cgrp, get!(OFFSETS.cgroup_level)) else {
        return false;
    };
    if level < 0 || (level as u32) <= at {
        return false;
    }
    let slot = at as u64 * 8;
    let ptrs = get!(OFFSETS.cgroup_ancestors);
    let ids = get!(OFFSETS.cgroup_ancestor_ids);
    let found = if ptrs != NO_OFFSET {
        read::<u64>(cgrp + slot, ptrs).and_then(cgroup_id)
    } else {
        read::<u64>(cgrp + slot, ids)
    };
    found == Some(want)
}

/// Sets `hdr.cgroup` from a full socket's `sk_cgrp_data` (the v2 cgroup of the task that
/// created it), and marks whether it lies in the `--cgroup` filter's subtree. Request and
/// timewait sockets have no `sk_cgrp_data`: callers pass full sockets only.
#[inline(always)]
pub fn fill_cgroup(hdr: &mut Header, sk: u64) {
    let Some(cgrp) = read::<u64>(sk, get!(OFFSETS.sk_cgrp)) else {
        return;
    };
    // Before 5.15 the word is a union that holds v1 data instead while its low bit is set.
    if cgrp == 0 || (get!(OFFSETS.sk_cgrp_tagged) != 0 && cgrp & 1 != 0) {
        return;
    }
    let Some(id) = cgroup_id(cgrp) else {
        return;
    };
    hdr.cgroup = id;
    hdr.flags |= hdr_flags::CGROUP;
    if get!(FILTER.cgroup) != 0 && under_filter(cgrp, id) {
        hdr.flags |= hdr_flags::IN_CGROUP;
    }
}

/// Sets `hdr.cgroup` from a socket that may be a request or timewait socket (state read).
#[inline(always)]
pub fn fill_cgroup_any(hdr: &mut Header, sk: u64) {
    if !matches!(state(sk), Some(TIME_WAIT | NEW_SYN_RECV) | None) {
        fill_cgroup(hdr, sk);
    }
}

/// Sets `hdr.netns` from a socket when BTF offsets are known.
#[inline(always)]
pub fn fill_netns(hdr: &mut Header, sk: u64) {
    if let Some(ns) = netns_of_sock(sk) {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
}

/// TCP flags of a segment about to be (re)transmitted: `TCP_SKB_CB(skb)->tcp_flags`.
#[inline(always)]
pub fn skb_tcp_flags(skb: u64) -> Option<u8> {
    let cb = get!(OFFSETS.skb_cb);
    let flags = get!(OFFSETS.tcp_skb_cb_flags);
    if cb == NO_OFFSET || flags == NO_OFFSET {
        return None;
    }
    read(skb, cb + flags)
}

/// Fills `hdr` from a received packet a reset is answered to (no socket): local is the packet's
/// destination. The namespace comes from the receiving device.
#[inline(always)]
pub fn fill_from_incoming_skb(hdr: &mut Header, skb: u64) -> bool {
    let Some(head) = read::<u64>(skb, get!(OFFSETS.skb_head)) else {
        return false;
    };
    let Some(nh) = read::<u16>(skb, get!(OFFSETS.skb_network_header)) else {
        return false;
    };
    let Some(th) = read::<u16>(skb, get!(OFFSETS.skb_transport_header)) else {
        return false;
    };
    let ip = head + nh as u64;
    let Some(first) = read::<u8>(ip, 0) else {
        return false;
    };
    match first >> 4 {
        4 => {
            hdr.family = AF_INET;
            let src: [u8; 4] = read(ip, 12).unwrap_or([0; 4]);
            let dst: [u8; 4] = read(ip, 16).unwrap_or([0; 4]);
            hdr.raddr[..4].copy_from_slice(&src);
            hdr.laddr[..4].copy_from_slice(&dst);
        }
        6 => {
            hdr.family = AF_INET6;
            hdr.raddr = read(ip, 8).unwrap_or([0; 16]);
            hdr.laddr = read(ip, 24).unwrap_or([0; 16]);
        }
        _ => return false,
    }
    let tcp = head + th as u64;
    hdr.rport = u16::from_be(read::<u16>(tcp, 0).unwrap_or(0));
    hdr.lport = u16::from_be(read::<u16>(tcp, 2).unwrap_or(0));
    hdr.flags |= hdr_flags::ADDRS;
    if let Some(dev) = read::<u64>(skb, get!(OFFSETS.skb_dev))
        && let Some(net) = read::<u64>(dev, get!(OFFSETS.dev_nd_net))
        && let Some(ns) = read::<u32>(net, get!(OFFSETS.net_ns_inum))
    {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
    true
}
