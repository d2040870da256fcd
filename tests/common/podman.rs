//! podman with its own storage, runtime dir and auth file, so nothing a
//! test does reaches the machine's images or logins.

use std::path::{Path, PathBuf};

use super::clients::{Outcome, run};

pub struct Podman {
    dir: PathBuf,
    registries: Option<PathBuf>,
}

impl Podman {
    /// Keeps everything in `dir`, logins included (none at first);
    /// registries are configured as the machine has them.
    pub fn in_dir(dir: &Path) -> Podman {
        // podman refuses to pull with REGISTRY_AUTH_FILE naming no file.
        let auth = dir.join("auth.json");
        if !auth.exists() {
            std::fs::write(&auth, "{}").expect("write auth.json");
        }
        Podman {
            dir: dir.to_path_buf(),
            registries: None,
        }
    }

    /// As [`Podman::in_dir`], reading `conf` instead of the machine's `registries.conf`.
    pub fn with_registries(dir: &Path, conf: &Path) -> Podman {
        Podman {
            registries: Some(conf.to_path_buf()),
            ..Podman::in_dir(dir)
        }
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        let (root, runroot) = (self.dir.join("root"), self.dir.join("run"));
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "file",
        ];
        all.extend_from_slice(args);
        let auth = self.dir.join("auth.json");
        let mut env = vec![("REGISTRY_AUTH_FILE", auth.as_path())];
        if let Some(conf) = &self.registries {
            env.push(("CONTAINERS_REGISTRIES_CONF", conf.as_path()));
        }
        run("podman", &all, &env)
    }
}
