//! Real clients pull through berth from real registries on loopback: CNCF
//! Distribution (Debian's `docker-registry`) and a berth with token auth.
//! skopeo and docker reach the mirror by path prefix, podman through a
//! `registries.conf` mirror and containerd's ctr through a `hosts.toml`
//! mirror (which sends `?ns=`). What they pull must be the upstream's bytes,
//! digest for digest; and it must have come through berth, which then
//! serves it from its cache with the upstream stopped.
//!
//! Each test names the filter (`cargo test -- --skip ...`) that leaves it
//! out where a program it needs is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::clients::{Outcome, htpasswd, require_programs, run};
use common::distribution::Distribution;
use common::dockerd::Dockerd;
use common::http::{self, DOCKER_LIST, assert_error};
use common::layout::{self, Image, MultiPlatform};
use common::podman::Podman;
use common::process::{self, tail, wait_timeout};
use common::skopeo::Skopeo;
use serde_json::{Value, json};

/// The namespace that caches Distribution: a name no resolver knows, so
/// a client told to pull `dist.test/...` can only get it from the mirror.
const NS: &str = "dist.test";

/// How long a registry or daemon the tests start may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the tests read of Distribution beyond its manifests.
trait Images {
    fn image(&self, repo: &str, reference: &str, arch: Option<&str>) -> Served;
}

impl Images for Distribution {
    /// The image `reference` names as Distribution serves it; of an index
    /// or a list, its linux `arch` child.
    fn image(&self, repo: &str, reference: &str, arch: Option<&str>) -> Served {
        let mut manifest = self.manifest(repo, reference);
        if let Some(arch) = arch {
            let index: Value = serde_json::from_slice(&manifest).unwrap();
            let child = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                .unwrap_or_else(|| panic!("no linux/{arch} in {repo}:{reference}: {index}"));
            manifest = self.manifest(repo, child["digest"].as_str().unwrap());
        }
        let parsed: Value = serde_json::from_slice(&manifest).unwrap();
        let digest = |d: &Value| d["digest"].as_str().unwrap().to_owned();
        let config = digest(&parsed["config"]);
        let blobs = std::iter::once(config.clone())
            .chain(parsed["layers"].as_array().unwrap().iter().map(digest))
            .collect();
        Served {
            digest: http::sha256_digest(&manifest),
            manifest,
            config,
            blobs,
        }
    }
}

/// One image as the upstream serves it, which is what a client pulling it
/// through berth must get.
struct Served {
    digest: String,
    manifest: Vec<u8>,
    config: String,
    /// The config and the layers.
    blobs: Vec<String>,
}

/// Copies `oci:<dir>:<name>` (an image or a whole index) to `docker://<dest>` unchanged.
fn load(skopeo: &Skopeo, dir: &Path, name: &str, dest: &str) {
    skopeo.ok(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:{name}", dir.display()),
        &format!("docker://{dest}"),
    ]);
}

/// In Distribution's `library/app`: `:1`, a single-platform image, and
/// `:multi`, a linux/amd64 and linux/arm64 index, both OCI and checked to
/// be served as written; and `:list`, that index as skopeo converts it to
/// a Docker manifest list, the format of most images on the public
/// registries.
fn load_app(
    skopeo: &Skopeo,
    dist: &Distribution,
    work: &Path,
    seed: u64,
) -> (Image, MultiPlatform) {
    // Apart from where clients pull to: skopeo takes from a layout what it already holds.
    let (single_dir, multi_dir) = (work.join("upstream-single"), work.join("upstream-multi"));
    let image = layout::write_image(&single_dir, "1", seed);
    let multi = layout::write_multi_platform(&multi_dir, "multi", seed + 1);
    load(
        skopeo,
        &single_dir,
        "1",
        &format!("{}/library/app:1", dist.host()),
    );
    load(
        skopeo,
        &multi_dir,
        "multi",
        &format!("{}/library/app:multi", dist.host()),
    );
    skopeo.ok(&[
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", multi_dir.display()),
        &format!("docker://{}/library/app:list", dist.host()),
    ]);
    assert!(
        dist.manifest("library/app", "1") == image.manifest_bytes,
        "Distribution serves :1 as written"
    );
    assert!(
        dist.manifest("library/app", "multi") == multi.index_bytes,
        "Distribution serves :multi as written"
    );
    let list: Value = serde_json::from_slice(&dist.manifest("library/app", "list")).unwrap();
    assert_eq!(list["mediaType"], DOCKER_LIST, "{list}");
    (image, multi)
}

