//! berth as a test fixture: a registry built in a few calls, with its data
//! in a private temporary directory that goes away with it, images loaded
//! before the first request, and a handle that works from plain `#[test]`
//! and `#[tokio::test]` alike.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::auth::AuthConfig;
use crate::config::{Config, TlsConfig};
use crate::server::Registry;

/// What an ephemeral data directory is named, under the system's temporary
/// directory, before its owner's process id.
const EPHEMERAL_PREFIX: &str = "berth-ephemeral-";
const OWNER_FILE: &str = "owner";

/// A data directory of this process alone (mode 0700), removed when
/// dropped. One left by a process that was killed is removed by the next
/// ephemeral start.
#[derive(Debug)]
pub struct EphemeralDir {
    path: PathBuf,
    /// The owner file, locked while this process lives: the kernel lets go
    /// when it dies, however it dies, in any PID namespace.
    _lock: std::fs::File,
}

impl EphemeralDir {
    /// Makes a fresh directory under the system's temporary directory,
    /// sweeping first those whose owner is gone.
    pub fn create() -> io::Result<EphemeralDir> {
        let base = std::env::temp_dir();
        sweep(&base);
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{EPHEMERAL_PREFIX}{}-{random}", std::process::id());
        // Made under a name no sweep looks at, and given its own once its
        // owner file is locked: a sweep finding the owner file before the
        // lock would take it for one whose owner is gone.
        let making = base.join(format!(".{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&making)?;
        let mut owner = std::fs::File::create(making.join(OWNER_FILE))?;
        if !try_lock(&owner) {
            return Err(io::Error::other("cannot lock a new ephemeral directory"));
        }
        std::io::Write::write_all(&mut owner, std::process::id().to_string().as_bytes())?;
        let path = base.join(name);
        std::fs::rename(&making, &path)?;
        Ok(EphemeralDir { path, _lock: owner })
    }

    /// Where the registry's data goes (beside the owner file).
    pub fn data(&self) -> PathBuf {
        self.path.join("data")
    }
}

impl Drop for EphemeralDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!("removing {}: {e}", self.path.display());
        }
    }
}

/// Takes an exclusive lock on `file` if nobody holds one.
fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads its arguments; the descriptor is open.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the ephemeral directories of this user whose owner process no
/// longer runs: their owner file's lock is free.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // One still being made (see EphemeralDir::create) is left a minute:
        // by then its start has either given it its name or died.
        let making = name
            .strip_prefix('.')
            .is_some_and(|n| n.starts_with(EPHEMERAL_PREFIX));
        if !name.starts_with(EPHEMERAL_PREFIX) && !making {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let ours = meta.is_dir() && meta.uid() == uid;
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        // Not even tried: a lock taken to test it is one its start misses.
        if !ours || (making && !old) {
            continue;
        }
        let unowned = match std::fs::File::open(entry.path().join(OWNER_FILE)) {
            Ok(owner) => try_lock(&owner),
            Err(_) => making,
        };
        if unowned {
            log::info!(
                "removing {}, left by a process that is gone",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Builds a registry for a test or a program: a random loopback port and
/// an ephemeral data directory unless told otherwise.
///
/// ```
/// let registry = berth::Registry::builder().start().unwrap();
/// let url = format!("{}/v2/", registry.url());
/// assert!(url.starts_with("http://127.0.0.1:"));
/// // Dropped: the server stops and its data directory is removed.
/// ```
#[derive(Debug)]
pub struct Builder {
    config: Config,
    ephemeral: bool,
}

impl Registry {
    /// A builder: `127.0.0.1:0` and an ephemeral data directory to start.
    pub fn builder() -> Builder {
        let mut config = Config::new(PathBuf::new());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Builder {
            config,
            ephemeral: true,
        }
    }
}

impl Builder {
    /// Keeps the data in `dir` (created if missing, kept afterwards).
    pub fn data(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.config.data_dir = dir.into();
        self.ephemeral = false;
        self
    }

    /// Keeps the data in a fresh private directory, removed with the
    /// registry (the default).
    pub fn ephemeral(mut self) -> Builder {
        self.ephemeral = true;
        self
    }

    /// Listens on `addr` instead of a free loopback port.
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        self.config.listen = addr;
        self
    }

    /// Imports an OCI layout (a directory or a tar archive) before the
    /// first request is served; a damaged one fails the start.
    pub fn preload(mut self, layout: impl Into<PathBuf>) -> Builder {
        self.config.preload.push(layout.into());
        self
    }

    /// Turns auth on with these users (htpasswd, bcrypt) and, if given,
    /// these access rules.
    pub fn auth(mut self, htpasswd: impl Into<PathBuf>, access: Option<PathBuf>) -> Builder {
        let mut auth = AuthConfig::new(htpasswd);
        auth.access = access;
        self.config.auth = Some(auth);
        self
    }

    /// Serves HTTPS with this certificate chain and key (PEM).
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Builder {
        self.config.tls = Some(TlsConfig {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Changes any other setting.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Builder {
        change(&mut self.config);
        self
    }

    /// Starts serving on the caller's tokio runtime.
    pub async fn serve(mut self) -> io::Result<Registry> {
        let ephemeral = if self.ephemeral {
            let dir = EphemeralDir::create()?;
            self.config.data_dir = dir.data();
            Some(dir)
        } else {
            None
        };
        Registry::start_owning(self.config, ephemeral).await
    }

    /// Starts serving on a thread and runtime of its own, and returns once
    /// it serves: for plain `#[test]`s and `#[tokio::test]`s alike.
    pub fn start(self) -> io::Result<Running> {
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("berth-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                runtime.block_on(async move {
                    match self.serve().await {
                        Ok(registry) => {
                            let about =
                                (registry.url(), registry.local_addr(), registry.data_dir());
                            let _ = ready.send(Ok(about));
                            let _ = stopped.await;
                            registry.shutdown().await;
                        }
                        Err(e) => drop(ready.send(Err(e))),
                    }
                });
            })?;
        let (url, addr, data) = started
            .recv()
            .map_err(|_| io::Error::other("the server thread stopped"))??;
        Ok(Running {
            url,
            addr,
            data,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A registry serving on its own thread; dropped, it stops and removes
/// its data if that was ephemeral.
#[derive(Debug)]
pub struct Running {
    url: String,
    addr: SocketAddr,
    data: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `127.0.0.1:PORT`, as image references name a registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the data is.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops serving, waits for requests in flight, and closes the data.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_once_never_sweep_each_others_new_directory() {
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let dir = EphemeralDir::create().unwrap();
                        assert!(
                            dir.path.join(OWNER_FILE).exists(),
                            "{} was swept as it was made",
                            dir.path.display()
                        );
                    }
                });
            }
        });
    }
}
