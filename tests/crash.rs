//! kill -9 at any moment: the real binary is killed with SIGKILL at random
//! times while client threads upload (monolithic and chunked, small and
//! MiB-sized, the same content from several threads), push manifests and
//! indexes, and delete. After every kill the directory is checked with
//! `berth fsck` (only orphaned files, which start-up cleans, may be found),
//! the server is restarted over it, and everything a client was told is
//! checked: acknowledged blobs and manifests are whole, acknowledged deletes
//! stay done, acknowledged chunks are still committed, and nothing half
//! written is ever served. At the end a clean stop leaves a directory that
//! `berth fsck` finds nothing wrong with.
//!
//! Randomness is a seeded xorshift; the seed is printed, and
//! `BERTH_CRASH_SEED=<n>` replays its choices (the kill moments, being
//! wall-clock, differ from run to run).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::clients::require_programs;
use common::http::{self, Response};
use common::process::{self, ServerProcess};
use serde_json::json;

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");
const THREADS: usize = 4;
/// Kill cycles wanted, and the fewest that count as a run.
const CYCLES: usize = 22;
const MIN_CYCLES: usize = 6;
/// No new cycle starts after this much time.
const BUDGET: Duration = Duration::from_secs(60);
/// Ops one client thread may do in one cycle (a bound, never reached).
const MAX_OPS: usize = 20_000;
/// Manifests a thread keeps alive at once; past this it deletes instead.
const MAX_LIVE_MANIFESTS: usize = 24;
const MAX_UPLOADS: usize = 3;

// ---------------------------------------------------------------------------
// Randomness

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------
// Content every thread draws from, so the same bytes go up from several
// threads (and several repositories) at once.

struct Pool {
    data: Vec<Vec<u8>>,
    digests: Vec<String>,
}

const SMALL: usize = 14;
const MEDIUM: usize = 6;
const LARGE: usize = 3;

impl Pool {
    fn new(seed: u64) -> Pool {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut data = Vec::new();
        for i in 0..SMALL {
            // Index 0 is the empty blob; the rest have at least 2 bytes, so an
            // upload status of `0-0` can only mean nothing committed.
            let len = if i == 0 { 0 } else { 2 + rng.below(48 * 1024) };
            data.push(http::random_bytes(len, seed.wrapping_add(i as u64)));
        }
        for i in 0..MEDIUM {
            let len = 100_000 + rng.below(400_000);
            data.push(http::random_bytes(len, seed.wrapping_add(100 + i as u64)));
        }
        for i in 0..LARGE {
            let len = (1 << 20) + rng.below(2 << 20);
            data.push(http::random_bytes(len, seed.wrapping_add(200 + i as u64)));
        }
        let digests = data.iter().map(|d| http::sha256_digest(d)).collect();
        Pool { data, digests }
    }

    fn len(&self) -> usize {
        self.data.len()
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        match rng.below(100) {
            0..70 => rng.below(SMALL),
            70..92 => SMALL + rng.below(MEDIUM),
            _ => SMALL + MEDIUM + rng.below(LARGE),
        }
    }
}

// ---------------------------------------------------------------------------
// What each client thread knows. Every repository belongs to one thread, so
// per repository the operations are sequential and the model is exact: a
// request that got its answer is Present/Absent, one that was cut off by
// the kill leaves Unknown (resolved by looking after the restart).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Absent,
    Present,
    Unknown,
}

#[derive(Debug)]
struct ManifestRec {
    body: Vec<u8>,
    digest: String,
    media_type: &'static str,
    tag: Option<String>,
    state: Known,
    /// Referenced by an index that was (maybe) pushed: never deleted.
    pinned: bool,
    /// Pool indices of its config and layers.
    blobs: Vec<usize>,
    /// Indices (into the thread's manifests) of an index's children.
    children: Vec<usize>,
    /// Confirmed deleted after a restart: no longer checked.
    retired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A PATCH to this end offset got no answer.
    Patch(usize),
    /// The finishing PUT got no answer.
    Finish,
    /// The cancelling DELETE got no answer.
    Cancel,
}

#[derive(Debug)]
struct UploadRec {
    /// `/v2/<repo>/blobs/uploads/<id>`.
    path: String,
    content: usize,
    /// Committed bytes, as last acknowledged or observed.
    offset: usize,
    pending: Option<Pending>,
    /// Survived a kill (so finishing it proves resumption).
    restarted: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    blob_acks: usize,
    patch_acks: usize,
    manifest_acks: usize,
    index_acks: usize,
    blob_delete_acks: usize,
    manifest_delete_acks: usize,
    cancel_acks: usize,
    lost: usize,
    resumed_finishes: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.blob_acks += o.blob_acks;
        self.patch_acks += o.patch_acks;
        self.manifest_acks += o.manifest_acks;
        self.index_acks += o.index_acks;
        self.blob_delete_acks += o.blob_delete_acks;
        self.manifest_delete_acks += o.manifest_delete_acks;
        self.cancel_acks += o.cancel_acks;
        self.lost += o.lost;
        self.resumed_finishes += o.resumed_finishes;
    }
}

struct Client {
    id: usize,
    repo: String,
    rng: Rng,
    /// Per pool index: is it linked in this thread's repository.
    blobs: Vec<Known>,
    /// Per pool index: referenced by a (maybe) pushed manifest.
    pinned: Vec<bool>,
    manifests: Vec<ManifestRec>,
    uploads: Vec<UploadRec>,
    /// Upload paths whose cancel was acknowledged.
    cancelled: Vec<String>,
    counter: u64,
    stats: Stats,
    /// Answers a correct server never gives, and failures while it was up.
    unexpected: Vec<String>,
}

/// A request the kill cut off.
struct Lost;

type Step = Result<(), Lost>;

/// What a client thread needs to talk to the current server.
struct Cx<'a> {
    base: String,
    pool: &'a Pool,
    killing: &'a AtomicBool,
}

