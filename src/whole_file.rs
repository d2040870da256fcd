//! Small files replaced whole (the users file, the token key): a reader, a
//! full disk or a crash finds the old bytes or the new, never a mix. An
//! in-place write truncates first, so a disk that fills mid-write leaves
//! neither.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`: a temporary file beside it, synced, then
/// renamed over it, and the directory synced. A file already there keeps
/// its mode and owner (refused if the owner cannot be kept); a new one
/// gets `new_mode`.
pub fn replace(path: &Path, bytes: &[u8], new_mode: u32) -> io::Result<()> {
    // A symbolic link stays one: the file it names is what is replaced.
    let path = &match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(e),
    };
    let existing = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mode = existing
        .as_ref()
        .map_or(new_mode, |m| m.permissions().mode() & 0o7777);
    let temp = temp_beside(path)?;
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot replace {} whole: a new file beside it: {e}",
                        path.display()
                    ),
                )
            })?;
        if let Some(meta) = &existing {
            let mine = file.metadata()?;
            if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(
                    |e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot keep the owner of {}: {e}", path.display()),
                        )
                    },
                )?;
            }
            // The umask may have narrowed the mode asked for at creation.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// A name in `path`'s directory that no other writer picks at once.
fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut temp = name.to_owned();
    temp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    Ok(path.with_file_name(temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_the_mode_asked_and_one_replaced_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        replace(&path, b"one\n", 0o600).unwrap();
        assert_eq!(
            (std::fs::read(&path).unwrap(), mode(&path)),
            (b"one\n".to_vec(), 0o600)
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"two\n", 0o600).unwrap();
        assert_eq!(
            (std::fs::read(&path).unwrap(), mode(&path)),
            (b"two\n".to_vec(), 0o644)
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        replace(&link, b"three\n", 0o600).unwrap();
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "the link stays"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
        std::fs::remove_file(&link).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
    }
}
