//! `tcptrace lab`: runs one of the article's experiments between two throwaway network
//! namespaces with scaled-down sysctls, traces it live through the normal pipeline (every
//! diagnosis on), prints the explained lifecycles, and checks that the diagnoses the
//! experiment must produce were produced and agree with the kernel's arithmetic.
mod net;
mod scenarios;

use std::{io, sync::mpsc, time::Duration};

use anyhow::{Context as _, bail};
use tcptrace_core::{
    context::Context,
    diagnose::{Diagnosis, Severity, netns::NetnsFinding},
    lifecycle::Conn,
};

use crate::{
    flags::Config,
    pipeline::Mode,
    sink::{self, Backpressure, Interest, Sink},
};
use net::{Lab, Side};
use scenarios::{SCENARIOS, Scenario};

/// Remembers which rules fired where: (netns, rule, agrees, namespace-wide). One more sink
/// beside the output.
struct Recorder<'a> {
    seen: &'a mut Vec<(u32, &'static str, Option<bool>, bool)>,
}

impl Sink for Recorder<'_> {
    fn interest(&self) -> Interest {
        Interest::CONNS
    }
    fn conn(&mut self, _ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        for d in diagnoses {
            self.seen
                .push((c.netns.unwrap_or(0), d.rule, d.agrees, false));
        }
        Ok(())
    }
    fn finding(&mut self, _ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        self.seen
            .push((f.netns, f.diagnosis.rule, f.diagnosis.agrees, true));
        Ok(())
    }
}

/// How long the lab waits, after a scenario, for its sockets to end by themselves.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// The scenarios, one per line (`tcptrace lab` and `tcptrace lab --help` print it).
pub fn scenario_list() -> String {
    let mut text = String::from("Scenarios (tcptrace lab NAME):\n");
    for s in &SCENARIOS {
        text.push_str(&format!("  {:<20} [{}] {}\n", s.name, s.article, s.what));
    }
    text
}

fn list() {
    print!("{}", scenario_list());
}

pub fn run(cfg: &Config, name: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = name else {
        list();
        return Ok(());
    };
    let Some(sc) = SCENARIOS.iter().find(|s| s.name == name) else {
        bail!("unknown lab scenario {name:?}; `tcptrace lab` lists them");
    };
    let lab = Lab::new().context("creating the lab namespaces (needs root and iproute2)")?;
    for (side, k, v) in sc.sysctls {
        lab.sysctl(*side, k, v)?;
    }
    let (srv, cli) = (lab.inode(Side::Server)?, lab.inode(Side::Client)?);
    let mut cfg = cfg.clone();
    // Only the lab's namespaces, filtered in the kernel: a busy host's other traffic costs
    // the lab nothing and cannot fill its ring buffer.
    cfg.conn_filter.netns = vec![srv, cli];
    cfg.filter.netns = 2;
    if cfg.diagnose.is_none_or(|d| d > Severity::Info) {
        cfg.diagnose = Some(Severity::Info);
    }
    log::info!(
        target: "lab",
        "{} [{}]: {}; server netns {srv} ({}), client netns {cli} ({})",
        sc.name,
        sc.article,
        sc.what,
        net::SRV4,
        net::CLI4
    );
    let mut seen = Vec::new();
    let mut sinks = sink::build(&cfg, Backpressure::Drop)?;
    sinks.push(Box::new(Recorder { seen: &mut seen }));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let outcome = std::thread::scope(|scope| {
        let lab = &lab;
        let actor = scope.spawn(move || {
            ready_rx
                .recv_timeout(Duration::from_secs(30))
                .context("the tracer did not start")?;
            let r = (sc.run)(lab);
            // Trailing facts (timewait lookups, a last namespace sample) before stopping, and
            // a while for the scenario's sockets to end on their own, traced.
            std::thread::sleep(Duration::from_millis(1500));
            let waited = lab.wait_for_sockets(SOCKET_WAIT);
            let _ = stop_tx.send(());
            r.and(waited.map(drop))
        });
        let traced = crate::trace(&cfg, &mut sinks, Some(stop_rx), Some(ready_tx));
        let acted = actor
            .join()
            .map_err(|_| anyhow::anyhow!("lab actor panicked"))?;
        traced.map(|stats| (stats, acted))
    });
    let (stats, acted) = outcome?;
    drop(sinks);
    // Nothing of the lab may outlive it: what did not end by itself is closed now.
    let killed = lab.kill_sockets()?;
    if killed > 0 {
        log::info!(
            target: "lab",
            "closed {killed} leftover sockets before deleting the namespaces"
        );
    }
    acted.with_context(|| format!("scenario {}", sc.name))?;
    log::info!("{stats}");
    if cfg.mode == Mode::Events {
        // A recording: its diagnoses come when it is replayed.
        log::info!(target: "lab", "events recorded; `tcptrace replay` explains them");
        return Ok(());
    }
    verify(sc, &seen, srv, cli)
}

fn verify(
    sc: &Scenario,
    seen: &[(u32, &'static str, Option<bool>, bool)],
    srv: u32,
    cli: u32,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for e in sc.expect {
        let ns = if e.side == Side::Server { srv } else { cli };
        let hits: Vec<_> = seen
            .iter()
            .filter(|(n, r, _, wide)| *n == ns && *r == e.rule && *wide == e.netns_wide)
            .collect();
        let ok = hits.iter().any(|(_, _, agrees, _)| *agrees != Some(false));
        let verdict = match (hits.is_empty(), ok) {
            (true, _) => "MISSING",
            (false, true) => "explained",
            (false, false) => "explained, but DISAGREES with the kernel's arithmetic",
        };
        log::info!(
            target: "lab",
            "{} {}: {} ({})",
            e.side.name(),
            if e.netns_wide {
                "namespace"
            } else {
                "connection"
            },
            e.rule,
            verdict
        );
        if !ok {
            missing.push(e.rule);
        }
    }
    if !missing.is_empty() {
        bail!(
            "lab {}: expected diagnoses not produced or not agreeing: {}",
            sc.name,
            missing.join(", ")
        );
    }
    Ok(())
}
