//! Globals userspace writes into the eBPF object before loading it: the in-kernel filter, the
//! running kernel's struct offsets (from BTF) and each classic tracepoint's record layout (from
//! its tracefs `format` file). Nothing kernel-specific is compiled into the programs.

/// Name of the [`Filter`] global in the eBPF object.
pub const FILTER_GLOBAL: &str = "FILTER";
/// Name of the [`KernelOffsets`] global in the eBPF object.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Names of the [`TpLayout`] globals, one per classic tracepoint.
pub const TP_SET_STATE_GLOBAL: &str = "TP_SET_STATE";
pub const TP_RETRANSMIT_GLOBAL: &str = "TP_RETRANSMIT";
pub const TP_SYNACK_GLOBAL: &str = "TP_SYNACK";
pub const TP_SEND_RESET_GLOBAL: &str = "TP_SEND_RESET";
pub const TP_RECV_RESET_GLOBAL: &str = "TP_RECV_RESET";
pub const TP_ERROR_GLOBAL: &str = "TP_ERROR";
/// Name of the [`SnapPlan`] global.
pub const SNAP_GLOBAL: &str = "SNAP";
/// Name of the [`Wakeup`] global.
pub const WAKEUP_GLOBAL: &str = "WAKEUP";
/// Name of the [`TaskPlan`] global.
pub const TASK_GLOBAL: &str = "TASK";
/// Name of the ring buffer map.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU lost-record counter map (index 0).
pub const LOST_MAP: &str = "LOST";
/// Name of the hash map of wanted network namespaces (inode → 1), see [`Filter::netns`].
pub const NETNS_MAP: &str = "NETNS";
/// Most namespaces the in-kernel namespace filter holds.
pub const MAX_NETNS: u32 = 256;

/// Maximum number of ports in each port filter.
pub const MAX_PORTS: usize = 8;

/// Cheap in-kernel filters; zero means "any". Ports are host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// 0, `AF_INET` or `AF_INET6`.
    pub family: u8,
    pub n_lports: u8,
    pub n_rports: u8,
    pub _pad0: u8,
    /// Keep only events whose current task has this tgid.
    pub tgid: u32,
    /// Non-zero: keep only sockets whose network namespace inode is a key of the
    /// [`NETNS_MAP`] set (this many entries; needs [`KernelOffsets`]).
    pub netns: u32,
    pub _pad1: u32,
    pub lports: [u16; MAX_PORTS],
    pub rports: [u16; MAX_PORTS],
    /// With `cgroup`: that cgroup's depth below the v2 root (the root is level 0).
    pub cgroup_level: u32,
    pub _pad2: u32,
    /// Keep only sockets in this cgroup v2 (by id) or below it (needs [`KernelOffsets`]).
    pub cgroup: u64,
}

/// Marks an offset the running kernel does not have.
pub const NO_OFFSET: u32 = u32::MAX;

/// Byte offsets into kernel structs, resolved from the running kernel's BTF at load time.
/// `valid == 0` means no BTF: the programs then use only tracepoint fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    /// `struct sock_common` members, relative to `struct sock` (and to `struct request_sock`,
    /// whose first member is its `sock_common`).
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    /// `inet_sock.inet_sport` (network order): a full socket's local port, which unlike
    /// `skc_num` survives `inet_put_port` on the way to CLOSE. Timewait and request sockets
    /// have no such field and use `skc_num`.
    pub inet_sport: u32,
    /// `sock.__sk_common.skc_net.net`: pointer to `struct net`.
    pub skc_net: u32,
    /// `net.ns.inum`.
    pub net_ns_inum: u32,
    /// `sock.sk_protocol` (a `u16` on 5.6+; older kernels keep it in a bitfield, see below).
    pub sk_protocol: u32,
    /// Bit shift and width of `sk_protocol` inside the 32-bit word at `sk_protocol`.
    pub sk_protocol_shift: u32,
    pub sk_protocol_bits: u32,
    /// `sock.sk_err`.
    pub sk_err: u32,
    /// `sk_buff.cb` and `tcp_skb_cb.tcp_flags`: where a segment's TCP flags live.
    pub skb_cb: u32,
    pub tcp_skb_cb_flags: u32,
    /// `sk_buff.head`, `.network_header`, `.transport_header`: to parse a packet a reset is
    /// sent for when there is no socket.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// `sk_buff.dev` and `net_device.nd_net.net`: a socketless packet's namespace.
    pub skb_dev: u32,
    pub dev_nd_net: u32,
    /// `sock.sk_cgrp_data`'s cgroup pointer: `.cgroup` on 5.15+; on older kernels the union
    /// word `.val`, which holds the pointer only while its low bit (`is_data`) is clear
    /// (`sk_cgrp_tagged` = 1 then).
    pub sk_cgrp: u32,
    pub sk_cgrp_tagged: u32,
    /// `cgroup.kn` and `kernfs_node.id` (a `u64` since 5.5): the cgroup id.
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// `cgroup.level`, and the ancestors at each level, for the `--cgroup` subtree filter:
    /// `cgroup.ancestors` (pointers, 6.1+) or `cgroup.ancestor_ids` (ids, before 6.1).
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    pub cgroup_ancestor_ids: u32,
}

