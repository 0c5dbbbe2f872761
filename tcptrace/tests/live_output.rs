//! Privileged tests of the output path under hostile data and faults: process names made of
//! terminal escapes never reach text output raw, a reader that stops reading cannot stop the
//! tracer, SIGHUP stops or (with `--output`) rotates, and a full disk costs lines, counted,
//! not the run or the file's readability.
mod harness;

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use harness::{NetPair, Peer, is_attach_line, privileged, tcptrace};
use serde_json::Value;

/// A name made to clear the screen, ring the bell and forge a line (15 bytes, as comm holds).
const HOSTILE: &str = "\\x1b[2J\\x07ev\\nFAKE";

/// Runs `python3 -c CODE` in `ns` and waits for it.
fn python(ns: &str, code: &str) {
    let out = NetPair::exec(ns, &["python3", "-c", code]);
    assert!(
        out.status.success(),
        "{code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects `n` times to a closed port (each a SYN answered by a RST: four events).
fn refused_connects(net: &NetPair, port: u16, n: usize) {
    python(
        &net.cli,
        &format!(
            "import socket\nfor _ in range({n}):\n    s = socket.socket()\n    try: s.connect(('{}', {port}))\n    except OSError: pass\n    s.close()",
            net.srv4
        ),
    );
}

/// Starts tcptrace with stdout piped (or not), stderr read until it attached.
fn start(args: &[&str], stdout: Stdio) -> (Child, std::process::ChildStderr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let mut err = child.stderr.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while err.read(&mut b).unwrap_or(0) == 1 {
        if b[0] == b'\n' {
            let l = String::from_utf8_lossy(&line).to_string();
            assert!(is_attach_line(&l) || l.contains("warning"), "{l}");
            if is_attach_line(&l) {
                return (child, err);
            }
            line.clear();
        } else {
            line.push(b[0]);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tcptrace did not attach");
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// Waits for the exit; panics after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let limit = harness::patient(limit);
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("tcptrace did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rest(mut err: std::process::ChildStderr) -> String {
    let mut s = String::new();
    let _ = err.read_to_string(&mut s);
    s
}

#[test]
fn hostile_process_names_are_escaped_in_text_and_exact_in_json() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20801;
    let rec = std::env::temp_dir().join(format!("tcptrace-hostile-{}.jsonl", std::process::id()));
    let rec_s = rec.to_str().unwrap().to_string();
    let (mut text, _terr) = start(&["-D", &port.to_string()], Stdio::piped());
    let (mut events, _eerr) = start(
        &[
            "--events",
            "--format",
            "text",
            "-D",
            &port.to_string(),
            "--no-header",
        ],
        Stdio::piped(),
    );
    let (mut json, _jerr) = start(
        &[
            "--events",
            "--format",
            "json",
            "-D",
            &port.to_string(),
            "--output",
            &rec_s,
        ],
        Stdio::null(),
    );
    let server = Peer::start(&net.srv, "serve", &net.srv4, port, 10);
    python(
        &net.cli,
        &format!(
            "import ctypes, socket\nctypes.CDLL(None).prctl(15, b'{HOSTILE}', 0, 0, 0)\ns = socket.create_connection(('{}', {port}))\ns.sendall(b'x'); s.shutdown(socket.SHUT_WR); s.recv(100); s.close()",
            net.srv4
        ),
    );
    server.finish();
    std::thread::sleep(Duration::from_millis(1500));
    let mut outputs = Vec::new();
    for child in [&mut text, &mut events, &mut json] {
        signal(child, "-INT");
        assert!(exit_within(child, Duration::from_secs(10)).success());
        let mut s = String::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut s).unwrap();
        }
        outputs.push(s);
    }
    for out in &outputs[..2] {
        assert!(
            out.contains("\\x1b[2J\\x07ev\\nFAKE"),
            "escaped name: {out}"
        );
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters: {out:?}"
        );
        // No line starts with the forged text.
        assert!(out.lines().all(|l| !l.starts_with("FAKE")), "{out}");
    }
    // JSON carries the name exactly (escaped the JSON way), and text replay escapes it too.
    let recorded = std::fs::read_to_string(&rec).unwrap();
    let name = "\x1b[2J\x07ev\nFAKE";
    assert!(
        recorded
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("valid JSON"))
            .any(|v| v["comm"] == name),
        "{recorded}"
    );
    let replayed = tcptrace(&["replay", &rec_s]);
    let _ = std::fs::remove_file(&rec);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert!(out.contains("\\x1b[2J\\x07ev\\nFAKE"), "{out}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
}

#[test]
fn a_stalled_reader_cannot_stop_the_tracer() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20802;
    // Nobody reads this pipe: it fills after 64 KiB.
    for stop in ["signal", "duration"] {
        let mut args = vec!["--events", "--format", "json", "-D", "20802"];
        if stop == "duration" {
            args.extend(["--duration", "4"]);
        }
        let started = Instant::now();
        let (mut child, err) = start(&args, Stdio::piped());
        refused_connects(&net, port, 6000);
        if stop == "signal" {
            signal(&child, "-INT");
        }
        let status = exit_within(&mut child, Duration::from_secs(12));
        let rest = rest(err);
        assert!(status.success(), "{stop}: {rest}");
        assert!(harness::has_summary(&rest), "{stop}: no summary: {rest}");
        assert!(
            rest.contains("output lines not written") && rest.contains("reader stalled"),
            "{stop}: {rest}"
        );
        if stop == "duration" {
            assert!(
                started.elapsed() < harness::patient(Duration::from_secs(10)),
                "{stop}"
            );
        }
    }
}

