//! The benchmark's tests, each against one registry: pushes, pulls, many
//! small pushes, manifest reads, the same-blob race, listings.

use std::io;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::client::{Body, Conn, Keep, Target};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn digest_of(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in hash.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Fills a buffer with fast pseudo-random bytes (xorshift64*), so no layer
/// compresses or dedups by accident.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fail(what: &str, status: u16) -> io::Error {
    io::Error::other(format!("{what}: HTTP {status}"))
}

/// A Location header as a request path (some registries answer with
/// absolute URLs).
fn location_path(location: &str) -> String {
    match location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        Some(rest) => rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned()),
        None => location.to_owned(),
    }
}

fn with_digest(path: &str, digest: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={digest}")
}

/// POST a session, then PUT the whole blob into it; returns the time from
/// POST to 201.
pub fn push_blob(conn: &mut Conn, repo: &str, data: &[u8], digest: &str) -> io::Result<Duration> {
    let start = Instant::now();
    let (resp, _) = conn.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Body::Empty,
        Keep::All,
    )?;
    if resp.status != 202 {
        return Err(fail("POST upload", resp.status));
    }
    let location = location_path(resp.header("location").unwrap_or(""));
    let headers = [("Content-Type", "application/octet-stream")];
    let (resp, _) = conn.request(
        "PUT",
        &with_digest(&location, digest),
        &headers,
        Body::Bytes(data),
        Keep::All,
    )?;
    if resp.status != 201 {
        return Err(fail("PUT blob", resp.status));
    }
    Ok(start.elapsed())
}

pub fn blob_size(conn: &mut Conn, repo: &str, digest: &str) -> io::Result<Option<u64>> {
    let (resp, _) = conn.request(
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        Body::Empty,
        Keep::All,
    )?;
    Ok((resp.status == 200)
        .then(|| resp.header("content-length").and_then(|l| l.parse().ok()))
        .flatten())
}

/// (a) one big blob in one PUT: MB/s from POST to 201.
pub fn monolithic_push(target: &Target, data: &[u8], digest: &str) -> io::Result<f64> {
    let mut conn = Conn::new(target);
    let took = push_blob(&mut conn, "bench/a", data, digest)?;
    match blob_size(&mut conn, "bench/a", digest)? {
        Some(size) if size == data.len() as u64 => Ok(data.len() as f64 / took.as_secs_f64() / 1e6),
        other => Err(io::Error::other(format!("HEAD after push: {other:?}"))),
    }
}

/// (b) a blob in PATCH chunks with Content-Range, then an empty PUT.
/// `digest` is `data`'s, hashed by the caller before the machine's CPU is
/// counted: the client's own sha256 is no part of a push's cost.
pub fn chunked_push(target: &Target, data: &[u8], digest: &str, chunk: usize) -> io::Result<f64> {
    let mut conn = Conn::new(target);
    let start = Instant::now();
    let (resp, _) = conn.request(
        "POST",
        "/v2/bench/b/blobs/uploads/",
        &[],
        Body::Empty,
        Keep::All,
    )?;
    if resp.status != 202 {
        return Err(fail("POST upload", resp.status));
    }
    let mut location = location_path(resp.header("location").unwrap_or(""));
    for (i, part) in data.chunks(chunk).enumerate() {
        let first = i * chunk;
        let range = format!("{first}-{}", first + part.len() - 1);
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", range.as_str()),
        ];
        let (resp, _) = conn.request("PATCH", &location, &headers, Body::Bytes(part), Keep::All)?;
        if resp.status != 202 {
            return Err(fail("PATCH", resp.status));
        }
        location = location_path(resp.header("location").unwrap_or(&location));
    }
    let (resp, _) = conn.request(
        "PUT",
        &with_digest(&location, digest),
        &[],
        Body::Empty,
        Keep::All,
    )?;
    if resp.status != 201 {
        return Err(fail("PUT", resp.status));
    }
    Ok(data.len() as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// (c) GET of the big blob, best of `reps`, bytes counted, not kept.
pub fn pull(target: &Target, digest: &str, size: u64, reps: usize) -> io::Result<f64> {
    pull_from(target, "bench/a", digest, size, reps)
}

/// As [`pull`], from repository `repo`.
pub fn pull_from(
    target: &Target,
    repo: &str,
    digest: &str,
    size: u64,
    reps: usize,
) -> io::Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..reps {
        let mut conn = Conn::new(target);
        let start = Instant::now();
        let (resp, got) = conn.request(
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            Body::Empty,
            Keep::CountOnly,
        )?;
        let secs = start.elapsed().as_secs_f64();
        if resp.status != 200 || got != size {
            return Err(io::Error::other(format!(
                "GET blob: HTTP {}, {got} of {size} bytes",
                resp.status
            )));
        }
        best = best.max(size as f64 / secs / 1e6);
    }
    Ok(best)
}

