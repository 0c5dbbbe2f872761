//! The command line's failure modes: bad input is one clear line and a non-zero exit, never a
//! panic; a closed output pipe ends the program quietly with status 0.
mod harness;

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use harness::{NetPair, privileged, spawn_attached, tcptrace};

#[test]
fn bad_values_are_one_line_errors() {
    for args in [
        &["--events", "--ring-buffer", "3M"][..],
        &["--events", "-L", "0"],
        &["--events", "--duration=-1"],
        &["--events", "-p", "0"],
        &["--events", "--netns", "/nonexistent"],
        // No namespace has inode 1; a file that is not a network namespace; a missing name.
        &["--events", "--netns", "1"],
        &["--events", "-N", "/etc/hostname"],
        &["--events", "-N", "/proc/self/ns/net,/proc/self/ns/uts"],
        &["--events", "-N", "no-such-tcptrace-netns"],
        &["--events", "--btf", "none", "--tracepoints", "btf"],
        &["--events", "--latency", "soon"],
        &["--format", "raw"],
        // Negative durations get the same message as other bad values.
        &["--events", "--duration", "-1"],
        &["--events", "--latency", "-5ms"],
        &["--min-duration", "-2s"],
        &["--summary=-1"],
        &["--summary", "0.5"],
        // Outcome selection is about records, not events; and its names are checked.
        &["--events", "--problems"],
        &["--events", "--end", "timeout"],
        &["--end", "timout"],
        &["--diagnosed", "--diagnose", "off"],
        &["--events", "--format", "line"],
        &["--events", "--format", "raw", "--summary"],
        &["--format", "none"],
        &["--metrics-labels", "netns"],
        &["--metrics", "127.0.0.1"],
        &[
            "--metrics",
            "127.0.0.1:9464",
            "--metrics-labels",
            "netns,pid",
        ],
        &[
            "--metrics",
            "127.0.0.1:9464",
            "--format",
            "none",
            "-o",
            "/dev/null",
        ],
        &[
            "--metrics",
            "127.0.0.1:9464",
            "--format",
            "none",
            "--summary",
        ],
    ] {
        let out = tcptrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tcptrace: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// What clap rejects (a flag the command does not take, a value not in its list) is one line
/// too, naming the command whose help to read, with status 2.
#[test]
fn usage_errors_are_one_line() {
    for (args, says) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["sysctl", "--events"], "sysctl --help"),
        (&["sysctl", "--state", "SYN_SENT"], "sysctl --help"),
        (&["replay", "/dev/null", "--format", "raw"], "replay --help"),
        (
            &["replay", "/dev/null", "--ring-buffer", "8M"],
            "replay --help",
        ),
        (&["replay", "/dev/null", "--duration", "1"], "replay --help"),
        (&["lab", "--netns", "1"], "lab --help"),
        (&["--events", "replay", "/dev/null"], "replay --help"),
        (&["--max-conns", "lots"], "--max-conns"),
    ] {
        let out = tcptrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("tcptrace: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = tcptrace(args);
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each command's help lists its own flags and no others'.
#[test]
fn each_command_lists_only_its_flags() {
    let trace = help(&["--help"]);
    for flag in [
        "--events",
        "--format",
        "--problems",
        "--end",
        "--diagnosed",
        "--summary",
        "--color",
        "--duration",
        "--ring-buffer",
        "--lport",
        "--cgroup",
        "--netns",
        "--diagnose",
    ] {
        assert!(trace.contains(flag), "tcptrace --help lacks {flag}");
    }
    for c in ["replay", "lab", "sysctl"] {
        assert!(trace.contains(&format!("  {c} ")), "{c} not listed");
    }
    let sysctl = help(&["sysctl", "--help"]);
    for flag in [
        "--events",
        "--state",
        "--summary",
        "--problems",
        "--ring-buffer",
        "--output",
    ] {
        assert!(!sysctl.contains(flag), "sysctl --help offers {flag}");
    }
    assert!(sysctl.contains("--netns") && sysctl.contains("--pid"));
    let replay = help(&["replay", "--help"]);
    // Short help shows each format's values on one line.
    assert!(help(&["replay", "-h"]).contains("[possible values: text, line, json]"));
    assert!(help(&["-h"]).contains("[possible values: text, line, json, raw, none]"));
    for flag in [
        "--ring-buffer",
        "--latency",
        "--duration",
        "--lport",
        "--cgroup",
        "--btf",
    ] {
        assert!(!replay.contains(flag), "replay --help offers {flag}");
    }
    for flag in ["--problems", "--summary", "--state", "--format", "--color"] {
        assert!(replay.contains(flag), "replay --help lacks {flag}");
    }
    let lab = help(&["lab", "--help"]);
    for scenario in [
        "handshake",
        "syn-sent",
        "time-wait",
        "refused",
        "data-timeout",
        "ipv6",
    ] {
        assert!(
            lab.contains(&format!("  {scenario} ")),
            "lab --help lacks {scenario}"
        );
    }
    assert!(
        !lab.contains("--netns") && !lab.contains("--lport"),
        "{lab}"
    );
}

/// The metrics socket is bound before anything is loaded: a port in use is one line, and
/// nothing is traced.
#[test]
fn metrics_address_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tcptrace(&["--metrics", &addr, "--format", "none", "--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("tcptrace: --metrics {addr}: ")) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn damaged_recordings_are_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("tcptrace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let magic = b"tcptrace-raw\0\0\0\x02";
    for (name, body, says) in [
        // A frame cut short, an unknown tag, a kernel record before the context.
        (
            "short.raw",
            [&magic[..], &[1, 104, 0, 0, 0, 1, 2]].concat(),
            "frame",
        ),
        ("tag.raw", [&magic[..], &[7, 0, 0, 0, 0]].concat(), "frame"),
        (
            "order.raw",
            [&magic[..], &[1, 2, 0, 0, 0, 1, 2]].concat(),
            "frame",
        ),
        // Version 1 had 96-byte records (no cgroup).
        (
            "v1.raw",
            b"tcptrace-raw\0\0\0\x01\x03\0\0\0\0".to_vec(),
            "raw recording version 1 is not supported",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let out = tcptrace(&["replay", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_btf_file_is_reported() {
    let out = tcptrace(&[
        "--events",
        "--tracepoints",
        "btf",
        "--btf",
        "/nonexistent/btf",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/btf"), "{err}");
}

#[test]
fn closed_pipe_is_success() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let (mut child, mut err) = spawn_attached(&["--events", "--format", "json", "-D", "20601"]);
    let out = child.stdout.take().unwrap();
    let mut out = BufReader::new(out);
    let connect = || {
        let mut c = NetPair::spawn(
            &net.cli,
            &["nc", "-z", "-w", "1", &net.srv4, "20601"],
            Stdio::null(),
        );
        c.wait_timeout(Duration::from_secs(5));
    };
    connect();
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"type\":"), "{first}");
    drop(out);
    // More events must now hit the closed pipe.
    for _ in 0..3 {
        connect();
    }
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let status = status.expect("tcptrace kept running after its stdout closed");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    assert!(status.success(), "exit {status}: {rest}");
    assert!(!rest.contains("Broken pipe"), "{rest}");
}

#[test]
fn an_explicit_btf_must_be_btf_and_is_read_with_bounded_memory() {
    if !privileged() {
        return;
    }
    for (path, why) in [
        ("/dev/zero", "not BTF"),
        ("/etc/passwd", "not BTF"),
        ("/dev/null", "shorter than a BTF header"),
    ] {
        let start = std::time::Instant::now();
        let out = tcptrace(&["--events", "--btf", path, "--duration", "1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {err}");
        assert_eq!(err.lines().count(), 1, "{path}: {err}");
        assert!(err.contains(path) && err.contains(why), "{path}: {err}");
        assert!(start.elapsed() < Duration::from_secs(5), "{path}");
    }
}

/// A recorded real stream: orderly closes, a refusal, an SO_LINGER 0 abort, IPv6 and a connect
/// timeout between two namespaces (`tcptrace-core/tests/fixtures/`).
const SCENARIOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/netns_scenarios.jsonl"
);
/// FIN_WAIT2 / LAST_ACK with one FIN retransmit.
const FIN_WAIT2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/lab_fin-wait2.jsonl"
);
/// A data timeout: the stream holds exactly one sock_diag fact.
const DATA_TIMEOUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/lab_data-timeout.jsonl"
);

fn stdout(args: &[&str]) -> String {
    let out = tcptrace(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(end, rules)` of every `conn` line.
fn ends(json: &str) -> Vec<(String, Vec<String>)> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "conn")
        .map(|v| {
            let rules = v["diagnosis"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["rule"].as_str().unwrap().to_string())
                .collect();
            (v["end"].as_str().unwrap().to_string(), rules)
        })
        .collect()
}

#[test]
fn problems_are_the_failed_and_the_diagnosed() {
    let all = ends(&stdout(&["replay", SCENARIOS, "--format", "json"]));
    assert_eq!(all.len(), 10);
    let problems = ends(&stdout(&[
        "replay",
        SCENARIOS,
        "--format",
        "json",
        "--problems",
    ]));
    let names: Vec<&str> = problems.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["refused", "reset_sent", "reset_received", "timeout"]
    );
    let resets = ends(&stdout(&[
        "replay", SCENARIOS, "--format", "json", "--end", "reset_*",
    ]));
    let names: Vec<&str> = resets.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["reset_sent", "reset_received"]);
    let two = ends(&stdout(&[
        "replay",
        SCENARIOS,
        "--format",
        "json",
        "--end",
        "timeout,refused",
    ]));
    assert_eq!(two.len(), 2);
    // A closed record with a warning is a problem too; info explanations are not.
    let fw2 = ends(&stdout(&[
        "replay",
        FIN_WAIT2,
        "--format",
        "json",
        "--diagnosed",
    ]));
    assert!(!fw2.is_empty());
    assert!(fw2.iter().all(|(_, rules)| !rules.is_empty()), "{fw2:?}");
    assert!(fw2.iter().any(|(e, _)| e == "closed"), "{fw2:?}");
    let info = ends(&stdout(&[
        "replay",
        SCENARIOS,
        "--format",
        "json",
        "--problems",
        "--diagnose",
        "info",
    ]));
    assert_eq!(
        info.len(),
        4,
        "handshake explanations are not problems: {info:?}"
    );
}

#[test]
fn line_format_is_one_line_per_record_without_timeline() {
    let text = stdout(&["replay", SCENARIOS, "--format", "line"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for l in &lines {
        assert!(!l.contains('→') && !l.contains("SYN_SENT 0."), "{l}");
        assert!(l.contains(" after "), "{l}");
    }
    let timeout = lines.iter().find(|l| l.contains(" timeout ")).unwrap();
    assert!(
        timeout.ends_with("error ETIMEDOUT ! [connect_timeout]"),
        "{timeout}"
    );
    // The full timeline stays the default.
    assert!(stdout(&["replay", SCENARIOS]).contains("SYN_SENT 0.10ms → ESTABLISHED"));
}

#[test]
fn timers_print_one_way_and_counts_agree_with_their_nouns() {
    let text = stdout(&["replay", SCENARIOS]);
    // 60000 ms and 59999 ms TIME_WAIT timers both print as 60.0s, never as minutes.
    assert_eq!(text.matches("TIME_WAIT 60.0s").count(), 3, "{text}");
    assert!(!text.contains("1m00s"), "{text}");
    assert!(text.contains("2 retransmits (2 in SYN_SENT)"), "{text}");
    let fw2 = stdout(&["replay", FIN_WAIT2]);
    assert!(fw2.contains("; 1 retransmit (1 in FIN_WAIT1)"), "{fw2}");
    let out = tcptrace(&["replay", DATA_TIMEOUT]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("; 1 sock_diag fact; 5 connections ("), "{err}");
    let out = tcptrace(&["replay", FIN_WAIT2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("; 8 sock_diag facts; 2 connections ("),
        "{err}"
    );
}

/// Colour only where asked: `always` colours even a pipe, `never` and a pipe under `auto`
/// do not, and NO_COLOR turns `auto` off on a terminal.
#[test]
fn colour_follows_the_flag_and_no_color() {
    let esc = |args: &[&str]| stdout(args).contains('\x1b');
    assert!(esc(&["replay", SCENARIOS, "--color", "always"]));
    assert!(!esc(&["replay", SCENARIOS, "--color", "never"]));
    assert!(!esc(&["replay", SCENARIOS]));
    // A terminal: script(1) runs tcptrace on a pseudo-terminal.
    let on_tty = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "{} replay {SCENARIOS} --format line",
                env!("CARGO_BIN_EXE_tcptrace")
            ))
            .arg("/dev/null");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().expect("script(1) from util-linux");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).contains("\x1b[31m")
    };
    assert!(on_tty(false), "auto colours a terminal");
    assert!(!on_tty(true), "NO_COLOR turns auto off");
}

#[test]
fn summary_tables_and_json_rows() {
    let text = stdout(&[
        "replay",
        SCENARIOS,
        "--format",
        "line",
        "--summary",
        "--problems",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    // The four problems, then the run's table.
    assert_eq!(lines.iter().filter(|l| l.contains(" after ")).count(), 4);
    let title = lines
        .iter()
        .position(|l| l.starts_with("── summary of the run "))
        .expect(&text);
    assert!(
        lines[title].ends_with(": 10 connections, 4 failed, 2 retransmits ──"),
        "{text}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("10.77.0.1:9706"),
        [
            "10.77.0.1:9706",
            "1",
            "1",
            "2",
            "-",
            "-",
            "3.1s",
            "3.1s",
            "1",
            "timeout"
        ]
    );
    assert_eq!(row("python3")[1..4], ["10", "4", "2"]);

    let json = stdout(&["replay", SCENARIOS, "--format", "json", "--summary", "2s"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["type"] == "summary")
        .collect();
    let all: Vec<&serde_json::Value> = rows.iter().filter(|r| r["by"] == "all").collect();
    // Three 2 s intervals (the last cut at the end), then the run.
    let periods: Vec<(&str, u64)> = all
        .iter()
        .map(|r| (r["period"].as_str().unwrap(), r["conns"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        periods,
        [
            ("interval", 9),
            ("interval", 0),
            ("interval", 1),
            ("run", 10)
        ]
    );
    let run = all[3];
    assert_eq!(run["failed"], 4);
    assert_eq!(run["ends"]["closed"], 6);
    assert_eq!(run["connect_ms"]["n"], 4);
    let server = rows
        .iter()
        .find(|r| r["period"] == "run" && r["key"] == ":9704")
        .unwrap();
    assert_eq!(server["role"], "server");
    assert_eq!(server["ends"]["reset_received"], 1);
    // Recorded summary lines are skipped when the output is replayed.
    let dir = std::env::temp_dir().join(format!("tcptrace-sum-{}.jsonl", std::process::id()));
    let events = stdout(&[
        "replay",
        SCENARIOS,
        "--events",
        "--format",
        "json",
        "--summary",
    ]);
    assert!(events.contains("\"type\":\"summary\""));
    std::fs::write(&dir, events).unwrap();
    let again = stdout(&["replay", dir.to_str().unwrap(), "--format", "json"]);
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(ends(&again).len(), 10);
}
