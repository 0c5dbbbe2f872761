//! The output's writer thread and its destination: standard output or a file opened for
//! appending (reopened on request, for log rotation). A write error other than a vanished
//! reader does not stop tracing: the chunk's lines are counted as failed, a file is cut back
//! to its last whole line so it stays readable, and writing resumes with the next chunk (a
//! full disk that gets space again recovers by itself).
use std::{
    fs::{File, OpenOptions},
    io::{self, IsTerminal as _, Write as _},
    os::fd::AsFd as _,
    path::PathBuf,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::out::{Chunk, Item, Queue};
use crate::flags::Config;

/// Where the output goes.
pub enum Destination {
    /// Standard output (a duplicate of fd 1).
    Stdout(File, bool),
    /// A file, appended to.
    File { path: PathBuf, file: Option<File> },
}

/// Failures are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

impl Destination {
    /// `--output FILE`, or standard output.
    pub fn from_config(cfg: &Config) -> Self {
        match &cfg.output {
            Some(path) => Self::File {
                path: path.clone(),
                file: None,
            },
            None => Self::stdout(),
        }
    }

    pub fn stdout() -> Self {
        let out = io::stdout();
        let tty = out.is_terminal();
        match out.as_fd().try_clone_to_owned() {
            Ok(fd) => Self::Stdout(File::from(fd), tty),
            // Without a descriptor to duplicate there is nowhere to write: a closed reader.
            Err(_) => Self::File {
                path: PathBuf::from("/dev/null"),
                file: None,
            },
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Stdout(_, true))
    }

    fn open_file(path: &PathBuf) -> io::Result<File> {
        OpenOptions::new().append(true).create(true).open(path)
    }

    /// Opens a file destination now, so a bad path is an error before tracing starts.
    fn ready(&mut self) -> io::Result<()> {
        if let Self::File { path, file } = self
            && file.is_none()
        {
            let f = Self::open_file(path).map_err(|e| {
                io::Error::new(e.kind(), format!("--output {}: {e}", path.display()))
            })?;
            *file = Some(f);
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Self::File { path, file } = self {
            *file = None;
            *file = Some(Self::open_file(path)?);
        }
        Ok(())
    }

    /// Writes one chunk whole. A file is cut back to its length before the chunk when the
    /// write fails half-way, so it holds whole lines only.
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout(f, _) => f.write_all(data),
            Self::File { path, file } => {
                if file.is_none() {
                    *file = Some(Self::open_file(path)?);
                }
                let Some(f) = file.as_mut() else {
                    return Err(io::ErrorKind::NotFound.into());
                };
                let before = f.metadata()?.len();
                let r = f.write_all(data);
                if r.is_err() && f.metadata().is_ok_and(|m| m.len() > before) {
                    let _ = f.set_len(before);
                }
                r
            }
        }
    }
}

/// Reports write failures without flooding: the first, then a count every [`REPORT_EVERY`],
/// and the recovery.
#[derive(Default)]
struct Failures {
    failing: bool,
    unreported: u64,
    last_report: Option<Instant>,
}

impl Failures {
    fn failed(&mut self, e: &io::Error, lines: u64) {
        self.unreported += lines;
        let due = self.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if !self.failing || due {
            log::warn!(
                "output: {e}; {} not written (tracing continues)",
                super::count(self.unreported, "line")
            );
            self.unreported = 0;
            self.last_report = Some(Instant::now());
        }
        self.failing = true;
    }

    fn succeeded(&mut self) {
        if self.failing {
            log::info!(
                "output: writing again ({} more not written)",
                super::count(self.unreported, "line")
            );
            *self = Self::default();
        }
    }
}

/// Starts the thread that empties `queue` into `dest`.
pub(super) fn spawn(mut dest: Destination, queue: Arc<Queue>) -> io::Result<JoinHandle<()>> {
    dest.ready()?;
    std::thread::Builder::new()
        .name("tcptrace-out".into())
        .spawn(move || {
            // Writing (and reopening on SIGHUP) needs no capability at all.
            if let Err(e) = crate::loader::reduce_thread_to(0) {
                log::debug!("output thread keeps its capabilities: {e}");
            }
            run(dest, &queue)
        })
}

fn run(mut dest: Destination, queue: &Queue) {
    let mut failures = Failures::default();
    loop {
        let mut st = queue.lock();
        let item = loop {
            if let Some(item) = st.items.pop_front() {
                break item;
            }
            if st.closed {
                st.done = true;
                drop(st);
                queue.progress.notify_all();
                return;
            }
            st = queue.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        let chunk: Chunk = match item {
            Item::Reopen => {
                drop(st);
                if let Err(e) = dest.reopen() {
                    log::warn!("output: reopening failed: {e}");
                }
                continue;
            }
            Item::Chunk(c) => c,
        };
        st.bytes -= chunk.data.len();
        st.writing = chunk.lines;
        drop(st);
        queue.progress.notify_all();
        let result = dest.write(&chunk.data);
        let mut st = queue.lock();
        st.writing = 0;
        st.recycle(chunk.data);
        match result {
            Ok(()) => failures.succeeded(),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                st.broken = true;
                st.items.clear();
                st.bytes = 0;
                st.done = true;
                drop(st);
                queue.progress.notify_all();
                return;
            }
            Err(e) => {
                st.stats.failed = st.stats.failed.saturating_add(chunk.lines);
                failures.failed(&e, chunk.lines);
            }
        }
        drop(st);
        queue.progress.notify_all();
    }
}
