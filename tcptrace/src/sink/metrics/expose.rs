//! How a [`Tally`] is exposed: the metric families, with their names, types, units, help and
//! labels, encoded by prometheus-client (a [`Collector`] over the published copy) in the
//! OpenMetrics text format, or Prometheus' older text format for clients that do not ask for
//! OpenMetrics.
use std::{collections::BTreeMap, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, MetricEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};
use tcptrace_core::{diagnose::Severity, lifecycle::conn::SEGMENT_KINDS, tcp::SegmentKind};

use super::account::{ENDS, Histogram, LabelSet, OVERFLOW, ROLES, Tally, reason_label, slot_state};

/// The exposition format a scrape asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4 (what `curl` gets).
    Text,
}

impl Format {
    /// From a request's `Accept` header.
    pub fn accepting(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The process's own numbers (`process_*`), read when a scrape renders.
#[derive(Clone, Copy, Debug, Default)]
pub struct Process {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    /// Unix time it started.
    pub start_secs: f64,
}

impl Process {
    /// CPU time of all threads so far and resident memory now.
    pub fn read(start_secs: f64) -> Self {
        // SAFETY: rusage is plain data that getrusage fills.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid, writable rusage.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        Self {
            cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
            rss_bytes: rss_pages * page,
            start_secs,
        }
    }
}

/// Encodes a tally in `format`.
pub fn render(tally: Arc<Tally>, process: Process, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { tally, process }));
    let mut out = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
    };
    // Writing into a String cannot fail, and every label set here is well formed.
    debug_assert!(encoded.is_ok());
    out
}

#[derive(Debug)]
struct Exposition {
    tally: Arc<Tally>,
    process: Process,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One sample's labels: the family's own, then the set's optional ones.
fn with_set<'a>(own: &[(&'static str, &'a str)], t: &'a Tally, set: &'a LabelSet) -> Labels<'a> {
    let mut l = own.to_vec();
    l.extend(t.labels.names().zip(set.values.iter().map(String::as_str)));
    l
}

/// A family's name, help and unit.
type Desc<'s> = (&'s str, &'s str, Option<&'s Unit>);

/// One metric family: its descriptor, then each series with its labels.
fn family<'a, V>(
    enc: &mut DescriptorEncoder,
    (name, help, unit): Desc,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels<'a>, V)>,
    value: impl Fn(&mut MetricEncoder, &V) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in series {
        if labels.is_empty() {
            value(&mut m, &v)?;
        } else {
            value(&mut m.encode_family(&labels)?, &v)?;
        }
    }
    Ok(())
}

fn counters<'a, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    desc: Desc,
    series: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> fmt::Result {
    family(enc, desc, MetricType::Counter, series, |m, v| {
        m.encode_counter::<NoLabelSet, V, u64>(v, None)
    })
}

fn gauges<'a, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    desc: Desc,
    series: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> fmt::Result {
    family(enc, desc, MetricType::Gauge, series, |m, v| {
        m.encode_gauge(v)
    })
}

/// Histograms in seconds.
fn histograms<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, &'a Histogram)>,
) -> fmt::Result {
    let seconds = Unit::Seconds;
    let desc = (name, help, Some(&seconds));
    family(enc, desc, MetricType::Histogram, series, |m, h| {
        let buckets: Vec<(f64, u64)> = h.buckets().collect();
        m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    })
}

