//! The maps and the load-time globals (filter, kernel offsets, tracepoint layouts).
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use tcptrace_common::{
    Filter, KernelOffsets, MAX_NETNS, MAX_PORTS, Nested, SnapPlan, TaskPlan, TpLayout, Wakeup,
};

/// All records go here; userspace sizes it with `--ring-buffer` before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Index 0: records dropped because `EVENTS` was full, per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Index 0: bytes this CPU wrote since the last wakeup it forced (see [`Wakeup`]).
#[map]
pub static WRITTEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Index 0: the state changes the main state-change program handled on this CPU, and those the
/// second one caught (see [`Nested`]).
#[map]
pub static NESTED: PerCpuArray<Nested> = PerCpuArray::with_max_entries(1, 0);

/// The namespaces `-N` asked for (inode → 1), filled by userspace before the programs are
/// attached; consulted only when `FILTER.netns` is non-zero.
#[map]
pub static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_NETNS, 0);

#[unsafe(no_mangle)]
pub static FILTER: Filter = Filter {
    family: 0,
    n_lports: 0,
    n_rports: 0,
    _pad0: 0,
    tgid: 0,
    netns: 0,
    _pad1: 0,
    lports: [0; MAX_PORTS],
    rports: [0; MAX_PORTS],
    cgroup_level: 0,
    _pad2: 0,
    cgroup: 0,
};

/// Which records carry the current task.
#[unsafe(no_mangle)]
pub static TASK: TaskPlan = TaskPlan::all();

/// When records wake the reader (batching at high rates).
#[unsafe(no_mangle)]
pub static WAKEUP: Wakeup = Wakeup::per_record();

#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::none();

/// Which socket bytes state-change records carry, and on which transitions.
#[unsafe(no_mangle)]
pub static SNAP: SnapPlan = SnapPlan::none();

#[unsafe(no_mangle)]
pub static TP_SET_STATE: TpLayout = TpLayout::none();
#[unsafe(no_mangle)]
pub static TP_RETRANSMIT: TpLayout = TpLayout::none();
#[unsafe(no_mangle)]
pub static TP_SYNACK: TpLayout = TpLayout::none();
#[unsafe(no_mangle)]
pub static TP_SEND_RESET: TpLayout = TpLayout::none();
#[unsafe(no_mangle)]
pub static TP_RECV_RESET: TpLayout = TpLayout::none();
#[unsafe(no_mangle)]
pub static TP_ERROR: TpLayout = TpLayout::none();

/// Reads one field of a global through a volatile load, so the compiler cannot fold the
/// compile-time default; the verifier then sees the value userspace froze into `.rodata`.
macro_rules! get {
    ($global:ident . $field:ident) => {
        // SAFETY: the global is a plain integer struct that lives for the program's lifetime.
        unsafe { core::ptr::read_volatile(&raw const $crate::globals::$global.$field) }
    };
    ($global:ident . $field:ident [ $i:expr ]) => {
        // SAFETY: as above; the index is bounds-checked by the caller's loop.
        unsafe { core::ptr::read_volatile(&raw const $crate::globals::$global.$field[$i]) }
    };
}
pub(crate) use get;
