//! The live loop: reads the ring buffer through tokio's `AsyncFd`, decodes each record, adds
//! the sock_diag facts the kernel events imply, feeds the pipeline, reports kernel-side losses
//! as they happen, and on Ctrl-C/SIGTERM/SIGHUP/`--duration` detaches, drains what is left,
//! emits the connections still open and returns the counters. With `--output FILE`, SIGHUP
//! reopens the file instead (log rotation).
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    augment::Augmenter,
    cgroups::Cgroups,
    loader::{LossCounters, Losses, Tracer},
    monotonic_ns,
    namespaces::Namespaces,
    pipeline::Pipeline,
    stats::Stats,
};
use tcptrace_core::{decode::decode, event::Event, snapshot::SnapLayout, wire::LostCause};

/// Records read per drain at most. Under overload (producers outpacing the reader) the loop
/// then goes back to the runtime between batches — signals, the tick and the metrics
/// endpoint's tasks are served — instead of chasing the ring for as long as it refills.
const DRAIN_BATCH: usize = 4096;

/// Longest a drain reads, for a tracer slower than that batch (a debug build, an emulated
/// CPU): the runtime looks at its signals only every few dozen turns, so a turn must be short.
const DRAIN_TURN: std::time::Duration = std::time::Duration::from_millis(20);

/// The per-batch state of the reader.
struct Reader<'p, 's, 'f> {
    pipeline: &'p mut Pipeline<'s, 'f>,
    augment: &'p mut Augmenter,
    namespaces: &'p mut Namespaces,
    cgroups: &'p mut Cgroups,
    snap: SnapLayout,
    facts: Vec<Event>,
    counters: &'p mut LossCounters,
    loss: LossReport,
    /// The programs' debug messages, drained with each batch (`--log-level debug`).
    ebpf_log: Option<&'p mut aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Reader<'_, '_, '_> {
    fn handle(&mut self, raw: &[u8]) -> io::Result<()> {
        self.pipeline.record(raw, &self.snap)?;
        match decode(raw, &self.snap) {
            Ok(ev) => {
                self.augment.observe(&ev);
                self.cgroups.observe(&ev, self.pipeline)?;
                self.namespaces.observe(&ev, self.pipeline)?;
                self.pipeline.feed(&ev)
            }
            Err(e) => {
                self.pipeline.malformed(&e);
                Ok(())
            }
        }
    }

    /// Facts about what this batch closed, then the table moves on to `now`.
    fn settle(&mut self, tick: bool) -> io::Result<()> {
        let now = monotonic_ns();
        self.augment
            .resolve(now, self.pipeline.table(), &mut self.facts);
        for ev in self.facts.drain(..) {
            self.cgroups.observe(&ev, self.pipeline)?;
            self.namespaces.observe(&ev, self.pipeline)?;
            self.pipeline.feed(&ev)?;
        }
        if tick {
            self.namespaces.tick(now, self.augment, self.pipeline)?;
            self.cgroups.tick(now, self.pipeline)?;
        }
        self.pipeline.set_diag_skipped(self.augment.skipped);
        self.pipeline.advance(now)?;
        if tick {
            self.pipeline.tick(now)?;
        }
        self.pipeline.flush()
    }

    /// Reads what the ring holds (at most [`DRAIN_BATCH`] records or [`DRAIN_TURN`]: true when
    /// it stopped there), then, once the ring was read to its end, the loss counters: a loss is recorded
    /// after the events that came before it, and noted on the connections open then, before
    /// any goes out. (A drop happens when the ring is full: read before the ring is caught up,
    /// a loss would come ahead of earlier records of the connections it hit, which would then
    /// miss its note.)
    fn drain(&mut self, ring: &mut RingBuf<MapData>, tick: bool) -> io::Result<bool> {
        let deadline = std::time::Instant::now() + DRAIN_TURN;
        let mut read = 0;
        let mut stopped = false;
        while let Some(item) = ring.next() {
            self.handle(&item)?;
            read += 1;
            if read == DRAIN_BATCH || (read % 256 == 0 && std::time::Instant::now() >= deadline) {
                stopped = true;
                break;
            }
        }
        if let Some(l) = self.ebpf_log.as_mut() {
            l.flush();
        }
        if !stopped {
            self.loss.check(self.counters, self.pipeline)?;
        }
        if tick {
            self.loss.tell();
        }
        self.settle(tick)?;
        Ok(stopped)
    }
}

/// What the kernel lost, as reported so far.
#[derive(Default)]
struct LossReport {
    reported: Losses,
    /// Counts not yet told on stderr (told at most once a second), by cause.
    untold: [u64; 2],
}

impl LossReport {
    /// Reads the kernel's loss counters and reports what is new to the pipeline (which counts
    /// it, records it and notes the connections open now); stderr hears about it on `tell`.
    fn check(&mut self, counters: &mut LossCounters, pipeline: &mut Pipeline) -> io::Result<()> {
        let now = counters.read();
        pipeline.set_nested_caught(now.caught);
        for (i, cause) in LostCause::ALL.into_iter().enumerate() {
            let delta = now.of(cause).saturating_sub(self.reported.of(cause));
            if delta > 0 {
                pipeline.lost(monotonic_ns(), delta, cause)?;
                self.untold[i] += delta;
            }
        }
        // A count that went down (a nested run caught after its skip was read) stays reported.
        self.reported.ring_full = self.reported.ring_full.max(now.ring_full);
        if now.recursion() > self.reported.recursion() {
            self.reported.skipped = now.skipped;
            self.reported.caught = now.caught;
        }
        Ok(())
    }

