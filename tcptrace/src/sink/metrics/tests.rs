//! The metrics' accounting on a recorded real stream (checked against its committed records),
//! the label-set cap and its overflow, TIME_WAIT samples, the exposition, and the endpoint's
//! limits against misbehaving clients.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use serde_json::Value;
use tcptrace_core::{
    diagnose::{Severity, netns::NetnsSample},
    event::{Comm, Event, EventKind, Family},
    lifecycle::{Conn, End, Role, TableConfig, Visit},
    tcp::{SegmentKind, TcpState},
};

use super::{
    account::{Account, IDLE_NS, Label, Labels, MAX_LABEL_SETS, MAX_NAMESPACES, OVERFLOW, ROLES},
    expose::{Format, Process, render},
    *,
};
use crate::{
    pipeline::{ConnFilter, Mode, Pipeline},
    sink::{Backpressure, Destination, JsonSink, Out},
};

/// The recorded six-scenario stream and its committed records (as `tests/replay.rs` uses them).
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures"
);
const FIXTURE: &str = "netns_scenarios.jsonl";
const GOLDEN: &str = "netns_scenarios.conn.jsonl";

/// Feeds an [`Account`] from the pipeline as the metrics sink does, without serving it.
struct Feed<'a>(&'a mut Account);

impl Sink for Feed<'_> {
    fn interest(&self) -> Interest {
        MetricsSink::new(Labels::default(), None).interest()
    }
    fn event(&mut self, ctx: &Context, ev: &Event, _prev_ns: Option<u64>) -> io::Result<()> {
        self.0.event(ctx, ev);
        Ok(())
    }
    fn fact(&mut self, _ctx: &Context, fact: &Fact) -> io::Result<()> {
        if let Fact::Sample(s) = fact {
            self.0.sample(s);
        }
        Ok(())
    }
    fn conn(&mut self, ctx: &Context, c: &Conn, d: &[Diagnosis]) -> io::Result<()> {
        self.0.conn(ctx, c, d);
        Ok(())
    }
    fn finding(&mut self, ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        self.0.finding(ctx, f);
        Ok(())
    }
    fn tick(&mut self, _ctx: &Context, now_ns: u64, stats: &Stats) -> io::Result<()> {
        self.0.tick(now_ns, stats);
        Ok(())
    }
}

/// An output that could not deliver some lines.
struct Lossy;

impl Sink for Lossy {
    fn interest(&self) -> Interest {
        Interest::CONNS
    }
    fn out_stats(&self) -> crate::sink::OutStats {
        crate::sink::OutStats {
            stalled: 5,
            failed: 2,
        }
    }
}

/// What the output could not write reaches the metrics at each tick, not only at the end.
#[test]
fn undelivered_output_is_counted_at_each_tick() {
    let mut account = Account::new(Labels::default());
    {
        let mut sinks = Fanout::default();
        sinks.push(Box::new(Lossy));
        sinks.push(Box::new(Feed(&mut account)));
        let mut pipeline = Pipeline::new(
            TableConfig::default(),
            ConnFilter::default(),
            None,
            &mut sinks,
        );
        pipeline.tick(1_000_000_000).unwrap();
    }
    let text = render(
        Arc::new(account.publish()),
        Process::default(),
        Format::Text,
    );
    assert!(
        text.contains("tcptrace_output_lines_dropped_total{reason=\"reader_stalled\"} 5\n"),
        "{text}"
    );
    assert!(text.contains("tcptrace_output_lines_dropped_total{reason=\"write_error\"} 2\n"));
}

/// Replays `path` into `sinks` as `tcptrace replay` does (diagnoses at warning).
fn replay_into(name: &str, sinks: &mut Fanout) -> Stats {
    let mut pipeline = Pipeline::new(
        TableConfig::default(),
        ConnFilter::default(),
        Some(Severity::Warning),
        sinks,
    );
    let path = Path::new(FIXTURES).join(name);
    let (stats, damage) = crate::replay::replay(&path, &mut pipeline).unwrap();
    assert!(damage.is_none(), "{damage:?}");
    stats
}

