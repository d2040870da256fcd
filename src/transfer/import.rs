//! `berth import`: an OCI layout, as a tar archive or a directory (berth's
//! own, or skopeo's `oci:` and `oci-archive:`), into a store. Every blob is
//! checked against its digest and size while it is staged (held, served by
//! nobody); every image is checked whole, its manifests' references and
//! sizes included, before one transaction makes it visible with its tag.
//! A damaged image is named with its bad blob, and nothing of it shows.
//! Blobs already held are not read again, so a second import changes
//! nothing and an interrupted one goes on where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::layout::{self, REF_NAME};
use crate::oci::{Digest, RepoName, Tag};
use crate::store::{self, Appender, ImportedManifest, Store};

/// Manifests and index.json are small; a bigger one is damage.
const MAX_MANIFEST: u64 = 4 << 20;
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
) -> Result<Summary, Error> {
    let mut summary = Summary::default();
    let mut bad: BTreeMap<Digest, String> = BTreeMap::new();
    let mut held: BTreeSet<Digest> = BTreeSet::new();
    let index = if source.is_dir() {
        stage_dir(store, source, &mut summary, &mut bad, &mut held)?
    } else {
        stage_tar(store, source, &mut summary, &mut bad, &mut held)?
    };
    let index: Index = serde_json::from_slice(&index)
        .map_err(|e| Error::NotALayout(format!("index.json: {e}")))?;
    let referrers = referrers_among(store, &held)?;
    for entry in &index.manifests {
        let name = entry.annotations.get(REF_NAME).cloned().unwrap_or_default();
        match import_entry(store, entry, &name, into, &bad, &referrers) {
            Ok(()) => summary.imported.push(name),
            Err(why) => summary.damage.push(format!("{name}: {why}")),
        }
    }
    Ok(summary)
}

/// Reads `oci-layout`, `index.json` and every blob of a tar archive,
/// staging each blob not already held. Gives back index.json.
fn stage_tar(
    store: &Arc<Store>,
    path: &Path,
    summary: &mut Summary,
    bad: &mut BTreeMap<Digest, String>,
    held: &mut BTreeSet<Digest>,
) -> Result<Vec<u8>, Error> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut index = None;
    let mut marker = false;
    for entry in archive.entries_with_seek()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        let safe = entry
            .path()?
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe || !(kind.is_file() || kind.is_dir()) {
            return Err(Error::Unsafe(name));
        }
        let name = name.trim_start_matches("./");
        if kind.is_dir() {
            continue;
        }
        match name {
            layout::LAYOUT_FILE => {
                check_marker(&read_small(&mut entry)?)?;
                marker = true;
            }
            layout::INDEX_FILE => index = Some(read_small(&mut entry)?),
            _ => {
                if let Some(digest) = layout::blob_digest(name) {
                    let size = entry.header().size()?;
                    stage(store, &digest, size, &mut entry, summary, bad, held)?;
                }
            }
        }
    }
    if !marker {
        return Err(Error::NotALayout("no oci-layout".into()));
    }
    index.ok_or_else(|| Error::NotALayout("no index.json".into()))
}

/// The same for a layout directory.
fn stage_dir(
    store: &Arc<Store>,
    dir: &Path,
    summary: &mut Summary,
    bad: &mut BTreeMap<Digest, String>,
    held: &mut BTreeSet<Digest>,
) -> Result<Vec<u8>, Error> {
    let marker = std::fs::read(dir.join(layout::LAYOUT_FILE))
        .map_err(|e| Error::NotALayout(format!("oci-layout: {e}")))?;
    check_marker(&marker)?;
    let index = std::fs::read(dir.join(layout::INDEX_FILE))
        .map_err(|e| Error::NotALayout(format!("index.json: {e}")))?;
    for algorithm in std::fs::read_dir(dir.join("blobs"))? {
        let algorithm = algorithm?;
        for file in std::fs::read_dir(algorithm.path())? {
            let file = file?;
            let name = format!(
                "blobs/{}/{}",
                algorithm.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            );
            let Some(digest) = layout::blob_digest(&name) else {
                continue;
            };
            // Only plain files: a link could name anything on this machine.
            if !file.file_type()?.is_file() {
                return Err(Error::Unsafe(name));
            }
            let mut reader = File::open(file.path())?;
            let size = reader.metadata()?.len();
            stage(store, &digest, size, &mut reader, summary, bad, held)?;
        }
    }
    Ok(index)
}

fn check_marker(bytes: &[u8]) -> Result<(), Error> {
    let marker: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::NotALayout(format!("oci-layout: {e}")))?;
    if marker["imageLayoutVersion"] == "1.0.0" {
        Ok(())
    } else {
        Err(Error::NotALayout(format!("oci-layout says {marker}")))
    }
}

fn read_small(reader: &mut impl Read) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    reader.take(MAX_MANIFEST + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(Error::NotALayout("a layout file over 4 MiB".into()));
    }
    Ok(bytes)
}

