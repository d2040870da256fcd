//! Kubernetes-style probes: live while the process serves; ready while the
//! database commits a write and the data directory has room.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::store::Store;

/// Why the registry is not ready; empty when it is.
pub fn not_ready(store: &Store, min_free_space: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = store.recover(store.probe_write()) {
        problems.push(format!("the database does not commit: {e}"));
    }
    // A clustered store's room is its object store's to tell.
    let Some(root) = store.root() else {
        return problems;
    };
    match free_space(root) {
        Ok(free) if free < min_free_space => problems.push(format!(
            "{} has {free} bytes free, under the {min_free_space} needed",
            root.display()
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("free space of {}: {e}", root.display())),
    }
    problems
}

/// Bytes an unprivileged writer may still use on `path`'s file system.
fn free_space(path: &Path) -> io::Result<u64> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid,
    // writable statvfs that outlives the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