/// A berth whose namespace [`NS`] caches the registry at `upstream`.
fn mirror_of(upstream: &str) -> TestRegistry {
    mirror_with(upstream, |_| {})
}

/// As [`mirror_of`], with more changed by `tune`.
fn mirror_with(upstream: &str, tune: impl FnOnce(&mut berth::Config)) -> TestRegistry {
    let url = upstream.to_owned();
    TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.upstreams = vec![(NS.into(), url)];
        c.upstream_timeout = Duration::from_secs(5);
        tune(c);
    })
}

/// Asserts that berth serves `reference` of `repo` as `manifest` and every
/// one of `blobs` intact. With the upstream stopped, that is proof that
/// they came through berth.
#[track_caller]
fn assert_cached(
    berth: &TestRegistry,
    repo: &str,
    reference: &str,
    manifest: &[u8],
    blobs: &[String],
) {
    let url = http::manifest_url(&berth.url(), repo, reference);
    let resp = http::get(&url);
    assert_eq!(resp.status, 200, "GET {url}: {resp:?}");
    assert!(resp.body == manifest, "GET {url} served other bytes");
    for digest in blobs {
        let url = http::blob_url(&berth.url(), repo, digest);
        let resp = http::get(&url);
        assert_eq!(resp.status, 200, "GET {url}: {resp:?}");
        assert_eq!(&http::sha256_digest(&resp.body), digest, "GET {url}");
    }
}

/// The config and layers of `image`.
fn blobs_of(image: &Image) -> Vec<String> {
    std::iter::once(image.config.digest.clone())
        .chain(image.layer_digests())
        .collect()
}

#[test]
fn skopeo_pulls_from_distribution_by_path_prefix_byte_for_byte() {
    require_programs(
        "skopeo_pulls_from_distribution",
        &[("skopeo", "skopeo"), ("docker-registry", "docker-registry")],
    );
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let dist = Distribution::start();
    let (image, multi) = load_app(&skopeo, &dist, work.path(), 1);
    let berth = mirror_of(&dist.url());
    let through =
        |reference: &str| format!("docker://{}/{NS}/library/app{reference}", berth.host());
    let raw = |reference: &str| {
        let src = through(reference);
        skopeo
            .ok(&["inspect", "--raw", "--tls-verify=false", &src])
            .stdout
    };
    // `globals` picks a platform; without, the whole index is copied.
    let pull = |globals: &[&str], reference: &str, out: &str| {
        let (src, dest) = (
            through(reference),
            format!("oci:{}:{out}", path(out).display()),
        );
        let mut args = globals.to_vec();
        args.push("copy");
        if globals.is_empty() {
            args.push("--all");
        }
        args.extend(["--preserve-digests", "--src-tls-verify=false"]);
        args.extend([src.as_str(), dest.as_str()]);
        skopeo.ok(&args);
    };

    let list = dist.manifest("library/app", "list");
    assert!(raw(":1") == image.manifest_bytes, "raw :1");
    assert!(raw(":multi") == multi.index_bytes, "raw :multi");
    assert!(raw(":list") == list, "raw :list");
    for arch in ["amd64", "arm64"] {
        let child = dist.image("library/app", "list", Some(arch));
        let by_digest = format!("@{}", child.digest);
        assert!(raw(&by_digest) == child.manifest, "raw {by_digest}");
    }
    pull(&[], ":1", "single");
    layout::assert_copy_matches(&path("single"), "single", &image.manifest, &image.blobs());
    pull(&[], ":multi", "all");
    layout::assert_copy_matches(&path("all"), "all", &multi.index, &multi.blobs());
    // One platform of an index: its child is asked for by digest.
    let arm = multi.image("arm64");
    pull(
        &["--override-arch", "arm64", "--override-os", "linux"],
        ":multi",
        "arm",
    );
    layout::assert_copy_matches(&path("arm"), "arm", &arm.manifest, &arm.blobs());

    dist.stop();
    pull(&[], ":1", "again");
    layout::assert_copy_matches(&path("again"), "again", &image.manifest, &image.blobs());
    pull(&[], ":multi", "all-again");
    layout::assert_copy_matches(
        &path("all-again"),
        "all-again",
        &multi.index,
        &multi.blobs(),
    );
}