#[test]
fn sighup_stops_a_terminal_run_and_rotates_an_output_file() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20803;
    let (mut child, err) = start(&["--events", "-D", "20803"], Stdio::null());
    signal(&child, "-HUP");
    assert!(exit_within(&mut child, Duration::from_secs(10)).success());
    assert!(
        harness::has_summary(&rest(err)),
        "SIGHUP prints the summary"
    );

    let dir = std::env::temp_dir().join(format!("tcptrace-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.jsonl");
    let rotated = dir.join("events.jsonl.1");
    let (mut child, err) = start(
        &[
            "--events",
            "--format",
            "json",
            "-D",
            "20803",
            "--output",
            file.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    refused_connects(&net, port, 2);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&file, &rotated).unwrap();
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    refused_connects(&net, port, 3);
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-INT");
    assert!(exit_within(&mut child, Duration::from_secs(10)).success());
    let _ = rest(err);
    let count = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
            .collect();
        assert_eq!(
            lines[0]["type"], "stream",
            "each file starts with its header"
        );
        lines.iter().filter(|v| v["type"] == "error").count()
    };
    // Two refused connects before the rotation, three after (one ECONNREFUSED each).
    assert_eq!(count(&rotated), 2);
    assert_eq!(count(&file), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_costs_counted_lines_and_recovers() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20804;
    let dir = std::env::temp_dir().join(format!("tcptrace-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            dir.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs");
    let unmount = scopeguard(&dir);
    // Fill the file system but for a few KiB.
    let filler = dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 250 * 1024]);
    let out = dir.join("events.jsonl");
    let (mut child, err) = start(
        &[
            "--events",
            "--format",
            "json",
            "-D",
            "20804",
            "--output",
            out.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    refused_connects(&net, port, 200);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_file(&filler).unwrap();
    refused_connects(&net, port, 5);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-INT");
    assert!(exit_within(&mut child, Duration::from_secs(10)).success());
    let stderr = rest(err);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("writing again"), "{stderr}");
    assert!(stderr.contains("write errors"), "{stderr}");
    // The file holds whole lines only, including events from after the recovery.
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines only"))
        .collect();
    assert!(text.ends_with('\n'));
    assert!(lines.iter().any(|v| v["type"] == "error"), "{text}");
    let replayed = tcptrace(&["replay", out.to_str().unwrap()]);
    assert!(replayed.status.success());
    drop(unmount);
}

/// Unmounts and removes `dir` when dropped.
fn scopeguard(dir: &std::path::Path) -> impl Drop + '_ {
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    Unmount(dir)
}
