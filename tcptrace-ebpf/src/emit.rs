//! Stamps the task context on a record, applies the in-kernel filter and writes the record to the
//! ring buffer, counting it in `LOST` when the buffer is full.
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use tcptrace_common::{Header, MAX_PORTS, StateRecord, StateSnapRecord, hdr_flags, state_flags};

use crate::{
    globals::{EVENTS, LOST, NETNS, WRITTEN, get},
    sock::Mem,
};

/// A header with kind and timestamp, and the current task when the [`TaskPlan`] asks for it
/// on records other than state changes.
///
/// [`TaskPlan`]: tcptrace_common::TaskPlan
#[inline(always)]
pub fn header(kind: u8) -> Header {
    header_at(kind, now_ns(), get!(TASK.others) != 0)
}

/// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// A header with kind and the given timestamp, and the current task when `task`.
#[inline(always)]
pub fn header_at(kind: u8, ts_ns: u64, task: bool) -> Header {
    let mut hdr = Header {
        kind,
        ts_ns,
        ..Header::default()
    };
    if task {
        let pid_tgid = bpf_get_current_pid_tgid();
        hdr.tgid = (pid_tgid >> 32) as u32;
        hdr.tid = pid_tgid as u32;
        hdr.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    hdr
}

/// Whether the state change `old` → `new` carries the current task.
#[inline(always)]
pub fn state_task(old: u8, new: u8) -> bool {
    // Masked indices: the verifier needs the bound on the very register used.
    new < 16 && old < 32 && get!(TASK.states[(new & 15) as usize]) & (1 << (old & 31)) != 0
}

#[inline(always)]
fn port_listed(port: u16, n: u8, list: &[u16; MAX_PORTS]) -> bool {
    let n = n as usize;
    let mut i = 0;
    while i < MAX_PORTS {
        if i < n && list[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether the record passes the user's cheap filters (family, ports, pid, netns, cgroup).
#[inline(always)]
pub fn wanted(hdr: &Header) -> bool {
    let family = get!(FILTER.family);
    if family != 0 && family != hdr.family {
        return false;
    }
    let tgid = get!(FILTER.tgid);
    if tgid != 0 && tgid != hdr.tgid {
        return false;
    }
    if get!(FILTER.netns) != 0
        // SAFETY: the value is a plain byte the map owns; it is only tested for presence.
        && (hdr.flags & hdr_flags::NETNS == 0 || unsafe { NETNS.get(&hdr.netns) }.is_none())
    {
        return false;
    }
    if get!(FILTER.cgroup) != 0 && hdr.flags & hdr_flags::IN_CGROUP == 0 {
        return false;
    }
    let n_l = get!(FILTER.n_lports);
    if n_l != 0 && !port_listed(hdr.lport, n_l, &get!(FILTER.lports)) {
        return false;
    }
    let n_r = get!(FILTER.n_rports);
    if n_r != 0 && !port_listed(hdr.rport, n_r, &get!(FILTER.rports)) {
        return false;
    }
    true
}

#[inline(always)]
fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup of this CPU's slot and stays valid
        // while the program runs. Only programs on this CPU write it; a nested program on the
        // same CPU could at worst lose one increment, never corrupt the counter.
        unsafe { *lost += 1 };
    }
}

/// Commit flags for a record of `size` bytes under the [`WAKEUP`](crate::globals::WAKEUP)
/// policy: wake the reader only once this CPU has written enough since it last did (the
/// reader also drains on a timer).
#[inline(always)]
fn wake_flags(size: usize) -> u64 {
    let every = get!(WAKEUP.per_cpu_bytes);
    if every == 0 {
        return 0;
    }
    let Some(written) = WRITTEN.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: this CPU's slot, from a successful lookup; valid while the program runs. A
    // program interrupting this one on the same CPU may make one count land late or twice:
    // it only moves a wakeup by a record.
    unsafe {
        let now = *written + size as u64;
        if now >= every {
            *written = 0;
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            *written = now;
            BPF_RB_NO_WAKEUP as u64
        }
    }
}

/// Writes `record` (whose first member is its `Header`) unless filtered out. False when the
/// ring buffer was full (the record is counted in `LOST`).
#[inline(always)]
pub fn submit<T: 'static>(record: &T, hdr: &Header) -> bool {
    if !wanted(hdr) {
        return true;
    }
    let flags = wake_flags(core::mem::size_of::<T>());
    if EVENTS.output::<T>(record, flags).is_err() {
        count_lost();
        return false;
    }
    true
}

/// Writes a state change; when the plan asks for this new state and the socket is known, the
/// record carries the planned bytes of the socket's memory, read through `m` from `full`
/// ([`Mem::full`] of the socket). False when the ring buffer was full.
#[inline(always)]
pub fn submit_state<M: Mem>(m: M, record: &StateRecord, full: u64) -> bool {
    let wanted_states = get!(SNAP.new_states);
    if full == 0 || record.new >= 32 || wanted_states & (1u32 << record.new) == 0 {
        return submit(record, &record.hdr);
    }
    if !wanted(&record.hdr) {
        return true;
    }
    let Some(mut entry) = EVENTS.reserve::<StateSnapRecord>(0) else {
        count_lost();
        return false;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` points to a reserved, exclusively owned ring-buffer slot of the right size;
    // raw-pointer writes avoid materialising a 352-byte value on the 512-byte BPF stack, and
    // the snapshot gets exactly its `SNAP_BYTES`.
    unsafe {
        (*out).state = *record;
        (*out).state.flags |= state_flags::SNAPSHOT;
        m.snapshot((&raw mut (*out).snap).cast::<u8>(), full, record.new);
    }
    entry.submit(wake_flags(core::mem::size_of::<StateSnapRecord>()));
    true
}
