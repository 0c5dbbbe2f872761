//! Oracle test: on the same traffic, tcptrace's state transitions equal those printed by
//! libbpf-tools' `tcpstates` (per socket address, in order).
mod harness;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use harness::{NetPair, Tracer, on_port, privileged};

type Paths = BTreeMap<String, Vec<(String, String)>>;

#[test]
fn transitions_match_tcpstates() {
    if !privileged() {
        return;
    }
    let tcpstates = "/usr/sbin/tcpstates";
    if !std::path::Path::new(tcpstates).exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{tcpstates} missing (libbpf-tools); run `cargo xtask setup`");
        }
        return eprintln!("skipping: {tcpstates} missing");
    }
    let net = NetPair::new();
    let port = 20501u16;
    let p = port.to_string();

    let mut oracle = Command::new("stdbuf")
        .args(["-oL", tcpstates, "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tcpstates");
    let rows = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let out = oracle.stdout.take().unwrap();
    let sink = rows.clone();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("SKADDR") {
                let _ = ready_tx.send(());
            } else {
                sink.lock().unwrap().push(line);
            }
        }
    });
    ready_rx
        .recv_timeout(harness::patient(Duration::from_secs(20)))
        .expect("tcpstates did not start");
    let tracer = Tracer::start(&[]);

    for round in 0..3 {
        let mut server = NetPair::spawn(&net.srv, &["nc", "-l", &p], Stdio::null());
        thread::sleep(Duration::from_millis(300));
        let mut client = NetPair::spawn(&net.cli, &["nc", "-N", &net.srv4, &p], Stdio::piped());
        let mut stdin = client.0.stdin.take().unwrap();
        writeln!(stdin, "round {round}").unwrap();
        drop(stdin);
        assert!(client.wait_timeout(Duration::from_secs(10)));
        assert!(server.wait_timeout(Duration::from_secs(10)));
    }
    thread::sleep(Duration::from_millis(500));
    let (events, _) = tracer.stop();
    let _ = Command::new("kill")
        .args(["-INT", &oracle.id().to_string()])
        .status();
    let _ = oracle.wait();
    thread::sleep(Duration::from_millis(200));

    let mut theirs = Paths::new();
    for row in rows.lock().unwrap().iter() {
        // SKADDR PID COMM IP LADDR LPORT RADDR RPORT OLD -> NEW MS
        let f: Vec<&str> = row.split_whitespace().collect();
        let Some(arrow) = f.iter().position(|x| *x == "->") else {
            continue;
        };
        let (lport, rport) = (f[arrow - 4], f[arrow - 2]);
        if lport != p && rport != p {
            continue;
        }
        theirs
            .entry(format!("0x{}", f[0].trim_start_matches("0x")))
            .or_default()
            .push((f[arrow - 1].to_string(), f[arrow + 1].to_string()));
    }
    let mut ours = Paths::new();
    for e in on_port(&events, u64::from(port)) {
        if e["type"] == "state" {
            ours.entry(e["sk"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    e["old"].as_str().unwrap().to_string(),
                    e["new"].as_str().unwrap().to_string(),
                ));
        }
    }
    // 3 rounds x (listener 2 + client 5 + server child 5 transitions); socket addresses may
    // be reused between rounds, so the per-address sequences are concatenations.
    let total: usize = theirs.values().map(Vec::len).sum();
    assert!(total >= 36, "tcpstates saw {theirs:?}");
    assert_eq!(ours, theirs);
}
