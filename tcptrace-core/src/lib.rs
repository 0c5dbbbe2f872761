//! The pure core of tcptrace: everything between raw bytes and meaning, with no I/O of its own.
//!
//! Live tracing and `replay` both go through this crate, so it is unit-tested from recorded
//! inputs. It imports neither aya nor tokio and never reads /proc or /sys itself: callers hand
//! it bytes (a BTF blob, a tracepoint `format` file, ring-buffer records).

pub mod btf;
pub mod budget;
pub mod cgroup;
pub mod clock;
pub mod context;
pub mod decode;
pub mod diagnose;
pub mod event;
pub mod layout;
pub mod lifecycle;
pub mod snapshot;
pub mod state_clock;
pub mod summary;
pub mod sysctl;
pub mod tcp;
pub mod tp_format;
pub mod wire;

/// The hash map of the hot paths: a fast hasher, seeded per process (keys such as tuples come
/// from the network). The default SipHash costs hundreds of instructions per lookup.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