impl KernelOffsets {
    /// No BTF: every offset unknown.
    pub const fn none() -> Self {
        Self {
            valid: 0,
            skc_family: NO_OFFSET,
            skc_state: NO_OFFSET,
            skc_num: NO_OFFSET,
            skc_dport: NO_OFFSET,
            skc_rcv_saddr: NO_OFFSET,
            skc_daddr: NO_OFFSET,
            skc_v6_rcv_saddr: NO_OFFSET,
            skc_v6_daddr: NO_OFFSET,
            inet_sport: NO_OFFSET,
            skc_net: NO_OFFSET,
            net_ns_inum: NO_OFFSET,
            sk_protocol: NO_OFFSET,
            sk_protocol_shift: 0,
            sk_protocol_bits: 16,
            sk_err: NO_OFFSET,
            skb_cb: NO_OFFSET,
            tcp_skb_cb_flags: NO_OFFSET,
            skb_head: NO_OFFSET,
            skb_network_header: NO_OFFSET,
            skb_transport_header: NO_OFFSET,
            skb_dev: NO_OFFSET,
            dev_nd_net: NO_OFFSET,
            sk_cgrp: NO_OFFSET,
            sk_cgrp_tagged: 0,
            cgroup_kn: NO_OFFSET,
            kn_id: NO_OFFSET,
            cgroup_level: NO_OFFSET,
            cgroup_ancestors: NO_OFFSET,
            cgroup_ancestor_ids: NO_OFFSET,
        }
    }
}

impl Default for KernelOffsets {
    fn default() -> Self {
        Self::none()
    }
}

/// Marks a tracepoint field the running kernel's format does not have.
pub const NO_FIELD: u16 = u16::MAX;

/// Where a classic tracepoint's fields sit in its raw record, from tracefs
/// `events/<category>/<name>/format`. Unused fields are [`NO_FIELD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpLayout {
    /// `skaddr` (pointer).
    pub skaddr: u16,
    /// `skbaddr` (pointer).
    pub skbaddr: u16,
    /// `req` (pointer, `tcp_retransmit_synack`).
    pub req: u16,
    /// `oldstate` / `newstate` (int).
    pub oldstate: u16,
    pub newstate: u16,
    /// `state` (int).
    pub state: u16,
    /// `sport` / `dport` (u16, host order).
    pub sport: u16,
    pub dport: u16,
    /// `family` / `protocol` (u16).
    pub family: u16,
    pub protocol: u16,
    /// `saddr` / `daddr`: 4-byte IPv4, or a `sockaddr_in6`-sized buffer when `sockaddr` is 1.
    pub saddr: u16,
    pub daddr: u16,
    /// `saddr_v6` / `daddr_v6` (16 bytes).
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// `err` (int, `tcp_retransmit_skb` on 6.x), `error` (int, `inet_sk_error_report`).
    pub err: u16,
    pub error: u16,
    /// `reason` (enum, `tcp_send_reset` on 6.10+).
    pub reason: u16,
    /// 1 when `saddr`/`daddr` hold a `sockaddr` (family, port, address) rather than raw bytes.
    pub sockaddr: u16,
}

impl TpLayout {
    /// Every field absent.
    pub const fn none() -> Self {
        Self {
            skaddr: NO_FIELD,
            skbaddr: NO_FIELD,
            req: NO_FIELD,
            oldstate: NO_FIELD,
            newstate: NO_FIELD,
            state: NO_FIELD,
            sport: NO_FIELD,
            dport: NO_FIELD,
            family: NO_FIELD,
            protocol: NO_FIELD,
            saddr: NO_FIELD,
            daddr: NO_FIELD,
            saddr_v6: NO_FIELD,
            daddr_v6: NO_FIELD,
            err: NO_FIELD,
            error: NO_FIELD,
            reason: NO_FIELD,
            sockaddr: 0,
        }
    }
}

impl Default for TpLayout {
    fn default() -> Self {
        Self::none()
    }
}

