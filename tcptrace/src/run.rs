//! The live loop: reads the ring buffer through tokio's `AsyncFd`, decodes each record, feeds
//! the sink, reports kernel-side losses as they happen, and on Ctrl-C/SIGTERM/`--duration`
//! detaches, drains what is left and prints a summary to stderr.
use std::{io, time::Duration};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{loader::Tracer, sink::Sink, stats::Stats};
use tcptrace_core::{decode::decode, state_clock::StateClock};

/// Sockets whose last transition time is remembered for `prev_ms`.
const STATE_CLOCK_CAPACITY: usize = 1 << 20;

/// Feeds one raw record through decode and the sink.
fn handle(
    raw: &[u8],
    clock: &mut StateClock,
    stats: &mut Stats,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    match decode(raw) {
        Ok(ev) => {
            stats.count(&ev);
            let prev = clock.observe(&ev);
            sink.event(&ev, prev)
        }
        Err(e) => {
            stats.malformed += 1;
            if stats.malformed == 1 {
                eprintln!("tcptrace: skipping malformed record: {e}");
            }
            Ok(())
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &mut StateClock,
    stats: &mut Stats,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    while let Some(item) = ring.next() {
        handle(&item, clock, stats, sink)?;
    }
    sink.flush()
}

fn lost_total(lost: &PerCpuArray<MapData, u64>) -> u64 {
    lost.get(&0, 0)
        .map(|per_cpu| per_cpu.iter().copied().sum())
        .unwrap_or(0)
}

/// Reports records lost since the last check, to stderr and to the sink.
fn report_lost(
    lost: &PerCpuArray<MapData, u64>,
    stats: &mut Stats,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    let total = lost_total(lost);
    if total > stats.lost {
        let delta = total - stats.lost;
        stats.lost = total;
        eprintln!("tcptrace: lost {delta} events (ring buffer full; a larger --ring-buffer helps)");
        sink.lost(crate::monotonic_ns(), delta)?;
        sink.flush()?;
    }
    Ok(())
}

/// Runs until a signal, the duration, or a write error (e.g. a closed pipe).
pub async fn run(
    mut tracer: Tracer,
    sink: &mut dyn Sink,
    duration: Option<Duration>,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    let mut clock = StateClock::new(STATE_CLOCK_CAPACITY);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = duration.map(|d| Instant::now() + d);
    let mut lost_tick = interval(Duration::from_secs(1));
    lost_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // SAFETY: the ring buffer owns its map fd (`MapData` holds an `OwnedFd`), which stays open
    // and unchanged for as long as the `RingBuf` lives inside the `AsyncFd`.
    let mut ring = unsafe { AsyncFd::register_with_interest(tracer.events, Interest::READABLE) }
        .map_err(io::Error::from)?;

    let result: io::Result<()> = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                if let Err(e) = drain(guard.get_inner_mut(), &mut clock, &mut stats, sink) {
                    break Err(e);
                }
                // The kernel only wakes a consumer that has caught up, and a wakeup landing
                // between the drain above and `clear_ready` is lost; draining once more after
                // clearing closes that window, so the reader can never stall behind a record.
                guard.clear_ready();
                if let Err(e) = drain(ring.get_mut(), &mut clock, &mut stats, sink) {
                    break Err(e);
                }
            }
            _ = lost_tick.tick() => {
                let r = drain(ring.get_mut(), &mut clock, &mut stats, sink)
                    .and_then(|()| report_lost(&tracer.lost, &mut stats, sink));
                if let Err(e) = r {
                    break Err(e);
                }
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = async { match deadline { Some(d) => sleep_until(d).await, None => std::future::pending().await } } => break Ok(()),
        }
    };
    // Detach first so nothing new arrives, then drain what the kernel already wrote.
    drop(tracer.ebpf.take());
    result?;
    let mut ring = ring.into_inner();
    drain(&mut ring, &mut clock, &mut stats, sink)?;
    report_lost(&tracer.lost, &mut stats, sink)?;
    tracer.events = ring;
    Ok(stats)
}
