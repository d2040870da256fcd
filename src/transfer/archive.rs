//! An OCI layout on disk, as a tar archive or a directory, read safely:
//! its `index.json`, and each blob by digest. Anything that could reach
//! outside the layout (`..`, an absolute path, a link, a device) refuses
//! the whole layout before a byte of it is used.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::checked::{Checked, Mismatch};
use super::import::Error;
use super::layout;
use crate::oci::Digest;

/// Manifests and index.json are small; a bigger one is damage.
pub const MAX_MANIFEST: u64 = 4 << 20;

pub struct Layout {
    source: Source,
    index: Vec<u8>,
    /// Each blob's place and size, in the order the layout holds them.
    blobs: Vec<(Digest, Place)>,
    by_digest: BTreeMap<Digest, usize>,
}

enum Source {
    Tar(PathBuf),
    Dir,
}

#[derive(Clone)]
enum Place {
    /// Where its bytes start in the archive.
    Offset(u64, u64),
    File(PathBuf, u64),
}

impl Place {
    fn size(&self) -> u64 {
        match self {
            Place::Offset(_, size) | Place::File(_, size) => *size,
        }
    }
}

impl Layout {
    /// Reads the layout's marker, index and list of blobs.
    pub fn open(path: &Path) -> Result<Layout, Error> {
        let (source, index, places) = if path.is_dir() {
            let (index, places) = list_dir(path)?;
            (Source::Dir, index, places)
        } else {
            let (index, places) = list_tar(path)?;
            (Source::Tar(path.to_owned()), index, places)
        };
        let mut layout = Layout {
            source,
            index,
            blobs: Vec::new(),
            by_digest: BTreeMap::new(),
        };
        for (digest, place) in places {
            // A later entry of the same name replaces an earlier, as tar does.
            match layout.by_digest.get(&digest) {
                Some(&i) => layout.blobs[i].1 = place,
                None => {
                    layout.by_digest.insert(digest.clone(), layout.blobs.len());
                    layout.blobs.push((digest, place));
                }
            }
        }
        Ok(layout)
    }

    pub fn index(&self) -> &[u8] {
        &self.index
    }

    /// Every blob and its size, in the layout's order.
    pub fn blobs(&self) -> impl Iterator<Item = (&Digest, u64)> {
        self.blobs.iter().map(|(d, place)| (d, place.size()))
    }

    pub fn size(&self, digest: &Digest) -> Option<u64> {
        self.place(digest).map(Place::size)
    }

    fn place(&self, digest: &Digest) -> Option<&Place> {
        self.by_digest.get(digest).map(|&i| &self.blobs[i].1)
    }

    /// A blob's bytes as the layout holds them, unchecked.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let place = self.place(digest).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{digest} is not here"))
        })?;
        Ok(match (&self.source, place) {
            (Source::Tar(path), Place::Offset(offset, size)) => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(*offset))?;
                Box::new(file.take(*size))
            }
            (_, Place::File(path, _)) => Box::new(File::open(path)?),
            (Source::Dir, Place::Offset(..)) => unreachable!("a directory's blobs are files"),
        })
    }

    /// A small blob (a manifest) whose bytes match its digest and `size`.
    pub fn read_checked(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, String> {
        let held = self.size(digest).ok_or(format!("{digest} is missing"))?;
        if held != size {
            return Err(format!(
                "{digest} holds {held} bytes; its descriptor says {size}"
            ));
        }
        if size > MAX_MANIFEST {
            return Err(format!("{digest} is over 4 MiB: no manifest"));
        }
        let mut bytes = Vec::new();
        self.open_blob(digest)
            .and_then(|r| r.take(MAX_MANIFEST).read_to_end(&mut bytes))
            .map_err(|e| format!("{digest}: {e}"))?;
        if Digest::with(digest.algorithm(), &bytes) != *digest {
            return Err(format!(
                "{digest} is damaged: its bytes have another digest"
            ));
        }
        Ok(bytes)
    }
}

/// Reads `reader` to its end: `Err(why)` unless its bytes are exactly
/// `size` long and have `digest`.
pub fn verify(
    reader: &mut impl Read,
    digest: &Digest,
    size: u64,
) -> io::Result<Result<(), String>> {
    let mut checked = Checked::new(reader, digest, size);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match checked.read(&mut buf) {
            Ok(0) => return Ok(Ok(())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => match Mismatch::of(&e) {
                Some(why) => return Ok(Err(why.to_string())),
                None => return Err(e),
            },
        }
    }
}

type Listing = (Vec<u8>, Vec<(Digest, Place)>);

fn list_tar(path: &Path) -> Result<Listing, Error> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut index = None;
    let mut marker = false;
    let mut places = Vec::new();
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
                    places.push((digest, Place::Offset(entry.raw_file_position(), size)));
                }
            }
        }
    }
    if !marker {
        return Err(Error::NotALayout("no oci-layout".into()));
    }
    let index = index.ok_or_else(|| Error::NotALayout("no index.json".into()))?;
    Ok((index, places))
}

