//! The metrics endpoint of a live trace: where Prometheus scrapes it and which optional labels
//! its connection metrics carry.
use clap::Args;

/// `--metrics ADDR` and `--metrics-labels`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464), beside the
    /// output; bound before privileges are dropped, so a port below 1024 works.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Optional labels on the connection metrics, comma-separated: netns, unit, container,
    /// pod, port (a server's listening port, the port a client connected to). At most 256
    /// label sets; beyond them new ones are counted under "overflow".
    #[arg(long = "metrics-labels", value_name = "LABELS", value_delimiter = ',')]
    pub metrics_labels: Vec<String>,
}
