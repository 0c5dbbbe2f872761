//! Test harness for privileged tests: a pair of network namespaces joined by a veth pair (the
//! article's node2/node3), a running tcptrace whose JSON output is collected, and the rule that
//! with `CI` set a missing privilege fails the test instead of skipping it.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How many times longer than on a real machine to wait for something to happen: the
/// `TCPTRACE_TEST_PATIENCE` factor (default 1), which `cargo xtask vm-test` sets for guests
/// it has to emulate (TCG). Only deadlines stretch; what a test asserts stays the same.
pub fn patience() -> u32 {
    std::env::var("TCPTRACE_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `d` stretched by [`patience`].
pub fn patient(d: Duration) -> Duration {
    d * patience()
}

/// What the running kernel's tracepoints report where kernel versions differ: tcptrace-core's
/// quirk table applied to the live tracefs formats (never the version number).
pub fn kernel_quirks() -> tcptrace_core::layout::Quirks {
    let layout = |name: &str| {
        let path = format!("/sys/kernel/tracing/events/tcp/{name}/format");
        let text = std::fs::read_to_string(&path).ok()?;
        let fmt = tcptrace_core::tp_format::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        Some(tcptrace_core::layout::tp_layout(&fmt))
    };
    tcptrace_core::layout::Quirks::of(
        layout("tcp_send_reset").as_ref(),
        layout("tcp_retransmit_skb").as_ref(),
    )
}

/// Whether the running kernel counts the skipped runs of classic tracepoint programs
/// (tcptrace-core's check on the kernel's BTF; 6.1 does not).
pub fn kernel_counts_classic_misses() -> bool {
    let bytes = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let btf = tcptrace_core::btf::Btf::parse(&bytes).expect("kernel BTF parses");
    tcptrace_core::layout::classic_misses_counted(&btf)
}

/// Whether this kernel has the sysctl `name` (`net.ipv4.…`): knobs come and go between
/// versions (`tcp_syn_linear_timeouts` is absent on 6.1).
pub fn kernel_has_sysctl(name: &str) -> bool {
    std::path::Path::new("/proc/sys")
        .join(tcptrace_core::sysctl::proc_path(name))
        .exists()
}

/// Whether a state change is a passively opened socket's first (`LISTEN -> SYN_RECV`) traced
/// before the kernel copied the peer's addresses into it: it then carries the listener's
/// (remote port 0, remote address unspecified). Linux 6.1 sets the state in
/// `inet_csk_clone_lock()` before the addresses; the event itself shows which it is.
pub fn listener_addresses(e: &Value) -> bool {
    e["old"] == "LISTEN"
        && e["new"] == "SYN_RECV"
        && e["rport"] == 0
        && (e["raddr"] == "0.0.0.0" || e["raddr"] == "::")
}

/// Runs tcptrace to completion with `args`.
pub fn tcptrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .args(args)
        .output()
        .expect("run tcptrace")
}

/// True when privileged tests can run; panics under CI when they cannot.
pub fn privileged() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ip = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if root && ip {
        return true;
    }
    let why = if root {
        "`ip netns` unusable"
    } else {
        "not root"
    };
    if std::env::var_os("CI").is_some() {
        panic!("privileged test cannot run under CI: {why}");
    }
    eprintln!("skipping privileged test: {why}");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces, `srv` (x.x.x.1) and `cli` (x.x.x.2), joined by a veth pair and deleted on
/// drop: the lab's builder (`tcptrace-netns`), with addresses of the tests' own.
pub struct NetPair(tcptrace_netns::NetPair);

impl std::ops::Deref for NetPair {
    type Target = tcptrace_netns::NetPair;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl NetPair {
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let addrs = tcptrace_netns::Addrs {
            srv4: Ipv4Addr::new(10, 231, (n % 250) as u8, 1),
            cli4: Ipv4Addr::new(10, 231, (n % 250) as u8, 2),
            srv6: Ipv6Addr::new(0xfd00, 0x231, n as u16, 0, 0, 0, 0, 1),
            cli6: Ipv6Addr::new(0xfd00, 0x231, n as u16, 0, 0, 0, 0, 2),
        };
        let veth = (format!("tts{pid}x{n}"), format!("ttc{pid}x{n}"));
        let pair =
            tcptrace_netns::NetPair::new(&format!("tt-{pid}-{n}"), (&veth.0, &veth.1), addrs)
                .unwrap_or_else(|e| panic!("namespace pair: {e}"));
        Self(pair)
    }

    /// Inode of a namespace, as tcptrace reports it in `netns`.
    pub fn inode(ns: &str) -> u64 {
        tcptrace_netns::NetPair::inode(ns).expect("netns file")
    }

    /// Runs a command inside `ns` and waits for it.
    pub fn exec(ns: &str, args: &[&str]) -> Output {
        tcptrace_netns::NetPair::exec(ns, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a command inside `ns` (`ip netns exec` execs it, so the child pid is its pid).
    pub fn spawn(ns: &str, args: &[&str], stdin: Stdio) -> Guard {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Guard(child)
    }

    pub fn sysctl(ns: &str, key: &str, value: &str) {
        tcptrace_netns::NetPair::sysctl(ns, key, value).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + patient(timeout);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running tcptrace with its JSON output collected line by line.
pub struct Tracer {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Tracer {
    /// Starts `tcptrace --events --format json ARGS` and waits until it has attached.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(&["--events", "--format", "json"], args)
    }

    /// Starts `tcptrace --format json ARGS` (one record per connection) and waits for attach.
    pub fn lifecycle(args: &[&str]) -> Self {
        Self::spawn(&["--format", "json"], args)
    }

    /// [`Tracer::lifecycle`] run through `wrapper` (e.g. `setpriv` with fewer capabilities).
    pub fn lifecycle_via(wrapper: &[&str], args: &[&str]) -> Self {
        Self::spawn_via(wrapper, &["--format", "json"], args)
    }

    fn spawn(mode: &[&str], args: &[&str]) -> Self {
        Self::spawn_via(&[], mode, args)
    }

    fn spawn_via(wrapper: &[&str], mode: &[&str], args: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_tcptrace");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(mode)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcptrace");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let text = stderr.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if is_attach_line(&l) {
                    let _ = tx.send(());
                }
                let mut t = text.lock().unwrap();
                t.push_str(&l);
                t.push('\n');
            }
        });
        let mut tracer = Self {
            child: Some(child),
            lines,
            stderr,
        };
        if rx.recv_timeout(patient(Duration::from_secs(20))).is_err() {
            let status = tracer.child.as_mut().and_then(|c| c.try_wait().ok());
            panic!(
                "tcptrace did not attach (status {status:?}): {}",
                tracer.stderr.lock().unwrap()
            );
        }
        tracer
    }

    /// The tracer's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Events parsed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    /// Polls until `pred` holds for the events so far, or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let end = Instant::now() + patient(timeout);
        loop {
            if pred(&self.events()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, wait for a clean exit, and return all events and stderr.
    pub fn stop(mut self) -> (Vec<Value>, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let end = Instant::now() + patient(Duration::from_secs(10));
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("tcptrace did not exit after SIGINT");
            }
            thread::sleep(Duration::from_millis(20));
        };
        thread::sleep(Duration::from_millis(100));
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "tcptrace exited with {status}: {stderr}");
        assert!(has_summary(&stderr), "no summary on stderr: {stderr}");
        (self.events(), stderr)
    }
}

