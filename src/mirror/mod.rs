//! Pull-through: a namespace that caches an upstream registry. A tag is
//! asked of the upstream at most once per TTL; manifests and blobs are
//! fetched when first asked for, verified against their digests, and
//! stored; many clients asking for the same thing cause one fetch; what
//! is cached is served while the upstream is down; what was pushed here
//! shadows the upstream's.

mod fill;
mod recent;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::store::{self, Store, StoredManifest};
use crate::upstream::{self, Connector, Upstream};
use recent::Recent;

pub use fill::{BlobAnswer, ChunkStream};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The namespaces that cache an upstream, by name.
#[derive(Default)]
pub struct Mirrors {
    by_namespace: HashMap<String, Arc<Mirror>>,
}

/// How long a tag whose check failed is served as cached before the
/// upstream is asked again (the TTL, if shorter).
const BACK_OFF: Duration = Duration::from_secs(10);

/// Repositories whose upstream tag list is kept for the TTL at most: a
/// list may hold ten thousand tags.
const MAX_TAG_LISTS: usize = 32;

/// An upstream tag list (`None`: asking failed), and when it was asked for.
type Listed = (Instant, Option<Arc<Vec<String>>>);

/// What a mirror needs besides its upstream.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How long an answer about a tag is trusted before the upstream is asked again.
    pub ttl: Duration,
    pub max_manifest_bytes: usize,
    /// How often a pull of a cached manifest is written down, for the
    /// cache expiration; `None`: cached manifests never expire.
    pub note_pulls_every: Option<Duration>,
}

impl Mirrors {
    /// `upstreams`: namespace and the URL of the registry it caches.
    pub fn new(
        store: &Arc<Store>,
        upstreams: &[(String, String)],
        connector: Option<Connector>,
        policy: Policy,
    ) -> io::Result<Mirrors> {
        let mut by_namespace = HashMap::new();
        let Some(connector) = connector else {
            return Ok(Mirrors { by_namespace });
        };
        for (namespace, url) in upstreams {
            // As the names it serves carry it: `registry-1.docker.io/x` is
            // `docker.io/x`.
            let namespace = crate::oci::name::canonical_namespace(namespace).to_owned();
            let mirror = Mirror {
                namespace: namespace.clone(),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                upstream: connector.upstream(url)?,
                store: Arc::clone(store),
                policy: policy.clone(),
                checked: Recent::default(),
                noted: Recent::default(),
                flights: Mutex::new(HashMap::new()),
                fetches: Arc::new(tokio::sync::Semaphore::new(fill::MAX_FETCHES)),
                tag_lists: Mutex::new(HashMap::new()),
            };
            by_namespace.insert(namespace, Arc::new(mirror));
        }
        Ok(Mirrors { by_namespace })
    }

    /// What each namespace's cache has done since the start, by namespace.
    pub fn stats(&self) -> Vec<Stats> {
        let mut stats: Vec<Stats> = self.by_namespace.values().map(|m| m.stats()).collect();
        stats.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        stats
    }

    /// The mirror that `repo`'s namespace caches, if it caches one.
    pub fn for_repo(&self, repo: &RepoName) -> Option<Arc<Mirror>> {
        // Most registries mirror nothing: finding the name's namespace was
        // ~160 instructions of every manifest GET (callgrind).
        if self.by_namespace.is_empty() {
            return None;
        }
        self.by_namespace.get(repo.namespace()?).cloned()
    }
}

/// What one namespace's cache has done since the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub namespace: String,
    pub upstream: String,
    /// Manifests and blobs served from the cache without asking upstream,
    /// and those the upstream was asked for.
    pub hits: u64,
    pub misses: u64,
    /// Requests sent upstream, and those that failed.
    pub fetches: u64,
    pub failures: u64,
}