    fn tell(&mut self) {
        for (i, cause) in LostCause::ALL.into_iter().enumerate() {
            let n = std::mem::take(&mut self.untold[i]);
            if n == 0 {
                continue;
            }
            let why = match cause {
                LostCause::RingFull => "ring buffer full; a larger --ring-buffer helps",
                LostCause::Recursion => {
                    "the kernel skipped runs of a program already running on that CPU"
                }
            };
            log::warn!("lost {} ({why})", crate::sink::count(n, "event"));
        }
    }
}

/// When and how the loop stops, and who is told that tracing started.
pub struct Control {
    /// `--duration`.
    pub duration: Option<Duration>,
    /// SIGHUP reopens the output (`--output FILE`) instead of stopping.
    pub reopen_on_hup: bool,
    /// Stops the loop when it fires (the lab).
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Told once the hooks are attached and existing sockets are seeded.
    pub seeded: Option<std::sync::mpsc::Sender<()>>,
}

/// Runs until a signal, the duration, or a write error (e.g. a closed pipe).
pub async fn run(
    mut tracer: Tracer,
    pipeline: &mut Pipeline<'_, '_>,
    augment: &mut Augmenter,
    namespaces: &mut Namespaces,
    cgroups: &mut Cgroups,
    control: Control,
) -> anyhow::Result<Stats> {
    let Control {
        duration,
        reopen_on_hup,
        mut stop,
        seeded,
    } = control;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let deadline = duration.map(|d| Instant::now() + d);
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // With batched wakeups the kernel wakes us only for a full quarter of the buffer; this timer
    // bounds how long a record waits otherwise.
    let mut poll = tracer.latency.map(|d| {
        let mut p = interval(d);
        p.set_missed_tick_behavior(MissedTickBehavior::Delay);
        p
    });
    // SAFETY: the ring buffer owns its map fd (`MapData` holds an `OwnedFd`), which stays open
    // and unchanged for as long as the `RingBuf` lives inside the `AsyncFd`.
    let mut ring = unsafe { AsyncFd::register_with_interest(tracer.events, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut reader = Reader {
        pipeline,
        augment,
        namespaces,
        cgroups,
        snap: tracer.snap,
        facts: Vec::new(),
        counters: &mut tracer.losses,
        loss: LossReport::default(),
        ebpf_log: tracer.ebpf_log.as_mut(),
    };
    reader.pipeline.start(monotonic_ns())?;
    // Connections that predate tracing (the hooks are attached, so nothing falls in between).
    reader.augment.seed(monotonic_ns(), &mut reader.facts);
    reader.settle(false)?;
    // Whoever waits for tracing to start (the lab) may act now: later sockets are events.
    if let Some(tx) = seeded {
        let _ = tx.send(());
    }

    // A drain stopped at its batch limit: the ring holds more. The kernel does not wake a
    // reader that has not caught up, so the loop drains on without waiting for readiness.
    let mut more = false;
    let result: io::Result<()> = loop {
        let drained = tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                match reader.drain(guard.get_inner_mut(), false) {
                    // Still readable: the next turn drains on.
                    Ok(true) => Ok(true),
                    Ok(false) => {
                        // The kernel only wakes a consumer that has caught up, and a wakeup
                        // landing between the drain above and `clear_ready` is lost; draining
                        // once more after clearing closes that window, so the reader can never
                        // stall behind a record.
                        guard.clear_ready();
                        reader.drain(ring.get_mut(), false)
                    }
                    Err(e) => Err(e),
                }
            }
            _ = std::future::ready(()), if more => reader.drain(ring.get_mut(), false),
            _ = async { match poll.as_mut() { Some(p) => { p.tick().await; } None => std::future::pending().await } } => {
                reader.drain(ring.get_mut(), false)
            }
            _ = tick.tick() => reader.drain(ring.get_mut(), true),
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => {
                if !reopen_on_hup {
                    break Ok(());
                }
                log::info!("SIGHUP: reopening the output");
                reader.pipeline.reopen(monotonic_ns()).map(|()| more)
            }
            _ = async { match stop.as_mut() { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => break Ok(()),
            _ = async { match deadline { Some(d) => sleep_until(d).await, None => std::future::pending().await } } => break Ok(()),
        };
        more = match drained {
            Ok(more) => more,
            Err(e) => break Err(e),
        };
        if more {
            // A full batch: let the runtime's other tasks (the metrics endpoint) run before
            // the next one.
            tokio::task::yield_now().await;
        }
    };
    // Detach first so nothing new arrives, then drain what the kernel already wrote.
    drop(tracer.ebpf.take());
    result?;
    let mut ring = ring.into_inner();
    while reader.drain(&mut ring, false)? {}
    reader.drain(&mut ring, true)?;
    // What is still open: its numbers now, then every tracked connection goes out.
    reader.augment.at_exit(monotonic_ns(), &mut reader.facts);
    let now = monotonic_ns();
    for ev in reader.facts.drain(..) {
        reader.cgroups.observe(&ev, reader.pipeline)?;
        reader.namespaces.observe(&ev, reader.pipeline)?;
        reader.pipeline.feed(&ev)?;
    }
    let stats = reader.pipeline.finish(now)?;
    tracer.events = ring;
    Ok(stats)
}
