//! Reads socket fields (`struct sock_common`, shared by full, request and timewait sockets, and
//! the full socket's `inet_sock`/`tcp_sock` parts) and packet headers at the offsets userspace
//! resolved from BTF, in one of two ways ([`Mem`]): plain loads through the BTF-typed pointers
//! BTF tracepoints hand us, or `bpf_probe_read_kernel` for plain addresses.
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use tcptrace_common::{
    AF_INET, AF_INET6, Header, NO_OFFSET, SNAP_BYTES, SNAP_FIELDS, SNAP_WINDOW_LEN, SNAP_WINDOWS,
    hdr_flags,
};

use crate::globals::get;

/// How a program reads kernel memory.
pub trait Mem: Copy {
    /// Plain loads ([`Direct`]): only through pointers whose BTF type the verifier knows.
    const DIRECT: bool;

    /// The `T` at `base + off`; `None` when the offset is unknown or `base` is null.
    fn read<T: Copy>(self, base: u64, off: u32) -> Option<T>;

    /// `sk` as a full TCP socket (the base for `inet_sock` and `tcp_sock` fields), or 0 for a
    /// request or timewait socket.
    fn full(self, sk: u64) -> u64;

    /// Copies the socket bytes `SnapPlan` asks for on a change to `new` into a snapshot;
    /// `full` is [`Mem::full`] of the socket.
    ///
    /// # Safety
    /// `out` points to `SNAP_BYTES` writable bytes.
    unsafe fn snapshot(self, out: *mut u8, full: u64, new: u8);
}

/// `bpf_probe_read_kernel`: any kernel address (classic tracepoints hand us integers). Each
/// read is a helper call.
#[derive(Clone, Copy)]
pub struct Probe;

/// Plain loads through the BTF-typed pointers BTF tracepoints hand us (and pointers loaded
/// through those), at offsets the verifier knows (frozen `.rodata`): no helper call, the JIT
/// emits a load that cannot fault. The verifier allows an access within one member of the
/// pointer's type only; fields beyond `struct sock` are read through the `struct tcp_sock`
/// pointer `bpf_skc_to_tcp_sock` (Linux 5.9+) returns, and packet bytes (behind a plain
/// `unsigned char *`) through [`Probe`].
#[derive(Clone, Copy)]
pub struct Direct;

impl Mem for Probe {
    const DIRECT: bool = false;