fn list_dir(dir: &Path) -> Result<Listing, Error> {
    let marker = read_layout_file(dir, layout::LAYOUT_FILE)?;
    check_marker(&marker)?;
    let index = read_layout_file(dir, layout::INDEX_FILE)?;
    let mut places = Vec::new();
    let mut algorithms: Vec<_> = std::fs::read_dir(dir.join("blobs"))?.collect::<Result<_, _>>()?;
    algorithms.sort_by_key(|a| a.file_name());
    for algorithm in algorithms {
        let mut files: Vec<_> = std::fs::read_dir(algorithm.path())?.collect::<Result<_, _>>()?;
        files.sort_by_key(|f| f.file_name());
        for file in files {
            let name = format!(
                "blobs/{}/{}",
                algorithm.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            );
            let Some(digest) = layout::blob_digest(&name) else {
                continue;
            };
            // Only plain files: a link could name anything on this machine.
            let kind = file.file_type()?;
            if !kind.is_file() {
                return Err(Error::Unsafe(name));
            }
            let size = file.metadata()?.len();
            places.push((digest, Place::File(file.path(), size)));
        }
    }
    Ok((index, places))
}

/// A layout file of `dir`, as the archive's are read: a plain file (a link
/// could name anything on this machine, /dev/zero among them) of at most
/// 4 MiB.
fn read_layout_file(dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(name));
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Error::Unsafe(name.into())),
        Err(e) => return Err(Error::NotALayout(format!("{name}: {e}"))),
    };
    if !file.metadata()?.is_file() {
        return Err(Error::Unsafe(name.into()));
    }
    read_small(&mut file)
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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Entry {
        name: String,
        kind: tar::EntryType,
        data: Vec<u8>,
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let name = prop_oneof![
            Just(layout::LAYOUT_FILE.to_owned()),
            Just(layout::INDEX_FILE.to_owned()),
            Just("./index.json".to_owned()),
            Just("blobs/sha256/".to_owned()),
            "blobs/sha(256|512)/[0-9a-f]{64}",
            "(\\./)?(\\.\\./|/)[a-z/.]{0,20}",
            "[a-zA-Z0-9./_-]{1,40}",
        ];
        let kind = prop_oneof![
            6 => Just(tar::EntryType::Regular),
            1 => Just(tar::EntryType::Directory),
            1 => Just(tar::EntryType::Symlink),
            1 => Just(tar::EntryType::Link),
            1 => Just(tar::EntryType::Char),
            1 => Just(tar::EntryType::Fifo),
        ];
        let data = prop_oneof![
            Just(layout::LAYOUT_VERSION.to_vec()),
            Just(br#"{"schemaVersion":2,"manifests":[]}"#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..300),
        ];
        (name, kind, data).prop_map(|(name, kind, data)| Entry { name, kind, data })
    }

    /// A tar archive of `entries`, names written as they are (the tar
    /// crate's builder would refuse the unsafe ones).
    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for e in entries {
            let mut header = tar::Header::new_ustar();
            let name = e.name.as_bytes();
            let len = name.len().min(100);
            header.as_old_mut().name[..len].copy_from_slice(&name[..len]);
            header.set_entry_type(e.kind);
            header.set_mode(0o644);
            let data: &[u8] = if e.kind.is_file() { &e.data } else { &[] };
            header.set_size(data.len() as u64);
            if matches!(e.kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                header.set_link_name("../../etc/passwd").unwrap();
            }
            header.set_cksum();
            out.append(&header, data).unwrap();
        }
        out.into_inner().unwrap()
    }

    fn unsafe_entry(e: &Entry) -> bool {
        !(e.kind.is_file() || e.kind.is_dir())
            || Path::new(&e.name)
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_archive_opens_or_is_refused_and_unsafe_entries_refuse_it(
            entries in prop::collection::vec(entry(), 0..8),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>(), any::<bool>())),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("layout.tar");
            let mut bytes = archive(&entries);
            if let Some((at, byte, cut)) = damage {
                let i = at.index(bytes.len());
                if cut { bytes.truncate(i) } else { bytes[i] = byte }
            }
            std::fs::write(&path, &bytes).unwrap();
            match Layout::open(&path) {
                Ok(layout) => {
                    prop_assert!(
                        damage.is_some() || !entries.iter().any(unsafe_entry),
                        "an archive with an unsafe entry opened: {:?}",
                        entries
                    );
                    prop_assert!(layout.index().len() as u64 <= MAX_MANIFEST);
                    let blobs: Vec<(Digest, u64)> =
                        layout.blobs().map(|(d, s)| (d.clone(), s)).collect();
                    for (digest, size) in blobs {
                        // Whatever the archive claims, reading a blob ends.
                        let _ = layout.read_checked(&digest, size);
                        let mut read = 0u64;
                        if let Ok(blob) = layout.open_blob(&digest) {
                            read = io::copy(&mut blob.take(size + 1), &mut io::sink()).unwrap_or(0);
                        }
                        prop_assert!(read <= size);
                    }
                }
                Err(Error::Unsafe(_) | Error::NotALayout(_) | Error::Io(_)) => {}
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
