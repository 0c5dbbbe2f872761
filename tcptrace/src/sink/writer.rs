//! The one buffered writer all output goes through: block-buffered to files and pipes (flushed
//! at the end of each ring-buffer batch), line-buffered on a terminal.
use std::io::{self, IsTerminal as _, Write};

/// Buffered output. Callers append a whole line to [`Out::buf`] and then call [`Out::end_line`].
pub struct Out<W: Write> {
    pub buf: Vec<u8>,
    inner: W,
    line_buffered: bool,
}

const FLUSH_AT: usize = 64 * 1024;

impl Out<io::Stdout> {
    /// Standard output, line-buffered when it is a terminal.
    pub fn stdout() -> Self {
        let stdout = io::stdout();
        let tty = stdout.is_terminal();
        Self::new(stdout, tty)
    }
}

impl<W: Write> Out<W> {
    pub fn new(inner: W, line_buffered: bool) -> Self {
        Self {
            buf: Vec::with_capacity(FLUSH_AT * 2),
            inner,
            line_buffered,
        }
    }

    /// Whether output goes to a terminal (line-buffered, colour allowed).
    pub fn is_terminal(&self) -> bool {
        self.line_buffered
    }

    /// Called after each complete line.
    pub fn end_line(&mut self) -> io::Result<()> {
        if self.line_buffered || self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}