/// (d) many clients, each pushing small distinct blobs over one
/// connection, all started at once: blobs per second over the wall time.
/// Each call's blobs are new to the registry, so that rounds on one
/// registry push rather than find their blobs already there.
pub fn small_blobs(target: &Target, clients: usize, per_client: usize) -> io::Result<(f64, usize)> {
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (target, barrier) = (target.node(c), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let blobs: Vec<(Vec<u8>, String)> = (0..per_client)
                    .map(|i| {
                        let seed = (c * 100_003 + i) as u64 ^ 0xD1;
                        let len = 4096 + (seed.wrapping_mul(2_654_435_761) % (60 * 1024)) as usize;
                        let data = random_bytes(len, seed ^ salt);
                        let digest = digest_of(&data);
                        (data, digest)
                    })
                    .collect();
                let mut conn = Conn::new(&target);
                barrier.wait();
                let mut errors = 0;
                for (data, digest) in &blobs {
                    if push_blob(&mut conn, "bench/d", data, digest).is_err() {
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let errors: usize = workers
        .into_iter()
        .map(|w| w.join().unwrap_or(per_client))
        .sum();
    let secs = start.elapsed().as_secs_f64();
    Ok(((clients * per_client - errors) as f64 / secs, errors))
}

/// Pushes a small image to `repo` with tag `v1`.
pub fn push_small_image(target: &Target, repo: &str) -> io::Result<()> {
    let mut conn = Conn::new(target);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = random_bytes(2048, 42);
    let (config_digest, layer_digest) = (digest_of(config), digest_of(&layer));
    push_blob(&mut conn, repo, config, &config_digest)?;
    push_blob(&mut conn, repo, &layer, &layer_digest)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let headers = [("Content-Type", OCI_MANIFEST)];
    let (resp, _) = conn.request(
        "PUT",
        &format!("/v2/{repo}/manifests/v1"),
        &headers,
        Body::Bytes(manifest.as_bytes()),
        Keep::All,
    )?;
    if resp.status != 201 {
        return Err(fail("PUT manifest", resp.status));
    }
    Ok(())
}

pub struct Load {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

/// (e) `method` of the manifest by tag from `connections` keep-alive
/// clients for `duration`: requests per second and latency percentiles.
pub fn manifest_load(
    target: &Target,
    method: &'static str,
    path: &'static str,
    connections: usize,
    duration: Duration,
) -> Load {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let (target, barrier) = (target.node(c), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut conn = Conn::new(&target);
                let headers = [("Accept", OCI_MANIFEST)];
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                barrier.wait();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let start = Instant::now();
                    match conn.request(method, path, &headers, Body::Empty, Keep::All) {
                        Ok((resp, _)) if resp.status == 200 => {
                            latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32)
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (latencies, e) = w.join().unwrap_or_default();
        all.extend(latencies);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Load {
        per_second: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

#[derive(Default, Debug)]
pub struct Race {
    pub rounds: usize,
    pub bad_heads: usize,
    pub failed_puts: usize,
    pub bad_gets: usize,
}

/// (g) `clients` upload the same fresh blob at once; each sends HEAD the
/// moment its PUT returns 201. Any 404 or short size is a bad answer.
pub fn same_blob_race(
    target: &Target,
    size: usize,
    clients: usize,
    rounds: usize,
    cap: Duration,
) -> Race {
    let mut race = Race::default();
    let deadline = Instant::now() + cap;
    for round in 0..rounds {
        if Instant::now() > deadline {
            break;
        }
        let data = Arc::new(random_bytes(
            size,
            0xACE
                ^ round as u64
                ^ Instant::now().elapsed().as_nanos() as u64
                ^ std::process::id() as u64,
        ));
        let digest = Arc::new(digest_of(&data));
        let barrier = Arc::new(Barrier::new(clients));
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (target, data, digest, barrier) =
                    (target.clone(), Arc::clone(&data), Arc::clone(&digest), Arc::clone(&barrier));
                std::thread::spawn(move || -> (bool, bool) {
                    let mut conn = Conn::new(&target);
                    let post = conn.request("POST", "/v2/bench/g/blobs/uploads/", &[], Body::Empty, Keep::All);
                    let location = match post {
                        Ok((resp, _)) if resp.status == 202 => location_path(resp.header("location").unwrap_or("")),
                        _ => {
                            barrier.wait();
                            return (false, false);
                        }
                    };
                    barrier.wait();
                    let put = conn.request("PUT", &with_digest(&location, &digest), &[], Body::Bytes(&data), Keep::All);
                    if !matches!(put, Ok((ref resp, _)) if resp.status == 201) {
                        return (false, false);
                    }
                    let good = matches!(blob_size(&mut conn, "bench/g", &digest), Ok(Some(s)) if s == data.len() as u64);
                    (true, good)
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok((true, true)) => {}
                Ok((true, false)) => race.bad_heads += 1,
                _ => race.failed_puts += 1,
            }
        }
        let mut conn = Conn::new(target);
        let ok = conn
            .request(
                "GET",
                &format!("/v2/bench/g/blobs/{digest}"),
                &[],
                Body::Empty,
                Keep::All,
            )
            .is_ok_and(|(resp, _)| resp.status == 200 && digest_of(&resp.body) == *digest);
        if !ok {
            race.bad_gets += 1;
        }
        race.rounds += 1;
    }
    race
}
