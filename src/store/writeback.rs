//! Writing big uploads so that the disk works while the network does:
//! write-back of each window is started as soon as it is written, and
//! waited for a few windows later. The sync that makes the blob durable
//! then finds almost nothing left to write, and dirty memory stays bounded.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

const WINDOW: u64 = 2 << 20;
/// Windows in flight before the oldest is waited for.
const IN_FLIGHT: u64 = 16;

/// Where write-back stands in one file, across many writes.
pub struct Writeback {
    /// Absolute offsets: written up to, write-back started up to, and
    /// known to be on disk up to.
    written: u64,
    started: u64,
    settled: u64,
    /// Off for writes nobody waits on the disk for (a cache filling from an
    /// upstream): they go at page-cache speed and are synced at the end.
    throttled: bool,
}

impl Writeback {
    /// For writes at the file's current position, which is `offset`.
    pub fn new(offset: u64) -> Writeback {
        Writeback {
            written: offset,
            started: offset,
            settled: offset,
            throttled: true,
        }
    }

    pub fn unthrottle(&mut self) {
        self.throttled = false;
    }

    /// Writes a batch of chunks, in as few calls as the kernel allows.
    pub fn write_all(&mut self, mut file: &File, chunks: &[bytes::Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.throttled {
            return Ok(());
        }
        while self.written - self.started >= WINDOW {
            sync_range(file, self.started, WINDOW, libc::SYNC_FILE_RANGE_WRITE);
            self.started += WINDOW;
            if self.started - self.settled > IN_FLIGHT * WINDOW {
                let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                sync_range(file, self.settled, WINDOW, wait);
                self.settled += WINDOW;
            }
        }
        Ok(())
    }
}

/// A hint to the kernel, not a promise: durability still comes from the
/// fsync that follows, which also reports any error this would have.
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}