/// A push asks whether each blob is there (HEAD) before uploading it: in a
/// namespace with an upstream, that answer must not need the upstream.
#[test]
fn skopeo_pushes_into_the_namespace_while_distribution_is_down() {
    require_programs(
        "skopeo_pushes_into_the_namespace_while_distribution",
        &[("skopeo", "skopeo"), ("docker-registry", "docker-registry")],
    );
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let dist = Distribution::start();
    let berth = mirror_of(&dist.url());
    dist.stop();

    let image = layout::write_image(&path("src"), "1", 61);
    let tag = format!("docker://{}/{NS}/team/app:1", berth.host());
    let started = Instant::now();
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", path("src").display()),
        &tag,
    ]);
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &tag,
        &format!("oci:{}:1", path("back").display()),
    ]);
    layout::assert_copy_matches(&path("back"), "1", &image.manifest, &image.blobs());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "push and pull took {:?}",
        started.elapsed()
    );
}

/// A `registries.conf` that sends every pull of `dist.test/...` to `mirror`
/// (`HOST:PORT/dist.test`); `dist.test` itself resolves nowhere, so what
/// podman pulls can only have come from the mirror.
fn registries_conf(dir: &Path, mirror: &str) -> PathBuf {
    let conf = dir.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []

[[registry]]
prefix = \"{NS}\"
location = \"{NS}\"

[[registry.mirror]]
location = \"{mirror}/{NS}\"
insecure = true
"
        ),
    )
    .unwrap();
    conf
}

#[track_caller]
fn assert_ok(outcome: &Outcome) -> &str {
    assert!(outcome.ok, "{}", outcome.output);
    &outcome.output
}

/// podman's image id for `reference`: its config's digest.
fn podman_id(podman: &Podman, reference: &str) -> String {
    let out = podman.run(&["image", "inspect", "--format", "{{.Id}}", reference]);
    let id = assert_ok(&out).lines().last().unwrap_or_default().trim();
    format!("sha256:{id}")
}

#[test]
fn podman_pulls_from_distribution_through_a_registries_conf_mirror() {
    require_programs(
        "podman_pulls_from_distribution",
        &[
            ("podman", "podman"),
            ("skopeo", "skopeo"),
            ("docker-registry", "docker-registry"),
        ],
    );
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let dist = Distribution::start();
    let (image, _) = load_app(&skopeo, &dist, work.path(), 11);
    let arm = dist.image("library/app", "list", Some("arm64"));
    let berth = mirror_of(&dist.url());
    let podman = Podman::with_registries(work.path(), &registries_conf(work.path(), &berth.host()));

    let single = format!("{NS}/library/app:1");
    assert_ok(&podman.run(&["pull", &single]));
    assert_eq!(podman_id(&podman, &single), image.config.digest);
    let list = format!("{NS}/library/app:list");
    assert_ok(&podman.run(&["pull", "--arch", "arm64", &list]));
    assert_eq!(podman_id(&podman, &list), arm.config);

    dist.stop();
    let repo = format!("{NS}/library/app");
    assert_cached(&berth, &repo, "1", &image.manifest_bytes, &blobs_of(&image));
    assert_cached(&berth, &repo, &arm.digest, &arm.manifest, &arm.blobs);
}

#[test]
fn podman_pulls_a_push_that_shadows_distribution_until_it_is_deleted() {
    require_programs(
        "podman_pulls_a_push_that_shadows_distribution",
        &[
            ("podman", "podman"),
            ("skopeo", "skopeo"),
            ("docker-registry", "docker-registry"),
        ],
    );
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let dist = Distribution::start();
    let theirs = layout::write_image(&work.path().join("theirs"), "1", 21);
    let ours = layout::write_image(&work.path().join("ours"), "1", 22);
    load(
        &skopeo,
        &work.path().join("theirs"),
        "1",
        &format!("{}/team/app:1", dist.host()),
    );
    let ttl = Duration::from_secs(1);
    let berth = mirror_with(&dist.url(), |c| c.upstream_ttl = ttl);
    let podman = Podman::with_registries(work.path(), &registries_conf(work.path(), &berth.host()));
    let pull_id = || {
        let name = format!("{NS}/team/app:1");
        assert_ok(&podman.run(&["pull", &name]));
        podman_id(&podman, &name)
    };

    // The upstream's tag is cached first, so the push has to take it over;
    // and the TTL passes before the next pull, so a pushed tag still taken
    // for the upstream's would be asked of it again, and lost.
    assert_eq!(pull_id(), theirs.config.digest);
    load(
        &skopeo,
        &work.path().join("ours"),
        "1",
        &format!("{}/{NS}/team/app:1", berth.host()),
    );
    std::thread::sleep(ttl + Duration::from_millis(200));
    assert_eq!(pull_id(), ours.config.digest);
    assert!(
        dist.manifest("team/app", "1") == theirs.manifest_bytes,
        "the push stayed in berth"
    );

    let resp = http::delete(&http::manifest_url(
        &berth.url(),
        &format!("{NS}/team/app"),
        "1",
    ));
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(pull_id(), theirs.config.digest);
}

