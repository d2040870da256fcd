//! A running registry on the other side of `--registry` (a live berth,
//! whose database is held open, or any OCI registry): images exported
//! from it and imported into it through the client pull-through uses,
//! with every byte it sends checked against its digest.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;

use super::archive::{self, Layout, MAX_MANIFEST};
use super::checked::Checked;
use super::export::{self, Manifest, Source};
use super::import::{self, Destination, Summary};
use super::progress::Progress;
use crate::oci::manifest;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::store::ImportedManifest;
use crate::upstream::{self, Connector, Settings, Upstream};

/// Enough repositories and tags for any registry one carries by hand.
const MAX_NAMES: usize = 1_000_000;

pub struct Registry {
    runtime: tokio::runtime::Runtime,
    upstream: Upstream,
    /// Manifests fetched by digest, which never change.
    manifests: HashMap<(RepoName, Digest), (String, Vec<u8>)>,
}

impl Registry {
    /// A client of the registry at `url` (`http[s]://host[:port]`).
    pub fn connect(url: &str, settings: Settings) -> io::Result<Registry> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let upstream = {
            let _entered = runtime.enter();
            Connector::new(settings)?.upstream(url)?
        };
        Ok(Registry {
            runtime,
            upstream,
            manifests: HashMap::new(),
        })
    }

    fn manifest_by_digest(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(String, Vec<u8>)>, upstream::Error> {
        let key = (repo.clone(), digest.clone());
        if let Some(known) = self.manifests.get(&key) {
            return Ok(Some(known.clone()));
        }
        let Some((media_type, body)) = self.fetch_manifest(repo, digest.as_str())? else {
            return Ok(None);
        };
        if Digest::with(digest.algorithm(), &body) != *digest {
            return Err(self.upstream.invalid(format!(
                "manifest {digest} of {} has bytes of another digest",
                repo.as_str()
            )));
        }
        self.manifests
            .insert(key, (media_type.clone(), body.clone()));
        Ok(Some((media_type, body)))
    }

    /// A manifest and its media type, as the body says if the answer's
    /// Content-Type does not name one berth knows.
    fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<(String, Vec<u8>)>, upstream::Error> {
        let fetched = self.runtime.block_on(self.upstream.manifest(
            repo.as_str(),
            reference,
            MAX_MANIFEST as usize,
        ))?;
        let Some(fetched) = fetched else {
            return Ok(None);
        };
        let content_type = fetched.media_type.split(';').next().unwrap_or("").trim();
        let media_type = manifest::parse(Some(content_type), &fetched.body)
            .or_else(|_| manifest::parse(None, &fetched.body))
            .map_err(|why| {
                self.upstream
                    .invalid(format!("manifest {reference}: {why}"))
            })?
            .media_type
            .as_str()
            .to_owned();
        Ok(Some((media_type, fetched.body)))
    }

    fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, upstream::Error> {
        self.runtime
            .block_on(self.upstream.blob_size(repo.as_str(), digest))
    }
}

impl Source for Registry {
    fn repositories(&mut self) -> Result<Vec<RepoName>, export::Error> {
        let names = self.runtime.block_on(self.upstream.catalog(MAX_NAMES))?;
        let mut repos: Vec<RepoName> = names.iter().filter_map(|n| RepoName::parse(n)).collect();
        repos.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(repos)
    }

    fn tags(&mut self, repo: &RepoName) -> Result<Vec<String>, export::Error> {
        let tags = self
            .runtime
            .block_on(self.upstream.tags(repo.as_str(), MAX_NAMES))?;
        Ok(tags.unwrap_or_default())
    }

    fn manifest(
        &mut self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, export::Error> {
        let found = match reference {
            Reference::Digest(digest) => self
                .manifest_by_digest(repo, digest)?
                .map(|(media_type, body)| (digest.clone(), media_type, body)),
            Reference::Tag(tag) => self
                .fetch_manifest(repo, tag.as_str())?
                .map(|(media_type, body)| (Digest::of(&body), media_type, body)),
        };
        Ok(found.map(|(digest, media_type, body)| Manifest {
            digest,
            media_type,
            body,
        }))
    }

    fn blob_size(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, export::Error> {
        Ok(Registry::blob_size(self, repo, digest)?)
    }

    fn referrers(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Digest>, export::Error> {
        let found = self.runtime.block_on(self.upstream.referrers(
            repo.as_str(),
            digest,
            MAX_MANIFEST as usize,
        ))?;
        // A registry without the referrers API has none to give.
        Ok(found.unwrap_or_default())
    }

    fn open_blob(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Box<dyn Read + Send + '_>, export::Error> {
        let blob = self
            .runtime
            .block_on(self.upstream.blob(repo.as_str(), digest))?;
        let Some(blob) = blob else {
            return Err(export::Error::Missing {
                image: repo.as_str().to_owned(),
                blob: digest.clone(),
            });
        };
        let body = Download {
            registry: self,
            body: blob.body,
            pending: bytes::Bytes::new(),
        };
        // What a registry sends is held to its digest and size.
        Ok(Box::new(Checked::new(body, digest, size)))
    }
}

/// A blob's body from the registry, as a reader.
struct Download<'a> {
    registry: &'a Registry,
    body: crate::upstream::Body,
    pending: bytes::Bytes,
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let next = self
                .registry
                .runtime
                .block_on(self.registry.upstream.next_chunk(&mut self.body))
                .map_err(io::Error::other)?;
            match next {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        bytes::Buf::advance(&mut self.pending, n);
        Ok(n)
    }
}

/// Imports the layout at `source` into the registry: each image checked
/// whole (every blob of the layout it needs read and verified, the rest
/// found in the registry) before any of it is pushed, its tag last.
pub fn import(
    registry: &mut Registry,
    source: &Path,
    into: Option<&RepoName>,
    progress: &Progress,
) -> Result<Summary, import::Error> {
    let layout = Layout::open(source)?;
    let mut summary = Summary::default();
    // Each blob is read twice, to verify and to send.
    let total = layout.blobs().map(|(_, size)| size).sum::<u64>() * 2;
    progress.start(total, layout.blobs().count() as u64);
    let mut target = IntoRegistry {
        registry,
        layout: &layout,
        progress,
        verdicts: HashMap::new(),
        present: HashMap::new(),
        pushed: HashMap::new(),
        read: 0,
        held: 0,
        bytes: 0,
    };
    import::import_images(&layout, &mut target, into, &mut summary, progress)?;
    summary.blobs_read = target.read;
    summary.blobs_held = target.held;
    summary.bytes = target.bytes;
    Ok(summary)
}

struct IntoRegistry<'a> {
    registry: &'a mut Registry,
    layout: &'a Layout,
    progress: &'a Progress,
    /// The layout's blobs read so far: their size, or why they are bad.
    verdicts: HashMap<Digest, Result<u64, String>>,
    /// Blobs the registry holds, by repository.
    present: HashMap<(RepoName, Digest), u64>,
    /// The repository each blob was first sent to, to mount from.
    pushed: HashMap<Digest, RepoName>,
    read: usize,
    held: usize,
    bytes: u64,
}

impl IntoRegistry<'_> {
    fn verify(&mut self, digest: &Digest, size: u64) -> Result<u64, String> {
        if let Some(verdict) = self.verdicts.get(digest) {
            return verdict.clone();
        }
        let verdict = self
            .layout
            .open_blob(digest)
            .and_then(|reader| archive::verify(&mut self.progress.reader(reader), digest, size))
            .map_err(|e| format!("{digest}: {e}"))
            .and_then(|checked| checked.map_err(|why| format!("{digest} is damaged: {why}")))
            .map(|()| size);
        self.verdicts.insert(digest.clone(), verdict.clone());
        verdict
    }

