//! A power cut, not a kill: berth runs in a small virtual machine (qemu,
//! TCG) whose data disk is a raw image on the host written through
//! (`cache=directsync`: a guest write completes only once it is in the
//! image), so killing qemu loses exactly what a power cut loses, the
//! guest's page cache and the requests in flight. SIGKILL of berth alone
//! cannot catch a missing fsync; this can. Each round boots the machine on
//! the same disk, checks (and has `berth fsck` check) everything that was
//! acknowledged before the last cut (blobs, chunk offsets, tags, and
//! manifest deletes staying done), pushes and deletes more for a random
//! moment, and cuts the power. Then the same runs with fsync made a no-op in the guest
//! (a preloaded library the test builds), which must lose acknowledged
//! data, so the suite is shown to be able to fail.
//!
//! The machine: Debian's kernel from /boot and its modules for virtio and
//! ext4, busybox-static, the berth under test and the libraries it links,
//! all in an initramfs the test builds; the disk formatted by mkfs.ext4.
//! BERTH_POWER_ROUNDS sets the number of cuts (default 4).

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::require_command;
use common::http;

const SKIP: &str = "power";
/// Modules the guest needs, with what they need first (from modules.dep).
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The kernel and its module directory: the newest in /boot.
fn kernel() -> (PathBuf, PathBuf) {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    kernels.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
    });
    kernels.sort();
    let kernel = kernels.pop().unwrap_or_else(|| {
        panic!(
            "no kernel in /boot: install one (Debian: `apt-get install -y linux-image-amd64`, \
             as .ci/run does), or leave this suite out with `cargo test -- --skip {SKIP}`"
        )
    });
    let version = kernel.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();
    (kernel, Path::new("/lib/modules").join(version))
}

/// Module files to load, each after the ones it needs.
fn module_order(modules: &Path) -> Vec<PathBuf> {
    let dep = std::fs::read_to_string(modules.join("modules.dep")).expect("modules.dep");
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, needs)) = line.split_once(':') else {
            continue;
        };
        let name = |p: &str| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split(".ko")
                .next()
                .unwrap()
                .replace('-', "_")
        };
        let needs = needs.split_whitespace().map(name).collect();
        deps.insert(name(path), (path.to_owned(), needs));
    }
    fn visit(name: &str, deps: &BTreeMap<String, (String, Vec<String>)>, order: &mut Vec<String>) {
        if order.iter().any(|o| o == name) {
            return;
        }
        let (_, needs) = deps
            .get(name)
            .unwrap_or_else(|| panic!("no module {name} in modules.dep"));
        // modules.dep lists what a module needs, the most basic last.
        for need in needs.iter().rev() {
            visit(need, deps, order);
        }
        order.push(name.to_owned());
    }
    let mut order = Vec::new();
    for module in MODULES {
        visit(module, &deps, &mut order);
    }
    order
        .iter()
        .map(|name| modules.join(&deps[name].0))
        .collect()
}