fn json_lines(name: &str) -> Vec<Value> {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn counts_a_recorded_stream_as_its_records_and_events_say() {
    let mut account = Account::new(Labels::default());
    let mut sinks = Fanout::default();
    sinks.push(Box::new(Feed(&mut account)));
    let stats = replay_into(FIXTURE, &mut sinks);
    drop(sinks);
    account.tick(1, &stats);
    let t = account.tally();
    let set = &t.sets[0].as_ref().unwrap().counters;

    // Ends, histograms and diagnoses against the committed records of the same stream.
    let records = json_lines(GOLDEN);
    let mut ends: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut diagnoses: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut connect, mut connect_ms, mut handshake, mut lifetimes) = (0, 0.0, 0, [0u64; 3]);
    for r in &records {
        let role = r["role"].as_str().unwrap().to_string();
        *ends
            .entry((role.clone(), r["end"].as_str().unwrap().into()))
            .or_default() += 1;
        let states: Vec<&str> = r["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        if states.get(1) == Some(&"ESTABLISHED") {
            match states[0] {
                "SYN_SENT" => {
                    connect += 1;
                    connect_ms += r["states"][0]["ms"].as_f64().unwrap();
                }
                "SYN_RECV" => handshake += 1,
                _ => {}
            }
        }
        if r["duration_ms"].is_number() && r["end"] != "open" {
            lifetimes[ROLES.iter().position(|x| x.name() == role).unwrap()] += 1;
        }
        for d in r["diagnosis"].as_array().into_iter().flatten() {
            let key = (d["rule"].to_string(), d["severity"].to_string());
            *diagnoses.entry(key).or_default() += 1;
        }
    }
    let mut counted = BTreeMap::new();
    for (r, role) in ROLES.iter().enumerate() {
        for (e, end) in super::account::ENDS.iter().enumerate() {
            if set.ends[r][e] > 0 {
                counted.insert(
                    (role.name().to_string(), end.name().to_string()),
                    set.ends[r][e],
                );
            }
        }
    }
    assert_eq!(counted, ends);
    assert_eq!(ends.values().sum::<u64>(), 10);
    assert_eq!(
        (set.connect.count, set.handshake.count),
        (connect, handshake)
    );
    assert_eq!((connect, handshake), (4, 4));
    assert!(
        (set.connect.sum * 1e3 - connect_ms).abs() < 0.01,
        "{}",
        set.connect.sum
    );
    assert_eq!(
        set.lifetime.map(|h| h.count),
        lifetimes,
        "lifetimes by role"
    );
    let counted: BTreeMap<(String, String), u64> = set
        .diagnoses
        .iter()
        .map(|((rule, sev), n)| ((format!("{rule:?}"), format!("{:?}", sev.name())), *n))
        .collect();
    assert_eq!(counted, diagnoses);

    // Retransmits and resets against the stream's own events.
    let events = json_lines(FIXTURE);
    let count = |f: &dyn Fn(&Value) -> bool| events.iter().filter(|e| f(e)).count() as u64;
    let syn = SegmentKind::Syn as usize;
    assert_eq!(
        set.retransmits[usize::from(TcpState::SYN_SENT.0)][syn],
        count(&|e| e["type"] == "retransmit" && e["state"] == "SYN_SENT" && e["kind"] == "syn")
    );
    assert_eq!(set.retransmits.iter().flatten().sum::<u64>(), 2);
    let mut resets: BTreeMap<(bool, String), u64> = BTreeMap::new();
    for ((sent, reason), n) in &set.resets {
        let name = super::account::reason_label(&t.reasons, *reason).to_string();
        *resets.entry((*sent, name)).or_default() += n;
    }
    let mut expected: BTreeMap<(bool, String), u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "reset") {
        let reason = e["reason"].as_str().unwrap_or("none").to_string();
        *expected
            .entry((e["direction"] == "sent", reason))
            .or_default() += 1;
    }
    assert_eq!(resets, expected);
    assert!(
        expected.contains_key(&(true, "NO_SOCKET".to_string())),
        "{expected:?}"
    );
    assert_eq!(t.stats.reset, 4);

    // The exposition says the same.
    let text = render(Arc::new(t.clone()), Process::default(), Format::Text);
    for line in [
        "tcptrace_connections_ended_total{role=\"client\",end=\"refused\"} 1",
        "tcptrace_connections_ended_total{role=\"client\",end=\"timeout\"} 1",
        "tcptrace_connections_ended_total{role=\"server\",end=\"reset_received\"} 1",
        "tcptrace_connections_ended_total{role=\"server\",end=\"timeout\"} 0",
        "tcptrace_connect_latency_seconds_count 4",
        "tcptrace_server_handshake_seconds_count 4",
        "tcptrace_retransmits_total{state=\"SYN_SENT\",kind=\"syn\"} 2",
        "tcptrace_resets_total{direction=\"sent\",reason=\"NO_SOCKET\"} 1",
        "tcptrace_resets_total{direction=\"received\",reason=\"none\"} 2",
        "tcptrace_diagnoses_total{rule=\"connect_timeout\",severity=\"error\"} 1",
        "tcptrace_events_lost_total{cause=\"ring_full\"} 0",
        "tcptrace_events_total{kind=\"reset\"} 4",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let om = render(Arc::new(t.clone()), Process::default(), Format::OpenMetrics);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE tcptrace_connect_latency_seconds histogram"));
}