/// Which bytes of a socket to copy into a [`StateSnapRecord`](crate::StateSnapRecord), and on
/// which transitions. Userspace packs the `tcp_sock` fields it wants (offsets from BTF) into at
/// most [`SNAP_WINDOWS`](crate::SNAP_WINDOWS) windows of up to
/// [`SNAP_WINDOW_LEN`](crate::SNAP_WINDOW_LEN) bytes, which programs reading memory through
/// `bpf_probe_read_kernel` copy blindly; and lists the same fields one by one, each landing
/// where its window would put it, for programs that read the socket with plain loads through a
/// BTF pointer (the verifier lets those touch one member at a time, never a window).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapPlan {
    /// Bit `n` set: snapshot when the new state is `n`. Zero disables snapshots.
    pub new_states: u32,
    /// Windows in use.
    pub n: u32,
    /// Byte offset of each window from the start of `struct sock`.
    pub off: [u32; crate::SNAP_WINDOWS],
    /// Length of each window, at most `SNAP_WINDOW_LEN`.
    pub len: [u32; crate::SNAP_WINDOWS],
    /// Per new state (below 16): bit `i` set copies window `i`; the others are zeroed. The
    /// handshake's end needs only the options, the socket's end everything.
    pub windows: [u32; 16],
    /// Pieces in use of the field-by-field copy.
    pub n_fields: u32,
    /// Byte offset of each piece from the start of `struct sock` (the pieces of a field
    /// whose size is not 1, 2, 4 or 8 are consecutive).
    pub field_off: [u32; SNAP_FIELDS],
    /// Where each piece's bytes go in the snapshot (as its window would place them).
    pub field_pos: [u16; SNAP_FIELDS],
    /// Size of each piece: 1, 2, 4 or 8.
    pub field_size: [u8; SNAP_FIELDS],
    /// Per new state (below 16): bit `i` set copies piece `i`; the rest of the snapshot is
    /// zero.
    pub fields: [u32; 16],
}

/// Pieces the field-by-field snapshot plan can hold.
pub const SNAP_FIELDS: usize = 24;

impl SnapPlan {
    /// No snapshots.
    pub const fn none() -> Self {
        Self {
            new_states: 0,
            n: 0,
            off: [0; crate::SNAP_WINDOWS],
            len: [0; crate::SNAP_WINDOWS],
            windows: [0; 16],
            n_fields: 0,
            field_off: [0; SNAP_FIELDS],
            field_pos: [0; SNAP_FIELDS],
            field_size: [0; SNAP_FIELDS],
            fields: [0; 16],
        }
    }
}

impl Default for SnapPlan {
    fn default() -> Self {
        Self::none()
    }
}

/// Which records carry the current task (pid, tid, `comm`): reading it is a good part of a
/// record's cost, and connection records use it at a few transitions only (the owner at
/// `connect()` and `listen()`, the closer, the task at CLOSE); the event stream prints it on
/// every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskPlan {
    /// Per new state (below 16): bit `old` set: the state change `old` → new carries the task.
    pub states: [u32; 16],
    /// Non-zero: retransmit, reset and error records carry it.
    pub others: u32,
    pub _pad: u32,
}

impl TaskPlan {
    /// Every record carries the task.
    pub const fn all() -> Self {
        Self {
            states: [u32::MAX; 16],
            others: 1,
            _pad: 0,
        }
    }

    /// Whether the state change `old` → `new` carries the task.
    pub const fn state(&self, old: u8, new: u8) -> bool {
        new < 16 && old < 32 && self.states[new as usize] & (1 << old) != 0
    }
}

impl Default for TaskPlan {
    fn default() -> Self {
        Self::all()
    }
}

/// When a record wakes the reader. With `per_cpu_bytes == 0` the kernel's default applies: a
/// record wakes a reader that has caught up, i.e. nearly every record when the reader keeps up.
/// Otherwise a record wakes the reader only once its CPU has written `per_cpu_bytes` since it
/// last did, and the reader also drains on a short timer: at high rates one wakeup then carries
/// thousands of records instead of a few. (Counting per CPU costs a per-CPU counter; asking the
/// ring how much waits costs two cache lines every producer and the reader write.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakeup {
    /// Bytes a CPU writes between the wakeups it forces; 0: the kernel's default.
    pub per_cpu_bytes: u64,
}

impl Wakeup {
    /// The kernel's default policy.
    pub const fn per_record() -> Self {
        Self { per_cpu_bytes: 0 }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: as below.
    unsafe impl aya::Pod for super::SnapPlan {}
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and integer arrays, with every
    // padding byte spelled out as a named field, so any byte pattern is a valid value.
    unsafe impl aya::Pod for super::Filter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Wakeup {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskPlan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TpLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::record::Header {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::record::Nested {}
}

const _: () = {
    assert!(core::mem::size_of::<Filter>() == 64);
    assert!(core::mem::size_of::<Wakeup>() == 8);
    assert!(core::mem::size_of::<TaskPlan>() == 72);
    assert!(core::mem::size_of::<KernelOffsets>() == 30 * 4);
    assert!(core::mem::size_of::<TpLayout>() == 36);
    assert!(
        core::mem::size_of::<SnapPlan>()
            == 8 + 8 * crate::SNAP_WINDOWS + 64 + 4 + 7 * SNAP_FIELDS + 64
    );
};