/// Copies `from` to `root` + its own absolute path.
fn copy_into(root: &Path, from: &Path) {
    let to = root.join(from.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// Everything a guest boots from, built once.
struct Kit {
    dir: tempfile::TempDir,
    kernel: PathBuf,
}

impl Kit {
    fn build() -> Kit {
        require_command(
            SKIP,
            "qemu-system-x86_64",
            &["--version"],
            "qemu-system-x86",
        );
        require_command(SKIP, "busybox", &["true"], "busybox-static");
        require_command(SKIP, "mkfs.ext4", &["-V"], "e2fsprogs");
        require_command(SKIP, "cc", &["--version"], "gcc");
        let (kernel, modules) = kernel();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["bin", "dev", "proc", "sys", "data", "mods", "lib"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let busybox = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v busybox"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::fs::copy(busybox.trim(), root.join("bin/busybox")).unwrap();
        for applet in ["sh", "mount", "insmod", "ip", "cat", "grep", "poweroff"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        // The berth under test, without its debug symbols (a smaller
        // initramfs boots faster), and what it links.
        let berth = root.join("bin/berth");
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(&berth)
            .arg(env!("CARGO_BIN_EXE_berth"))
            .status()
            .unwrap();
        assert!(stripped.success());
        let ldd = Command::new("ldd").arg(&berth).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                copy_into(&root, Path::new(path));
            }
        }
        let mut order = Vec::new();
        for module in module_order(&modules) {
            std::fs::copy(&module, root.join("mods").join(module.file_name().unwrap())).unwrap();
            order.push(module.file_name().unwrap().to_string_lossy().into_owned());
        }
        // fsync, fdatasync and syncfs that do nothing: what berth would be
        // if it forgot its syncs.
        let c = dir.path().join("nosync.c");
        std::fs::write(
            &c,
            "int fsync(int fd){(void)fd;return 0;}\n\
             int fdatasync(int fd){(void)fd;return 0;}\n\
             int syncfs(int fd){(void)fd;return 0;}\n\
             void sync(void){}\n",
        )
        .unwrap();
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(root.join("lib/nosync.so"))
            .arg(&c)
            .status()
            .unwrap();
        assert!(built.success(), "building the no-op fsync library");
        let init = format!(
            "#!/bin/sh\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sys /sys\n\
             mount -t devtmpfs dev /dev\n\
             for m in {}; do insmod /mods/$m || echo \"guest: insmod $m failed\"; done\n\
             ip link set lo up\n\
             ip link set eth0 up\n\
             ip addr add 10.0.2.15/24 dev eth0\n\
             mount -t ext4 /dev/vda /data || {{ echo 'guest: no data disk'; poweroff -f; }}\n\
             export RUST_LOG=warn\n\
             if [ -d /data/berth-data ]; then\n\
               echo 'guest: fsck begins'\n\
               /bin/berth fsck --data /data/berth-data\n\
               echo 'guest: fsck ends'\n\
             fi\n\
             if grep -q berth.nosync /proc/cmdline; then export LD_PRELOAD=/lib/nosync.so; fi\n\
             exec /bin/berth serve --listen 0.0.0.0:5000 --data /data/berth-data\n",
            order.join(" ")
        );
        std::fs::write(root.join("init"), init).unwrap();
        let mut perms = std::fs::metadata(root.join("init")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(root.join("init"), perms).unwrap();
        let cpio = File::create(dir.path().join("initramfs.cpio")).unwrap();
        let packed = Command::new("sh")
            .current_dir(&root)
            .args(["-c", "find . | busybox cpio -o -H newc"])
            .stdout(cpio)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(packed.success(), "packing the initramfs");
        Kit { dir, kernel }
    }

    /// A fresh formatted data disk.
    fn disk(&self, name: &str) -> PathBuf {
        let disk = self.dir.path().join(name);
        let file = std::fs::File::create(&disk).unwrap();
        file.set_len(256 << 20).unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&disk)
            .status()
            .unwrap();
        assert!(made.success(), "mkfs.ext4");
        disk
    }
}

/// A running guest; dropped, its power is cut.
struct Guest {
    qemu: Child,
    url: String,
    console: PathBuf,
}

impl Guest {
    /// Boots on `disk`; `None` if berth never answered (the variant may
    /// leave a disk it cannot start on).
    fn boot(kit: &Kit, disk: &Path, nosync: bool, round: usize) -> Option<Guest> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let console = kit.dir.path().join(format!("console-{}-{round}", nosync));
        let append = format!(
            "console=ttyS0 quiet panic=-1{}",
            if nosync { " berth.nosync" } else { "" }
        );
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "512",
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kit.kernel)
            .arg("-initrd")
            .arg(kit.dir.path().join("initramfs.cpio"))
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache=directsync",
                disk.display()
            ))
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:5000"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(File::create(&console).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let mut guest = Guest {
            qemu,
            url: format!("http://127.0.0.1:{port}"),
            console,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if guest.qemu.try_wait().unwrap().is_some() {
                return None;
            }
            let up = http::try_request_within(
                "GET",
                &format!("{}/v2/", guest.url),
                &[],
                b"",
                Duration::from_secs(2),
            );
            if up.is_ok_and(|r| r.status == 200) {
                return Some(guest);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        guest.cut();
        None
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// What `berth fsck` found wrong at this boot (orphaned files, which a
    /// cut leaves and start-up sweeps, are not wrong).
    fn fsck_problems(&self) -> Vec<String> {
        let console = self.console();
        let Some((_, after)) = console.split_once("guest: fsck begins") else {
            return Vec::new();
        };
        let report = after.split("guest: fsck ends").next().unwrap_or("");
        report
            .lines()
            .map(str::trim)
            .filter(|l| {
                ["missing:", "corrupt:", "dangling:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    }

    fn cut(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.cut();
    }
}

/// What the guest acknowledged, to be found after any cut.
#[derive(Default)]
struct Acknowledged {
    /// digest -> bytes
    blobs: BTreeMap<String, Vec<u8>>,
    /// upload path -> (acknowledged offset, length of the chunk in flight)
    chunks: BTreeMap<String, (u64, u64)>,
    /// tag -> manifest digest
    tags: BTreeMap<String, String>,
    /// Manifests whose DELETE was acknowledged: they must stay gone.
    deleted: Vec<String>,
}

impl Acknowledged {
    /// What of it is not there, whole, at `url`.
    fn missing_at(&self, url: &str) -> Vec<String> {
        let mut missing = Vec::new();
        for (digest, data) in &self.blobs {
            let got = http::try_request("GET", &http::blob_url(url, "power/app", digest), &[], b"");
            if !got
                .as_ref()
                .is_ok_and(|r| r.status == 200 && &r.body == data)
            {
                missing.push(format!("blob {digest}"));
            }
        }
        for (path, (offset, in_flight)) in &self.chunks {
            let got = http::try_request("GET", &format!("{url}{path}"), &[], b"");
            let range = got
                .as_ref()
                .ok()
                .and_then(|r| r.header("range").map(str::to_owned));
            // As berth reports a session's committed bytes (0-0 when none).
            let end = |o: u64| format!("0-{}", o.saturating_sub(1));
            if range != Some(end(*offset)) && range != Some(end(offset + in_flight)) {
                missing.push(format!("upload {path} at {offset} (it says {range:?})"));
            }
        }
        for (tag, digest) in &self.tags {
            let got = http::try_request(
                "GET",
                &format!("{url}/v2/power/app/manifests/{tag}"),
                &[("Accept", http::OCI_MANIFEST)],
                b"",
            );
            if !got
                .as_ref()
                .is_ok_and(|r| r.status == 200 && http::sha256_digest(&r.body) == *digest)
            {
                missing.push(format!("tag {tag}"));
            }
        }
        for digest in &self.deleted {
            let got = http::try_request(
                "GET",
                &format!("{url}/v2/power/app/manifests/{digest}"),
                &[("Accept", http::OCI_MANIFEST)],
                b"",
            );
            if !got.as_ref().is_ok_and(|r| r.status == 404) {
                missing.push(format!("the delete of {digest}"));
            }
        }
        missing
    }
}

/// Pushes until a request fails (the power went): whole blobs, chunks of
/// sessions, images under new tags, and deletes of older images,
/// recording each only once its 201 or 202 has come.
fn push_until_cut(url: &str, acked: &Mutex<Acknowledged>, seed: u64, cut: &AtomicBool) {
    let mut n = seed;
    while !cut.load(Ordering::Relaxed) {
        n += 1;
        let pushed = match n % 3 {
            0 => {
                let data = http::random_bytes(1_000 + (n as usize * 7919) % 200_000, n);
                let digest = http::sha256_digest(&data);
                let target = http::with_query(
                    &http::uploads_url(url, "power/app"),
                    &format!("digest={digest}"),
                );
                http::try_request(
                    "POST",
                    &target,
                    &[("Content-Type", "application/octet-stream")],
                    &data,
                )
                .ok()
                .filter(|r| r.status == 201)
                .map(|_| acked.lock().unwrap().blobs.insert(digest, data))
                .is_some()
            }
            1 => {
                let start =
                    http::try_request("POST", &http::uploads_url(url, "power/app"), &[], b"");
                let Some(location) = start
                    .ok()
                    .filter(|r| r.status == 202)
                    .map(|r| r.location().to_owned())
                else {
                    break;
                };
                let path = http::path_of(&http::resolve(url, &location)).to_owned();
                let mut offset = 0u64;
                let mut ok = true;
                for i in 0..3u64 {
                    let chunk = http::random_bytes(50_000, n * 10 + i);
                    let len = chunk.len() as u64;
                    acked
                        .lock()
                        .unwrap()
                        .chunks
                        .insert(path.clone(), (offset, len));
                    let range = format!("{offset}-{}", offset + len - 1);
                    let resp = http::try_request(
                        "PATCH",
                        &format!("{url}{path}"),
                        &[
                            ("Content-Type", "application/octet-stream"),
                            ("Content-Range", &range),
                        ],
                        &chunk,
                    );
                    if !resp.is_ok_and(|r| r.status == 202) {
                        ok = false;
                        break;
                    }
                    offset += len;
                    acked
                        .lock()
                        .unwrap()
                        .chunks
                        .insert(path.clone(), (offset, 0));
                }
                if offset == 0 {
                    acked.lock().unwrap().chunks.remove(&path);
                }
                ok
            }
            _ => {
                let image = http::build_image(n);
                let tag = format!("t{n}");
                let config = http::sha256_digest(&image.config);
                let layer = http::sha256_digest(&image.layer);
                let mut ok = true;
                for (digest, data) in [(config, &image.config), (layer, &image.layer)] {
                    let target = http::with_query(
                        &http::uploads_url(url, "power/app"),
                        &format!("digest={digest}"),
                    );
                    ok = ok
                        && http::try_request("POST", &target, &[], data)
                            .is_ok_and(|r| r.status == 201);
                }
                ok = ok
                    && http::try_request(
                        "PUT",
                        &format!("{url}/v2/power/app/manifests/{tag}"),
                        &[("Content-Type", http::OCI_MANIFEST)],
                        &image.manifest,
                    )
                    .is_ok_and(|r| r.status == 201);
                if ok {
                    acked.lock().unwrap().tags.insert(tag, image.digest.clone());
                }
                // Every other image, the oldest tagged one is deleted. Its
                // tag is forgotten before the DELETE goes: a cut while it
                // is in flight may leave it either way.
                let oldest = if ok && n.is_multiple_of(2) {
                    acked.lock().unwrap().tags.pop_first()
                } else {
                    None
                };
                if let Some((_, digest)) = oldest {
                    let resp = http::try_request(
                        "DELETE",
                        &format!("{url}/v2/power/app/manifests/{digest}"),
                        &[],
                        b"",
                    );
                    ok = resp.is_ok_and(|r| r.status == 202);
                    if ok {
                        acked.lock().unwrap().deleted.push(digest);
                    }
                }
                ok
            }
        };
        if !pushed {
            break;
        }
    }
}

/// Boots, checks, loads and cuts `rounds` times on one disk; returns what
/// was found missing or wrong at each boot, and how much was acknowledged.
fn rounds(kit: &Kit, nosync: bool, rounds: usize) -> (Vec<String>, usize) {
    let disk = kit.disk(if nosync { "nosync.img" } else { "berth.img" });
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut problems = Vec::new();
    for round in 0..=rounds {
        let Some(mut guest) = Guest::boot(kit, &disk, nosync, round) else {
            problems.push(format!(
                "round {round}: berth did not come up after the cut"
            ));
            break;
        };
        let missing = acked.lock().unwrap().missing_at(&guest.url);
        problems.extend(
            missing
                .into_iter()
                .map(|m| format!("round {round}: lost {m}")),
        );
        problems.extend(
            guest
                .fsck_problems()
                .into_iter()
                .map(|p| format!("round {round}: fsck: {p}")),
        );
        if round > 0 && !guest.console().contains("problems found") {
            problems.push(format!("round {round}: berth fsck printed no summary"));
        }
        if round == rounds {
            break;
        }
        let cut = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (url, acked, cut) = (guest.url.clone(), Arc::clone(&acked), Arc::clone(&cut));
            std::thread::spawn(move || push_until_cut(&url, &acked, round as u64 * 1_000_000, &cut))
        };
        // A moment somewhere in the pushes, different each round and run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(1_000 + u64::from(nanos) % 2_500));
        guest.cut();
        cut.store(true, Ordering::Relaxed);
        pusher.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    let kinds = [
        acked.blobs.len(),
        acked.chunks.len(),
        acked.tags.len(),
        acked.deleted.len(),
    ];
    println!(
        "{}: {} blobs, {} sessions, {} tags, {} deletes acknowledged",
        if nosync {
            "with fsync a no-op"
        } else {
            "berth"
        },
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3]
    );
    (problems, kinds.iter().sum())
}

#[test]
fn power_cuts_lose_nothing_acknowledged_and_a_missing_fsync_is_caught() {
    let kit = Kit::build();
    let cuts = std::env::var("BERTH_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let (problems, acknowledged) = rounds(&kit, false, cuts);
    println!("berth: {acknowledged} acknowledged items over {cuts} power cuts");
    assert!(
        acknowledged > 0,
        "nothing was acknowledged: the test tested nothing"
    );
    assert!(
        problems.is_empty(),
        "after power cuts berth lost what it acknowledged:\n{}",
        problems.join("\n")
    );
    let (lost, acknowledged) = rounds(&kit, true, 2);
    println!(
        "with fsync a no-op: {acknowledged} acknowledged, {} problems, the first: {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        !lost.is_empty(),
        "with fsync a no-op nothing acknowledged was lost in 2 power cuts: this suite \
         cannot tell a missing sync"
    );
}