    fn send(&mut self, repo: &RepoName, digest: &Digest) -> Result<(), upstream::Error> {
        let size = self.layout.size(digest).unwrap_or_default();
        if self.present.contains_key(&(repo.clone(), digest.clone())) {
            self.held += 1;
            self.progress.skip(size * 2);
            return Ok(());
        }
        let runtime = &self.registry.runtime;
        let upstream = &self.registry.upstream;
        if let Some(from) = self.pushed.get(digest)
            && runtime.block_on(upstream.mount(repo.as_str(), digest, from.as_str()))?
        {
            self.progress.skip(size);
            return Ok(());
        }
        let reader = self
            .layout
            .open_blob(digest)
            .map_err(|e| upstream.invalid(format!("{digest} cannot be read again: {e}")))?;
        let reader = Box::new(self.progress.reader(reader));
        runtime.block_on(upstream.push_blob(repo.as_str(), digest, size, reader))?;
        self.progress.blob_done();
        self.pushed.entry(digest.clone()).or_insert(repo.clone());
        self.read += 1;
        self.bytes += size;
        Ok(())
    }
}

impl Destination for IntoRegistry<'_> {
    fn blob(&mut self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, String> {
        let key = (repo.clone(), digest.clone());
        if let Some(&size) = self.present.get(&key) {
            return Ok(Some(size));
        }
        // A registry verifies what it holds: what it has is not read again,
        // so an interrupted import goes on where it stopped.
        match self.registry.blob_size(repo, digest) {
            Ok(Some(size)) => {
                self.present.insert(key, size);
                return Ok(Some(size));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{digest}: {e}")),
        }
        match self.layout.size(digest) {
            Some(size) => self.verify(digest, size).map(Some),
            None => Ok(None),
        }
    }

    fn read(&mut self, digest: &Digest) -> Result<Vec<u8>, String> {
        let size = self.layout.size(digest).unwrap_or_default();
        self.layout.read_checked(digest, size)
    }

    fn stored_manifest(&mut self, repo: &RepoName, digest: &Digest, size: u64) -> Option<Vec<u8>> {
        let (_, body) = self.registry.manifest_by_digest(repo, digest).ok()??;
        (body.len() as u64 == size).then_some(body)
    }

    fn commit(
        &mut self,
        repo: &RepoName,
        blobs: Vec<Digest>,
        manifests: Vec<ImportedManifest>,
        tag: Option<(Tag, Digest)>,
    ) -> Result<(), String> {
        for blob in &blobs {
            self.send(repo, blob).map_err(|e| e.to_string())?;
        }
        let mut types = BTreeMap::new();
        for m in &manifests {
            let media_type = match &m.media_type {
                Some(media_type) => media_type.clone(),
                None => manifest::parse(None, &m.body)?
                    .media_type
                    .as_str()
                    .to_owned(),
            };
            types.insert(m.digest.clone(), media_type.clone());
            let pushed = self
                .registry
                .runtime
                .block_on(self.registry.upstream.push_manifest(
                    repo.as_str(),
                    m.digest.as_str(),
                    &media_type,
                    m.body.clone(),
                ));
            pushed.map_err(|e| format!("{}: {e}", m.digest))?;
        }
        if let Some((tag, root)) = tag {
            let body = &manifests
                .iter()
                .find(|m| m.digest == root)
                .ok_or(format!("{root} was not checked"))?
                .body;
            let pushed = self
                .registry
                .runtime
                .block_on(self.registry.upstream.push_manifest(
                    repo.as_str(),
                    tag.as_str(),
                    &types[&root],
                    body.clone(),
                ));
            pushed.map_err(|e| format!("{}:{}: {e}", repo.as_str(), tag.as_str()))?;
        }
        Ok(())
    }
}