pub struct Mirror {
    namespace: String,
    hits: AtomicU64,
    misses: AtomicU64,
    upstream: Upstream,
    store: Arc<Store>,
    policy: Policy,
    /// When each (repository, tag or referrers) was last asked of the upstream.
    checked: Recent,
    /// When each (repository, manifest) pull was last written down.
    noted: Recent,
    /// One lock per thing being fetched: the first asker fetches, the
    /// others wait and then find it stored.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Blob fetches running: each holds one until it ends.
    fetches: Arc<tokio::sync::Semaphore>,
    /// The upstream's tag list of each repository lately asked, and when.
    tag_lists: Mutex<HashMap<String, Listed>>,
}

impl Mirror {
    fn stats(&self) -> Stats {
        let (fetches, failures) = self.upstream.requests();
        Stats {
            namespace: self.namespace.clone(),
            upstream: self.upstream.url().to_owned(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fetches,
            failures,
        }
    }

    /// Counts an answer from the cache alone (`true`) or one the upstream
    /// was asked for.
    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The repository's name at the upstream: without the namespace.
    fn upstream_repo<'a>(&self, repo: &'a RepoName) -> &'a str {
        repo.as_str()
            .strip_prefix(&self.namespace)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(repo.as_str())
    }

    async fn flight(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            // Locks nobody holds or waits for are dropped as we go.
            flights.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(flights.entry(key).or_default())
        };
        lock.lock_owned().await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        store::blocking(move || work(&store))
            .await
            .map_err(Error::Store)
    }

    /// A manifest by tag or digest, from the cache or the upstream.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let manifest = match reference {
            Reference::Digest(digest) => self.manifest_by_digest(repo, digest).await,
            Reference::Tag(tag) => self.manifest_by_tag(repo, tag).await,
        }?;
        self.note_pull(repo, &manifest.digest);
        Ok(manifest)
    }

    /// Writes down, now and then, that a cached manifest was pulled.
    fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        let Some(every) = self.policy.note_pulls_every else {
            return;
        };
        if !self
            .noted
            .mark_unless_within(repo.as_str(), digest.as_str(), every)
        {
            return;
        }
        let (store, pull) = (Arc::clone(&self.store), (repo.clone(), digest.clone()));
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.note_pulls(vec![pull]) {
                log::warn!("writing down a pull: {e}");
            }
        });
    }

    async fn stored(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>> {
        let (r, reference) = (repo.clone(), Reference::Digest(digest.clone()));
        match self.blocking(move |s| s.get_manifest(&r, &reference)).await {
            Ok(manifest) => Ok(Some(manifest)),
            Err(Error::Store(store::Error::ManifestUnknown)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn manifest_by_digest(&self, repo: &RepoName, digest: &Digest) -> Result<StoredManifest> {
        if let Some(manifest) = self.stored(repo, digest).await? {
            self.count(true);
            return Ok(manifest);
        }
        let _flight = self.flight(format!("manifest {repo:?} {digest}")).await;
        if let Some(manifest) = self.stored(repo, digest).await? {
            self.count(true);
            return Ok(manifest);
        }
        self.count(false);
        self.fetch_manifest(repo, digest, None).await
    }

    /// Fetches `digest` from the upstream, stores it (with `tag`, if any)
    /// once it verifies, and gives it back as stored.
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<&Tag>,
    ) -> Result<StoredManifest> {
        let fetched = self
            .upstream
            .manifest(
                self.upstream_repo(repo),
                digest.as_str(),
                self.policy.max_manifest_bytes,
            )
            .await?
            .ok_or(store::Error::ManifestUnknown)?;
        let (r, d, t) = (repo.clone(), digest.clone(), tag.cloned());
        let stored = self
            .blocking(move |s| {
                s.cache_manifest(&r, &d, Some(&fetched.media_type), fetched.body, t.as_ref())?;
                s.get_manifest(&r, &Reference::Digest(d))
            })
            .await;
        match stored {
            // What the upstream sent is its fault, not the client's request's.
            Err(Error::Store(
                e @ (store::Error::DigestMismatch { .. } | store::Error::ManifestInvalid(_)),
            )) => {
                log::warn!("{}: {digest}: {e}", self.upstream.url());
                Err(self.upstream.invalid(format!("{digest}: {e}")).into())
            }
            stored => stored,
        }
    }

    /// Whether the upstream was asked about `what` (a tag, or a subject's
    /// referrers) within the TTL.
    fn fresh(&self, repo: &RepoName, what: &str) -> bool {
        self.checked.within(repo.as_str(), what, self.policy.ttl)
    }

    fn mark_checked(&self, repo: &RepoName, what: &str) {
        self.checked.mark(repo.as_str(), what, self.policy.ttl);
    }

    /// Where `tag` points here, and the manifest to answer with when the
    /// upstream need not be asked: pushed here (it shadows the upstream
    /// until it is deleted) or checked within the TTL.
    async fn held_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(Option<store::TagTarget>, Option<StoredManifest>)> {
        let target = {
            let (r, t) = (repo.clone(), tag.clone());
            self.blocking(move |s| s.tag_target(&r, &t)).await?
        };
        let answer = match &target {
            Some(held) if !held.from_upstream => Some(self.cached(repo, &held.digest).await?),
            Some(held) if self.fresh(repo, &format!("tag {}", tag.as_str())) => {
                self.count(true);
                Some(self.cached(repo, &held.digest).await?)
            }
            _ => None,
        };
        Ok((target, answer))
    }

    /// After the upstream failed to say `what`, what is cached answers for
    /// [`BACK_OFF`] (or the TTL) without asking again: each client waiting
    /// on the failed ask, and each after it, would wait out the same
    /// failure in turn.
    fn back_off(&self, repo: &RepoName, what: &str) {
        let ttl = self.policy.ttl;
        let ago = ttl.saturating_sub(BACK_OFF);
        self.checked.mark_ago(repo.as_str(), what, ago, ttl);
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<StoredManifest> {
        if let (_, Some(answer)) = self.held_tag(repo, tag).await? {
            return Ok(answer);
        }
        let _flight = self.flight(format!("tag {repo:?} {tag:?}")).await;
        // Again: the fetch this waited for, or a push, may have moved it.
        let (target, answer) = self.held_tag(repo, tag).await?;
        if let Some(answer) = answer {
            return Ok(answer);
        }
        self.count(false);
        let asked = self
            .upstream
            .manifest_digest(
                self.upstream_repo(repo),
                tag.as_str(),
                self.policy.max_manifest_bytes,
            )
            .await;
        let brought = match asked {
            Ok(Some(digest)) => self.bring_tagged(repo, tag, &digest).await,
            Ok(None) => return Err(store::Error::ManifestUnknown.into()),
            Err(e) => Err(e.into()),
        };
        match (brought, &target) {
            (Ok(manifest), _) => {
                self.mark_checked(repo, &format!("tag {}", tag.as_str()));
                Ok(manifest)
            }
            // What the cache holds for the tag is served (the README's
            // promise), whether the upstream failed the HEAD or only the
            // GET of a manifest the tag moved to; and for a while each
            // pull does not ask again, to wait out the same failure.
            (Err(e), Some(target)) => {
                log::warn!(
                    "serving {}:{} as cached ({}): {e}",
                    repo.as_str(),
                    tag.as_str(),
                    target.digest
                );
                self.back_off(repo, &format!("tag {}", tag.as_str()));
                self.cached(repo, &target.digest).await
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The manifest `tag` names upstream now, `digest`: found stored (the
    /// tag is pointed at it) or fetched.
    async fn bring_tagged(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<StoredManifest> {
        match self.stored(repo, digest).await? {
            Some(manifest) => {
                let (r, d, t) = (repo.clone(), digest.clone(), tag.clone());
                let body = manifest.body.to_vec();
                let media_type = manifest.media_type.clone();
                self.blocking(move |s| s.cache_manifest(&r, &d, Some(&media_type), body, Some(&t)))
                    .await?;
                Ok(manifest)
            }
            None => self.fetch_manifest(repo, digest, Some(tag)).await,
        }
    }

    /// The upstream's tags of `repo` (at most `max`), or `None` if the
    /// upstream cannot say: the caller then lists what is cached. Asked at
    /// most once per TTL, as a tag is: a client paging through a list
    /// would otherwise have the whole list asked for each page.
    pub async fn upstream_tags(&self, repo: &RepoName, max: usize) -> Option<Arc<Vec<String>>> {
        let key = repo.as_str();
        if let Some(known) = self.listed(key) {
            return known;
        }
        let _flight = self.flight(format!("tags {key}")).await;
        if let Some(known) = self.listed(key) {
            return known;
        }
        let tags = match self.upstream.tags(self.upstream_repo(repo), max).await {
            // What is no tag could be neither asked for nor named in a
            // page's Link.
            Ok(tags) => Some(Arc::new(
                tags?
                    .into_iter()
                    .filter(|t| Tag::parse(t).is_some())
                    .collect::<Vec<_>>(),
            )),
            // Remembered too, for the back-off: each page of a listing,
            // and each client waiting on this one, would wait out the
            // same failure in turn.
            Err(e) => {
                log::warn!("tags of {key} listed as cached: {e}");
                None
            }
        };
        let ttl = self.policy.ttl;
        let mut lists = self.tag_lists.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (Instant::now(), tags.clone());
        let live = |(at, _): &Listed| at.elapsed() < ttl;
        crate::bounded::insert(&mut lists, key.to_owned(), entry, MAX_TAG_LISTS, live);
        tags
    }

    /// What the upstream said of `repo`'s tags lately, if it said it within
    /// the TTL (a list) or the back-off (a failure: `Some(None)`).
    fn listed(&self, repo: &str) -> Option<Option<Arc<Vec<String>>>> {
        let lists = self.tag_lists.lock().unwrap_or_else(|p| p.into_inner());
        let (at, tags) = lists.get(repo)?;
        let age = match tags {
            Some(_) => self.policy.ttl,
            None => BACK_OFF.min(self.policy.ttl),
        };
        (at.elapsed() < age).then(|| tags.clone())
    }

    /// Brings the upstream's referrers of `subject` into the cache (at
    /// most once per TTL), so the local referrers list holds them. An
    /// upstream that fails leaves the list as cached.
    pub async fn refresh_referrers(
        self: &Arc<Self>,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<()> {
        let key = format!("referrers {subject}");
        if self.fresh(repo, &key) {
            return Ok(());
        }
        let _flight = self
            .flight(format!("referrers {} {subject}", repo.as_str()))
            .await;
        if self.fresh(repo, &key) {
            return Ok(());
        }
        let listed = self
            .upstream
            .referrers(
                self.upstream_repo(repo),
                subject,
                self.policy.max_manifest_bytes,
            )
            .await;
        let digests = match listed {
            Ok(digests) => digests.unwrap_or_default(),
            Err(e) => {
                log::warn!("referrers of {subject} served as cached: {e}");
                self.back_off(repo, &key);
                return Ok(());
            }
        };
        let mut missing = Vec::new();
        for digest in digests {
            if self.stored(repo, &digest).await?.is_none() {
                missing.push(digest);
            }
        }
        // A few at once: a subject's signatures and attestations may be many.
        let of = subject.clone();
        self.few_at_once(repo, missing, move |mirror, repo, digest| {
            let subject = of.clone();
            async move {
                if let Err(e) = mirror.fetch_manifest(&repo, &digest, None).await {
                    log::warn!("referrer {digest} of {subject}: {e}");
                }
            }
        })
        .await;
        self.mark_checked(repo, &key);
        Ok(())
    }

    async fn cached(&self, repo: &RepoName, digest: &Digest) -> Result<StoredManifest> {
        match self.stored(repo, digest).await? {
            Some(manifest) => Ok(manifest),
            None => self.manifest_by_digest(repo, digest).await,
        }
    }
}
