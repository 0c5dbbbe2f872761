//! `tcptrace replay`: a recorded real event stream (two namespaces, six scenarios) rebuilds
//! exactly the committed connection records, through the same table as live tracing.
mod harness;

use harness::tcptrace;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/netns_scenarios.jsonl"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/netns_scenarios.conn.jsonl"
);

#[test]
fn replay_rebuilds_the_golden_records() {
    let out = tcptrace(&["replay", FIXTURE, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = std::fs::read_to_string(GOLDEN).expect("golden file");
    let text = String::from_utf8_lossy(&out.stdout);
    // The stream header first (schema version), then exactly the golden records.
    let (head, records) = text.split_once('\n').expect("a header line");
    let head: serde_json::Value = serde_json::from_str(head).unwrap();
    assert_eq!(head["type"], "stream");
    assert_eq!(head["schema"], 1);
    assert_eq!(head["content"], "records");
    assert_eq!(records, golden);
}

#[test]
fn replay_text_is_one_line_per_connection() {
    let out = tcptrace(&["replay", FIXTURE, "--state", "TIME_WAIT"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert!(
            l.contains(" closed after ") && l.contains("→ TIME_WAIT "),
            "{l}"
        );
    }
    let timeouts = tcptrace(&["replay", FIXTURE, "--min-duration", "2s"]);
    let text = String::from_utf8_lossy(&timeouts.stdout);
    // The record, and under it its diagnosis, judged by the recording's own sysctls.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("timeout after 3.1s") && lines[0].contains("ETIMEDOUT"),
        "{text}"
    );
    assert!(
        lines[1].contains("[connect_timeout]")
            && lines[1].contains("tcp_syn_retries=1")
            && lines[1].contains("gives up at 3 s")
            && lines[1].contains("measured 3.1 s")
            && lines[1].contains("so it agrees"),
        "{text}"
    );
}

#[test]
fn replay_of_events_reprints_the_stream() {
    let out = tcptrace(&["replay", FIXTURE, "--events", "--format", "json"]);
    assert!(out.status.success());
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let n = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("\"type\":\"lost\"") && !l.contains("\"type\":\"stream\""))
            .count()
    };
    assert_eq!(n(&String::from_utf8_lossy(&out.stdout)), n(&fixture));
}

#[test]
fn bad_replay_input_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("tcptrace-replay-{}", std::process::id()));
    std::fs::write(&dir, "{\"type\":\"state\",\"ts_ns\":1}\nnot json\n").unwrap();
    let out = tcptrace(&["replay", dir.to_str().unwrap()]);
    let _ = std::fs::remove_file(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(":1:"), "{err}");
    let missing = tcptrace(&["replay", "/nonexistent/stream.json"]);
    assert_eq!(missing.status.code(), Some(1));
}