impl Client {
    fn new(id: usize, seed: u64, pool: &Pool) -> Client {
        Client {
            id,
            repo: format!("crash/t{id}"),
            rng: Rng::new(seed.wrapping_add(1000 * (id as u64 + 1))),
            blobs: vec![Known::Absent; pool.len()],
            pinned: vec![false; pool.len()],
            manifests: Vec::new(),
            uploads: Vec::new(),
            cancelled: Vec::new(),
            counter: 0,
            stats: Stats::default(),
            unexpected: Vec::new(),
        }
    }

    /// Sends one request; `None` when it got no complete answer.
    fn send(
        &mut self,
        cx: &Cx,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Response> {
        let url = format!("{}{path}", cx.base);
        match http::try_request(method, &url, headers, body) {
            Ok(resp) => Some(resp),
            Err(e) => {
                self.stats.lost += 1;
                if !cx.killing.load(Ordering::SeqCst) {
                    self.unexpected.push(format!(
                        "{method} {path} failed while the server was up: {e}"
                    ));
                }
                None
            }
        }
    }

    fn unexpected(&mut self, what: &str, resp: &Response) {
        self.unexpected.push(format!("{what}: {resp:?}"));
    }

    /// Runs operations until the kill (or a bound).
    fn run(&mut self, cx: &Cx) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..MAX_OPS {
            if cx.killing.load(Ordering::SeqCst) || Instant::now() > deadline {
                return;
            }
            if self.op(cx).is_err() {
                return;
            }
        }
    }

    fn op(&mut self, cx: &Cx) -> Step {
        match self.rng.below(100) {
            0..20 => self.monolithic(cx),
            20..28 => self.post_then_put(cx),
            28..55 => self.chunked(cx),
            55..68 => self.push_image_manifest(cx),
            68..75 => self.push_index(cx),
            75..85 => self.delete_blob(cx),
            85..94 => self.delete_manifest(cx),
            _ => self.cancel_upload(cx),
        }
    }

    fn upload_lost(&mut self, i: usize) {
        if self.blobs[i] != Known::Present {
            self.blobs[i] = Known::Unknown;
        }
    }

    fn monolithic(&mut self, cx: &Cx) -> Step {
        let i = cx.pool.pick(&mut self.rng);
        let digest = &cx.pool.digests[i];
        let path = format!("/v2/{}/blobs/uploads/?digest={digest}", self.repo);
        match self.send(cx, "POST", &path, &[OCTETS], &cx.pool.data[i]) {
            None => {
                self.upload_lost(i);
                Err(Lost)
            }
            Some(resp) if resp.status == 201 => {
                self.blobs[i] = Known::Present;
                self.stats.blob_acks += 1;
                if resp.header("docker-content-digest") != Some(digest.as_str()) {
                    self.unexpected("monolithic POST: Docker-Content-Digest", &resp);
                }
                Ok(())
            }
            Some(resp) => {
                self.unexpected("monolithic POST", &resp);
                Ok(())
            }
        }
    }

    /// POST a session; returns its path.
    fn start_session(&mut self, cx: &Cx) -> Result<Option<String>, Lost> {
        let path = format!("/v2/{}/blobs/uploads/", self.repo);
        let resp = self.send(cx, "POST", &path, &[], b"").ok_or(Lost)?;
        if resp.status != 202 {
            self.unexpected("POST upload", &resp);
            return Ok(None);
        }
        let Some(location) = resp.header("location") else {
            self.unexpected("POST upload without Location", &resp);
            return Ok(None);
        };
        let path = http::path_of(location)
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        Ok(Some(path))
    }

    fn post_then_put(&mut self, cx: &Cx) -> Step {
        let i = cx.pool.pick(&mut self.rng);
        let Some(path) = self.start_session(cx)? else {
            return Ok(());
        };
        self.uploads.push(UploadRec {
            path,
            content: i,
            offset: 0,
            pending: None,
            restarted: false,
        });
        let k = self.uploads.len() - 1;
        self.finish(cx, k)
    }

    /// PUT ?digest= with the rest of the content.
    fn finish(&mut self, cx: &Cx, k: usize) -> Step {
        let (i, offset, restarted) = {
            let u = &self.uploads[k];
            (u.content, u.offset, u.restarted)
        };
        let digest = cx.pool.digests[i].clone();
        let path = format!("{}?digest={digest}", self.uploads[k].path);
        match self.send(cx, "PUT", &path, &[OCTETS], &cx.pool.data[i][offset..]) {
            None => {
                self.uploads[k].pending = Some(Pending::Finish);
                self.upload_lost(i);
                Err(Lost)
            }
            Some(resp) if resp.status == 201 => {
                self.blobs[i] = Known::Present;
                self.stats.blob_acks += 1;
                if restarted {
                    self.stats.resumed_finishes += 1;
                }
                if resp.header("docker-content-digest") != Some(digest.as_str()) {
                    self.unexpected("finishing PUT: Docker-Content-Digest", &resp);
                }
                self.uploads.remove(k);
                Ok(())
            }
            Some(resp) => {
                self.unexpected("finishing PUT", &resp);
                self.uploads.remove(k);
                Ok(())
            }
        }
    }

    fn chunked(&mut self, cx: &Cx) -> Step {
        let start_new = self.uploads.is_empty()
            || (self.uploads.len() < MAX_UPLOADS && self.rng.below(100) < 30);
        if start_new {
            let i = cx.pool.pick(&mut self.rng);
            if let Some(path) = self.start_session(cx)? {
                self.uploads.push(UploadRec {
                    path,
                    content: i,
                    offset: 0,
                    pending: None,
                    restarted: false,
                });
            }
            return Ok(());
        }
        let k = self.rng.below(self.uploads.len());
        let (i, offset) = (self.uploads[k].content, self.uploads[k].offset);
        let len = cx.pool.data[i].len();
        if offset == len || self.rng.below(100) < 15 {
            return self.finish(cx, k);
        }
        let size = (len - offset).min(self.rng.pick(&[4096, 65_536, 262_144, 1 << 20]));
        let end = offset + size;
        let range = format!("{offset}-{}", end - 1);
        let path = self.uploads[k].path.clone();
        let headers = [OCTETS, ("Content-Range", range.as_str())];
        match self.send(cx, "PATCH", &path, &headers, &cx.pool.data[i][offset..end]) {
            None => {
                self.uploads[k].pending = Some(Pending::Patch(end));
                Err(Lost)
            }
            Some(resp) if resp.status == 202 => {
                let want = format!("0-{}", end - 1);
                if resp.header("range") != Some(want.as_str()) {
                    self.unexpected(&format!("PATCH {range}: Range should be {want}"), &resp);
                }
                self.uploads[k].offset = end;
                self.stats.patch_acks += 1;
                Ok(())
            }
            Some(resp) => {
                self.unexpected(&format!("PATCH {range}"), &resp);
                self.uploads.remove(k);
                Ok(())
            }
        }
    }