    #[inline(always)]
    fn read<T: Copy>(self, base: u64, off: u32) -> Option<T> {
        if off == NO_OFFSET || base == 0 {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel copies from any kernel address and returns an error
        // instead of faulting; the result is only interpreted as plain integers.
        unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
    }

    #[inline(always)]
    fn full(self, sk: u64) -> u64 {
        match self.read::<u8>(sk, get!(OFFSETS.skc_state)) {
            Some(TIME_WAIT | NEW_SYN_RECV) => 0,
            _ => sk,
        }
    }

    #[inline(always)]
    unsafe fn snapshot(self, out: *mut u8, full: u64, new: u8) {
        let n = get!(SNAP.n) as usize;
        let mask = get!(SNAP.windows[(new & 15) as usize]);
        let mut i = 0;
        while i < SNAP_WINDOWS {
            let len = get!(SNAP.len[i]);
            let off = get!(SNAP.off[i]);
            let wanted = mask & (1 << i) != 0;
            // SAFETY: the destination is window `i` of the caller's snapshot; `len` is checked
            // against the window size, so the copy stays inside it. bpf_probe_read_kernel
            // reports faults (zero-filling the destination) instead of taking them.
            unsafe {
                let dst = out.add(i * SNAP_WINDOW_LEN);
                if i < n && wanted && len > 0 && len as usize <= SNAP_WINDOW_LEN && full != 0 {
                    let src = (full + off as u64) as *const core::ffi::c_void;
                    generated::bpf_probe_read_kernel(dst.cast(), len, src);
                } else {
                    core::ptr::write_bytes(dst, 0, SNAP_WINDOW_LEN);
                }
            }
            i += 1;
        }
    }
}

/// Copies piece `$i` of the field-by-field snapshot plan when `$mask` asks for it: a load of
/// its size (1, 2, 4 or 8, known to the verifier from `.rodata`) at its offset.
macro_rules! piece {
    ($out:ident, $full:ident, $mask:ident, $i:literal) => {
        if $i < get!(SNAP.n_fields) as usize && $mask & (1 << $i) != 0 {
            let off = get!(SNAP.field_off[$i]);
            let pos = get!(SNAP.field_pos[$i]) as usize;
            let size = get!(SNAP.field_size[$i]);
            if pos + size as usize <= SNAP_BYTES {
                // SAFETY: `pos + 8` is within the caller's snapshot; the load is a plain load
                // through the socket's BTF pointer, which the verifier checked.
                unsafe {
                    let dst = $out.add(pos);
                    match size {
                        1 => copy::<u8>(dst, $full, off),
                        2 => copy::<u16>(dst, $full, off),
                        4 => copy::<u32>(dst, $full, off),
                        8 => copy::<u64>(dst, $full, off),
                        _ => {}
                    }
                }
            }
        }
    };
}

/// Stores the `T` at `base + off` (a plain load) at `dst`, unaligned.
///
/// # Safety
/// `dst` has room for a `T`; `base` is a BTF pointer the verifier checks the load against.
#[inline(always)]
unsafe fn copy<T: Copy>(dst: *mut u8, base: u64, off: u32) {
    if let Some(v) = Direct.read::<T>(base, off) {
        // SAFETY: the caller guarantees room for a `T` at `dst`.
        unsafe { core::ptr::write_unaligned(dst.cast::<T>(), v) };
    }
}

impl Mem for Direct {
    const DIRECT: bool = true;

    #[inline(always)]
    fn read<T: Copy>(self, base: u64, off: u32) -> Option<T> {
        if off == NO_OFFSET || base == 0 {
            return None;
        }
        // SAFETY: `base` is a BTF pointer the verifier tracks and `off` a constant it knows
        // (from frozen `.rodata`); it accepts the load only within one member of that type and
        // the JIT makes it a load that reads 0 instead of faulting. Volatile keeps the
        // compiler from merging neighbouring loads into one the verifier would refuse.
        Some(unsafe { core::ptr::read_volatile((base + off as u64) as *const T) })
    }

    #[inline(always)]
    fn full(self, sk: u64) -> u64 {
        // SAFETY: the helper checks that `sk` is a full TCP socket and returns NULL otherwise.
        unsafe { generated::bpf_skc_to_tcp_sock(sk as *mut core::ffi::c_void) as u64 }
    }

