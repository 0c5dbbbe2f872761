//! The buffered output every sink writes through. Lines are appended to [`Out::buf`]; whole
//! lines go, as chunks, into a bounded queue that a writer thread empties into the
//! destination, so a reader that stalls (a full pipe, a slow disk) never blocks the event
//! loop or its signals: live tracing drops whole chunks then and counts their lines, `replay`
//! waits. Block-buffered to files and pipes (flushed at the end of each batch), line-buffered
//! on a terminal. Several sinks may write into one destination: each has its own [`Out`]
//! ([`Out::share`]) on the same queue, whose chunks are whole lines, so lines never mix; the
//! destination closes when the last of them does.
use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::writer::{self, Destination};

/// What the producer does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Drop the chunk and count its lines (live tracing: the kernel does not wait either).
    Drop,
    /// Wait for the writer (replay and one-shot commands).
    Block,
}

/// What could not be delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutStats {
    /// Lines dropped because the reader did not keep up.
    pub stalled: u64,
    /// Lines lost to write errors (e.g. a full disk).
    pub failed: u64,
}

impl OutStats {
    pub fn add(self, o: Self) -> Self {
        Self {
            stalled: self.stalled.saturating_add(o.stalled),
            failed: self.failed.saturating_add(o.failed),
        }
    }

    pub fn total(&self) -> u64 {
        self.stalled.saturating_add(self.failed)
    }
}

/// Bytes a sink accumulates before handing them to the writer.
const FLUSH_AT: usize = 64 * 1024;
/// Bytes the queue holds at most before chunks are dropped (or the producer waits).
const QUEUE_BYTES: usize = 4 << 20;
/// How long the end of a run waits for a stalled reader before giving up on what is queued.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A run of whole lines.
pub(super) struct Chunk {
    pub data: Vec<u8>,
    pub lines: u64,
}

/// Written buffers kept for reuse: a fresh 128 KiB buffer per flush would be an mmap and its
/// page faults every time.
const SPARE_BUFFERS: usize = 4;

pub(super) enum Item {
    Chunk(Chunk),
    /// Close the destination and open it again (log rotation).
    Reopen,
}

#[derive(Default)]
pub(super) struct State {
    pub items: VecDeque<Item>,
    pub bytes: usize,
    /// The producer is done: the writer exits once the queue is empty.
    pub closed: bool,
    /// Lines of the chunk the writer is writing now.
    pub writing: u64,
    /// The writer has exited.
    pub done: bool,
    /// The reader went away (EPIPE): nothing more can be written.
    pub broken: bool,
    pub stats: OutStats,
    /// Emptied buffers to reuse.
    pub spare: Vec<Vec<u8>>,
    /// [`Out`]s writing into this queue and not closed yet.
    pub producers: usize,
}

impl State {
    /// Keeps a written buffer for reuse.
    pub fn recycle(&mut self, mut data: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            data.clear();
            self.spare.push(data);
        }
    }
}

#[derive(Default)]
pub(super) struct Queue {
    pub state: Mutex<State>,
    /// Signalled when an item arrives or the producer closes.
    pub ready: Condvar,
    /// Signalled when the writer took an item or finished one.
    pub progress: Condvar,
    /// The writer thread, joined by the last producer to close.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Queue {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Out {
    /// The lines being assembled; callers append whole lines, then call [`Out::end_line`].
    pub buf: Vec<u8>,
    lines: u64,
    terminal: bool,
    policy: Backpressure,
    /// The next chunk must not be dropped (a stream header, a recording's context).
    essential: bool,
    queue: Arc<Queue>,
    /// Not closed yet.
    open: bool,
}

impl Out {
    /// Starts the writer thread for `dest`.
    pub fn open(dest: Destination, policy: Backpressure) -> io::Result<Self> {
        let terminal = dest.is_terminal();
        let queue = Arc::new(Queue::default());
        queue.lock().producers = 1;
        let thread = writer::spawn(dest, queue.clone())?;
        *queue.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(Self {
            buf: Vec::with_capacity(FLUSH_AT * 2),
            lines: 0,
            terminal,
            policy,
            essential: false,
            queue,
            open: true,
        })
    }

