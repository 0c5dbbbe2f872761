//! Socket inode → owning process, from /proc/*/fd links `socket:[N]` (what `ss -p` does).
use std::{collections::HashMap, fs};

/// Inode → (pid, comm); when processes share a socket the lowest pid wins. Unreadable
/// processes are skipped.
pub fn socket_owners() -> HashMap<u32, (u32, String)> {
    let mut out: HashMap<u32, (u32, String)> = HashMap::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if out.contains_key(&inode) {
                continue;
            }
            let name = comm.get_or_insert_with(|| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default()
            });
            out.insert(inode, (pid, name.clone()));
        }
    }
    out
}