    #[inline(always)]
    unsafe fn snapshot(self, out: *mut u8, full: u64, new: u8) {
        // SAFETY: the caller guarantees `SNAP_BYTES` writable bytes at `out`.
        unsafe { core::ptr::write_bytes(out, 0, SNAP_BYTES) };
        if full == 0 {
            return;
        }
        let mask = get!(SNAP.fields[(new & 15) as usize]);
        // Unrolled: each piece's offset and size must be constants the verifier knows.
        piece!(out, full, mask, 0);
        piece!(out, full, mask, 1);
        piece!(out, full, mask, 2);
        piece!(out, full, mask, 3);
        piece!(out, full, mask, 4);
        piece!(out, full, mask, 5);
        piece!(out, full, mask, 6);
        piece!(out, full, mask, 7);
        piece!(out, full, mask, 8);
        piece!(out, full, mask, 9);
        piece!(out, full, mask, 10);
        piece!(out, full, mask, 11);
        piece!(out, full, mask, 12);
        piece!(out, full, mask, 13);
        piece!(out, full, mask, 14);
        piece!(out, full, mask, 15);
        piece!(out, full, mask, 16);
        piece!(out, full, mask, 17);
        piece!(out, full, mask, 18);
        piece!(out, full, mask, 19);
        piece!(out, full, mask, 20);
        piece!(out, full, mask, 21);
        piece!(out, full, mask, 22);
        piece!(out, full, mask, 23);
        const _: () = assert!(SNAP_FIELDS == 24);
    }
}

/// Network namespace inode of a socket (`sk->__sk_common.skc_net.net->ns.inum`).
#[inline(always)]
pub fn netns_of_sock<M: Mem>(m: M, sk: u64) -> Option<u32> {
    let net: u64 = m.read(sk, get!(OFFSETS.skc_net))?;
    m.read(net, get!(OFFSETS.net_ns_inum))
}

/// `sk->sk_protocol`, wherever this kernel keeps it.
#[inline(always)]
pub fn protocol<M: Mem>(m: M, sk: u64) -> Option<u16> {
    let bits = get!(OFFSETS.sk_protocol_bits) & 31;
    let shift = get!(OFFSETS.sk_protocol_shift) & 31;
    if bits == 16 && shift == 0 {
        // Its own `u16` (Linux 5.6+): read as such (a plain load must match the member).
        return m.read(sk, get!(OFFSETS.sk_protocol));
    }
    let word: u32 = m.read(sk, get!(OFFSETS.sk_protocol))?;
    let mask = if bits == 0 {
        0xffff
    } else {
        (1u32 << bits) - 1
    };
    Some(((word >> shift) & mask) as u16)
}

/// `skc_state` of a socket, request socket or timewait socket.
#[inline(always)]
pub fn state<M: Mem>(m: M, sk: u64) -> Option<u8> {
    m.read(sk, get!(OFFSETS.skc_state))
}

/// `TCP_TIME_WAIT` and `TCP_NEW_SYN_RECV`: mini sockets without an `inet_sock`.
const TIME_WAIT: u8 = 6;
const NEW_SYN_RECV: u8 = 12;

/// Bytes of `struct sock_common` copied with one helper call when reading through [`Probe`]:
/// addresses, ports, family, state and namespace pointer all lie in its first 96 bytes on the
/// kernels we know. A field found beyond (another layout) is read on its own, so nothing
/// depends on this being true.
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
}

/// The `sock_common` fields of one socket.
trait Common {
    fn get<T: Copy>(&self, off: u32) -> Option<T>;
}

/// Through [`Probe`]: from the one copy of the head, else read on their own.
struct Copied {
    head: Head,
    sk: u64,
}

impl Common for Copied {
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        let o = off as usize;
        if off != NO_OFFSET && o <= HEAD - core::mem::size_of::<T>() {
            // SAFETY: `o + size_of::<T>() <= HEAD`, so the read stays inside the copy;
            // `read_unaligned` has no alignment requirement and `T` is a plain integer type.
            Some(unsafe { core::ptr::read_unaligned(self.head.0.as_ptr().add(o).cast::<T>()) })
        } else {
            Probe.read(self.sk, off)
        }
    }
}

/// Through [`Direct`]: each field a plain load.
struct Loads(u64);

impl Common for Loads {
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        Direct.read(self.0, off)
    }
}

/// Fills family, ports, addresses, namespace and (full sockets) cgroup of `hdr` from a socket.
/// Returns [`Mem::full`] of the socket, or `None` when its family could not be read (no BTF or
/// a fault).
#[inline(always)]
pub fn fill_from_sock<M: Mem>(m: M, hdr: &mut Header, sk: u64) -> Option<u64> {
    if M::DIRECT {
        if sk == 0 {
            return None;
        }
        fill_common(m, hdr, sk, &Loads(sk))
    } else {
        let head = Head::of(sk)?;
        fill_common(m, hdr, sk, &Copied { head, sk })
    }
}

