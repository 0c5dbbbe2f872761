//! A minimal writer of the `newc` cpio format the kernel unpacks as an initramfs: directories,
//! regular files and character devices, all owned by root.
use std::io::{self, Write};

/// One archive member.
pub enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    /// A character device (e.g. `/dev/console`, 5:1).
    CharDev {
        path: &'a str,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const TRAILER: &str = "TRAILER!!!";

/// Writes the entries and the trailer.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: usize,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.raw(&[0u8; 3][..n])
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len();
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, size: usize, rdev: (u32, u32)) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(size).map_err(|_| io::Error::other("member larger than 4 GiB"))?,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).map_err(|_| io::Error::other("name too long"))?,
            0, // check
        ];
        self.ino += 1;
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.raw(h.as_bytes())?;
        self.raw(name.as_bytes())?;
        self.raw(&[0])?;
        self.pad()
    }

    pub fn add(&mut self, e: &Entry<'_>) -> io::Result<()> {
        match *e {
            Entry::Dir(path) => self.header(path, S_IFDIR | 0o755, 0, (0, 0)),
            Entry::File { path, mode, data } => {
                self.header(path, S_IFREG | mode, data.len(), (0, 0))?;
                self.raw(data)?;
                self.pad()
            }
            Entry::CharDev { path, major, minor } => {
                self.header(path, S_IFCHR | 0o600, 0, (major, minor))
            }
        }
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, (0, 0))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&h[6 + i * 8..6 + (i + 1) * 8]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn newc_members_are_aligned_and_complete() {
        let mut w = Writer::new(Vec::new());
        w.add(&Entry::Dir("/bin")).unwrap();
        w.add(&Entry::File {
            path: "/init",
            mode: 0o755,
            data: b"#!/bin/sh\n",
        })
        .unwrap();
        w.add(&Entry::CharDev {
            path: "/dev/console",
            major: 5,
            minor: 1,
        })
        .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        // First member: "bin", a directory.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(field(&out, 1), S_IFDIR | 0o755);
        assert_eq!(field(&out, 11), 4);
        assert_eq!(&out[110..114], b"bin\0");
        // Second member starts aligned: 110 + 4 = 114 → 116.
        let second = &out[116..];
        assert_eq!(&second[..6], b"070701");
        assert_eq!(field(second, 6), 10);
        assert_eq!(&second[110..115], b"init\0");
        // Name ends at 115 → 116; data 10 bytes → 126 → padded to 128.
        assert_eq!(&second[116..126], b"#!/bin/sh\n");
        let third = &second[128..];
        assert_eq!(field(third, 1), S_IFCHR | 0o600);
        assert_eq!((field(third, 9), field(third, 10)), (5, 1));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
    }
}