/// The fixture with `lost` lines after the 9704 server's ESTABLISHED, while both ends are open.
fn with_losses(lost: &[&str]) -> std::path::PathBuf {
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let mut out = String::new();
    for line in fixture.lines() {
        out.push_str(line);
        out.push('\n');
        if line.contains("\"lport\":9704") && line.contains("\"new\":\"ESTABLISHED\"") {
            for l in lost {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    let path = std::env::temp_dir().join(format!(
        "tcptrace-replay-lost-{}-{}",
        std::process::id(),
        lost.len()
    ));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn replay_reports_losses_by_cause_and_notes_the_open_connections() {
    let rec = with_losses(&[
        r#"{"type":"lost","ts_ns":32017762300000,"count":3,"cause":"recursion"}"#,
        // Written before causes were told apart: a full ring buffer.
        r#"{"type":"lost","ts_ns":32017762300001,"count":2}"#,
    ]);
    let out = tcptrace(&["replay", rec.to_str().unwrap(), "--format", "json"]);
    let _ = std::fs::remove_file(&rec);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(" 5 lost, ")
            && err.contains("(lost: 2 ring buffer full, 3 in runs the kernel skipped)")
            && err.contains("; 2 open when events were lost"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lost: Vec<&str> = text.lines().filter(|l| l.contains("\"lost\"")).collect();
    assert_eq!(lost.len(), 2, "{text}");
    assert!(
        lost[0].contains(r#""count":3,"cause":"recursion""#),
        "{}",
        lost[0]
    );
    assert!(
        lost[1].contains(r#""count":2,"cause":"ring_full""#),
        "{}",
        lost[1]
    );
    let noted: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"lost_events\""))
        .collect();
    assert_eq!(noted.len(), 2, "{text}");
    assert!(noted.iter().all(|l| l.contains(":9704,")), "{noted:?}");

    let bad = with_losses(&[r#"{"type":"lost","ts_ns":1,"count":1,"cause":"gremlins"}"#]);
    let out = tcptrace(&["replay", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gremlins") && err.contains(":39:"), "{err}");
}

/// Runs `tcptrace replay FILE --format json` on `body`.
fn replay_bytes(name: &str, body: &[u8]) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("tcptrace-{}-{name}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    let out = tcptrace(&["replay", path.to_str().unwrap(), "--format", "json"]);
    let _ = std::fs::remove_file(&path);
    out
}

fn conn_lines(out: &std::process::Output) -> usize {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"conn\""))
        .count()
}

#[test]
fn a_truncated_json_recording_replays_up_to_the_cut() {
    let fixture = std::fs::read(FIXTURE).unwrap();
    let whole = replay_bytes("whole.jsonl", &fixture);
    assert!(whole.status.success());
    let cut = replay_bytes("cut.jsonl", &fixture[..fixture.len() - 50]);
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
    // Every complete line went through: all connections but the one whose end was cut off
    // are rebuilt (that one too, as open when the stream ended).
    assert_eq!(conn_lines(&cut), conn_lines(&whole), "{err}");
}

#[test]
fn a_truncated_raw_recording_replays_up_to_the_cut() {
    // A binary recording of JSON frames only (userspace facts and events re-printed), which
    // replay reads like any other.
    let mut raw = b"tcptrace-raw\0\0\0\x02".to_vec();
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    for line in text.lines() {
        raw.push(2);
        raw.extend_from_slice(&(line.len() as u32).to_le_bytes());
        raw.extend_from_slice(line.as_bytes());
    }
    let whole = replay_bytes("whole.raw", &raw);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let cut = replay_bytes("cut.raw", &raw[..raw.len() - 20]);
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let frames = text.lines().count();
    assert!(
        err.contains(&format!("recording is truncated at frame {frames}")),
        "{err}"
    );
    assert_eq!(conn_lines(&cut), conn_lines(&whole));
    let newer = replay_bytes("v3.raw", b"tcptrace-raw\0\0\0\x03");
    let err = String::from_utf8_lossy(&newer.stderr);
    assert!(
        err.contains("raw recording version 3 is not supported"),
        "{err}"
    );
}

#[test]
fn endless_or_absurd_input_is_refused_with_bounded_memory() {
    // /dev/zero is one endless line: refused once it passes the line limit.
    let start = std::time::Instant::now();
    let out = tcptrace(&["replay", "/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // A loss count no kernel can produce.
    let out = replay_bytes(
        "lost.jsonl",
        b"{\"type\":\"lost\",\"ts_ns\":1,\"time\":\"2026-11-24T00:00:00.000000Z\",\"count\":18446744073709551615}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not credible"), "{err}");
    // A stream from a newer tcptrace.
    let out = replay_bytes(
        "schema.jsonl",
        b"{\"type\":\"stream\",\"ts_ns\":1,\"time\":\"2026-11-24T00:00:00.000000Z\",\"schema\":7,\"tool\":\"tcptrace\",\"version\":\"9.0.0\",\"content\":\"events\"}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("schema version 7"), "{err}");
}