    fn cancel_upload(&mut self, cx: &Cx) -> Step {
        if self.uploads.is_empty() {
            return self.chunked(cx);
        }
        let k = self.rng.below(self.uploads.len());
        let path = self.uploads[k].path.clone();
        match self.send(cx, "DELETE", &path, &[], b"") {
            None => {
                self.uploads[k].pending = Some(Pending::Cancel);
                Err(Lost)
            }
            Some(resp) => {
                if resp.status == 204 {
                    self.stats.cancel_acks += 1;
                    self.cancelled.push(path);
                } else {
                    self.unexpected("DELETE upload", &resp);
                }
                self.uploads.remove(k);
                Ok(())
            }
        }
    }

    fn live_manifests(&self) -> usize {
        self.manifests
            .iter()
            .filter(|m| m.state != Known::Absent && !m.retired)
            .count()
    }

    fn push_manifest_rec(&mut self, cx: &Cx, mut rec: ManifestRec) -> Step {
        let reference = rec.tag.clone().unwrap_or_else(|| rec.digest.clone());
        let path = format!("/v2/{}/manifests/{reference}", self.repo);
        let headers = [("Content-Type", rec.media_type)];
        let body = rec.body.clone();
        let result = match self.send(cx, "PUT", &path, &headers, &body) {
            None => {
                rec.state = Known::Unknown;
                Err(Lost)
            }
            Some(resp) if resp.status == 201 => {
                rec.state = Known::Present;
                if rec.media_type == http::OCI_INDEX {
                    self.stats.index_acks += 1;
                } else {
                    self.stats.manifest_acks += 1;
                }
                if resp.header("docker-content-digest") != Some(rec.digest.as_str()) {
                    self.unexpected("manifest PUT: Docker-Content-Digest", &resp);
                }
                Ok(())
            }
            Some(resp) => {
                self.unexpected(&format!("PUT manifest {reference}"), &resp);
                rec.state = Known::Unknown;
                Ok(())
            }
        };
        self.manifests.push(rec);
        result
    }

    fn next_name(&mut self) -> String {
        self.counter += 1;
        format!("t{}-{}", self.id, self.counter)
    }