#[inline(always)]
fn fill_common<M: Mem, C: Common>(m: M, hdr: &mut Header, sk: u64, c: &C) -> Option<u64> {
    let family = c.get::<u16>(get!(OFFSETS.skc_family))?;
    hdr.family = family as u8;
    // Local port: `inet_sport` for full sockets (it survives `inet_put_port` on the way to
    // CLOSE), `skc_num` for mini sockets, which have no `inet_sock`.
    let full = m.full(sk);
    let sport = get!(OFFSETS.inet_sport);
    hdr.lport = if full != 0 && sport != NO_OFFSET {
        u16::from_be(m.read::<u16>(full, sport).unwrap_or(0))
    } else {
        c.get::<u16>(get!(OFFSETS.skc_num)).unwrap_or(0)
    };
    hdr.rport = u16::from_be(c.get::<u16>(get!(OFFSETS.skc_dport)).unwrap_or(0));
    if hdr.family == AF_INET {
        let l: [u8; 4] = c.get(get!(OFFSETS.skc_rcv_saddr)).unwrap_or([0; 4]);
        let r: [u8; 4] = c.get(get!(OFFSETS.skc_daddr)).unwrap_or([0; 4]);
        hdr.laddr[..4].copy_from_slice(&l);
        hdr.raddr[..4].copy_from_slice(&r);
    } else if hdr.family == AF_INET6 {
        hdr.laddr = c.get(get!(OFFSETS.skc_v6_rcv_saddr)).unwrap_or([0; 16]);
        hdr.raddr = c.get(get!(OFFSETS.skc_v6_daddr)).unwrap_or([0; 16]);
    }
    hdr.flags |= hdr_flags::ADDRS;
    if let Some(net) = c.get::<u64>(get!(OFFSETS.skc_net))
        && let Some(ns) = m.read::<u32>(net, get!(OFFSETS.net_ns_inum))
    {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
    if full != 0 {
        fill_cgroup(m, hdr, full);
    }
    Some(full)
}

/// `kn->id` of a `struct cgroup *`: the cgroup's id.
#[inline(always)]
fn cgroup_id<M: Mem>(m: M, cgrp: u64) -> Option<u64> {
    let kn: u64 = m.read(cgrp, get!(OFFSETS.cgroup_kn))?;
    m.read(kn, get!(OFFSETS.kn_id))
}

/// Whether `cgrp` is the filter's cgroup or below it: its ancestor at the filter's level is
/// the filter's cgroup (`ancestors[]` pointers on 6.1+, `ancestor_ids[]` before).
#[inline(always)]
fn under_filter<M: Mem>(m: M, cgrp: u64, id: u64) -> bool {
    let want = get!(FILTER.cgroup);
    if id == want {
        return true;
    }
    let at = get!(FILTER.cgroup_level);
    let Some(level) = m.read::<i32>(cgrp, get!(OFFSETS.cgroup_level)) else {
        return false;
    };
    if level < 0 || (level as u32) <= at {
        return false;
    }
    let slot = at as u64 * 8;
    let ptrs = get!(OFFSETS.cgroup_ancestors);
    let ids = get!(OFFSETS.cgroup_ancestor_ids);
    let found = if ptrs != NO_OFFSET {
        m.read::<u64>(cgrp + slot, ptrs)
            .and_then(|a| cgroup_id(m, a))
    } else {
        m.read::<u64>(cgrp + slot, ids)
    };
    found == Some(want)
}

/// Sets `hdr.cgroup` from a full socket's `sk_cgrp_data` (the v2 cgroup of the task that
/// created it), and marks whether it lies in the `--cgroup` filter's subtree. Request and
/// timewait sockets have no `sk_cgrp_data`: callers pass full sockets only.
#[inline(always)]
pub fn fill_cgroup<M: Mem>(m: M, hdr: &mut Header, sk: u64) {
    let tagged = get!(OFFSETS.sk_cgrp_tagged) != 0;
    // Before 5.15 the word is a union that holds v1 data instead while its low bit is set:
    // an integer to the verifier, not a pointer it lets plain loads follow.
    if M::DIRECT && tagged {
        return;
    }
    let Some(cgrp) = m.read::<u64>(sk, get!(OFFSETS.sk_cgrp)) else {
        return;
    };
    if cgrp == 0 || (!M::DIRECT && tagged && cgrp & 1 != 0) {
        return;
    }
    let Some(id) = cgroup_id(m, cgrp) else {
        return;
    };
    hdr.cgroup = id;
    hdr.flags |= hdr_flags::CGROUP;
    if get!(FILTER.cgroup) != 0 && under_filter(m, cgrp, id) {
        hdr.flags |= hdr_flags::IN_CGROUP;
    }
}

/// Sets `hdr.cgroup` from a socket that may be a request or timewait socket.
#[inline(always)]
pub fn fill_cgroup_any<M: Mem>(m: M, hdr: &mut Header, sk: u64) {
    let full = m.full(sk);
    if full != 0 {
        fill_cgroup(m, hdr, full);
    }
}

/// Sets `hdr.netns` from a socket when BTF offsets are known.
#[inline(always)]
pub fn fill_netns<M: Mem>(m: M, hdr: &mut Header, sk: u64) {
    if let Some(ns) = netns_of_sock(m, sk) {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
}

/// TCP flags of a segment about to be (re)transmitted: `TCP_SKB_CB(skb)->tcp_flags`.
#[inline(always)]
pub fn skb_tcp_flags<M: Mem>(m: M, skb: u64) -> Option<u8> {
    let cb = get!(OFFSETS.skb_cb);
    let flags = get!(OFFSETS.tcp_skb_cb_flags);
    if cb == NO_OFFSET || flags == NO_OFFSET {
        return None;
    }
    m.read(skb, cb + flags)
}

/// Fills `hdr` from a received packet a reset is answered to (no socket): local is the packet's
/// destination. The namespace comes from the receiving device. The packet's bytes are read
/// through [`Probe`] (`skb->head` is a plain byte pointer).
#[inline(always)]
pub fn fill_from_incoming_skb<M: Mem>(m: M, hdr: &mut Header, skb: u64) -> bool {
    let Some(head) = m.read::<u64>(skb, get!(OFFSETS.skb_head)) else {
        return false;
    };
    let Some(nh) = m.read::<u16>(skb, get!(OFFSETS.skb_network_header)) else {
        return false;
    };
    let Some(th) = m.read::<u16>(skb, get!(OFFSETS.skb_transport_header)) else {
        return false;
    };
    let ip = head + nh as u64;
    let Some(first) = Probe.read::<u8>(ip, 0) else {
        return false;
    };
    match first >> 4 {
        4 => {
            hdr.family = AF_INET;
            let src: [u8; 4] = Probe.read(ip, 12).unwrap_or([0; 4]);
            let dst: [u8; 4] = Probe.read(ip, 16).unwrap_or([0; 4]);
            hdr.raddr[..4].copy_from_slice(&src);
            hdr.laddr[..4].copy_from_slice(&dst);
        }
        6 => {
            hdr.family = AF_INET6;
            hdr.raddr = Probe.read(ip, 8).unwrap_or([0; 16]);
            hdr.laddr = Probe.read(ip, 24).unwrap_or([0; 16]);
        }
        _ => return false,
    }
    let tcp = head + th as u64;
    hdr.rport = u16::from_be(Probe.read::<u16>(tcp, 0).unwrap_or(0));
    hdr.lport = u16::from_be(Probe.read::<u16>(tcp, 2).unwrap_or(0));
    hdr.flags |= hdr_flags::ADDRS;
    if let Some(dev) = m.read::<u64>(skb, get!(OFFSETS.skb_dev))
        && let Some(net) = m.read::<u64>(dev, get!(OFFSETS.dev_nd_net))
        && let Some(ns) = m.read::<u32>(net, get!(OFFSETS.net_ns_inum))
    {
        hdr.netns = ns;
        hdr.flags |= hdr_flags::NETNS;
    }
    true
}