/// Whether tcptrace's exit summary (`N events: …`, `1 event: …`) is in `stderr`.
pub fn has_summary(stderr: &str) -> bool {
    stderr.contains(" events: ") || stderr.contains(" event: ")
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Events touching `port` on either side.
pub fn on_port(events: &[Value], port: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["lport"] == port || e["rport"] == port)
        .cloned()
        .collect()
}

/// `(old, new)` transitions of socket `sk`, in order.
pub fn transitions(events: &[Value], sk: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "state" && e["sk"] == sk)
        .map(|e| {
            (
                e["old"].as_str().unwrap_or_default().to_string(),
                e["new"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// tcptrace's stderr as [`spawn_attached`] leaves it: what came before the `attached` line
/// (warnings), then the rest as it comes.
pub type Stderr = BufReader<std::io::Chain<std::io::Cursor<Vec<u8>>, std::process::ChildStderr>>;

/// Starts `tcptrace ARGS` with raw stdout left unread by the harness, and returns once it has
/// attached, with its stderr reader holding the lines before the `attached` line (warnings)
/// and positioned after it.
pub fn spawn_attached(args: &[&str]) -> (Child, Stderr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut before = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "tcptrace ended before attaching: {before}");
        if is_attach_line(&line) {
            break;
        }
        before.push_str(&line);
    }
    // What the reader already holds beyond the `attached` line follows the lines before it.
    let mut held = before.into_bytes();
    held.extend_from_slice(err.buffer());
    let rest = std::io::Read::chain(std::io::Cursor::new(held), err.into_inner());
    (child, BufReader::new(rest))
}

/// Whether a stderr line says tracing has started, as text or (with JSON output) as a JSON
/// `log` line.
pub fn is_attach_line(l: &str) -> bool {
    l.starts_with("tcptrace: attached")
        || (l.starts_with("{\"type\":\"log\"") && l.contains("\"message\":\"attached "))
}

/// One scripted TCP endpoint (`tests/peer/peer.py`) running inside a namespace.
pub struct Peer {
    pub guard: Guard,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    /// Starts `peer.py ROLE ADDR PORT [BYTES]` in `ns` and waits for its "ready" line.
    pub fn start(ns: &str, role: &str, addr: &str, port: u16, bytes: usize) -> Self {
        Self::start_as(None, &[], ns, role, addr, port, bytes)
    }

    /// [`Peer::start`] from inside `cgroup` (moved there before it makes its socket), with
    /// `runner` (e.g. `setpriv --reuid …`) between joining the namespace and the peer.
    pub fn start_as(
        cgroup: Option<&Cgroup>,
        runner: &[&str],
        ns: &str,
        role: &str,
        addr: &str,
        port: u16,
        bytes: usize,
    ) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/peer.py");
        let mut args = vec!["ip", "netns", "exec", ns];
        args.extend_from_slice(runner);
        args.extend_from_slice(&["python3", script, role, addr]);
        let mut child = match cgroup {
            Some(cg) => cg.command(&args),
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        let mut child = child
            .arg(port.to_string())
            .arg(bytes.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 peer");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut peer = Self {
            guard: Guard(child),
            out,
        };
        let first = peer.line();
        assert!(
            first == "ready" || first == "refused",
            "{role}: expected ready, got {first:?}"
        );
        peer
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("peer stdout");
        l.trim().to_string()
    }

    /// Waits for the peer to finish; returns its last line (bytes received).
    pub fn finish(mut self) -> String {
        let last = self.line();
        assert!(
            self.guard.wait_timeout(Duration::from_secs(20)),
            "peer did not exit"
        );
        last
    }
}

/// Connection records (`"type":"conn"`) whose remote or local port is `port`.
pub fn conns(records: &[Value], port: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] == "conn" && (r["lport"] == port || r["rport"] == port))
        .cloned()
        .collect()
}