/// containerd of a test's own: root, state, sockets and config in a temp
/// dir; stopped on drop.
struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = d.join("config.toml");
        // No CRI: nothing here runs a pod, and it would want the host's CNI.
        std::fs::write(
            &config,
            format!(
                "version = 2
root = \"{root}\"
state = \"{state}\"
disabled_plugins = [\"io.containerd.grpc.v1.cri\"]
[grpc]
  address = \"{sock}\"
[ttrpc]
  address = \"{sock}.ttrpc\"
[plugins.\"io.containerd.internal.v1.opt\"]
  path = \"{opt}\"
",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("containerd.sock").display(),
                opt = d.join("opt").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn containerd");
        let containerd = Containerd {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !containerd.ctr(&["version"]).ok {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up within {START_TIMEOUT:?}; log:\n{}",
                tail(&containerd.dir.path().join("containerd.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn ctr(&self, args: &[&str]) -> Outcome {
        let sock = self.dir.path().join("containerd.sock");
        let mut all = vec!["--address", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        run("ctr", &all, &[])
    }

    /// `ctr images pull` of `name` with the mirrors in `hosts`; returns its
    /// output, which dumps every request it sent.
    fn pull(&self, hosts: &Path, extra: &[&str], name: &str) -> String {
        let mut args = vec!["images", "pull", "--hosts-dir", hosts.to_str().unwrap()];
        args.extend(["--plain-http", "--snapshotter", "native", "--http-dump"]);
        args.extend_from_slice(extra);
        args.push(name);
        assert_ok(&self.ctr(&args)).to_owned()
    }

    /// Every digest in the content store, sorted.
    fn content(&self) -> Vec<String> {
        let out = self.ctr(&["content", "ls", "--quiet"]);
        let mut digests: Vec<String> = assert_ok(&out)
            .lines()
            .filter(|l| l.starts_with("sha256:"))
            .map(str::to_owned)
            .collect();
        digests.sort();
        digests
    }

    /// The digest `ctr images ls` gives `name`.
    fn image_digest(&self, name: &str) -> String {
        let out = self.ctr(&["images", "ls"]);
        let listing = assert_ok(&out);
        listing
            .lines()
            .find_map(|l| {
                let mut fields = l.split_whitespace();
                (fields.next() == Some(name)).then(|| fields.nth(1).unwrap_or_default().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{listing}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `<hosts>/<registry>/hosts.toml`: pulls of `registry` go to `mirror`
/// first and to `server` only if the mirror fails.
fn hosts_toml(hosts: &Path, registry: &str, server: &str, mirror: &str) {
    let dir = hosts.join(registry);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"{server}\"

[host.\"http://{mirror}\"]
  capabilities = [\"pull\", \"resolve\"]
"
        ),
    )
    .unwrap();
}

/// What the ctr tests need: root (to run a containerd) and the programs.
fn require_containerd() {
    process::require_root("starting a containerd", "ctr_pulls_from_distribution");
    require_programs(
        "ctr_pulls_from_distribution",
        &[
            ("containerd", "containerd"),
            ("ctr", "containerd"),
            ("skopeo", "skopeo"),
            ("docker-registry", "docker-registry"),
        ],
    );
}

#[test]
fn ctr_pulls_from_distribution_through_a_hosts_toml_mirror_with_ns() {
    require_containerd();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let dist = Distribution::start();
    let (image, multi) = load_app(&skopeo, &dist, work.path(), 31);
    let berth = mirror_of(&dist.url());
    let hosts = work.path().join("hosts");
    // dist.test resolves nowhere: only the mirror can serve the pulls.
    hosts_toml(&hosts, NS, &format!("http://{NS}"), &berth.host());
    let containerd = Containerd::start();

    let dump = containerd.pull(&hosts, &[], &format!("{NS}/library/app:1"));
    // The mirror is asked for the upstream's repository, naming the
    // upstream in ?ns=: only that reaches the namespace that caches it.
    let asked = std::iter::once("manifests/1".to_owned())
        .chain(blobs_of(&image).into_iter().map(|d| format!("blobs/{d}")));
    for path in asked {
        let line = format!("/v2/library/app/{path}?ns={NS} ");
        assert!(dump.contains(&line), "ctr asked no {line:?}:\n{dump}");
    }
    let mut content: Vec<String> = image.blobs().into_iter().collect();
    assert_eq!(containerd.content(), content);
    assert_eq!(
        containerd.image_digest(&format!("{NS}/library/app:1")),
        image.manifest.digest
    );
    containerd.pull(
        &hosts,
        &["--all-platforms"],
        &format!("{NS}/library/app:multi"),
    );
    content.extend(multi.blobs());
    content.sort();
    assert_eq!(containerd.content(), content);
    assert_eq!(
        containerd.image_digest(&format!("{NS}/library/app:multi")),
        multi.index.digest
    );

    // Without ?ns= the same path is the default namespace's, which holds nothing.
    assert_error(
        &http::get(&http::manifest_url(&berth.url(), "library/app", "1")),
        404,
        "MANIFEST_UNKNOWN",
    );
    dist.stop();
    let repo = format!("{NS}/library/app");
    assert_cached(&berth, &repo, "1", &image.manifest_bytes, &blobs_of(&image));
    assert_cached(&berth, &repo, "multi", &multi.index_bytes, &[]);
    for child in &multi.images {
        let (digest, bytes) = (&child.manifest.digest, &child.manifest_bytes);
        assert_cached(&berth, &repo, digest, bytes, &blobs_of(child));
    }
}

/// A namespace named for a registry with a port cannot be a path prefix;
/// containerd reaches it with `?ns=HOST:PORT`, percent-encoded.
#[test]
fn ctr_pulls_from_distribution_into_a_namespace_with_a_port() {
    require_containerd();
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let dist = Distribution::start();
    load_app(&skopeo, &dist, work.path(), 36);
    let amd = dist.image("library/app", "list", Some("amd64"));
    let list = dist.manifest("library/app", "list");
    let ns = dist.host();
    let berth = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.upstreams = vec![(ns.clone(), dist.url())];
        c.upstream_timeout = Duration::from_secs(5);
    });
    let hosts = work.path().join("hosts");
    hosts_toml(&hosts, &ns, &dist.url(), &berth.host());
    let containerd = Containerd::start();

    let name = format!("{ns}/library/app:list");
    let dump = containerd.pull(&hosts, &["--platform", "linux/amd64"], &name);
    let encoded = ns.replace(':', "%3A");
    for path in std::iter::once("manifests/list".to_owned())
        .chain(amd.blobs.iter().map(|d| format!("blobs/{d}")))
    {
        let line = format!("/v2/library/app/{path}?ns={encoded} ");
        assert!(dump.contains(&line), "ctr asked no {line:?}:\n{dump}");
    }
    // The upstream is the server too: had the mirror failed, ctr would
    // have asked it directly.
    let direct = format!("Host: {ns}\"");
    assert!(
        !dump.contains(&direct),
        "ctr went to the upstream itself:\n{dump}"
    );
    assert_eq!(containerd.image_digest(&name), http::sha256_digest(&list));

    dist.stop();
    let repo = format!("{ns}/library/app");
    assert_cached(&berth, &repo, "list", &list, &[]);
    assert_cached(&berth, &repo, &amd.digest, &amd.manifest, &amd.blobs);
}

#[test]
fn docker_pulls_from_distribution_by_path_prefix() {
    process::require_root("starting a dockerd", "docker_pulls_from_distribution");
    require_programs(
        "docker_pulls_from_distribution",
        &[
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
            ("skopeo", "skopeo"),
            ("docker-registry", "docker-registry"),
        ],
    );
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let dist = Distribution::start();
    let (image, multi) = load_app(&skopeo, &dist, work.path(), 41);
    let list = dist.manifest("library/app", "list");
    let list_amd = dist.image("library/app", "list", Some("amd64"));
    let berth = mirror_of(&dist.url());
    let dockerd = Dockerd::start();
    let name = format!("{}/{NS}/library/app", berth.host());

    let arm = multi.image("arm64");
    for (platform, reference, config, digest) in [
        (
            "linux/amd64",
            "1",
            &image.config.digest,
            &image.manifest.digest,
        ),
        (
            "linux/arm64",
            "multi",
            &arm.config.digest,
            &multi.index.digest,
        ),
        (
            "linux/amd64",
            "list",
            &list_amd.config,
            &http::sha256_digest(&list),
        ),
    ] {
        let tagged = format!("{name}:{reference}");
        assert_ok(&dockerd.docker(&["pull", "--platform", platform, &tagged]));
        let format = "{{.Id}} {{json .RepoDigests}}";
        let out = dockerd.docker(&["image", "inspect", "--format", format, &tagged]);
        let inspected = assert_ok(&out).lines().last().unwrap_or_default();
        // The image id is the config's digest; the repo digest, what the tag named.
        assert!(
            inspected.starts_with(&format!("{config} ")),
            "{reference}: the image is not the config {config}: {inspected}"
        );
        assert!(
            inspected.contains(&format!("{name}@{digest}")),
            "{reference}: not pulled as {digest}: {inspected}"
        );
    }

    dist.stop();
    let repo = format!("{NS}/library/app");
    assert_cached(&berth, &repo, "1", &image.manifest_bytes, &blobs_of(&image));
    assert_cached(
        &berth,
        &repo,
        &arm.manifest.digest,
        &arm.manifest_bytes,
        &blobs_of(arm),
    );
    assert_cached(&berth, &repo, "list", &list, &[]);
    assert_cached(
        &berth,
        &repo,
        &list_amd.digest,
        &list_amd.manifest,
        &list_amd.blobs,
    );
}

/// A docker `config.json` with `user:password` for `host`.
fn docker_config(path: &Path, host: &str, user: &str, password: &str) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        path,
        json!({ "auths": { host: { "auth": auth } } }).to_string(),
    )
    .unwrap();
}

#[test]
fn skopeo_pulls_through_a_mirror_of_a_berth_with_token_auth() {
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    htpasswd(&path("users"), "alice", "correct horse");
    let users = path("users");
    let upstream = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.auth = Some(berth::auth::AuthConfig::new(users));
    });
    let image = layout::write_image(&path("src"), "1", 51);
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:correct horse",
        &format!("oci:{}:1", path("src").display()),
        &format!("docker://{}/team/app:1", upstream.host()),
    ]);
    // Nothing comes from it without logging in, and logging in is the token flow.
    let resp = http::get(&http::manifest_url(&upstream.url(), "team/app", "1"));
    assert_eq!(resp.status, 401, "{resp:?}");
    assert!(
        resp.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer ")),
        "{resp:?}"
    );

    docker_config(
        &path("right.json"),
        &upstream.host(),
        "alice",
        "correct horse",
    );
    let auth = path("right.json");
    let berth = mirror_with(&upstream.url(), |c| c.upstream_auth = Some(auth));
    skopeo.ok(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/{NS}/team/app:1", berth.host()),
        &format!("oci:{}:1", path("pulled").display()),
    ]);
    layout::assert_copy_matches(&path("pulled"), "1", &image.manifest, &image.blobs());

    docker_config(&path("wrong.json"), &upstream.host(), "alice", "wrong");
    for auth in [None, Some(path("wrong.json"))] {
        let berth = mirror_with(&upstream.url(), |c| c.upstream_auth = auth.clone());
        let started = Instant::now();
        let url = http::manifest_url(&berth.url(), &format!("{NS}/team/app"), "1");
        let resp = http::get(&url);
        assert_error(&resp, 502, "UNAVAILABLE");
        assert!(
            resp.text().contains(&upstream.host()) && resp.text().contains("401"),
            "{auth:?}: the error names the upstream and its answer: {resp:?}"
        );
        let stderr = skopeo.fails(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/{NS}/team/app:1", berth.host()),
        ]);
        assert!(stderr.contains("502 Bad Gateway"), "{auth:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{auth:?}: refused after {:?}",
            started.elapsed()
        );
    }
}
