//! Requests whose bytes are still arriving. Expiry and the orphan sweep run
//! on any node and see no request in flight, only rows and objects: so a
//! request that streams says so, at most once per [`BEAT`]. A session's
//! chunk moves the session's `updated` on, so it is not idle; a whole blob
//! in one request, which has no row, keeps one in `streams` from its first
//! piece to its end, so its pieces are not orphans.

use std::time::Duration;

use super::super::{Result, meta};
use super::{Cluster, signed};

/// How often a streaming request says it lives.
pub(super) const BEAT: Duration = Duration::from_secs(1);

/// How long a `streams` row vouches for its request without a beat: far
/// past [`BEAT`], so only a request whose node died goes unvouched.
const LIVE: Duration = Duration::from_secs(600);

impl Cluster {
    /// Says that request `id` is streaming: a session's `updated`, or a
    /// whole blob's `streams` row.
    pub(super) async fn beat(&self, id: &str, session: bool) -> Result<()> {
        let now = signed(meta::now());
        let client = self.client().await?;
        if session {
            client
                .execute(
                    "UPDATE uploads SET updated = $2 WHERE id = $1",
                    &[&id, &now],
                )
                .await?;
        } else {
            client
                .execute(
                    "INSERT INTO streams (id, seen) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET seen = $2",
                    &[&id, &now],
                )
                .await?;
        }
        Ok(())
    }

    /// Forgets whole-blob request `id`: ended, its pieces kept or gone.
    pub(super) async fn end_stream(&self, id: &str) -> Result<()> {
        self.client()
            .await?
            .execute("DELETE FROM streams WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// The whole-blob requests that lately said they stream; the rows of
    /// the others (their nodes died) go.
    pub(super) async fn live_streams(&self) -> Result<Vec<String>> {
        let since = signed(meta::ago(meta::now(), LIVE));
        let client = self.client().await?;
        client
            .execute("DELETE FROM streams WHERE seen <= $1", &[&since])
            .await?;
        let rows = client.query("SELECT id FROM streams", &[]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}