/// `--events` output is the same with the metrics beside it, although the connection table
/// then runs (the table and the metrics add nothing to the event stream).
#[test]
fn event_output_is_unchanged_by_the_metrics() {
    let dir = std::env::temp_dir();
    let run = |with_metrics: bool| {
        let path = dir.join(format!(
            "tcptrace-metrics-events-{}-{with_metrics}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let mut account = Account::new(Labels::default());
        {
            let out = Out::open(
                Destination::File {
                    path: path.clone(),
                    file: None,
                },
                Backpressure::Block,
            )
            .unwrap();
            let mut sinks = Fanout::default();
            sinks.push(Box::new(JsonSink::new(out, Mode::Events)));
            if with_metrics {
                sinks.push(Box::new(Feed(&mut account)));
            }
            replay_into(FIXTURE, &mut sinks);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (
            text,
            account.tally().sets[0]
                .as_ref()
                .unwrap()
                .counters
                .connect
                .count,
        )
    };
    let (plain, none) = run(false);
    let (beside, counted) = run(true);
    assert_eq!(
        (none, counted),
        (0, 4),
        "the table ran only for the metrics"
    );
    assert!(plain.lines().count() > 50 && plain.contains("\"prev_ms\":0.0"));
    assert_eq!(plain, beside);
}

fn event(ts_ns: u64, kind: EventKind) -> Event {
    Event {
        ts_ns,
        sk: 1,
        netns: Some(4026531840),
        cgroup: None,
        pid: 1,
        tid: 1,
        comm: Comm::new("t"),
        family: Family::Inet,
        laddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        lport: 40000,
        raddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        rport: 80,
        kind,
    }
}

/// A finished client connection to `rport` in `netns` from `cgroup`.
fn client(rport: u16, netns: u32, cgroup: Option<u64>, end: End) -> Conn {
    let mut ev = event(
        1_000,
        EventKind::State {
            old: TcpState::CLOSE,
            new: TcpState::SYN_SENT,
            sock: None,
        },
    );
    ev.rport = rport;
    ev.netns = Some(netns);
    ev.cgroup = cgroup;
    let mut c = Conn::new(1, &ev, Role::Client);
    c.start_ns = Some(1_000);
    c.enter(TcpState::SYN_SENT, 1_000);
    c.visits.push(Visit {
        state: TcpState::ESTABLISHED,
        since_ns: Some(251_000),
    });
    c.end = Some(end);
    c.end_ns = Some(2_000_000_000);
    c
}

fn labels(names: &[&str]) -> Labels {
    Labels::parse(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn labels_are_parsed_and_checked() {
    assert_eq!(
        labels(&["port", "netns", " port"])
            .names()
            .collect::<Vec<_>>(),
        ["netns", "port"]
    );
    let err = Labels::parse(&["pid".to_string()]).unwrap_err();
    assert!(
        err.contains("\"pid\"") && err.contains("container"),
        "{err}"
    );
    assert_eq!(Label::ALL.len(), 5);
}

#[test]
fn label_sets_are_capped_then_overflow_then_make_room_when_idle() {
    let ctx = Context::default();
    let mut a = Account::new(labels(&["port"]));
    let extra = 44;
    for i in 0..MAX_LABEL_SETS + extra {
        a.conn(&ctx, &client(1000 + i as u16, 7, None, End::Closed), &[]);
    }
    assert_eq!(a.label_sets(), MAX_LABEL_SETS);
    let t = a.tally();
    assert_eq!(t.overflowed, extra as u64);
    assert_eq!(t.overflow.values, [OVERFLOW]);
    assert_eq!(t.overflow.counters.ends[0][0], extra as u64);
    assert_eq!(t.overflow.counters.connect.count, extra as u64);
    // A port seen before the cap was reached keeps its own set.
    a.conn(&ctx, &client(1000, 7, None, End::Refused), &[]);
    assert_eq!(a.tally().overflowed, extra as u64);
    let own: Vec<_> = a
        .tally()
        .label_sets()
        .filter(|s| s.values == ["1000"])
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(
        own[0].counters.ends[0][3], 1,
        "refused counted in port 1000's set"
    );

    let text = render(Arc::new(a.publish()), Process::default(), Format::Text);
    assert!(text.contains(
        "tcptrace_connections_ended_total{role=\"client\",end=\"closed\",port=\"overflow\"} 44"
    ));
    assert!(text.contains("tcptrace_metrics_overflow_total 44"));
    assert!(text.contains("tcptrace_metrics_label_sets 256"));
    // Series per label set are bounded: 14 ends, 3 histograms of ≤ 19 series, and whatever
    // else happened to it.
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < (MAX_LABEL_SETS + 1) * 80, "{series} series");

    // Idle sets are dropped after IDLE_NS; new values get sets of their own again.
    a.tick(IDLE_NS / 2, &Stats::default());
    a.conn(&ctx, &client(5000, 7, None, End::Closed), &[]);
    assert_eq!(a.tally().overflowed, extra as u64 + 1, "still full");
    a.tick(IDLE_NS + 1, &Stats::default());
    assert_eq!(a.label_sets(), 0, "all idle for IDLE_NS");
    a.conn(&ctx, &client(5000, 7, None, End::Closed), &[]);
    assert_eq!(a.label_sets(), 1);
    assert_eq!(a.tally().overflowed, extra as u64 + 1);
}

#[test]
fn labels_come_from_the_namespace_and_the_cgroup_once_it_is_named() {
    let mut ctx = Context::default();
    let mut a = Account::new(labels(&["netns", "unit", "container", "pod", "port"]));
    let pod = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1c2d3e_4a5b_6c7d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-4c01db0b339c4c01db0b339c4c01db0b339c4c01db0b339c4c01db0b339c0000.scope";
    // Not named yet: counted with empty cgroup labels, and not remembered that way.
    a.conn(&ctx, &client(443, 11, Some(42), End::Closed), &[]);
    assert!(ctx.learn_cgroup(42, pod));
    a.conn(&ctx, &client(443, 11, Some(42), End::Timeout), &[]);
    let sets: Vec<&Vec<String>> = a.tally().label_sets().map(|s| &s.values).collect();
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!(sets[0], &["11", "", "", "", "443"]);
    let named = sets[1];
    assert_eq!(named[0], "11");
    assert!(named[1].starts_with("cri-containerd-4c01db0b339c") && named[1].ends_with(".scope"));
    assert_eq!(named[2], "4c01db0b339c");
    assert_eq!(named[3], "0f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f");
    assert_eq!(named[4], "443");

    // Events carry the namespace and cgroup but no service port.
    let mut ev = event(
        5,
        EventKind::Retransmit {
            state: Some(TcpState::ESTABLISHED),
            kind: SegmentKind::Data,
            from_flags: true,
        },
    );
    ev.netns = Some(11);
    ev.cgroup = Some(42);
    a.event(&ctx, &ev);
    let s = a
        .tally()
        .label_sets()
        .find(|s| s.values[4].is_empty() && s.values[2] == "4c01db0b339c")
        .expect("the event's set");
    assert_eq!(
        s.counters.retransmits[usize::from(TcpState::ESTABLISHED.0)][SegmentKind::Data as usize],
        1
    );
    // Its set counted no connection: no all-zero connection series for it.
    let text = render(Arc::new(a.publish()), Process::default(), Format::Text);
    assert_eq!(a.label_sets(), 3);
    assert_eq!(
        text.matches("tcptrace_connect_latency_seconds_count{")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains(
            "tcptrace_retransmits_total{state=\"ESTABLISHED\",kind=\"data\",netns=\"11\""
        )
    );

    // A hostile unit name is one escaped label value, never a line of its own.
    ctx.learn_cgroup(43, "/system.slice/evil\"}\n# TYPE x counter\\.service");
    a.conn(&ctx, &client(80, 11, Some(43), End::Closed), &[]);
    let text = render(
        Arc::new(a.publish()),
        Process::default(),
        Format::OpenMetrics,
    );
    assert!(
        text.contains("unit=\"evil\\\"}\\n# TYPE x counter\\\\.service\""),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("# TYPE x ")), "{text}");
}

fn sample(netns: u32, time_wait: u64) -> NetnsSample {
    NetnsSample {
        netns,
        ts_ns: 0,
        tcpext: Vec::new(),
        time_wait_total: time_wait,
        time_wait_by_dest: Vec::new(),
        listeners: Vec::new(),
    }
}

#[test]
fn time_wait_comes_from_samples_per_namespace_with_a_cap() {
    let mut a = Account::new(Labels::default());
    let rendered =
        |a: &mut Account| render(Arc::new(a.publish()), Process::default(), Format::Text);
    // A namespace's first sample is its counters' baseline, taken without a dump.
    a.sample(&sample(1, 0));
    assert!(!rendered(&mut a).contains("tcptrace_time_wait_sockets{"));
    a.sample(&sample(1, 5));
    a.sample(&sample(2, 9));
    a.sample(&sample(2, 3));
    let text = rendered(&mut a);
    assert!(
        text.contains("tcptrace_time_wait_sockets{netns=\"1\"} 5\n"),
        "{text}"
    );
    assert!(text.contains("tcptrace_time_wait_sockets{netns=\"2\"} 3\n"));
    a.sample(&sample(1, 0));
    for ns in 10..10 + MAX_NAMESPACES as u32 {
        a.sample(&sample(ns, 0));
        a.sample(&sample(ns, 1));
    }
    let text = rendered(&mut a);
    assert!(
        text.contains("tcptrace_time_wait_sockets{netns=\"1\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("tcptrace_time_wait_sockets{netns=\"10\"} 1\n"));
    // Two namespaces came first, so the last two of the others share one series.
    assert!(
        text.contains("tcptrace_time_wait_sockets{netns=\"overflow\"} 2\n"),
        "{text}"
    );
    assert_eq!(
        text.matches("tcptrace_time_wait_sockets{").count(),
        MAX_NAMESPACES + 1
    );
    // Not sampled for a minute: gone.
    a.tick(61_000_000_000, &Stats::default());
    assert!(!rendered(&mut a).contains("tcptrace_time_wait_sockets{"));
}

#[test]
fn process_numbers_are_read() {
    let p = Process::read(1.0);
    assert!(p.cpu_secs >= 0.0 && p.rss_bytes > 1 << 20, "{p:?}");
    let text = render(
        Arc::new(Account::new(Labels::default()).publish()),
        p,
        Format::OpenMetrics,
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds counter"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "));
}

/// One HTTP exchange with `addr`: the answer as text (empty when the server closed at once).
fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_endpoint_serves_published_counts_and_refuses_misbehaving_clients() {
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut sink = MetricsSink::new(Labels::default(), Some(listener));
    let ctx = Context::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sink.start(&ctx, 0).unwrap();
        sink.conn(&ctx, &client(80, 1, None, End::Refused), &[])
            .unwrap();
        let stats = Stats {
            lost_recursion: 3,
            ..Stats::default()
        };
        sink.tick(&ctx, 1, &stats).unwrap();
        let scrape = |req: &'static [u8]| tokio::task::spawn_blocking(move || get(addr, req));

        let text = scrape(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(
            text.contains("tcptrace_connections_ended_total{role=\"client\",end=\"refused\"} 1\n")
        );
        assert!(text.contains("tcptrace_events_lost_total{cause=\"recursion\"} 3\n"));
        let om = scrape(
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(
            om.contains("application/openmetrics-text") && om.ends_with("# EOF\n"),
            "{om}"
        );
        let head = scrape(b"HEAD /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(
            scrape(b"GET /nope HTTP/1.1\r\n\r\n")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            scrape(b"DELETE /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 405")
        );
        let huge: &'static [u8] = Box::leak(vec![b'a'; 20_000].into_boxed_slice());
        assert!(scrape(huge).await.unwrap().starts_with("HTTP/1.1 431"));

        // Clients that connect and say nothing hold every slot; one more is closed at once,
        // and the event loop (this task) is not held up meanwhile.
        let idle: Vec<std::net::TcpStream> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        let refused = scrape(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(refused, "", "served beyond the client cap");
        assert!(t0.elapsed() < Duration::from_secs(1));
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = scrape(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(again.starts_with("HTTP/1.1 200"), "slots freed: {again}");

        // Published once a second: counts since the last tick are not served yet.
        sink.conn(&ctx, &client(80, 1, None, End::Refused), &[])
            .unwrap();
        let before = scrape(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(before.contains("end=\"refused\"} 1\n"));
        sink.tick(&ctx, 2, &stats).unwrap();
        let after = scrape(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(after.contains("end=\"refused\"} 2\n"), "{after}");
        sink.finish(&ctx, 3, &stats).unwrap();
    });
}