/// Stages one blob unless it is held already: written, hashed, checked
/// against its name and size, then held by the store but linked nowhere.
/// A blob that does not match is noted as bad, not fatal: only the images
/// that need it are refused.
fn stage(
    store: &Arc<Store>,
    digest: &Digest,
    size: u64,
    reader: &mut impl Read,
    summary: &mut Summary,
    bad: &mut BTreeMap<Digest, String>,
    held: &mut BTreeSet<Digest>,
) -> Result<(), Error> {
    if store.held_blob(digest)?.is_some() {
        summary.blobs_held += 1;
        held.insert(digest.clone());
        return Ok(());
    }
    let appender = store.stage_blob(Some(size), digest.algorithm())?;
    let appender = write_beside_reading(appender, reader)?;
    match appender.finish(digest) {
        Ok(_) => {
            summary.blobs_read += 1;
            summary.bytes += size;
            held.insert(digest.clone());
            Ok(())
        }
        Err(e @ (store::Error::DigestMismatch { .. } | store::Error::SizeMismatch { .. })) => {
            bad.insert(digest.clone(), e.to_string());
            Ok(())
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
/// with whatever image holds their subject.
fn referrers_among(
    store: &Store,
    held: &BTreeSet<Digest>,
) -> Result<BTreeMap<Digest, Vec<Digest>>, Error> {
    let mut by_subject: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    for digest in held {
        if store
            .held_blob(digest)?
            .is_none_or(|size| size > MAX_MANIFEST)
        {
            continue;
        }
        let body = store.read_held_blob(digest, MAX_MANIFEST)?;
        // Layers are not JSON: they fail at their first byte.
        let Ok(refs) = serde_json::from_slice::<References>(&body) else {
            continue;
        };
        if let Some(subject) = refs.subject.and_then(|s| Digest::parse(&s.digest)) {
            by_subject.entry(subject).or_default().push(digest.clone());
        }
    }
    Ok(by_subject)
}

/// Checks one image of index.json whole and makes it visible, or says
/// what is wrong with it: every missing or bad blob, by name.
fn import_entry(
    store: &Store,
    entry: &Descriptor,
    name: &str,
    into: Option<&RepoName>,
    bad: &BTreeMap<Digest, String>,
    referrers: &BTreeMap<Digest, Vec<Digest>>,
) -> Result<(), String> {
    let (repo, tag) = parse_name(name, into)?;
    let root = Digest::parse(&entry.digest).ok_or(format!("bad digest {:?}", entry.digest))?;
    let platforms = entry
        .annotations
        .get(layout::PLATFORMS)
        .map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>());
    let mut walk = Walk {
        store,
        repo: &repo,
        platforms,
        bad,
        referrers,
        seen: BTreeSet::new(),
        blobs: BTreeSet::new(),
        manifests: Vec::new(),
        problems: Vec::new(),
    };
    walk.manifest(entry.media_type.clone(), &root, entry.size);
    if !walk.problems.is_empty() {
        return Err(walk.problems.join("; "));
    }
    let tag = tag.map(|tag| (tag, root.clone()));
    store
        .import_image(&repo, walk.blobs.into_iter().collect(), walk.manifests, tag)
        .map_err(|e| e.to_string())
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
                "{name:?} names no repository: give --into REPOSITORY"
            ))?;
            Ok((repo.clone(), Some(tag)))
        }
    }
}

/// One image's check: what it needs, and what is wrong.
struct Walk<'a> {
    store: &'a Store,
    repo: &'a RepoName,
    /// The platforms the image was exported for, if not all: children of
    /// other platforms are absent on purpose.
    platforms: Option<Vec<String>>,
    bad: &'a BTreeMap<Digest, String>,
    referrers: &'a BTreeMap<Digest, Vec<Digest>>,
    seen: BTreeSet<Digest>,
    blobs: BTreeSet<Digest>,
    manifests: Vec<ImportedManifest>,
    problems: Vec<String>,
}

impl Walk<'_> {
    /// Checks manifest `digest` and all it needs, children first, then its
    /// referrers. A manifest already in the repository (the base of a
    /// delta) may be absent from the layout.
    fn manifest(&mut self, media_type: Option<String>, digest: &Digest, size: u64) {
        if !self.seen.insert(digest.clone()) {
            return;
        }
        let body = match check(self.store, digest, size, self.bad) {
            Ok(()) => match self.store.read_held_blob(digest, MAX_MANIFEST) {
                Ok(body) => body,
                Err(e) => return self.problems.push(format!("{digest}: {e}")),
            },
            Err(why) => match self.stored(digest, size) {
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
            if !blob.urls.is_empty() {
                continue;
            }
            match Digest::parse(&blob.digest) {
                Some(d) => match check(self.store, &d, blob.size, self.bad) {
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
            if self.left_out(child) && !self.present(&d, child.size) {
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
            let size = self
                .store
                .held_blob(referrer)
                .ok()
                .flatten()
                .unwrap_or_default();
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

    fn present(&self, digest: &Digest, size: u64) -> bool {
        check(self.store, digest, size, self.bad).is_ok() || self.stored(digest, size).is_some()
    }

    /// A manifest the repository holds already, if its size is right.
    fn stored(&self, digest: &Digest, size: u64) -> Option<Vec<u8>> {
        let stored = self
            .store
            .get_manifest(self.repo, &crate::oci::Reference::Digest(digest.clone()))
            .ok()?;
        (stored.body.len() as u64 == size).then_some(stored.body)
    }
}

/// A blob the image needs: held, and of the size its descriptor says.
fn check(
    store: &Store,
    digest: &Digest,
    size: u64,
    bad: &BTreeMap<Digest, String>,
) -> Result<(), String> {
    if let Some(why) = bad.get(digest) {
        return Err(format!("{digest} is damaged: {why}"));
    }
    let held = store
        .held_blob(digest)
        .map_err(|e| e.to_string())?
        .ok_or(format!("{digest} is missing"))?;
    if held != size {
        return Err(format!(
            "{digest} holds {held} bytes; its descriptor says {size}"
        ));
    }
    Ok(())
}
