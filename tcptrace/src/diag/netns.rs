//! Finding network namespaces: inode → a path to its nsfs file, and opening a netlink socket
//! inside one without moving the calling thread.
use std::{
    collections::HashMap,
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Every network namespace reachable on this host: from /proc/*/ns/net (first process found
/// per inode) and /run/netns/* (named namespaces, which may have no process).
pub fn netns_paths() -> HashMap<u32, PathBuf> {
    let mut out = HashMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = fs::metadata(&path)
            && let Ok(ino) = u32::try_from(meta.ino())
        {
            out.entry(ino).or_insert(path);
        }
    };
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            add(e.path());
        }
    }
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                add(e.path().join("ns/net"));
            }
        }
    }
    out
}

/// Inode of the caller's network namespace.
pub fn own_netns() -> io::Result<u32> {
    let meta = fs::metadata("/proc/self/ns/net")?;
    u32::try_from(meta.ino()).map_err(io::Error::other)
}

/// Runs `make` on a short-lived thread that first joins the namespace at `path`; whatever it
/// creates (a socket) stays bound to that namespace. The calling thread never moves.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        // SAFETY: setns only reads the descriptor, which `file` keeps open for the call; it
        // changes the namespace of this (throwaway) thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("setns {shown}: {e}")));
        }
        make()
    })
    .join()
    .map_err(|_| io::Error::other("namespace helper thread panicked"))?
}
