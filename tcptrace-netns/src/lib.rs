//! Throwaway network namespaces for experiments: a pair joined by a veth pair (the article's
//! node2 = server and node3 = client), built with iproute2 and deleted on drop, and threads
//! that join a namespace to act inside it without moving the caller. `tcptrace lab` and the
//! privileged tests build their namespaces here, one way.
use std::{
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread::JoinHandle,
};

/// Where `ip netns add NAME` puts a namespace.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs a command to completion; a failure is an error carrying its stderr.
pub fn run(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", args[0])))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// The addresses of a pair: the server side gets `srv4`/`srv6`, the client `cli4`/`cli6`, on
/// one /24 and one /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    pub srv4: Ipv4Addr,
    pub cli4: Ipv4Addr,
    pub srv6: Ipv6Addr,
    pub cli6: Ipv6Addr,
}

/// Two namespaces joined by a veth pair, addressed and up (loopback too); both are deleted
/// when it is dropped. Addresses are kept as text, the way commands take them.
#[derive(Debug)]
pub struct NetPair {
    pub srv: String,
    pub cli: String,
    pub srv4: String,
    pub cli4: String,
    pub srv6: String,
    pub cli6: String,
}

impl NetPair {
    /// Namespaces `{tag}-srv` and `{tag}-cli`, the veth ends `veth.0` (server) and `veth.1`
    /// (client, at most 15 bytes each). Whatever was made is removed again on failure.
    pub fn new(tag: &str, veth: (&str, &str), a: Addrs) -> io::Result<Self> {
        let pair = Self {
            srv: format!("{tag}-srv"),
            cli: format!("{tag}-cli"),
            srv4: a.srv4.to_string(),
            cli4: a.cli4.to_string(),
            srv6: a.srv6.to_string(),
            cli6: a.cli6.to_string(),
        };
        let (vs, vc) = veth;
        run(&["ip", "netns", "add", &pair.srv])?;
        run(&["ip", "netns", "add", &pair.cli])?;
        run(&["ip", "link", "add", vs, "type", "veth", "peer", "name", vc])?;
        run(&["ip", "link", "set", vs, "netns", &pair.srv])?;
        run(&["ip", "link", "set", vc, "netns", &pair.cli])?;
        for (ns, dev, v4, v6) in [
            (&pair.srv, vs, &pair.srv4, &pair.srv6),
            (&pair.cli, vc, &pair.cli4, &pair.cli6),
        ] {
            let ip = |args: &[&str]| {
                let mut v = vec!["ip", "-n", ns.as_str()];
                v.extend_from_slice(args);
                run(&v).map(drop)
            };
            ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ip(&["link", "set", dev, "up"])?;
            ip(&["link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// The nsfs file of a namespace made by `ip netns add NAME`.
    pub fn path(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// A namespace's inode, as tcptrace reports it in `netns`.
    pub fn inode(name: &str) -> io::Result<u64> {
        Ok(fs::metadata(Self::path(name))?.ino())
    }

    /// Runs a command inside `ns` (`ip netns exec`) to completion.
    pub fn exec(ns: &str, args: &[&str]) -> io::Result<Output> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Sets `net.x.y` inside `ns` (written from a thread that joined it).
    pub fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        let shown = format!("{key}={value} in {ns}");
        let value = value.to_string();
        in_netns(&Self::path(ns), move || fs::write(&file, value.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `make` on a short-lived thread that first joins the namespace at `path`; whatever it
/// creates (a socket) stays bound to that namespace. The calling thread never moves.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    spawn_in_netns(path, make)
        .join()
        .map_err(|_| io::Error::other("namespace helper thread panicked"))?
}

/// Starts a thread that joins the namespace at `path`, then runs `work`; the caller decides
/// when to join it. A namespace that cannot be joined is `work`'s error.
pub fn spawn_in_netns<T, E>(
    path: &Path,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> JoinHandle<Result<T, E>>
where
    T: Send + 'static,
    E: From<io::Error> + Send + 'static,
{
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let shown = path.display();
        let file =
            fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
        // SAFETY: setns only reads the descriptor, which `file` keeps open for the call; it
        // changes the namespace of this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("setns {shown}: {e}")).into());
        }
        work()
    })
}
