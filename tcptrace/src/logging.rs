//! The daemon's own messages, one path for all of them (`log` macros here, the eBPF side's
//! `aya-log` records too): plain `tcptrace: warning: …` lines on stderr, or JSON `log` lines
//! (`tcptrace_core::wire::LogLine`) when the output is JSON, filtered by `--log-level`.
use std::{
    io::Write as _,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use log::{Level, LevelFilter, Log, Metadata, Record};
use tcptrace_core::{
    clock::Rfc3339Writer,
    wire::{self, Cold, LogLine, stream},
};

use crate::sink::push_escaped;

struct Logger {
    json: AtomicBool,
    /// `LevelFilter as usize`.
    max: AtomicUsize,
}

static LOGGER: Logger = Logger {
    json: AtomicBool::new(false),
    max: AtomicUsize::new(LevelFilter::Info as usize),
};

/// Installs the logger (once; later calls only change its settings).
pub fn init(json: bool, max: LevelFilter) {
    LOGGER.json.store(json, Ordering::Relaxed);
    LOGGER.max.store(max as usize, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(max);
}

fn level(l: Level) -> stream::Level {
    match l {
        Level::Error => stream::Level::Error,
        Level::Warn => stream::Level::Warning,
        Level::Info => stream::Level::Info,
        Level::Debug | Level::Trace => stream::Level::Debug,
    }
}

fn now_rfc3339() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let unix = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    let mut b = Vec::with_capacity(27);
    Rfc3339Writer::default().write(&mut b, unix);
    String::from_utf8(b).unwrap_or_default()
}

/// Where a message comes from — our own code, the lab (target `lab`), or an eBPF program
/// (aya-log) — as the text prefix and the JSON message prefix.
fn source(target: &str) -> (&'static str, &'static str) {
    if target.starts_with("lab") {
        ("tcptrace lab: ", "lab: ")
    } else if target.starts_with("tcptrace_ebpf") {
        ("tcptrace: ebpf: ", "ebpf: ")
    } else if target.starts_with("tcptrace") || target.is_empty() {
        ("tcptrace: ", "")
    } else {
        ("tcptrace: ebpf: ", "ebpf: ")
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // Debug messages are ours (and our eBPF programs'), not our libraries'.
        let ours = m.target().starts_with("tcptrace") || m.target().starts_with("lab");
        m.level() as usize <= self.max.load(Ordering::Relaxed) && (m.level() <= Level::Info || ours)
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let (text_prefix, json_prefix) = source(r.target());
        let mut line = Vec::with_capacity(128);
        if self.json.load(Ordering::Relaxed) {
            wire::write_cold(
                &mut line,
                &Cold::Log(LogLine {
                    time: now_rfc3339(),
                    level: level(r.level()),
                    message: format!("{json_prefix}{}", r.args()),
                }),
            );
        } else {
            let message = r.args().to_string();
            line.extend_from_slice(text_prefix.as_bytes());
            match r.level() {
                // A fatal error is the last line: `tcptrace: what went wrong`.
                Level::Error => {}
                Level::Warn => line.extend_from_slice(b"warning: "),
                Level::Debug | Level::Trace => line.extend_from_slice(b"debug: "),
                Level::Info => {}
            }
            push_escaped(&mut line, message.as_bytes());
        }
        line.push(b'\n');
        // One write per line, so lines of several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(&line);
    }

    fn flush(&self) {}
}
