//! OCI image layouts (the `oci:` transport of skopeo and umoci), built offline in Rust and
//! read back for comparison.
//!
//! Writing: [`LayoutWriter`] puts `oci-layout`, `index.json` and `blobs/sha256/<hex>` in a
//! directory. Layers are real tar archives (one file of random bytes each), stored plain
//! (`application/vnd.oci.image.layer.v1.tar`) or gzip-wrapped with stored deflate blocks
//! (`...tar+gzip`); the config's `rootfs.diff_ids` are the sha256 of the uncompressed tars,
//! so the images are valid enough for tools that unpack them, not just for registries.
//! Everything is deterministic per seed (a small xorshift, no `rand`), so a failing test
//! produces the same digests when run again.
//!
//! Reading: [`tagged`] finds an `index.json` entry by its ref name, [`verify_blobs`] re-hashes
//! every blob file against its name, [`blob_files`] lists the blob set and [`reachable`]
//! walks index -> manifests -> config and layers.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `index.json` annotation that names an image in a layout (`oci:DIR:<name>`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn sha256_hex(data: &[u8]) -> String {
    let out = Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for byte in out.iter() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// xorshift64* seeded through splitmix64, so any seed (0 included) gives a good stream.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`: the blob is the tar, digest == diff_id.
    Plain,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`: a gzip member around the tar.
    Gzip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// One single-platform image as written: its manifest (bytes included, to compare with what
/// a registry serves), config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub os: String,
    pub architecture: String,
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// sha256 of each uncompressed layer tar, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
}

impl Image {
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    /// Every blob of the image: manifest, config and layers.
    pub fn blobs(&self) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = self.layer_digests().into_iter().collect();
        set.insert(self.config.digest.clone());
        set.insert(self.manifest.digest.clone());
        set
    }
}

/// An image index over several platforms, each its own image.
#[derive(Clone, Debug)]
pub struct MultiPlatform {
    pub index: Descriptor,
    pub index_bytes: Vec<u8>,
    pub images: Vec<Image>,
}

impl MultiPlatform {
    pub fn image(&self, architecture: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.architecture == architecture)
            .unwrap_or_else(|| panic!("no {architecture} image in the index"))
    }

    /// The index and every blob of every platform.
    pub fn blobs(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        set.insert(self.index.digest.clone());
        for image in &self.images {
            set.extend(image.blobs());
        }
        set
    }
}

/// Writes blobs, images, indexes and tags into one OCI layout directory.
pub struct LayoutWriter {
    root: PathBuf,
    rng: XorShift,
    layer_count: usize,
}

impl LayoutWriter {
    /// Creates (or reopens) a layout at `root`: `oci-layout`, `blobs/sha256/` and, if absent,
    /// an empty `index.json`. `seed` fixes every random byte this writer produces.
    pub fn create(root: &Path, seed: u64) -> LayoutWriter {
        fs::create_dir_all(root.join("blobs").join("sha256")).expect("create blobs/sha256");
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let index = root.join("index.json");
        if !index.exists() {
            let empty = json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [] });
            fs::write(&index, serde_json::to_vec_pretty(&empty).unwrap()).expect("index.json");
        }
        LayoutWriter {
            root: root.to_path_buf(),
            rng: XorShift::new(seed),
            layer_count: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `data` as `blobs/sha256/<hex>`; returns a descriptor of `media_type`.
    pub fn put_blob(&self, media_type: &str, data: &[u8]) -> Descriptor {
        let hex = sha256_hex(data);
        let path = self.root.join("blobs").join("sha256").join(&hex);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, data).expect("write blob");
            fs::rename(&tmp, &path).expect("rename blob");
        }
        Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{hex}"),
            size: data.len() as u64,
        }
    }

    /// One layer: a tar holding one file of `payload` random bytes. Returns the blob's
    /// descriptor and the diff_id (sha256 of the tar).
    pub fn layer(&mut self, payload: usize, compression: Compression) -> (Descriptor, String) {
        self.layer_count += 1;
        let name = format!(
            "data/layer{:03}-{:016x}.bin",
            self.layer_count,
            self.rng.next_u64()
        );
        let tar = tar_one_file(&name, &self.rng.bytes(payload));
        let diff_id = sha256_digest(&tar);
        let desc = match compression {
            Compression::Plain => self.put_blob(MEDIA_LAYER_TAR, &tar),
            Compression::Gzip => self.put_blob(MEDIA_LAYER_GZIP, &gzip_stored(&tar)),
        };
        (desc, diff_id)
    }

    /// A single-platform image: layers of the given payload sizes, a config whose
    /// `rootfs.diff_ids` match them, and an image manifest. Not tagged: see [`Self::tag`].
    pub fn image(
        &mut self,
        os: &str,
        architecture: &str,
        layer_payloads: &[usize],
        compression: Compression,
    ) -> Image {
        let (layers, diff_ids): (Vec<Descriptor>, Vec<String>) = layer_payloads
            .iter()
            .map(|&n| self.layer(n, compression))
            .unzip();
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": os,
            "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/true"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("berth tests: layer {i}"),
            })).collect::<Vec<_>>(),
        });
        let config = self.put_blob(MEDIA_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest = self.put_blob(MEDIA_MANIFEST, &manifest_bytes);
        Image {
            os: os.to_string(),
            architecture: architecture.to_string(),
            manifest,
            manifest_bytes,
            config,
            layers,
            diff_ids,
        }
    }

    /// An image index with one image per `(os, architecture)`, each with its own layers.
    pub fn multi_platform(
        &mut self,
        platforms: &[(&str, &str)],
        layer_payloads: &[usize],
        compression: Compression,
    ) -> MultiPlatform {
        let images: Vec<Image> = platforms
            .iter()
            .map(|(os, arch)| self.image(os, arch, layer_payloads, compression))
            .collect();
        let entries: Vec<Value> = images
            .iter()
            .map(|image| {
                let mut entry = image.manifest.to_json();
                entry["platform"] = json!({ "architecture": image.architecture, "os": image.os });
                entry
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries });
        let index_bytes = serde_json::to_vec(&index).unwrap();
        let index = self.put_blob(MEDIA_INDEX, &index_bytes);
        MultiPlatform {
            index,
            index_bytes,
            images,
        }
    }

    /// Names `desc` in `index.json` (annotation `org.opencontainers.image.ref.name`),
    /// replacing an entry of the same name.
    pub fn tag(&self, name: &str, desc: &Descriptor) {
        let path = self.root.join("index.json");
        let mut index: Value = serde_json::from_slice(&fs::read(&path).expect("read index.json"))
            .expect("index.json is JSON");
        let manifests = index["manifests"]
            .as_array_mut()
            .expect("index.json manifests");
        manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(name));
        let mut entry = desc.to_json();
        entry["annotations"] = json!({ REF_NAME: name });
        manifests.push(entry);
        fs::write(&path, serde_json::to_vec_pretty(&index).unwrap()).expect("write index.json");
    }
}

/// The single-platform image most tests push: linux/amd64, three gzip layers (a tiny one,
/// one past a deflate block, one of a few MiB), tagged `tag` in a new layout at `dir`.
pub fn write_image(dir: &Path, tag: &str, seed: u64) -> Image {
    let mut writer = LayoutWriter::create(dir, seed);
    let image = writer.image(
        "linux",
        "amd64",
        &[300, 200_000, 3 << 20],
        Compression::Gzip,
    );
    writer.tag(tag, &image.manifest);
    image
}

/// An image index over linux/amd64 and linux/arm64 (plain tar layers, each platform its own),
/// tagged `tag` in a new layout at `dir`.
pub fn write_multi_platform(dir: &Path, tag: &str, seed: u64) -> MultiPlatform {
    let mut writer = LayoutWriter::create(dir, seed);
    let multi = writer.multi_platform(
        &[("linux", "amd64"), ("linux", "arm64")],
        &[1_000, 150_000],
        Compression::Plain,
    );
    writer.tag(tag, &multi.index);
    multi
}

// ---- reading a layout back ------------------------------------------------------------

pub fn read_index_json(dir: &Path) -> Value {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `index.json` entry named `name`, if any.
pub fn tagged(dir: &Path, name: &str) -> Option<Descriptor> {
    let index = read_index_json(dir);
    index["manifests"].as_array()?.iter().find_map(|m| {
        (m["annotations"][REF_NAME].as_str() == Some(name)).then(|| Descriptor {
            media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: m["digest"].as_str().unwrap_or_default().to_string(),
            size: m["size"].as_u64().unwrap_or_default(),
        })
    })
}

/// The digest of the one entry of `index.json` (panics unless there is exactly one).
pub fn top_digest(dir: &Path) -> String {
    let index = read_index_json(dir);
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries.len(),
        1,
        "{}/index.json: want one entry, got {index}",
        dir.display()
    );
    entries[0]["digest"].as_str().expect("digest").to_string()
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not sha256: {digest}"));
    dir.join("blobs").join("sha256").join(hex)
}

pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let path = blob_path(dir, digest);
    fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()))
}

/// Every file under `blobs/sha256/`, as `sha256:<name>`.
pub fn blob_files(dir: &Path) -> BTreeSet<String> {
    let blobs = dir.join("blobs").join("sha256");
    fs::read_dir(&blobs)
        .unwrap_or_else(|e| panic!("read {}: {e}", blobs.display()))
        .map(|entry| format!("sha256:{}", entry.unwrap().file_name().to_string_lossy()))
        .collect()
}

/// Re-hashes every blob file; `Err` names each whose content does not match its name.
/// `Ok` gives the number of blobs checked.
pub fn verify_blobs(dir: &Path) -> Result<usize, String> {
    let files = blob_files(dir);
    let bad: Vec<String> = files
        .iter()
        .filter_map(|digest| {
            let actual = sha256_digest(&read_blob(dir, digest));
            (actual != *digest).then(|| format!("{digest} holds bytes hashing to {actual}"))
        })
        .collect();
    if bad.is_empty() {
        Ok(files.len())
    } else {
        Err(bad.join("; "))
    }
}

/// Every blob reachable from the manifest or index `top` (included), following indexes to
/// manifests and manifests to config and layers; each must be present in the layout.
pub fn reachable(dir: &Path, top: &Descriptor) -> Result<BTreeSet<String>, String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![top.clone()];
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        let path = blob_path(dir, &desc.digest);
        let bytes =
            fs::read(&path).map_err(|e| format!("{} referenced but missing ({e})", desc.digest))?;
        if bytes.len() as u64 != desc.size {
            return Err(format!(
                "{}: size {} but descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            ));
        }
        let is_index = desc.media_type == MEDIA_INDEX || desc.media_type == DOCKER_LIST;
        let is_manifest = desc.media_type == MEDIA_MANIFEST || desc.media_type == DOCKER_MANIFEST;
        if !is_index && !is_manifest {
            continue;
        }
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} ({}) is not JSON: {e}", desc.digest, desc.media_type))?;
        let children: Vec<&Value> = if is_index {
            doc["manifests"].as_array().into_iter().flatten().collect()
        } else {
            std::iter::once(&doc["config"])
                .chain(doc["layers"].as_array().into_iter().flatten())
                .collect()
        };
        for child in children {
            stack.push(Descriptor {
                media_type: child["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: child["digest"]
                    .as_str()
                    .ok_or_else(|| format!("{}: a descriptor without digest", desc.digest))?
                    .to_string(),
                size: child["size"].as_u64().unwrap_or_default(),
            });
        }
    }
    Ok(seen)
}

/// Checks that the layout at `copy` holds, under `name`, exactly what `expected` (the set of
/// blobs of the image or index `expected_top`) is: same top digest, every blob file re-hashing
/// to its name, and the same blob set, both on disk and reachable from the top.
pub fn assert_copy_matches(
    copy: &Path,
    name: &str,
    expected_top: &Descriptor,
    expected_blobs: &BTreeSet<String>,
) {
    let top = tagged(copy, name).unwrap_or_else(|| {
        panic!(
            "{}/index.json has no {name}: {}",
            copy.display(),
            read_index_json(copy)
        )
    });
    assert_eq!(
        top.digest,
        expected_top.digest,
        "top digest of the copy in {}",
        copy.display()
    );
    assert_eq!(
        top.media_type, expected_top.media_type,
        "top media type of the copy"
    );
    if let Err(bad) = verify_blobs(copy) {
        panic!("corrupt blobs in {}: {bad}", copy.display());
    }
    let on_disk = blob_files(copy);
    assert_eq!(&on_disk, expected_blobs, "blob files in {}", copy.display());
    let walked = reachable(copy, &top).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
    assert_eq!(
        &walked,
        expected_blobs,
        "blobs reachable from {} in {}",
        top.digest,
        copy.display()
    );
}

// ---- tar and gzip, just enough ----------------------------------------------------------

/// A ustar archive with one regular file, mode 0644, mtime 0, owned by root.
fn tar_one_file(name: &str, payload: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], payload.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[265..269].copy_from_slice(b"root");
    header[297..301].copy_from_slice(b"root");
    octal(&mut header[329..337], 0);
    octal(&mut header[337..345], 0);
    // The checksum is computed with its own field as eight spaces.
    header[148..156].fill(b' ');
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    header[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    header[154] = 0;
    header[155] = b' ';

    let padded = payload.len().div_ceil(512) * 512;
    let mut tar = Vec::with_capacity(512 + padded + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(payload);
    tar.resize(512 + padded + 1024, 0); // pad the file, then two zero blocks end the archive
    tar
}

/// Zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert_eq!(
        text.len(),
        digits,
        "{value} does not fit a {}-byte tar field",
        field.len()
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// A valid gzip member whose deflate stream is made of stored (uncompressed) blocks: random
/// payloads would not shrink anyway, and this needs no compression crate.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(65_535).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none())); // BFINAL on the last, BTYPE 00 (stored)
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses it).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc = table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---- images that share layers ----------------------------------------------------------

impl LayoutWriter {
    /// A single-platform image over layers already written (by this writer or copied in
    /// with [`Self::put_blob`]): a config whose `rootfs.diff_ids` match them and a manifest.
    /// `label` goes into the config, so images over the same layers still differ.
    pub fn image_over_layers(
        &mut self,
        os: &str,
        architecture: &str,
        layers: &[(Descriptor, String)],
        label: &str,
    ) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|(_, id)| id.clone()).collect();
        let layers: Vec<Descriptor> = layers.iter().map(|(d, _)| d.clone()).collect();
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": os,
            "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/true"], "Labels": { "berth.test": label } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("berth tests: layer {i}"),
            })).collect::<Vec<_>>(),
        });
        let config = self.put_blob(MEDIA_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest = self.put_blob(MEDIA_MANIFEST, &manifest_bytes);
        Image {
            os: os.to_string(),
            architecture: architecture.to_string(),
            manifest,
            manifest_bytes,
            config,
            layers,
            diff_ids,
        }
    }
}

/// `count` layouts `<root>/image<i>`, each holding one linux/amd64 image tagged `tag`:
/// the same `base_payloads` gzip base layers (byte for byte identical in every layout),
/// then one layer of its own. Returns each layout's directory and image.
pub fn write_images_sharing_layers(
    root: &Path,
    tag: &str,
    count: usize,
    base_payloads: &[usize],
    seed: u64,
) -> Vec<(PathBuf, Image)> {
    let base_dir = root.join("base");
    let mut base = LayoutWriter::create(&base_dir, seed);
    let shared: Vec<(Descriptor, String)> = base_payloads
        .iter()
        .map(|&n| base.layer(n, Compression::Gzip))
        .collect();
    (0..count)
        .map(|i| {
            let dir = root.join(format!("image{i}"));
            let mut writer = LayoutWriter::create(&dir, seed.wrapping_add(1 + i as u64));
            let mut layers = Vec::with_capacity(shared.len() + 1);
            for (desc, diff_id) in &shared {
                let copied = writer.put_blob(&desc.media_type, &read_blob(&base_dir, &desc.digest));
                assert_eq!(&copied, desc, "a copied base layer keeps its descriptor");
                layers.push((copied, diff_id.clone()));
            }
            layers.push(writer.layer(40_000 + 1_000 * i, Compression::Gzip));
            let image = writer.image_over_layers("linux", "amd64", &layers, &format!("image{i}"));
            writer.tag(tag, &image.manifest);
            (dir, image)
        })
        .collect()
}