/// A set's nonzero counts by state and segment kind.
fn by_state_and_kind<'a>(
    t: &'a Tally,
    s: &'a LabelSet,
    table: &'a [[u64; SEGMENT_KINDS]],
) -> impl Iterator<Item = (Labels<'a>, u64)> + 'a {
    table.iter().enumerate().flat_map(move |(st, row)| {
        let state = slot_state(st).map_or("unknown", |s| s.name());
        SegmentKind::ALL.into_iter().filter_map(move |k| {
            let n = row[k as usize];
            (n > 0).then(|| (with_set(&[("state", state), ("kind", k.name())], t, s), n))
        })
    })
}

/// A set's counts by rule and severity.
fn by_rule<'a>(
    t: &'a Tally,
    s: &'a LabelSet,
    counts: &'a BTreeMap<(&'static str, Severity), u64>,
) -> impl Iterator<Item = (Labels<'a>, u64)> + 'a {
    counts.iter().map(move |((rule, sev), n)| {
        (
            with_set(&[("rule", rule), ("severity", sev.name())], t, s),
            *n,
        )
    })
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let t = &*self.tally;
        let sets: Vec<&LabelSet> = t.label_sets().collect();
        // The connection families of a set that only counted events (retransmits, resets)
        // would be all zeros: they appear once it counts a connection. Without optional labels
        // they exist from the start, so rate() sees the first increment.
        let conn_sets: Vec<&LabelSet> = sets
            .iter()
            .copied()
            .filter(|s| s.values.is_empty() || s.counters.ends.iter().flatten().any(|n| *n > 0))
            .collect();
        let seconds = Unit::Seconds;
        let bytes = Unit::Bytes;

        // Connections.
        counters(
            &mut enc,
            (
                "tcptrace_connections_ended",
                "Connections whose record was completed, by role (client: active open, server: passive open) and how they ended (open: still open when tracing stopped or evicted from the table).",
                None,
            ),
            conn_sets.iter().flat_map(|s| {
                ROLES.iter().enumerate().flat_map(move |(r, role)| {
                    ENDS.iter().enumerate().filter_map(move |(e, end)| {
                        let n = s.counters.ends[r][e];
                        // Client and server series exist from the start, so the first
                        // increment is seen by rate(); others appear when they happen.
                        (n > 0 || r < 2).then(|| {
                            (
                                with_set(&[("role", role.name()), ("end", end.name())], t, s),
                                n,
                            )
                        })
                    })
                })
            }),
        )?;
        histograms(
            &mut enc,
            "tcptrace_connect_latency",
            "Time client connections that established spent in SYN_SENT (connect() to the SYN-ACK).",
            conn_sets
                .iter()
                .map(|s| (with_set(&[], t, s), &s.counters.connect)),
        )?;
        histograms(
            &mut enc,
            "tcptrace_server_handshake",
            "Time server connections that established spent in SYN_RECV, from the creation of their socket (the kernel makes it when the handshake's last ACK arrives) to ESTABLISHED.",
            conn_sets
                .iter()
                .map(|s| (with_set(&[], t, s), &s.counters.handshake)),
        )?;
        histograms(
            &mut enc,
            "tcptrace_connection_lifetime",
            "Lifetime of finished connections whose start was seen, by role.",
            conn_sets.iter().flat_map(|s| {
                ROLES[..2].iter().enumerate().map(move |(r, role)| {
                    (
                        with_set(&[("role", role.name())], t, s),
                        &s.counters.lifetime[r],
                    )
                })
            }),
        )?;
        gauges(
            &mut enc,
            (
                "tcptrace_connections_open",
                "Connections tracked now (the connection table: open, half-open and closing).",
                None,
            ),
            [(Vec::new(), t.stats.tracked)],
        )?;
        let netns_names: Vec<String> = t.time_wait.keys().map(u32::to_string).collect();
        let mut time_wait: Vec<(Labels, u64)> = Vec::new();
        let mut others = None;
        for (tw, name) in t.time_wait.values().zip(&netns_names) {
            let Some(n) = tw.sockets else { continue };
            if tw.own {
                time_wait.push((vec![("netns", name.as_str())], n));
            } else {
                *others.get_or_insert(0) += n;
            }
        }
        if let Some(n) = others {
            time_wait.push((vec![("netns", OVERFLOW)], n));
        }
        gauges(
            &mut enc,
            (
                "tcptrace_time_wait_sockets",
                "TIME_WAIT (and orphaned FIN_WAIT2) sockets of a network namespace at its last sample (namespaces beyond the first 256 are summed under netns=\"overflow\").",
                None,
            ),
            time_wait,
        )?;

        // Retransmits and resets, as they happen.
        counters(
            &mut enc,
            (
                "tcptrace_retransmits",
                "Segments retransmitted, by the socket's state and the segment's kind (syn, synack, fin, data).",
                None,
            ),
            sets.iter()
                .flat_map(|s| by_state_and_kind(t, s, &s.counters.retransmits)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_retransmit_failures",
                "Retransmissions the kernel attempted but could not send, by state and kind.",
                None,
            ),
            sets.iter()
                .flat_map(|s| by_state_and_kind(t, s, &s.counters.retransmit_failures)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_resets",
                "Resets sent and received, by the kernel's reason (sk_rst_reason; none when the kernel gives none).",
                None,
            ),
            sets.iter().flat_map(|s| {
                s.counters.resets.iter().map(move |((sent, reason), n)| {
                    let dir = if *sent { "sent" } else { "received" };
                    (
                        with_set(
                            &[
                                ("direction", dir),
                                ("reason", reason_label(&t.reasons, *reason)),
                            ],
                            t,
                            s,
                        ),
                        *n,
                    )
                })
            }),
        )?;

        // Diagnoses of records, and findings of namespaces.
        counters(
            &mut enc,
            (
                "tcptrace_diagnoses",
                "Diagnoses of connection records, by rule and severity (at the --diagnose level and above).",
                None,
            ),
            sets.iter()
                .flat_map(|s| by_rule(t, s, &s.counters.diagnoses)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_namespace_findings",
                "Namespace-wide findings (TIME_WAIT pressure, listen queue overflows, ...), by rule and severity.",
                None,
            ),
            sets.iter()
                .flat_map(|s| by_rule(t, s, &s.counters.findings)),
        )?;

        // The tracer itself.
        let st = &t.stats;
        counters(
            &mut enc,
            ("tcptrace_events", "Kernel events processed, by kind.", None),
            [
                ("state", st.state),
                ("retransmit", st.retransmit),
                ("retransmit_failed", st.retransmit_failed),
                ("reset", st.reset),
                ("error", st.error),
            ]
            .map(|(k, n)| (vec![("kind", k)], n)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_events_lost",
                "Kernel events lost, by cause: ring_full (the ring buffer was full) or recursion (program runs the kernel skipped).",
                None,
            ),
            [
                ("ring_full", st.lost_ring),
                ("recursion", st.lost_recursion),
            ]
            .map(|(k, n)| (vec![("cause", k)], n)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_records_malformed",
                "Kernel records that could not be decoded.",
                None,
            ),
            [(Vec::new(), st.malformed)],
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_table_evictions",
                "Connections evicted from the full connection table (--max-conns).",
                None,
            ),
            [(Vec::new(), st.table.evicted)],
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_sock_diag_skipped",
                "sock_diag look-ups skipped to stay within their budget (2000/s).",
                None,
            ),
            [(Vec::new(), st.diag_skipped)],
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_output_lines_dropped",
                "Output lines not written, by reason: reader_stalled (the reader did not keep up) or write_error (e.g. a full disk).",
                None,
            ),
            [
                ("reader_stalled", st.output.stalled),
                ("write_error", st.output.failed),
            ]
            .map(|(k, n)| (vec![("reason", k)], n)),
        )?;
        counters(
            &mut enc,
            (
                "tcptrace_metrics_overflow",
                "Connections, events and findings counted under the overflow label set (more than 256 label sets).",
                None,
            ),
            [(Vec::new(), t.overflowed)],
        )?;
        gauges(
            &mut enc,
            (
                "tcptrace_metrics_label_sets",
                "Label sets of --metrics-labels in use (at most 256, then overflow).",
                None,
            ),
            [(Vec::new(), t.sets.iter().flatten().count())],
        )?;
        let p = &self.process;
        counters(
            &mut enc,
            (
                "process_cpu",
                "User and system CPU time of the tracer, all threads.",
                Some(&seconds),
            ),
            [(Vec::new(), p.cpu_secs)],
        )?;
        gauges(
            &mut enc,
            (
                "process_resident_memory",
                "Resident memory of the tracer.",
                Some(&bytes),
            ),
            [(Vec::new(), p.rss_bytes)],
        )?;
        gauges(
            &mut enc,
            (
                "process_start_time",
                "When the tracer started, seconds since the Unix epoch.",
                Some(&seconds),
            ),
            [(Vec::new(), p.start_secs)],
        )?;
        Ok(())
    }
}
