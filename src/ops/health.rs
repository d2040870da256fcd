//! Kubernetes-style probes: live while the process serves; ready while the
//! database commits a write and the data directory has room.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::store::Store;

/// How long one check of the database answers for.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last check that the database commits: /readyz needs no login and
/// the check is a durable write, so the probes of one second share one.
#[derive(Default)]
pub struct DatabaseCheck(tokio::sync::Mutex<Option<(Instant, Option<String>)>>);

impl DatabaseCheck {
    /// What the last check found wrong, if it is fresh; else what `check`
    /// finds, while those asking meanwhile wait for it.
    pub async fn problem<E>(
        &self,
        check: impl Future<Output = Result<Option<String>, E>>,
    ) -> Result<Option<String>, E> {
        let mut last = self.0.lock().await;
        if let Some((at, problem)) = &*last
            && at.elapsed() < FRESH_FOR
        {
            return Ok(problem.clone());
        }
        let problem = check.await?;
        *last = Some((Instant::now(), problem.clone()));
        Ok(problem)
    }
}

/// Why the database is not ready: it does not commit a write.
pub fn database_problem(store: &Store) -> Option<String> {
    let written = store.recover(store.probe_write());
    written
        .err()
        .map(|e| format!("the database does not commit: {e}"))
}

/// Why the data directory is not ready: too little room. A clustered
/// store's room is its object store's to tell.
pub fn space_problem(store: &Store, min_free_space: u64) -> Option<String> {
    let root = store.root()?;
    match free_space(root) {
        Ok(free) if free < min_free_space => Some(format!(
            "{} has {free} bytes free, under the {min_free_space} needed",
            root.display()
        )),
        Ok(_) => None,
        Err(e) => Some(format!("free space of {}: {e}", root.display())),
    }
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
