//! How many upload sessions are open, per repository and in all, so that
//! starting one past a cap is refused before it costs a row. Counted in
//! memory from the UPLOADS table at open, then kept in step with every
//! commit that adds or removes a session row.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable};

use super::meta::{self, UploadRow};
use super::{Embedded, Error, Result};

pub(super) struct Sessions {
    pub(super) total: usize,
    per_repo: HashMap<String, usize>,
    max_total: usize,
    max_per_repo: usize,
}

impl Sessions {
    /// Gives back the place of a session in `repo` that ended or never began.
    pub(super) fn release(&mut self, repo: &str) {
        self.total = self.total.saturating_sub(1);
        if let Some(count) = self.per_repo.get_mut(repo) {
            *count -= 1;
            if *count == 0 {
                self.per_repo.remove(repo);
            }
        }
    }

    pub(super) fn unlimited() -> Sessions {
        Sessions {
            total: 0,
            per_repo: HashMap::new(),
            max_total: usize::MAX,
            max_per_repo: usize::MAX,
        }
    }
}

impl Embedded {
    /// Caps the upload sessions open at once, in all and per repository.
    pub fn limit_uploads(&self, total: usize, per_repo: usize) {
        let mut sessions = self.sessions();
        sessions.max_total = total;
        sessions.max_per_repo = per_repo;
    }

    pub(super) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    /// Counts the sessions a previous run left open.
    pub(super) fn count_sessions(&self) -> Result<()> {
        let txn = self.db()?.begin_read()?;
        let uploads = txn.open_table(meta::UPLOADS)?;
        let mut sessions = self.sessions();
        for entry in uploads.iter()? {
            let row: UploadRow = meta::decode(entry?.1.value())?;
            sessions.total += 1;
            *sessions.per_repo.entry(row.repo).or_default() += 1;
        }
        Ok(())
    }

    /// Takes a place for a new session in `repo`, or says which cap is full.
    pub(super) fn reserve_session(&self, repo: &str) -> Result<()> {
        let mut sessions = self.sessions();
        let in_repo = sessions.per_repo.get(repo).copied().unwrap_or(0);
        if in_repo >= sessions.max_per_repo {
            return Err(Error::TooManyUploads(format!(
                "{in_repo} upload sessions are open in {repo}, the most allowed; \
                 finish or cancel one, or wait for stale ones to expire"
            )));
        }
        if sessions.total >= sessions.max_total {
            return Err(Error::TooManyUploads(format!(
                "{} upload sessions are open, the most allowed; try again later",
                sessions.total
            )));
        }
        sessions.total += 1;
        *sessions.per_repo.entry(repo.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Gives back the place of a session whose row is gone (or never came).
    pub(super) fn release_session(&self, repo: &str) {
        self.sessions().release(repo);
    }
}

/// Removes an upload's row in a write transaction; the repository it was
/// in, if there was one, for [`Embedded::release_session`] once committed.
pub(super) fn remove_row(txn: &redb::WriteTransaction, id: &str) -> Result<Option<String>> {
    let mut uploads = txn.open_table(meta::UPLOADS)?;
    let removed = uploads.remove(id)?;
    removed
        .map(|row| meta::decode::<UploadRow>(row.value()).map(|row| row.repo))
        .transpose()
}

pub(super) fn lock(sessions: &Mutex<Sessions>) -> MutexGuard<'_, Sessions> {
    sessions.lock().unwrap_or_else(|p| p.into_inner())
}