    fn push_image_manifest(&mut self, cx: &Cx) -> Step {
        let present: Vec<usize> = (0..cx.pool.len())
            .filter(|&i| self.blobs[i] == Known::Present)
            .collect();
        if present.len() < 2 {
            return self.monolithic(cx);
        }
        if self.live_manifests() >= MAX_LIVE_MANIFESTS {
            return self.delete_manifest(cx);
        }
        let config = self.rng.pick(&present);
        let mut layers = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let l = self.rng.pick(&present);
            if !layers.contains(&l) {
                layers.push(l);
            }
        }
        let desc = |media: &str, i: usize| {
            json!({
                "mediaType": media,
                "digest": cx.pool.digests[i],
                "size": cx.pool.data[i].len(),
            })
        };
        let name = self.next_name();
        let body = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": http::OCI_MANIFEST,
            "config": desc(http::OCI_CONFIG, config),
            "layers": layers.iter().map(|&l| desc(http::OCI_LAYER, l)).collect::<Vec<_>>(),
            "annotations": { "org.example.crash": name },
        }))
        .unwrap();
        let mut blobs = vec![config];
        blobs.extend(&layers);
        for &b in &blobs {
            self.pinned[b] = true;
        }
        let tag = (self.rng.below(2) == 0).then_some(name);
        let rec = ManifestRec {
            digest: http::sha256_digest(&body),
            body,
            media_type: http::OCI_MANIFEST,
            tag,
            state: Known::Unknown,
            pinned: false,
            blobs,
            children: Vec::new(),
            retired: false,
        };
        self.push_manifest_rec(cx, rec)
    }

    fn push_index(&mut self, cx: &Cx) -> Step {
        let images: Vec<usize> = (0..self.manifests.len())
            .filter(|&m| {
                let rec = &self.manifests[m];
                rec.state == Known::Present && rec.media_type == http::OCI_MANIFEST
            })
            .collect();
        if images.is_empty() {
            return self.push_image_manifest(cx);
        }
        if self.live_manifests() >= MAX_LIVE_MANIFESTS {
            return self.delete_manifest(cx);
        }
        let mut children = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let c = self.rng.pick(&images);
            if !children.contains(&c) {
                children.push(c);
            }
        }
        let name = self.next_name();
        let descriptors: Vec<_> = children
            .iter()
            .map(|&c| http::descriptor(http::OCI_MANIFEST, &self.manifests[c].body))
            .collect();
        let body = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": http::OCI_INDEX,
            "manifests": descriptors,
            "annotations": { "org.example.crash": name },
        }))
        .unwrap();
        for &c in &children {
            self.manifests[c].pinned = true;
        }
        let tag = (self.rng.below(2) == 0).then_some(name);
        let rec = ManifestRec {
            digest: http::sha256_digest(&body),
            body,
            media_type: http::OCI_INDEX,
            tag,
            state: Known::Unknown,
            pinned: false,
            blobs: Vec::new(),
            children,
            retired: false,
        };
        self.push_manifest_rec(cx, rec)
    }

    fn delete_blob(&mut self, cx: &Cx) -> Step {
        let candidates: Vec<usize> = (0..cx.pool.len())
            .filter(|&i| self.blobs[i] != Known::Absent && !self.pinned[i])
            .collect();
        if candidates.is_empty() {
            return self.monolithic(cx);
        }
        let i = self.rng.pick(&candidates);
        let path = format!("/v2/{}/blobs/{}", self.repo, cx.pool.digests[i]);
        match self.send(cx, "DELETE", &path, &[], b"") {
            None => {
                self.blobs[i] = Known::Unknown;
                Err(Lost)
            }
            Some(resp) if resp.status == 202 => {
                self.blobs[i] = Known::Absent;
                self.stats.blob_delete_acks += 1;
                Ok(())
            }
            Some(resp) if resp.status == 404 && self.blobs[i] == Known::Unknown => {
                self.blobs[i] = Known::Absent;
                Ok(())
            }
            Some(resp) => {
                self.unexpected(&format!("DELETE blob ({:?})", self.blobs[i]), &resp);
                self.blobs[i] = Known::Unknown;
                Ok(())
            }
        }
    }

    fn delete_manifest(&mut self, cx: &Cx) -> Step {
        let candidates: Vec<usize> = (0..self.manifests.len())
            .filter(|&m| {
                let rec = &self.manifests[m];
                rec.state != Known::Absent && !rec.pinned && !rec.retired
            })
            .collect();
        if candidates.is_empty() {
            return self.monolithic(cx);
        }
        let m = self.rng.pick(&candidates);
        let path = format!("/v2/{}/manifests/{}", self.repo, self.manifests[m].digest);
        match self.send(cx, "DELETE", &path, &[], b"") {
            None => {
                self.manifests[m].state = Known::Unknown;
                Err(Lost)
            }
            Some(resp) if resp.status == 202 => {
                self.manifests[m].state = Known::Absent;
                self.stats.manifest_delete_acks += 1;
                Ok(())
            }
            Some(resp) if resp.status == 404 && self.manifests[m].state == Known::Unknown => {
                self.manifests[m].state = Known::Absent;
                Ok(())
            }
            Some(resp) => {
                let state = self.manifests[m].state;
                self.unexpected(&format!("DELETE manifest ({state:?})"), &resp);
                self.manifests[m].state = Known::Unknown;
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Checks after a restart (no client running)

struct Checker<'a> {
    base: String,
    pool: &'a Pool,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn get(&mut self, method: &str, path: &str) -> Option<Response> {
        let url = format!("{}{path}", self.base);
        match http::try_request(method, &url, &[], b"") {
            Ok(resp) => Some(resp),
            Err(e) => {
                self.problems.push(format!("{method} {path}: {e}"));
                None
            }
        }
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    /// Every file in uploads/ belongs to an upload row (a session some
    /// repository knows), so start-up removed every orphan.
    fn uploads_dir(&mut self, data: &Path, repos: &[String], orphans: &[PathBuf]) {
        for orphan in orphans {
            if orphan.exists() {
                self.problem(format!(
                    "{} was orphaned (fsck) before the restart and is still there after it",
                    orphan.display()
                ));
            }
        }
        for name in process::names_in(&data.join("uploads")) {
            let mut owned = false;
            for repo in repos {
                let path = format!("/v2/{repo}/blobs/uploads/{name}");
                if let Some(resp) = self.get("GET", &path)
                    && resp.status == 204
                {
                    owned = true;
                    break;
                }
            }
            if !owned {
                self.problem(format!(
                    "uploads/{name} is left after a restart but no repository has that session"
                ));
            }
        }
    }

    fn client(&mut self, c: &mut Client) {
        self.uploads(c);
        self.blobs(c);
        self.manifests(c);
    }

    fn uploads(&mut self, c: &mut Client) {
        let mut keep = Vec::new();
        for mut u in std::mem::take(&mut c.uploads) {
            u.restarted = true;
            let Some(resp) = self.get("GET", &u.path) else {
                continue;
            };
            let what = format!("{} upload {} ({:?})", c.repo, u.path, u.pending);
            match resp.status {
                204 => {
                    let range = resp.header("range").unwrap_or("");
                    let committed = range
                        .strip_prefix("0-")
                        .and_then(|e| e.parse::<usize>().ok())
                        .map(|e| if e == 0 { 0 } else { e + 1 });
                    let ok = match (committed, u.pending) {
                        (Some(n), Some(Pending::Patch(to))) => n == u.offset || n == to,
                        (Some(n), _) => n == u.offset,
                        (None, _) => false,
                    };
                    if !ok {
                        self.problem(format!(
                            "{what}: status Range {range:?} after a restart, but {} bytes were \
                             acknowledged{}",
                            u.offset,
                            match u.pending {
                                Some(Pending::Patch(to)) =>
                                    format!(" (or {to} if the lost PATCH committed)"),
                                _ => String::new(),
                            }
                        ));
                        continue;
                    }
                    u.offset = committed.unwrap();
                    u.pending = None;
                    keep.push(u);
                }
                404 if u.pending == Some(Pending::Finish) => {
                    // Finished before the kill: the blob must be whole.
                    let digest = &self.pool.digests[u.content];
                    let path = format!("/v2/{}/blobs/{digest}", c.repo);
                    match self.get("HEAD", &path) {
                        Some(r) if r.status == 200 => c.blobs[u.content] = Known::Present,
                        other => self.problem(format!(
                            "{what}: the session is gone after a lost finishing PUT, but the \
                             blob is not there: {other:?}"
                        )),
                    }
                }
                404 if u.pending == Some(Pending::Cancel) => {}
                _ => self.problem(format!("{what}: status after a restart: {resp:?}")),
            }
        }
        c.uploads = keep;
        for path in std::mem::take(&mut c.cancelled) {
            if let Some(resp) = self.get("GET", &path)
                && resp.status != 404
            {
                self.problem(format!(
                    "upload {path} was cancelled (204) but after a restart: {resp:?}"
                ));
            }
        }
    }

    fn blobs(&mut self, c: &mut Client) {
        for i in 0..self.pool.len() {
            let digest = self.pool.digests[i].clone();
            let data = &self.pool.data[i];
            let path = format!("/v2/{}/blobs/{digest}", c.repo);
            let Some(resp) = self.get("HEAD", &path) else {
                continue;
            };
            let known = c.blobs[i];
            match resp.status {
                200 => {
                    if known == Known::Absent {
                        self.problem(format!(
                            "{}@{digest} HEADs 200 but was never pushed there or its delete \
                             was acknowledged",
                            c.repo
                        ));
                    }
                    let len = data.len().to_string();
                    if resp.header("content-length") != Some(len.as_str()) {
                        self.problem(format!(
                            "{}@{digest} ({} bytes) HEAD: {resp:?}",
                            c.repo,
                            data.len()
                        ));
                    }
                    match self.get("GET", &path) {
                        Some(r) if r.status == 200 && r.body == *data => {}
                        Some(r) => self.problem(format!(
                            "{}@{digest} HEADs 200 but GET gives {} with {} bytes (want {}), \
                             hashing to {}",
                            c.repo,
                            r.status,
                            r.body.len(),
                            data.len(),
                            http::sha256_digest(&r.body)
                        )),
                        None => {}
                    }
                    c.blobs[i] = Known::Present;
                }
                404 => {
                    if known == Known::Present {
                        self.problem(format!(
                            "{}@{digest} was acknowledged (201) but HEADs 404 after the restart",
                            c.repo
                        ));
                    }
                    c.blobs[i] = Known::Absent;
                }
                _ => self.problem(format!("HEAD {path}: {resp:?}")),
            }
        }
    }

    fn manifests(&mut self, c: &mut Client) {
        for m in 0..c.manifests.len() {
            if c.manifests[m].retired {
                continue;
            }
            let (digest, known) = (c.manifests[m].digest.clone(), c.manifests[m].state);
            let mut refs = vec![digest.clone()];
            refs.extend(c.manifests[m].tag.clone());
            let mut found = None;
            for reference in refs {
                let path = format!("/v2/{}/manifests/{reference}", c.repo);
                let Some(resp) = self.get("GET", &path) else {
                    continue;
                };
                let rec = &c.manifests[m];
                let here = match resp.status {
                    200 => {
                        if resp.body != rec.body
                            || resp.header("content-type") != Some(rec.media_type)
                        {
                            self.problem(format!(
                                "{}:{reference} serves other bytes or type: {resp:?}",
                                c.repo
                            ));
                        }
                        true
                    }
                    404 => false,
                    _ => {
                        self.problem(format!("GET {path}: {resp:?}"));
                        continue;
                    }
                };
                if *found.get_or_insert(here) != here {
                    self.problem(format!(
                        "{}:{reference} and its digest disagree on whether it exists",
                        c.repo
                    ));
                }
            }
            match (found, known) {
                (Some(false), Known::Present) => self.problem(format!(
                    "manifest {}@{digest} was acknowledged (201) but is gone after the restart",
                    c.repo
                )),
                (Some(true), Known::Absent) => self.problem(format!(
                    "manifest {}@{digest} was deleted (202) but is back after the restart",
                    c.repo
                )),
                _ => {}
            }
            match found {
                Some(true) => c.manifests[m].state = Known::Present,
                Some(false) => {
                    c.manifests[m].state = Known::Absent;
                    c.manifests[m].retired = !c.manifests[m].pinned;
                }
                None => {}
            }
        }
        // Everything a present manifest refers to is there.
        for m in 0..c.manifests.len() {
            let rec = &c.manifests[m];
            if rec.state != Known::Present || rec.retired {
                continue;
            }
            for &b in &rec.blobs {
                if c.blobs[b] != Known::Present {
                    self.problems.push(format!(
                        "manifest {}@{} refers to {} which HEADs 404",
                        c.repo, rec.digest, self.pool.digests[b]
                    ));
                }
            }
            for &child in &rec.children {
                if c.manifests[child].state != Known::Present {
                    self.problems.push(format!(
                        "index {}@{} refers to {} which is gone",
                        c.repo, rec.digest, c.manifests[child].digest
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------

fn seed() -> u64 {
    std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// `berth fsck` on a killed server's directory: crash leftovers are only
/// orphaned files (start-up cleans them); nothing indexed may be missing or
/// corrupt, no manifest dangling. Returns the orphaned paths.
fn fsck_after_kill(data: &Path, cycle: usize, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let out = process::fsck(data, false);
    let findings = out.findings();
    let bad: Vec<&str> = findings
        .iter()
        .copied()
        .filter(|l| !l.starts_with("orphaned:"))
        .collect();
    assert!(
        bad.is_empty() && matches!(out.code, Some(0 | 1)),
        "seed {seed}, cycle {cycle}: fsck after kill -9 found more than orphans: {out:#?}"
    );
    assert_eq!(
        out.code,
        Some(if findings.is_empty() { 0 } else { 1 }),
        "fsck exit code: {out:#?}"
    );
    let uploads = data.join("uploads");
    let mut upload_orphans = Vec::new();
    let mut blob_orphans = Vec::new();
    for line in findings {
        let path = line
            .strip_prefix("orphaned: ")
            .and_then(|l| l.strip_suffix(" belongs to no row"))
            .unwrap_or_else(|| panic!("unexpected orphan line {line:?}"));
        let path = PathBuf::from(path);
        if path.starts_with(&uploads) {
            upload_orphans.push(path);
        } else {
            blob_orphans.push(path);
        }
    }
    (upload_orphans, blob_orphans)
}

#[test]
fn kill_minus_nine_at_random_moments_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("crash test seed: {seed} (BERTH_CRASH_SEED={seed} to replay)");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let pool = Pool::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut clients: Vec<Client> = (0..THREADS).map(|t| Client::new(t, seed, &pool)).collect();
    let repos: Vec<String> = clients.iter().map(|c| c.repo.clone()).collect();
    let mut orphans: (Vec<PathBuf>, Vec<PathBuf>) = (Vec::new(), Vec::new());
    let (mut orphan_uploads, mut orphan_blobs) = (0, 0);
    let mut cycles = 0;

    while cycles < CYCLES && started.elapsed() < BUDGET {
        let server = ServerProcess::start(&data, &log);
        let base = server.url();
        check(
            &base,
            &pool,
            &data,
            &repos,
            &orphans,
            &mut clients,
            seed,
            cycles,
            &log,
        );

        // Run the clients, and kill the server under them.
        let killing = AtomicBool::new(false);
        let delay = Duration::from_millis(80 + rng.below(1200) as u64);
        std::thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter_mut()
                .map(|c| {
                    let cx = Cx {
                        base: base.clone(),
                        pool: &pool,
                        killing: &killing,
                    };
                    s.spawn(move || c.run(&cx))
                })
                .collect();
            std::thread::sleep(delay);
            killing.store(true, Ordering::SeqCst);
            server.kill();
            for h in handles {
                h.join().expect("client thread");
            }
        });
        cycles += 1;
        let unexpected: Vec<String> = clients
            .iter_mut()
            .flat_map(|c| std::mem::take(&mut c.unexpected))
            .collect();
        assert!(
            unexpected.is_empty(),
            "seed {seed}, cycle {cycles}: answers a correct server never gives:\n{}\nserver log:\n{}",
            unexpected.join("\n"),
            process::tail(&log)
        );

        orphans = fsck_after_kill(&data, cycles, seed);
        orphan_uploads += orphans.0.len();
        orphan_blobs += orphans.1.len();
    }

    // The last restart: check, give the background sweep time, stop cleanly.
    let server = ServerProcess::start(&data, &log);
    check(
        &server.url(),
        &pool,
        &data,
        &repos,
        &orphans,
        &mut clients,
        seed,
        cycles,
        &log,
    );
    std::thread::sleep(Duration::from_millis(400));
    server.stop();
    let out = process::fsck(&data, false);
    assert_eq!(
        out.code,
        Some(0),
        "seed {seed}: fsck after the last clean stop: {out:#?}"
    );
    assert!(out.findings().is_empty(), "seed {seed}: {out:#?}");
    assert_eq!(out.summary().2, 0, "{out:#?}");

    let mut stats = Stats::default();
    for c in &clients {
        stats.add(&c.stats);
    }
    eprintln!(
        "{cycles} kill cycles in {:.1?}: {stats:?}; orphans after kills: {orphan_uploads} upload \
         files, {orphan_blobs} blob files; fsck: {}",
        started.elapsed(),
        out.stdout.trim()
    );
    assert!(
        cycles >= MIN_CYCLES,
        "only {cycles} kill cycles fitted in {BUDGET:?}"
    );
    // The run exercised what it claims to.
    assert!(stats.blob_acks > 0 && stats.patch_acks > 0, "{stats:?}");
    assert!(stats.manifest_acks > 0 && stats.index_acks > 0, "{stats:?}");
    assert!(
        stats.blob_delete_acks > 0 && stats.manifest_delete_acks > 0,
        "{stats:?}"
    );
    assert!(
        stats.lost > 0,
        "no request was ever cut off by a kill: {stats:?}"
    );
}

/// After a (re)start, before any client runs: the uploads/ directory and
/// every client's model against what the server serves.
#[allow(clippy::too_many_arguments)]
fn check(
    base: &str,
    pool: &Pool,
    data: &Path,
    repos: &[String],
    orphans: &(Vec<PathBuf>, Vec<PathBuf>),
    clients: &mut [Client],
    seed: u64,
    cycle: usize,
    log: &Path,
) {
    let mut checker = Checker {
        base: base.to_owned(),
        pool,
        problems: Vec::new(),
    };
    checker.uploads_dir(data, repos, &orphans.0);
    for c in clients.iter_mut() {
        checker.client(c);
    }
    // The background sweep removes orphaned blob files soon after start.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<&PathBuf> = orphans.1.iter().filter(|p| p.exists()).collect();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left.retain(|p| p.exists());
    }
    for p in left {
        checker.problem(format!(
            "{} was an orphaned blob file before the restart and is still there 5 s after it",
            p.display()
        ));
    }
    assert!(
        checker.problems.is_empty(),
        "seed {seed}, after kill {cycle}:\n{}\nserver log:\n{}",
        checker.problems.join("\n"),
        process::tail(log)
    );
}

/// The calls that can put a finished upload's file in place under `blobs/`:
/// whichever one the store makes, the server is held right after it.
const PLACING: &str = "linkat,rename,renameat,renameat2";

/// `berth serve` under strace, each call in [`PLACING`] held for a minute
/// on its way back, so that a test can kill the server between that call
/// and whatever the code does next. Dropped, it kills berth, then strace.
struct Held {
    strace: Child,
    url: String,
    trace: PathBuf,
}

impl Held {
    fn start(data: &Path, log: &Path, trace: &Path) -> Held {
        let (traced, held) = (
            format!("trace={PLACING}"),
            format!("inject={PLACING}:delay_exit=60000000"),
        );
        let wrapper: Vec<&OsStr> = [
            "strace",
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-e",
            &traced,
            "-e",
            &held,
            "-o",
        ]
        .into_iter()
        .map(OsStr::new)
        .chain([trace.as_os_str()])
        .collect();
        let log_file = std::fs::File::create(log).unwrap();
        let (strace, url) = process::spawn_serve_under(
            &wrapper,
            [OsStr::new("--data"), data.as_os_str()],
            "info",
            log_file,
            log,
        );
        Held {
            strace,
            url,
            trace: trace.to_path_buf(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let berth = process::tracee(self.strace.id());
        // berth before strace: a tracer that dies first lets the held call
        // return, and the code after it would run.
        if let Some(berth) = berth {
            let _ = Command::new("kill")
                .args(["-KILL", &berth.to_string()])
                .status();
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
        // The held thread dies only once strace lets go of it, and until
        // every thread is gone the database stays locked.
        let deadline = Instant::now() + Duration::from_secs(10);
        while berth.is_some_and(|pid| !exited(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether no thread of `pid` runs any more (a zombie counts as gone: it
/// holds no files).
fn exited(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    })
}

/// A finishing PUT killed after its upload's file was put in place under
/// `blobs/` and before the commit that makes the blob and ends the session.
/// The server is held in that very call and killed there, so the state is
/// whatever the store's code really leaves, not a copy of it that can go
/// stale. The PUT was never answered: the session must still stand at the
/// offset its last 202 gave, no blob may be visible, and resuming must give
/// the client its blob, whole and exactly its bytes.
#[test]
fn a_kill_between_placing_a_blob_file_and_its_commit_leaves_the_upload_resumable() {
    require_programs("a_kill_between_placing", &[("strace", "strace")]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let content = http::random_bytes(300_000, 77);
    let digest = http::sha256_digest(&content);
    let blob_file = common::blob_file(&data, &digest);
    let name = "crash/window";

    let held = Held::start(&data, &log, &dir.path().join("trace"));
    let upload = http::start_upload(&held.url, name);
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", "0-199999")],
        &content[..200_000],
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let path = http::path_of(&upload).to_owned();
    let finish = http::with_query(&upload, &format!("digest={digest}"));
    let rest = content[200_000..].to_vec();
    let put = std::thread::spawn(move || http::try_request("PUT", &finish, &[OCTETS], &rest));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blob_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the finishing PUT never put {} in place; held calls:\n{}\nserver log:\n{}",
            blob_file.display(),
            std::fs::read_to_string(&held.trace).unwrap_or_default(),
            process::tail(&log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(held);
    let answer = put.join().unwrap();
    assert!(
        answer.is_err(),
        "the PUT was answered, so the kill missed the window: {answer:?}"
    );
    let left = process::files_under(&data);

    let server = ServerProcess::start(&data, &log);
    let base = server.url();
    let blob = http::blob_url(&base, name, &digest);
    let head = http::head(&blob);
    assert_eq!(
        head.status, 404,
        "a blob whose commit never ran is visible after the kill: {head:?}"
    );
    let upload = http::resolve(&base, &path);
    let status = http::get(&upload);
    assert_eq!(
        (status.status, status.header("range")),
        (204, Some("0-199999")),
        "after a kill between placing the blob file and its commit, the session no longer \
         stands at its acknowledged 200000 bytes: {status:?}\nthe kill left {left:#?}"
    );
    let resumed = http::put(
        &http::with_query(&upload, &format!("digest={digest}")),
        &[OCTETS],
        &content[200_000..],
    );
    assert_eq!(resumed.status, 201, "resuming the session: {resumed:?}");
    let got = http::get(&blob);
    assert_eq!(got.status, 200, "{got:?}");
    let zeros = got.body.iter().take(200_000).filter(|&&b| b == 0).count();
    assert!(
        got.body == content,
        "after a kill between placing the blob file and its commit, resuming the upload made \
         {name}@{digest} serve {} bytes hashing to {} ({zeros} of the first 200000 are zero) \
         instead of its content",
        got.body.len(),
        http::sha256_digest(&got.body)
    );
    server.stop();
    let out = process::fsck(&data, false);
    assert!(out.findings().is_empty(), "fsck after resuming: {out:#?}");
}

/// A blob file with no row, as a kill between placing it and its commit
/// leaves it, gives way to the next upload of its digest if start-up's
/// sweep has not removed it yet. Here one, cut short as if its bytes were
/// never whole, is put in place after the sweep has run: each upload
/// replaces it, on the path of small blobs (synced with their batch) and of
/// big ones (synced alone).
#[test]
fn an_upload_replaces_a_blob_file_left_without_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let name = "crash/leftover";
    let server = ServerProcess::start(&data, &log);
    let base = server.url();
    // Start-up's sweep of orphans runs beside the server, here over an
    // empty store: after a round trip and a pause it is long done, and
    // nothing sweeps the files placed below.
    http::push_blob(&base, name, &http::random_bytes(1000, 5));
    std::thread::sleep(Duration::from_millis(100));
    for (size, seed) in [(30_000, 61), (3 << 20, 62)] {
        let content = http::random_bytes(size, seed);
        let digest = http::sha256_digest(&content);
        let blob_file = common::blob_file(&data, &digest);
        std::fs::create_dir_all(blob_file.parent().unwrap()).unwrap();
        std::fs::write(&blob_file, &content[..size / 2]).unwrap();
        let blob = http::blob_url(&base, name, &digest);
        assert_eq!(
            http::head(&blob).status,
            404,
            "a file without its row is served"
        );

        let upload = http::start_upload(&base, name);
        let put = http::put(
            &http::with_query(&upload, &format!("digest={digest}")),
            &[OCTETS],
            &content,
        );
        assert_eq!(put.status, 201, "finishing over a leftover file: {put:?}");
        let got = http::get(&blob);
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            got.body == content,
            "{size} bytes pushed over a leftover file of {} served {} bytes",
            size / 2,
            got.body.len()
        );
    }
    server.stop();
    let swept = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !swept.contains("removing orphaned blob file"),
        "the sweep took the leftover files, so no upload met them:\n{swept}"
    );
    let out = process::fsck(&data, false);
    assert!(
        out.findings().is_empty(),
        "fsck after the uploads: {out:#?}"
    );
}

/// A power cut can take back a directory entry that was never synced, and
/// a new big blob's link into its shard directory is synced a moment after
/// its 201, many links at a time (a small blob's is synced before, with its
/// batch). Until then its upload file, synced into
/// `uploads/` before the 201, holds the same bytes. Here berth is killed
/// right after the 201 and the link is taken away by hand, as such a power
/// cut would: the next start puts it back, whole.
#[test]
fn a_new_blob_whose_link_a_power_cut_took_is_whole_after_the_restart() {
    power_cut_after_a_big_blob("power/cut", 91, "its link was lost", |blob_file, _| {
        std::fs::remove_file(blob_file).unwrap();
    });
}

/// A power cut can also bring back what a blob's name held before: the
/// removal of a leftover file and the new link in its place are in the
/// same unsynced directory. Here berth is killed right after a big blob's
/// 201 and its name is made to hold a short, other file, as such a cut
/// would: the next start puts back the upload file's bytes, which the 201
/// vouched for, instead of letting that file go.
#[test]
fn a_blob_whose_name_a_power_cut_turned_back_to_a_leftover_is_whole_after_the_restart() {
    power_cut_after_a_big_blob(
        "power/back",
        93,
        "its name went back",
        |blob_file, content| {
            std::fs::remove_file(blob_file).unwrap();
            std::fs::write(blob_file, &content[..content.len() / 2]).unwrap();
        },
    );
}

/// Pushes a big blob (synced alone, its link settled after its 201), kills
/// berth right after the 201, lets `cut` do to the blob's name what a power
/// cut could, and checks that the next start serves the blob whole, fsck
/// finds nothing and the upload file is let go.
fn power_cut_after_a_big_blob(name: &str, seed: u64, what: &str, cut: impl FnOnce(&Path, &[u8])) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // Over the store's batched-sync limit of 1 MiB.
    let content = http::random_bytes(3 << 20, seed);
    let digest = http::sha256_digest(&content);
    let blob_file = common::blob_file(&data, &digest);

    let server = ServerProcess::start(&data, &log);
    http::push_blob_put(&server.url(), name, &content);
    let acknowledged = Instant::now();
    server.kill();
    let killed_after = acknowledged.elapsed();
    let names = std::fs::metadata(&blob_file)
        .unwrap_or_else(|e| panic!("{}: {e}", blob_file.display()))
        .nlink();
    assert_eq!(
        names,
        2,
        "killed {killed_after:?} after the 201, the blob file should still have its upload \
         file's name beside its own; uploads/ holds {:?}",
        process::names_in(&data.join("uploads"))
    );
    cut(&blob_file, &content);

    let server = ServerProcess::start(&data, &log);
    let got = http::get(&http::blob_url(&server.url(), name, &digest));
    assert_eq!(got.status, 200, "the blob after {what}: {got:?}");
    assert!(
        got.body == content,
        "the blob after {what} is {} bytes hashing to {}",
        got.body.len(),
        http::sha256_digest(&got.body)
    );
    server.stop();
    let out = process::fsck(&data, false);
    assert!(
        out.findings().is_empty(),
        "fsck after the restart: {out:#?}"
    );
    assert!(
        process::names_in(&data.join("uploads")).is_empty(),
        "the upload file is let go once the link is settled"
    );
}

/// A file attribute set with chattr while it lives: `a`, a directory whose
/// entries cannot be removed; `i`, a file that cannot be written or opened
/// for writing, even by root.
struct Attribute<'a>(&'a Path, char);

impl<'a> Attribute<'a> {
    fn set(path: &'a Path, attribute: char, test: &str) -> Attribute<'a> {
        let status = Command::new("chattr")
            .arg(format!("+{attribute}"))
            .arg(path)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chattr +{attribute} {} failed: this test needs root, chattr (Debian: e2fsprogs, \
             as .ci/run installs) and a file system with attributes (ext4); or leave it out \
             with `cargo test -- --skip {test}`",
            path.display()
        );
        Attribute(path, attribute)
    }
}

impl Drop for Attribute<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg(format!("-{}", self.1))
            .arg(self.0)
            .status();
    }
}

/// Once a blob's row commits, the push is done: a failure to remove its
/// upload file afterwards (here an append-only `uploads/`) is logged and
/// the blob stays whole. It used to fail the request, and the failed
/// request's cleanup cut the upload file, the blob's own inode, back to the
/// session's last chunk. An ephemeral registry removes the file at once
/// (a durable one leaves it to the link's settling, or to the batch's).
#[test]
fn a_blob_whose_upload_file_cannot_be_removed_after_its_commit_stays_whole() {
    /// Stopped however the test ends.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (child, ready) = process::serve_ready(&["--ephemeral"]);
    let _child = Killed(child);
    let base = ready["url"].as_str().unwrap().to_owned();
    let uploads = PathBuf::from(ready["data"].as_str().unwrap()).join("uploads");
    let data = http::random_bytes(2000, 94);
    let digest = http::sha256_digest(&data);
    let upload = http::start_upload(&base, "kept/whole");
    let resp = http::patch(
        &upload,
        &[OCTETS, ("Content-Range", "0-999")],
        &data[..1000],
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let upload = http::resolve(&base, resp.location());
    let append_only = Attribute::set(&uploads, 'a', "a_blob_whose_upload_file");
    let resp = http::put(
        &http::with_query(&upload, &format!("digest={digest}")),
        &[OCTETS],
        &data[1000..],
    );
    drop(append_only);
    assert_eq!(resp.status, 201, "{resp:?}");
    let blob = http::get(&http::blob_url(&base, "kept/whole", &digest));
    assert_eq!(blob.status, 200, "{blob:?}");
    assert!(
        blob.body == data,
        "the blob holds {} bytes",
        blob.body.len()
    );
}

/// A database that can be neither written nor opened again (here made
/// immutable with chattr +i): while the write that met it waits on the
/// reopening, reads and probes fail or answer at once, never waiting on it
/// or stalling the server's threads; made writable again, the database is
/// reopened and written.
#[test]
fn a_database_that_cannot_be_written_or_reopened_stalls_no_reader() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &dir.path().join("log"));
    let base = server.url();
    let image = http::push_image(&base, "stuck/db", Some("v1"), 95);
    let redb = dir.path().join("data/berth.redb");
    let immutable = Attribute::set(&redb, 'i', "a_database_that_cannot_be_written");
    let tag = |name: &str| http::manifest_url(&base, "stuck/db", name);
    let put = |name: &str, within: Duration| {
        let headers = [("Content-Type", http::OCI_MANIFEST)];
        http::try_request_within("PUT", &tag(name), &headers, &image.manifest, within)
    };
    std::thread::scope(|s| {
        let writer = s.spawn(|| put("v2", Duration::from_secs(30)));
        let quick = Duration::from_secs(3);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            for url in [tag("v1"), format!("{base}/healthz")] {
                let started = Instant::now();
                if let Err(e) = http::try_request_within("GET", &url, &[], b"", quick) {
                    panic!(
                        "GET {url} hung {:?} on a stuck database: {e}",
                        started.elapsed()
                    );
                }
            }
        }
        let answer = writer.join().unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("the write never answered: {e}"));
        assert!(answer.status >= 500, "{answer:?}");
    });
    drop(immutable);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match put("v2", Duration::from_secs(30)) {
            Ok(resp) if resp.status == 201 => break,
            other => assert!(Instant::now() < deadline, "never written again: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http::get(&tag("v2")).status, 200);
}
