//! The kernel's count of skipped runs of one eBPF program (`bpf_prog_info.recursion_misses`,
//! Linux 5.12+), read with `BPF_OBJ_GET_INFO_BY_FD`: aya 0.14's `ProgramInfo` does not expose it.
use std::{io, os::fd::AsRawFd};

/// `BPF_OBJ_GET_INFO_BY_FD` in `enum bpf_cmd`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `struct bpf_prog_info` up to `recursion_misses` (uapi `linux/bpf.h`). The kernel fills as
/// much of it as both sides know and leaves the rest zero, so an older kernel reads as 0.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgInfo {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

/// The `info` member of `union bpf_attr`.
#[repr(C, align(8))]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

// Offsets as in the uapi header; a mistake here would read the wrong counter.
const _: () = {
    assert!(std::mem::offset_of!(ProgInfo, name) == 64);
    assert!(std::mem::offset_of!(ProgInfo, run_time_ns) == 192);
    assert!(std::mem::offset_of!(ProgInfo, recursion_misses) == 208);
};

/// Runs of the program behind `fd` the kernel skipped because it was already running on that
/// CPU (or, for classic tracepoints, because any kprobe/tracepoint program was).
pub fn recursion_misses(fd: &impl AsRawFd) -> io::Result<u64> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD reads `attr` and writes at most `info_len` bytes to
    // `info`, both of which live on this stack frame for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            std::mem::size_of::<InfoAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