/// The `state` names of a record's timeline.
pub fn states(rec: &Value) -> Vec<String> {
    rec["states"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["state"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Where cgroup v2 is mounted here: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones (from /proc/mounts).
pub fn cgroup2_mount() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let mut found: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then_some(f[1])
        })
        .collect();
    found.sort_by_key(|m| *m != "/sys/fs/cgroup");
    found.first().expect("no cgroup2 mount").into()
}

/// A throwaway cgroup v2 directory; its processes are killed and it is removed on drop.
pub struct Cgroup {
    pub dir: std::path::PathBuf,
    /// Path below the cgroup2 mount, as tcptrace reports it.
    pub path: String,
    /// Its id (the directory's inode number), as the kernel reports it.
    pub id: u64,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let mount = cgroup2_mount();
        let path = format!("/tcptrace-test-{}-{name}", std::process::id());
        let dir = mount.join(&path[1..]);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = std::fs::metadata(&dir).expect("cgroup dir").ino();
        Self { dir, path, id }
    }

    /// A cgroup below this one (removed before it, being declared after it).
    pub fn child(&self, name: &str) -> Self {
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = std::fs::metadata(&dir).expect("cgroup dir").ino();
        Self {
            dir,
            path: format!("{}/{name}", self.path),
            id,
        }
    }

    /// `args` run from a shell that first moves itself into this cgroup, then execs them.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
            .arg(&self.dir)
            .args(args);
        c
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `tcptrace replay` of a recorded `--events --format json` stream with `args`.
pub fn replay_events(events: &[Value], args: &[&str]) -> Output {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let file = std::env::temp_dir().join(format!("tcptrace-rec-{}-{n}.jsonl", std::process::id()));
    let text: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let mut all = vec!["replay", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = tcptrace(&all);
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON lines of a run's standard output.
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}
