//! The kernel/user ABI of tcptrace: fixed-layout records written by the eBPF programs into the
//! ring buffer, and the configuration globals userspace sets before the programs are loaded.
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree byte for byte;
//! layouts are pinned by compile-time size assertions.
#![no_std]

pub mod config;
pub mod record;

pub use config::*;
pub use record::*;
