//! `--metrics ADDR`: Prometheus metrics, a sink beside whatever the output is. It counts what
//! the pipeline passes it ([`account`]), publishes a copy once a second, and serves the latest
//! copy at `http://ADDR/metrics` ([`http`]) in the exposition formats of [`expose`]. It wants
//! connection records (so the connection table runs even with `--events`) and the event
//! stream without its timing (retransmits and resets are counted as they happen, TIME_WAIT
//! from the namespace samples).
mod account;
mod expose;
mod http;

use std::{io, net::SocketAddr, sync::Arc};

use tcptrace_core::{
    context::Context,
    diagnose::{Diagnosis, netns::NetnsFinding},
    event::Event,
    lifecycle::Conn,
};
use tokio::{sync::watch, task::JoinHandle};

pub use account::Labels;
use account::{Account, Tally};

use super::{Fact, Fanout, Interest, Sink};
use crate::{flags::Config, stats::Stats};

/// `--metrics` and `--metrics-labels`, validated.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
    pub labels: Labels,
}

/// Adds the metrics sink when the configuration asks for it: binds its socket now, while the
/// tracer still holds every capability.
pub fn add(cfg: &Config, sinks: &mut Fanout) -> io::Result<()> {
    if let Some(m) = &cfg.metrics {
        sinks.push(Box::new(MetricsSink::bind(m)?));
    }
    Ok(())
}

pub struct MetricsSink {
    account: Account,
    /// Bound, not yet served (the server starts with the stream, on the tracer's runtime).
    listener: Option<std::net::TcpListener>,
    published: watch::Sender<Arc<Tally>>,
    server: Option<JoinHandle<()>>,
    start_secs: f64,
}

impl MetricsSink {
    fn bind(cfg: &MetricsConfig) -> io::Result<Self> {
        let listener = http::bind(cfg.addr)?;
        log::info!(
            "metrics at http://{}/metrics",
            listener.local_addr().unwrap_or(cfg.addr)
        );
        Ok(Self::new(cfg.labels.clone(), Some(listener)))
    }

    fn new(labels: Labels, listener: Option<std::net::TcpListener>) -> Self {
        let mut account = Account::new(labels);
        let (published, _) = watch::channel(Arc::new(account.publish()));
        Self {
            account,
            listener,
            published,
            server: None,
            start_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

impl Sink for MetricsSink {
    fn interest(&self) -> Interest {
        Interest {
            events: true,
            conns: true,
            timing: false,
        }
    }

    fn start(&mut self, _ctx: &Context, _ts_ns: u64) -> io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "--metrics needs the live tracer's runtime",
            ));
        }
        self.server = Some(http::serve(
            listener,
            self.published.subscribe(),
            self.start_secs,
        )?);
        Ok(())
    }

    fn event(&mut self, ctx: &Context, ev: &Event, _prev_ns: Option<u64>) -> io::Result<()> {
        self.account.event(ctx, ev);
        Ok(())
    }

    fn fact(&mut self, _ctx: &Context, fact: &Fact) -> io::Result<()> {
        if let Fact::Sample(s) = fact {
            self.account.sample(s);
        }
        Ok(())
    }

    fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        self.account.conn(ctx, c, diagnoses);
        Ok(())
    }

    fn finding(&mut self, ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        self.account.finding(ctx, f);
        Ok(())
    }

    fn tick(&mut self, _ctx: &Context, now_ns: u64, stats: &Stats) -> io::Result<()> {
        self.account.tick(now_ns, stats);
        self.published
            .send_replace(Arc::new(self.account.publish()));
        Ok(())
    }

    fn finish(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        Ok(())
    }
}

impl Drop for MetricsSink {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

#[cfg(test)]
mod tests;