    /// Another writer into the same destination, for another sink: its lines go between
    /// this one's whole lines. Rotation stays with the first.
    pub fn share(&self) -> Self {
        self.queue.lock().producers += 1;
        Self {
            buf: Vec::with_capacity(FLUSH_AT),
            lines: 0,
            terminal: self.terminal,
            policy: self.policy,
            essential: false,
            queue: self.queue.clone(),
            open: true,
        }
    }

    /// The chunk being assembled must reach the destination even under pressure.
    pub fn essential(&mut self) {
        self.essential = true;
    }

    /// Called after each complete line (or frame).
    pub fn end_line(&mut self) -> io::Result<()> {
        self.lines += 1;
        if self.terminal || self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the complete lines to the writer; an error only once the reader is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut st = self.queue.lock();
        if st.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len();
        let lines = std::mem::take(&mut self.lines);
        let must = std::mem::take(&mut self.essential);
        if st.bytes + len > QUEUE_BYTES && !must {
            match self.policy {
                Backpressure::Drop => {
                    st.stats.stalled = st.stats.stalled.saturating_add(lines);
                    self.buf.clear();
                    return Ok(());
                }
                Backpressure::Block => {
                    while st.bytes + len > QUEUE_BYTES && !st.broken && !st.done {
                        st = self
                            .queue
                            .progress
                            .wait(st)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    if st.broken {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                }
            }
        }
        let fresh = st
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FLUSH_AT * 2));
        let data = std::mem::replace(&mut self.buf, fresh);
        st.bytes += len;
        st.items.push_back(Item::Chunk(Chunk { data, lines }));
        drop(st);
        self.queue.ready.notify_one();
        Ok(())
    }

    /// After what is queued, the destination is reopened (for log rotation).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush()?;
        self.queue.lock().items.push_back(Item::Reopen);
        self.queue.ready.notify_one();
        Ok(())
    }

    /// Everything out; the last writer to close waits a little for a slow reader, and what
    /// cannot be written by then is counted as dropped. Idempotent.
    pub fn close(&mut self) -> io::Result<()> {
        let flushed = self.flush();
        if !std::mem::take(&mut self.open) {
            return flushed;
        }
        let mut st = self.queue.lock();
        st.producers = st.producers.saturating_sub(1);
        if st.producers > 0 {
            return flushed;
        }
        drop(st);
        let thread = self
            .queue
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(thread) = thread else {
            return flushed;
        };
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut st = self.queue.lock();
        st.closed = true;
        self.queue.ready.notify_one();
        while !st.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .queue
                .progress
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if st.done {
            drop(st);
            let _ = thread.join();
        } else {
            // The reader is stalled: whatever waits is lost (the thread dies with the process).
            let waiting: u64 = st
                .items
                .drain(..)
                .map(|i| match i {
                    Item::Chunk(c) => c.lines,
                    Item::Reopen => 0,
                })
                .sum();
            st.bytes = 0;
            let writing = std::mem::take(&mut st.writing);
            st.stats.stalled = st.stats.stalled.saturating_add(waiting + writing);
        }
        flushed
    }

    pub fn stats(&self) -> OutStats {
        self.queue.lock().stats
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(out: &mut Out, text: &str) {
        out.buf.extend_from_slice(text.as_bytes());
        out.buf.push(b'\n');
        out.end_line().unwrap();
    }

    /// Two writers into one file: whole lines in the order they were flushed, and the file
    /// is complete only when the last of them closed, whichever it is.
    #[test]
    fn shared_writers_close_with_the_last() {
        let path = std::env::temp_dir().join(format!("tcptrace-out-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let dest = Destination::File {
            path: path.clone(),
            file: None,
        };
        let mut first = Out::open(dest, Backpressure::Block).unwrap();
        let mut second = first.share();
        line(&mut first, "record 1");
        line(&mut second, "summary 1");
        first.flush().unwrap();
        second.flush().unwrap();
        line(&mut first, "record 2");
        first.close().unwrap();
        // The destination stays open for the other writer.
        line(&mut second, "summary of the run");
        second.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "record 1\nsummary 1\nrecord 2\nsummary of the run\n");
        assert_eq!(first.stats(), OutStats::default());
    }
}
