//! Finds (mounting if needed) tracefs and reads tracepoint `format` files.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs directory holding `events/`, mounting tracefs at /sys/kernel/tracing when no
/// mount exists. `None` when tracefs is unavailable.
pub fn find_or_mount() -> Option<PathBuf> {
    if let Some(p) = find() {
        return Some(p);
    }
    let target = CString::new(CANDIDATES[0]).ok()?;
    let fstype = CString::new("tracefs").ok()?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call; a
    // NULL data argument is allowed by mount(2).
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 { find() } else { None }
}

fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_path_buf)
}

/// The text of `events/<category>/<name>/format`, `None` when the tracepoint does not exist.
pub fn format(root: &Path, category: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(root.join("events").join(category).join(name).join("format")).ok()
}
