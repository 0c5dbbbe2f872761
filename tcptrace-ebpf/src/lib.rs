//! Host-side stub library of the eBPF crate: it exists so `tcptrace/build.rs` can declare a
//! build-dependency on this package (aya-build rebuilds the object when it changes). The
//! programs themselves are in `main.rs` and only compile for the BPF target.
#![no_std]
