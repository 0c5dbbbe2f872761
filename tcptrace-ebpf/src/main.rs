//! tcptrace's eBPF programs. Each hook turns one TCP tracepoint into one fixed-size record in the
//! `EVENTS` ring buffer: facts only (addresses, ports, states, flags, errno), no lifecycle logic.
//!
//! Two attachments of the same six tracepoints exist: BTF tracepoints (`tp_btf`, preferred:
//! cheaper, and they hand us the `struct sock *`) and classic tracepoints (fallback for kernels
//! without BTF). Kernel layout is never compiled in: struct offsets and tracepoint field offsets
//! are read from globals that userspace fills from BTF and tracefs before loading.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod classic;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod globals;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod tp_btf;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
