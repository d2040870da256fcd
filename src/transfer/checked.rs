//! A reader held to the digest and size its bytes claim, for every blob a
//! transfer reads from somewhere it does not trust (a layout, a registry).

use std::io::{self, Read};

use crate::oci::{Digest, Hasher};

/// Reads `inner`, failing with [`Mismatch`] as soon as it gives more than
/// `size` bytes, and at its end if it gave fewer or they hash to another
/// digest: whoever reads it to its end has read exactly what was named.
pub struct Checked<R> {
    inner: R,
    digest: Digest,
    size: u64,
    read: u64,
    hasher: Hasher,
}

/// Why the bytes are not what they claim: the error inside the
/// `io::Error` a [`Checked`] reader fails with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

impl<R> Checked<R> {
    pub fn new(inner: R, digest: &Digest, size: u64) -> Checked<R> {
        Checked {
            inner,
            digest: digest.clone(),
            size,
            read: 0,
            hasher: Hasher::new(digest.algorithm()),
        }
    }
}

impl Mismatch {
    /// The mismatch an I/O error carries, if it is one.
    pub fn of(e: &io::Error) -> Option<&Mismatch> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Mismatch>())
    }
}

fn mismatch(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Mismatch(why))
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if self.read != self.size {
                return Err(mismatch(format!(
                    "{} bytes where {} were due",
                    self.read, self.size
                )));
            }
            let actual = self.hasher.digest();
            if actual != self.digest {
                return Err(mismatch(format!("its bytes have digest {actual}")));
            }
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            return Err(mismatch(format!("more than its {} bytes", self.size)));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
