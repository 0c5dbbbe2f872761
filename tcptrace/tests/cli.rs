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
        &["--events", "--btf", "none", "--tracepoints", "btf"],
        &["--events", "--latency", "soon"],
        &["--format", "raw"],
        &["replay", "/dev/null", "--format", "raw"],
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
        &["--metrics", "127.0.0.1:9464", "replay", "/dev/null"],
    ] {
        let out = tcptrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tcptrace: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
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
fn unknown_flags_are_usage_errors() {
    let out = tcptrace(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(tcptrace(&["--help"]).status.success());
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
