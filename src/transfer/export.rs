//! `berth export`: a selection of a store's images, with everything they
//! need (every platform of an index that is here, nested indexes, and the
//! referrers of each manifest), as one OCI layout in a tar archive. The
//! archive is deterministic: the same images give the same bytes, and its
//! sha256 is reported for the courier's log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::checked::Mismatch;
use super::layout::{self, Entry, MAX_NESTING};
use super::progress::Progress;
use crate::oci::manifest;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Registry(#[from] crate::upstream::Error),
    #[error("{0:?} names no repository, tag or manifest here")]
    NothingMatches(String),
    #[error("{image} needs {blob}, which this registry does not hold (pull it first)")]
    Missing { image: String, blob: Digest },
    #[error("{image}: {manifest} is nested deeper than {MAX_NESTING} manifests")]
    TooDeep { image: String, manifest: Digest },
    #[error("the earlier export {0}")]
    Earlier(String),
    #[error("{blob} as the source sent it is damaged: {why}")]
    Damaged { blob: Digest, why: String },
}

/// What to export.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every tag of a repository.
    Repository(RepoName),
    Tag(RepoName, Tag),
    Digest(RepoName, Digest),
    /// Every tag of every repository whose name starts with this.
    Prefix(String),
}

impl Selection {
    /// `repo`, `repo:tag`, `repo@digest`, or `prefix*`.
    pub fn parse(s: &str) -> Result<Selection, String> {
        let bad =
            || format!("{s:?} is not REPOSITORY, REPOSITORY:TAG, REPOSITORY@DIGEST or PREFIX*");
        if let Some(prefix) = s.strip_suffix('*') {
            return Ok(Selection::Prefix(prefix.to_owned()));
        }
        if let Some((repo, digest)) = s.split_once('@') {
            let repo = RepoName::parse(repo).ok_or_else(bad)?;
            return Ok(Selection::Digest(
                repo,
                Digest::parse(digest).ok_or_else(bad)?,
            ));
        }
        // A tag follows the last colon, unless that colon is a port's.
        if let Some((repo, tag)) = s.rsplit_once(':')
            && !tag.contains('/')
        {
            let repo = RepoName::parse(repo).ok_or_else(bad)?;
            return Ok(Selection::Tag(repo, Tag::parse(tag).ok_or_else(bad)?));
        }
        RepoName::parse(s)
            .map(Selection::Repository)
            .ok_or_else(bad)
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The names of the images written, in index.json's order.
    pub images: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
    /// Of the whole archive.
    pub sha256: String,
}

/// Where a blob of the archive comes from.
enum Part {
    /// A manifest's bytes, as stored.
    Manifest(Vec<u8>),
    /// A blob of this size, in this repository.
    Blob(RepoName, u64),
}

/// A manifest as a source holds it.
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// Where images are exported from: a store, or a registry.
pub trait Source {
    /// Every repository, in name order.
    fn repositories(&mut self) -> Result<Vec<RepoName>, Error>;
    /// The tags of `repo`; none if there is no such repository.
    fn tags(&mut self, repo: &RepoName) -> Result<Vec<String>, Error>;
    /// A manifest by tag or digest; `None` if there is no such manifest.
    fn manifest(
        &mut self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, Error>;
    /// A blob's size; `None` if `repo` has no such blob.
    fn blob_size(&mut self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, Error>;
    /// The manifests whose subject is `digest`.
    fn referrers(&mut self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>, Error>;
    /// A blob's bytes, exactly `size` of them, or an error.
    fn open_blob(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Box<dyn Read + Send + '_>, Error>;
}

impl Source for Store {
    fn repositories(&mut self) -> Result<Vec<RepoName>, Error> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let (page, more) = self.list_repositories(last.as_deref(), 1000, &|_| true)?;
            out.extend(page.iter().filter_map(|name| RepoName::parse(name)));
            last = page.last().cloned();
            if !more || last.is_none() {
                return Ok(out);
            }
        }
    }

    fn tags(&mut self, repo: &RepoName) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let (page, more) = match self.list_tags(repo, last.as_deref(), 1000) {
                Ok(page) => page,
                Err(store::Error::NameUnknown) => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            last = page.last().cloned();
            out.extend(page);
            if !more || last.is_none() {
                return Ok(out);
            }
        }
    }

    fn manifest(
        &mut self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, Error> {
        match self.get_manifest(repo, reference) {
            Ok(m) => Ok(Some(Manifest {
                digest: m.digest,
                media_type: m.media_type,
                body: m.body.into(),
            })),
            Err(store::Error::ManifestUnknown) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn blob_size(&mut self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, Error> {
        match Store::blob_size(self, repo, digest) {
            Ok(size) => Ok(Some(size)),
            Err(store::Error::BlobUnknown) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn referrers(&mut self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>, Error> {
        Ok(Store::referrers(self, repo, digest, None)?
            .iter()
            .filter_map(|r| Digest::parse(&r.digest))
            .collect())
    }

    fn open_blob(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Box<dyn Read + Send + '_>, Error> {
        let blob = Store::open_blob(self, repo, digest)?;
        if blob.size() != size {
            return Err(store::Error::Corrupt(format!("{digest} changed size")).into());
        }
        Ok(blob.into_reader())
    }
}

/// Exports `selections` (all images if empty) from `source` to `out`,
/// written beside it first and renamed into place once whole and synced.
pub fn export(
    source: &mut dyn Source,
    selections: &[Selection],
    since: Option<&Path>,
    platforms: &[String],
    out: &Path,
    progress: &Progress,
) -> Result<Summary, Error> {
    let earlier = match since {
        Some(path) => earlier_blobs(source, path)?,
        None => BTreeSet::new(),
    };
    let roots = roots(source, selections)?;
    let mut gathering = Gathering::new(source, platforms);
    let mut entries = Vec::new();
    for root in roots {
        entries.push(Entry {
            ref_name: root.name.clone(),
            media_type: root.manifest.media_type.clone(),
            digest: root.manifest.digest.clone(),
            size: root.manifest.body.len() as u64,
            platforms: (!platforms.is_empty()).then(|| platforms.join(",")),
            absent: None,
        });
        let digest = root.manifest.digest.clone();
        gathering.manifest(&root.repo, &root.name, &digest, Some(root.manifest))?;
    }
    // Once all is gathered: an image may share its index with one before.
    for entry in &mut entries {
        entry.absent = gathering.absent_under(&entry.digest);
    }
    let mut blobs = gathering.blobs;
    // A delta leaves out what the earlier export carried, but for the
    // manifests: small, and the site may hold one only in a repository
    // other than the one this image goes to.
    blobs.retain(|digest, part| matches!(part, Part::Manifest(_)) || !earlier.contains(digest));
    let total = blobs
        .values()
        .map(|part| match part {
            Part::Manifest(body) => body.len() as u64,
            Part::Blob(_, size) => *size,
        })
        .sum();
    progress.start(total, blobs.len() as u64);

    let temp = out.with_extension("partial");
    let file = File::create(&temp)?;
    let mut hashing = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let written = write_archive(source, &entries, &blobs, &mut hashing, progress);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    hashing.inner.flush()?;
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&temp, out)?;
    progress.finish();
    let sha256: String = hashing
        .hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for entry in &entries {
        progress.say(&format!("exported {}", entry.ref_name));
    }
    Ok(Summary {
        images: entries.iter().map(|e| e.ref_name.clone()).collect(),
        blobs: blobs.len(),
        bytes: total,
        sha256: format!("sha256:{sha256}"),
    })
}

/// The layout's files, in their fixed order.
fn write_archive(
    source: &mut dyn Source,
    entries: &[Entry],
    blobs: &BTreeMap<Digest, Part>,
    out: &mut impl Write,
    progress: &Progress,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    append(&mut tar, layout::LAYOUT_FILE, layout::LAYOUT_VERSION)?;
    append(&mut tar, layout::INDEX_FILE, &layout::index_json(entries))?;
    append_dir(&mut tar, "blobs/")?;
    let mut dirs: Vec<&str> = blobs.keys().map(|d| d.algorithm().name()).collect();
    dirs.dedup();
    for dir in dirs {
        append_dir(&mut tar, &format!("blobs/{dir}/"))?;
    }
    for (digest, part) in blobs {
        let path = layout::blob_path(digest);
        match part {
            Part::Manifest(body) => {
                append(&mut tar, &path, body)?;
                progress.skip(body.len() as u64);
            }
            Part::Blob(repo, size) => {
                let blob = progress.reader(source.open_blob(repo, digest, *size)?);
                tar.append_data(&mut header(*size), &path, blob).map_err(
                    |e| match Mismatch::of(&e) {
                        Some(why) => Error::Damaged {
                            blob: digest.clone(),
                            why: why.to_string(),
                        },
                        None => e.into(),
                    },
                )?;
                progress.blob_done();
            }
        }
    }
    tar.finish()?;
    Ok(())
}

/// The blobs an earlier export carried: the entries of its archive, or,
/// from its `index.json` alone, everything its images need here.
fn earlier_blobs(source: &mut dyn Source, path: &Path) -> Result<BTreeSet<Digest>, Error> {
    let bad = |why: String| Error::Earlier(format!("{}: {why}", path.display()));
    let mut file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut first = [0u8; 1];
    let json = file.read(&mut first).map_err(|e| bad(e.to_string()))? == 1 && first[0] == b'{';
    if json {
        // An index.json is small; an archive is read entry by entry.
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let index: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut gathering = Gathering::new(source, &[]);
        let manifests = index["manifests"]
            .as_array()
            .ok_or_else(|| bad("an index.json without manifests".into()))?;
        for entry in manifests {
            let name = entry["annotations"][layout::REF_NAME]
                .as_str()
                .unwrap_or("");
            let repo = name
                .split_once('@')
                .map(|(r, _)| r)
                .or_else(|| name.rsplit_once(':').map(|(r, _)| r))
                .and_then(RepoName::parse);
            let digest = entry["digest"].as_str().and_then(Digest::parse);
            if let (Some(repo), Some(digest)) = (repo, digest) {
                // What is gone from here cannot be left out, nor needs to be.
                match gathering.manifest(&repo, name, &digest, None) {
                    Ok(()) | Err(Error::Missing { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        return Ok(gathering.blobs.into_keys().collect());
    }
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    let mut blobs = BTreeSet::new();
    for entry in archive
        .entries_with_seek()
        .map_err(|e| bad(e.to_string()))?
    {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?;
        let name = name.to_string_lossy();
        if let Some(digest) = layout::blob_digest(&name) {
            blobs.insert(digest);
        }
    }
    Ok(blobs)
}

/// An image a selection names.
struct Root {
    repo: RepoName,
    /// Its name in index.json.
    name: String,
    manifest: Manifest,
}

/// The images the selections name, in name order.
fn roots(source: &mut dyn Source, selections: &[Selection]) -> Result<Vec<Root>, Error> {
    let all = [Selection::Prefix(String::new())];
    // Everything, when nothing is named: an empty store exports nothing.
    let explicit = !selections.is_empty();
    let selections = if explicit { selections } else { &all[..] };
    let mut roots = Vec::new();
    for selection in selections {
        let before = roots.len();
        match selection {
            Selection::Tag(repo, tag) => {
                let name = format!("{}:{}", repo.as_str(), tag.as_str());
                root(source, repo, name, Reference::Tag(tag.clone()), &mut roots)?;
            }
            Selection::Digest(repo, digest) => {
                let name = format!("{}@{digest}", repo.as_str());
                root(
                    source,
                    repo,
                    name,
                    Reference::Digest(digest.clone()),
                    &mut roots,
                )?;
            }
            Selection::Repository(repo) => tags_of(source, repo, &mut roots)?,
            Selection::Prefix(prefix) => {
                for repo in source.repositories()? {
                    if repo.as_str().starts_with(prefix.as_str()) {
                        tags_of(source, &repo, &mut roots)?;
                    }
                }
            }
        }
        if roots.len() == before && explicit {
            return Err(Error::NothingMatches(describe(selection)));
        }
    }
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    roots.dedup_by(|a, b| a.name == b.name);
    Ok(roots)
}

fn root(
    source: &mut dyn Source,
    repo: &RepoName,
    name: String,
    reference: Reference,
    roots: &mut Vec<Root>,
) -> Result<(), Error> {
    if let Some(manifest) = source.manifest(repo, &reference)? {
        roots.push(Root {
            repo: repo.clone(),
            name,
            manifest,
        });
    }
    Ok(())
}

fn describe(selection: &Selection) -> String {
    match selection {
        Selection::Repository(repo) => repo.as_str().to_owned(),
        Selection::Tag(repo, tag) => format!("{}:{}", repo.as_str(), tag.as_str()),
        Selection::Digest(repo, digest) => format!("{}@{digest}", repo.as_str()),
        Selection::Prefix(prefix) => format!("{prefix}*"),
    }
}

fn tags_of(source: &mut dyn Source, repo: &RepoName, roots: &mut Vec<Root>) -> Result<(), Error> {
    for name in source.tags(repo)? {
        let Some(tag) = Tag::parse(&name) else {
            continue;
        };
        let name = format!("{}:{name}", repo.as_str());
        root(source, repo, name, Reference::Tag(tag), roots)?;
    }
    Ok(())
}

/// What the selected images need, gathered manifest by manifest.
struct Gathering<'a> {
    source: &'a mut dyn Source,
    /// The platforms wanted of each index; all if none.
    platforms: &'a [String],
    blobs: BTreeMap<Digest, Part>,
    /// The manifests each gathered manifest brings along: its wanted
    /// children and its referrers.
    brings: BTreeMap<Digest, Vec<Digest>>,
    /// Manifests a gathered one names that its repository does not hold.
    absent: BTreeSet<Digest>,
    /// Manifests being gathered, one inside the next.
    depth: usize,
}

impl<'a> Gathering<'a> {
    fn new(source: &'a mut dyn Source, platforms: &'a [String]) -> Self {
        Gathering {
            source,
            platforms,
            blobs: BTreeMap::new(),
            brings: BTreeMap::new(),
            absent: BTreeSet::new(),
            depth: 0,
        }
    }

    /// Adds manifest `digest` of `repo` (`known` if it was fetched
    /// already), the blobs it needs, the children of an index that are
    /// here (only those of `platforms`, if any are named), and every
    /// referrer, once each; refused past [`MAX_NESTING`] levels.
    fn manifest(
        &mut self,
        repo: &RepoName,
        image: &str,
        digest: &Digest,
        known: Option<Manifest>,
    ) -> Result<(), Error> {
        if self.depth == MAX_NESTING {
            return Err(Error::TooDeep {
                image: image.to_owned(),
                manifest: digest.clone(),
            });
        }
        self.depth += 1;
        let gathered = self.visit(repo, image, digest, known);
        self.depth -= 1;
        gathered
    }

    /// As [`Gathering::manifest`], one level.
    fn visit(
        &mut self,
        repo: &RepoName,
        image: &str,
        digest: &Digest,
        known: Option<Manifest>,
    ) -> Result<(), Error> {
        // Absent from one repository, a manifest may still be in another.
        if self.blobs.contains_key(digest) {
            return Ok(());
        }
        let stored = match known {
            Some(known) => known,
            None => match self
                .source
                .manifest(repo, &Reference::Digest(digest.clone()))?
            {
                Some(stored) => stored,
                // A sparse index: the children that are here come along.
                None => {
                    self.absent.insert(digest.clone());
                    return Ok(());
                }
            },
        };
        let parsed = manifest::parse(Some(&stored.media_type), &stored.body)
            .map_err(store::Error::ManifestInvalid)?;
        let wanted = wanted_children(&stored.body, self.platforms);
        self.blobs
            .insert(digest.clone(), Part::Manifest(stored.body));
        for blob in &parsed.blobs {
            let Some(size) = self.source.blob_size(repo, blob)? else {
                return Err(Error::Missing {
                    image: image.to_owned(),
                    blob: blob.clone(),
                });
            };
            self.blobs
                .insert(blob.clone(), Part::Blob(repo.clone(), size));
        }
        let mut brings: Vec<Digest> = parsed
            .manifests
            .into_iter()
            .filter(|child| wanted.as_ref().is_none_or(|wanted| wanted.contains(child)))
            .collect();
        brings.extend(self.source.referrers(repo, digest)?);
        for next in &brings {
            self.manifest(repo, image, next, None)?;
        }
        self.brings.insert(digest.clone(), brings);
        Ok(())
    }

    /// The manifests `root` names, at any depth, that were not there to
    /// export, comma-separated; `None` if all were.
    fn absent_under(&self, root: &Digest) -> Option<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![root];
        let mut absent = BTreeSet::new();
        while let Some(digest) = todo.pop() {
            if !seen.insert(digest) {
                continue;
            }
            if self.absent.contains(digest) && !self.blobs.contains_key(digest) {
                absent.insert(digest.as_str());
            }
            todo.extend(self.brings.get(digest).into_iter().flatten());
        }
        (!absent.is_empty()).then(|| absent.into_iter().collect::<Vec<_>>().join(","))
    }
}

/// The children of an index that are of one of `platforms`; `None` when
/// every child is wanted (no platform named, or no index).
fn wanted_children(body: &[u8], platforms: &[String]) -> Option<BTreeSet<Digest>> {
    if platforms.is_empty() {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let children = doc["manifests"].as_array()?;
    Some(
        children
            .iter()
            .filter(|child| layout::platform_of(child).is_some_and(|p| matches_any(&p, platforms)))
            .filter_map(|child| child["digest"].as_str().and_then(Digest::parse))
            .collect(),
    )
}

/// `linux/arm64` matches `linux/arm64` and `linux/arm64/v8`; with a
/// variant, only that variant.
pub(super) fn matches_any(platform: &str, wanted: &[String]) -> bool {
    wanted.iter().any(|w| {
        platform == w
            || platform
                .strip_prefix(w.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// A regular file's header: no owner, no time, the same bytes every time.
fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = header(bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = header(0);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut header, path, io::empty())
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
