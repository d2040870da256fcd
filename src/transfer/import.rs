//! `berth import`: an OCI layout, as a tar archive or a directory (berth's
//! own, or skopeo's `oci:` and `oci-archive:`), into a store. Every blob is
//! checked against its digest and size while it is staged (held, served by
//! nobody); every image is checked whole, its manifests' references and
//! sizes included, before one transaction makes it visible with its tag.
//! A damaged image is named with its bad blob, and nothing of it shows.
//! Blobs already held are not read again, so a second import changes
//! nothing and an interrupted one goes on where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::archive::{Layout, MAX_MANIFEST};
use super::layout::{self, MAX_NESTING, REF_NAME};
use super::progress::Progress;
use crate::oci::{Digest, RepoName, Tag};
use crate::store::{self, Appender, ImportedManifest, Store};

const READ_SIZE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("reading the layout: {0}")]
    Io(#[from] io::Error),
    #[error("not an OCI layout: {0}")]
    NotALayout(String),
    #[error("the archive holds an unsafe entry {0:?}: refused, nothing imported")]
    Unsafe(String),
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The names of the images made visible, in index.json's order.
    pub imported: Vec<String>,
    /// Blobs read and checked, and blobs already held (not read again).
    pub blobs_read: usize,
    pub blobs_held: usize,
    pub bytes: u64,
    /// One line per damaged or incomplete image, naming what is wrong.
    pub damage: Vec<String>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    urls: Vec<String>,
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        layout::platform_name(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// What a manifest refers to, with the sizes it claims.
#[derive(Deserialize)]
struct References {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
}

/// Imports the layout at `source` into `store`. `into` names the
/// repository of images whose layout name is a bare tag (as skopeo's
/// `oci:DIR:TAG` writes it).
pub fn import(
    store: &Arc<Store>,
    source: &Path,
    into: Option<&RepoName>,
    progress: &Progress,
) -> Result<Summary, Error> {
    let layout = Layout::open(source)?;
    let mut summary = Summary::default();
    let mut target = IntoStore {
        store,
        bad: BTreeMap::new(),
    };
    let total = layout.blobs().map(|(_, size)| size).sum();
    progress.start(total, layout.blobs().count() as u64);
    // Every blob is staged first, in the layout's order: one pass over
    // an archive, and each image then checked against what is held.
    for (digest, size) in layout.blobs() {
        if store.held_blob(digest)?.is_some() {
            summary.blobs_held += 1;
            progress.skip(size);
            continue;
        }
        let reader = progress.reader(layout.open_blob(digest)?);
        if let Some(why) = stage(store, digest, size, reader)? {
            target.bad.insert(digest.clone(), why);
        } else {
            summary.blobs_read += 1;
            summary.bytes += size;
        }
        progress.blob_done();
    }
    import_images(&layout, &mut target, into, &mut summary, progress)?;
    Ok(summary)
}

/// Where an import puts its images, and what it holds for them.
pub(super) trait Destination {
    /// The size of blob `digest` if it is whole and at hand for `repo`;
    /// `Err(why)` if it cannot be used (the layout's copy is damaged).
    fn blob(&mut self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, String>;
    /// The bytes of a manifest [`blob`](Destination::blob) found whole.
    fn read(&mut self, digest: &Digest) -> Result<Vec<u8>, String>;
    /// The bytes of manifest `digest` that `repo` holds already (the base
    /// of a delta), if they are `size` long.
    fn stored_manifest(&mut self, repo: &RepoName, digest: &Digest, size: u64) -> Option<Vec<u8>>;
    /// Makes one checked image visible: its blobs, its manifests (each
    /// after all it names) and its tag.
    fn commit(
        &mut self,
        repo: &RepoName,
        blobs: Vec<Digest>,
        manifests: Vec<ImportedManifest>,
        tag: Option<(Tag, Digest)>,
    ) -> Result<(), String>;
}

/// Checks each image of the layout's index whole and commits it, or
/// notes what is wrong with it.
pub(super) fn import_images(
    layout: &Layout,
    destination: &mut dyn Destination,
    into: Option<&RepoName>,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<(), Error> {
    let index: Index = serde_json::from_slice(layout.index())
        .map_err(|e| Error::NotALayout(format!("index.json: {e}")))?;
    let referrers = referrers_among(layout);
    for entry in &index.manifests {
        let name = entry.annotations.get(REF_NAME).cloned().unwrap_or_default();
        match import_entry(layout, destination, entry, &name, into, &referrers) {
            Ok(()) => {
                progress.say(&format!("imported {name}"));
                summary.imported.push(name);
            }
            Err(why) => {
                let damage = format!("{name}: {why}");
                progress.say(&format!("refused: {damage}"));
                summary.damage.push(damage);
            }
        }
    }
    progress.finish();
    Ok(())
}

/// A store: blobs staged into it before any image is checked.
struct IntoStore<'a> {
    store: &'a Arc<Store>,
    /// Blobs whose bytes did not match their names, and why.
    bad: BTreeMap<Digest, String>,
}

impl Destination for IntoStore<'_> {
    fn blob(&mut self, _repo: &RepoName, digest: &Digest) -> Result<Option<u64>, String> {
        if let Some(why) = self.bad.get(digest) {
            return Err(format!("{digest} is damaged: {why}"));
        }
        self.store
            .held_blob(digest)
            .map_err(|e| format!("{digest}: {e}"))
    }

    fn read(&mut self, digest: &Digest) -> Result<Vec<u8>, String> {
        self.store
            .read_held_blob(digest, MAX_MANIFEST)
            .map_err(|e| format!("{digest}: {e}"))
    }

    fn stored_manifest(&mut self, repo: &RepoName, digest: &Digest, size: u64) -> Option<Vec<u8>> {
        let stored = self
            .store
            .get_manifest(repo, &crate::oci::Reference::Digest(digest.clone()))
            .ok()?;
        (stored.body.len() as u64 == size).then(|| stored.body.into())
    }

    fn commit(
        &mut self,
        repo: &RepoName,
        blobs: Vec<Digest>,
        manifests: Vec<ImportedManifest>,
        tag: Option<(Tag, Digest)>,
    ) -> Result<(), String> {
        self.store
            .import_image(repo, blobs, manifests, tag)
            .map_err(|e| e.to_string())
    }
}

/// Stages one blob: written, hashed, checked against its name and size,
/// then held by the store but linked nowhere. A blob that does not match
/// gives why, not an error: only the images that need it are refused.
fn stage(
    store: &Arc<Store>,
    digest: &Digest,
    size: u64,
    mut reader: impl Read,
) -> Result<Option<String>, Error> {
    let appender = store.stage_blob(Some(size), digest.algorithm())?;
    let appender = write_beside_reading(appender, &mut reader)?;
    match appender.finish(digest) {
        Ok(_) => Ok(None),
        Err(e @ (store::Error::DigestMismatch { .. } | store::Error::SizeMismatch { .. })) => {
            Ok(Some(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads `reader` to its end while another thread writes and hashes what
/// was read before: the read, the hash and the disk each go at their own
/// pace instead of in turn.
fn write_beside_reading(mut appender: Appender, reader: &mut impl Read) -> Result<Appender, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
    let (read, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> store::Result<Appender> {
            for chunk in rx {
                appender.write(&[chunk])?;
            }
            Ok(appender)
        });
        let read = (|| -> io::Result<()> {
            loop {
                let mut buf = vec![0u8; READ_SIZE];
                let n = read_up_to(reader, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                // A writer that stopped has its own error to tell.
                if tx.send(Bytes::from(buf)).is_err() {
                    return Ok(());
                }
            }
        })();
        drop(tx);
        (read, writer.join().expect("the writer does not panic"))
    });
    let appender = written?;
    read?;
    Ok(appender)
}

/// Fills `buf` as far as the reader goes; short only at its end.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The layout's manifests that have a subject, by subject: they come
/// with whatever image holds their subject. Their bytes are checked when
/// that image is.
fn referrers_among(layout: &Layout) -> BTreeMap<Digest, Vec<Digest>> {
    let mut by_subject: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    for (digest, size) in layout.blobs() {
        if size > MAX_MANIFEST {
            continue;
        }
        let mut body = Vec::new();
        if layout
            .open_blob(digest)
            .and_then(|r| r.take(MAX_MANIFEST).read_to_end(&mut body))
            .is_err()
        {
            continue;
        }
        // Layers are not JSON: they fail at their first byte.
        let Ok(refs) = serde_json::from_slice::<References>(&body) else {
            continue;
        };
        if let Some(subject) = refs.subject.and_then(|s| Digest::parse(&s.digest)) {
            by_subject.entry(subject).or_default().push(digest.clone());
        }
    }
    by_subject
}

/// Checks one image of index.json whole and makes it visible, or says
/// what is wrong with it: every missing or bad blob, by name.
fn import_entry(
    layout: &Layout,
    destination: &mut dyn Destination,
    entry: &Descriptor,
    name: &str,
    into: Option<&RepoName>,
    referrers: &BTreeMap<Digest, Vec<Digest>>,
) -> Result<(), String> {
    let (repo, tag) = parse_name(name, into)?;
    let root = Digest::parse(&entry.digest).ok_or(format!("bad digest {:?}", entry.digest))?;
    let platforms = entry
        .annotations
        .get(layout::PLATFORMS)
        .map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>());
    let absent = entry
        .annotations
        .get(layout::ABSENT)
        .map(|a| a.split(',').filter_map(Digest::parse).collect())
        .unwrap_or_default();
    let mut walk = Walk {
        layout,
        destination,
        repo: &repo,
        platforms,
        absent,
        referrers,
        seen: BTreeSet::new(),
        blobs: BTreeSet::new(),
        manifests: Vec::new(),
        problems: Vec::new(),
        depth: 0,
    };
    walk.manifest(entry.media_type.clone(), &root, entry.size);
    if !walk.problems.is_empty() {
        return Err(walk.problems.join("; "));
    }
    let (blobs, manifests) = (walk.blobs.into_iter().collect(), walk.manifests);
    let tag = tag.map(|tag| (tag, root.clone()));
    destination.commit(&repo, blobs, manifests, tag)
}

/// `docker.io/library/a:1` -> (repository, tag); `repo@digest` -> no tag;
/// a bare tag goes into `into`.
fn parse_name(name: &str, into: Option<&RepoName>) -> Result<(RepoName, Option<Tag>), String> {
    if let Some((repo, _)) = name.split_once('@') {
        let repo = RepoName::parse(repo).ok_or(format!("{repo:?} is no repository name"))?;
        return Ok((repo, None));
    }
    match name.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
        Some((repo, tag)) => {
            let repo = RepoName::parse(repo).ok_or(format!("{repo:?} is no repository name"))?;
            let tag = Tag::parse(tag).ok_or(format!("{tag:?} is no tag"))?;
            Ok((repo, Some(tag)))
        }
        None => {
            let tag = Tag::parse(name).ok_or(format!("{name:?} names no image"))?;
            let repo = into.ok_or(format!(
                "{name:?} names no repository (a bare tag, as skopeo's oci:DIR:TAG writes): \
                 import it with berth import --into REPOSITORY, or copy it into the layout \
                 with a full name (oci:DIR:REPOSITORY:TAG)"
            ))?;
            Ok((repo.clone(), Some(tag)))
        }
    }
}

/// One image's check: what it needs, and what is wrong.
struct Walk<'a> {
    layout: &'a Layout,
    destination: &'a mut dyn Destination,
    repo: &'a RepoName,
    /// The platforms the image was exported for, if not all: children of
    /// other platforms are absent on purpose.
    platforms: Option<Vec<String>>,
    /// Manifests the export's source did not hold (a sparse index's
    /// children), absent on purpose.
    absent: BTreeSet<Digest>,
    referrers: &'a BTreeMap<Digest, Vec<Digest>>,
    seen: BTreeSet<Digest>,
    blobs: BTreeSet<Digest>,
    manifests: Vec<ImportedManifest>,
    problems: Vec<String>,
    /// Manifests being walked, one inside the next.
    depth: usize,
}

impl Walk<'_> {
    /// Checks manifest `digest` and all it needs, children first, then its
    /// referrers, unless it lies deeper than [`MAX_NESTING`].
    fn manifest(&mut self, media_type: Option<String>, digest: &Digest, size: u64) {
        if self.depth == MAX_NESTING {
            let why = format!("{digest} is nested deeper than {MAX_NESTING} manifests");
            return self.problems.push(why);
        }
        self.depth += 1;
        self.visit(media_type, digest, size);
        self.depth -= 1;
    }

    /// As [`Walk::manifest`], one level. A manifest already in the
    /// repository (the base of a delta) may be absent from the layout.
    fn visit(&mut self, media_type: Option<String>, digest: &Digest, size: u64) {
        if !self.seen.insert(digest.clone()) {
            return;
        }
        // Read from the layout if it is there; else (the base of a delta,
        // which a registry may also report as a blob) as already stored.
        let read = self
            .check(digest, size)
            .and_then(|()| self.destination.read(digest));
        let body = match read {
            Ok(body) => body,
            Err(why) => match self.destination.stored_manifest(self.repo, digest, size) {
                Some(body) => body,
                None => return self.problems.push(why),
            },
        };
        let refs: References = match serde_json::from_slice(&body) {
            Ok(refs) => refs,
            Err(e) => return self.problems.push(format!("{digest} is no manifest: {e}")),
        };
        let media_type = media_type.or(refs.media_type.clone());
        for blob in refs.config.iter().chain(&refs.layers) {
            if crate::oci::manifest::is_foreign(blob.media_type.as_deref(), &blob.urls) {
                continue;
            }
            match Digest::parse(&blob.digest) {
                Some(d) => match self.check(&d, blob.size) {
                    Ok(()) => {
                        self.blobs.insert(d);
                    }
                    Err(why) => self.problems.push(why),
                },
                None => self.problems.push(format!("bad digest {:?}", blob.digest)),
            }
        }
        for child in &refs.manifests {
            let Some(d) = Digest::parse(&child.digest) else {
                self.problems.push(format!("bad digest {:?}", child.digest));
                continue;
            };
            if (self.absent.contains(&d) || self.left_out(child)) && !self.present(&d, child.size) {
                // The index stays sparse, as it was exported.
                continue;
            }
            self.manifest(child.media_type.clone(), &d, child.size);
        }
        self.manifests.push(ImportedManifest {
            digest: digest.clone(),
            media_type,
            body,
        });
        for referrer in self.referrers.get(digest).into_iter().flatten() {
            let size = self.layout.size(referrer).unwrap_or_default();
            self.manifest(None, referrer, size);
        }
    }

    /// Whether an export for some platforms left this child out.
    fn left_out(&self, child: &Descriptor) -> bool {
        self.platforms.as_ref().is_some_and(|platforms| {
            !child
                .platform
                .as_ref()
                .is_some_and(|p| super::export::matches_any(&p.name(), platforms))
        })
    }

    fn present(&mut self, digest: &Digest, size: u64) -> bool {
        self.check(digest, size).is_ok()
            || self
                .destination
                .stored_manifest(self.repo, digest, size)
                .is_some()
    }

    /// A blob the image needs: whole, and of the size its descriptor says.
    fn check(&mut self, digest: &Digest, size: u64) -> Result<(), String> {
        let held = self
            .destination
            .blob(self.repo, digest)?
            .ok_or(format!("{digest} is missing"))?;
        if held != size {
            return Err(format!(
                "{digest} holds {held} bytes; its descriptor says {size}"
            ));
        }
        Ok(())
    }
}
