//! The side-by-side benchmark: berth (started here) and any other registry
//! URLs, measured by the same Rust client in one run, with the machine's own
//! limits measured in the same run. See README.md, "Performance".
//!
//! cargo bench --bench compare -- [--target NAME=http://127.0.0.1:PORT[,creds=U:P][,pid=PID]]...

mod cases;
mod client;
mod crowd;
mod instructions;
mod limits;
mod objects;
mod sys;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;

use cases::*;
use client::{Body, Conn, Keep, Target};
use limits::{Limits, ratio};

/// Measure registries side by side.
#[derive(FromArgs)]
struct Args {
    /// another registry to measure: NAME=http://127.0.0.1:PORT[,creds=U:P][,pid=PID]
    #[argh(option)]
    target: Vec<String>,
    /// do not start and measure berth itself
    #[argh(switch)]
    no_berth: bool,
    /// which tests to run, by letter (default abcdefghijklmnop)
    #[argh(option, default = "String::from(\"abcdefghijklmnop\")")]
    only: String,
    /// size of the big blob in MiB (default 1024)
    #[argh(option, default = "1024")]
    big_mib: usize,
    /// size of the chunked blob in MiB (default 256)
    #[argh(option, default = "256")]
    chunked_mib: usize,
    /// PATCH size in MiB (default 16)
    #[argh(option, default = "16")]
    chunk_mib: usize,
    /// concurrent clients for the small-blob test (default 32)
    #[argh(option, default = "32")]
    clients: usize,
    /// blobs per client (default 50)
    #[argh(option, default = "50")]
    per_client: usize,
    /// seconds of manifest load per method (default 10)
    #[argh(option, default = "10")]
    seconds: u64,
    /// connections for the manifest load (default 32)
    #[argh(option, default = "32")]
    connections: usize,
    /// blobs in the store for the start-up and prune tests (default 100000)
    #[argh(option, default = "100_000")]
    blobs: usize,
    /// manifests in the store for the prune test (default 10000)
    #[argh(option, default = "10_000")]
    manifests: usize,
    /// repositories for the listing test (default 10000)
    #[argh(option, default = "10_000")]
    repos: usize,
    /// tags for the listing test (default 100000)
    #[argh(option, default = "100_000")]
    tags: usize,
    /// rounds of the small-blob test, reported by their median (default 3)
    #[argh(option, default = "3")]
    small_rounds: usize,
    /// race rounds (default 10)
    #[argh(option, default = "10")]
    race_rounds: usize,
    /// where berth's data and scratch files go (default /tmp/berth-bench)
    #[argh(option, default = "PathBuf::from(\"/tmp/berth-bench\")")]
    data_dir: PathBuf,
    /// also measure three berth nodes on one clustered store: a PostgreSQL
    /// and a Swift (S3 API) started here from tests/servers/ (as root)
    #[argh(switch)]
    cluster: bool,
    /// write the results as markdown to this file too
    #[argh(option)]
    md: Option<PathBuf>,
}

type Results = BTreeMap<String, BTreeMap<&'static str, String>>;

const MIB: usize = 1 << 20;

fn main() {
    // `cargo bench` adds `--bench`; it means nothing here.
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
    let args = match Args::from_args(&["compare"], &raw) {
        Ok(args) => args,
        Err(e) => {
            println!("{}", e.output);
            std::process::exit(if e.status.is_ok() { 0 } else { 2 });
        }
    };
    std::fs::create_dir_all(&args.data_dir).expect("data dir");
    let mut targets: Vec<Target> = args
        .target
        .iter()
        .map(|t| Target::parse(t).unwrap_or_else(|e| panic!("--target {t}: {e}")))
        .collect();
    for t in &mut targets {
        if t.pid.is_none() {
            t.pid = sys::pid_listening_on(t.addr.port());
        }
    }
    let berth = (!args.no_berth).then(|| Berth::start(&args.data_dir.join("berth-data"), true));
    if let Some(b) = &berth {
        targets.insert(0, b.target.clone());
    }
    let cluster = args
        .cluster
        .then(|| Cluster::start(&args.data_dir.join("cluster"), 3));
    if let Some(c) = &cluster {
        targets.insert(usize::from(berth.is_some()), c.target.clone());
    }
    let mut results: Results = BTreeMap::new();
    let only = |c: char| args.only.contains(c);
    let mut record = |t: &Target, key: &'static str, value: String| {
        eprintln!("  {:<14} {key}: {value}", t.name);
        results
            .entry(t.name.clone())
            .or_default()
            .insert(key, value);
    };
    let mut cpu = sys::CpuMeter::new();
    eprintln!(
        "machine busy before the run: {:.0}%",
        cpu.busy_since_last() * 100.0
    );

    let big = random_bytes(args.big_mib * MIB, 1);
    let big_digest = digest_of(&big);
    eprintln!("limits");
    let mut limits = Limits::measure(&args.data_dir, &big);
    for (k, v) in limits.rows() {
        eprintln!("  {k}: {v}");
    }

    for t in &targets {
        if let Some(pid) = t.pid {
            record(
                t,
                "RSS before a, MiB",
                format!("{:.1}", kib_to_mib(sys::rss_kib(pid))),
            );
            sys::reset_peak_rss(pid);
        }
    }
    let mut peak: BTreeMap<String, u64> = BTreeMap::new();
    let mut note_peak = |t: &Target| {
        if let Some(k) = t.pid.and_then(sys::peak_rss_kib) {
            let p = peak.entry(t.name.clone()).or_default();
            *p = (*p).max(k);
        }
    };
    let cpu_of = |t: &Target| t.pid.and_then(sys::cpu_seconds);

    if only('a') {
        eprintln!("a. {} MiB monolithic push", args.big_mib);
        for t in &targets {
            sys::warm_page_pool(&args.data_dir, big.len());
            let before = cpu_of(t);
            let machine_before = sys::machine_busy_seconds();
            let r = monolithic_push(t, &big, &big_digest);
            let machine = sys::cpu_per_gib(machine_before, sys::machine_busy_seconds(), big.len());
            record(
                t,
                "a. monolithic push, MB/s (x min(sha256, durable write))",
                show(r.as_ref().map(|&v| ratio(v, limits.push()))),
            );
            record(
                t,
                "a. x min(push pipeline, durable write)",
                show(r.map(|v| format!("{:.2}x", v / limits.push_on_these_cores()))),
            );
            record_cpu(&mut record, t, "a. server CPU s", before, cpu_of(t));
            record_machine_cpu(&mut record, t, "a. machine CPU s per GiB", machine);
            note_peak(t);
        }
    }
    if only('b') {
        eprintln!(
            "b. {} MiB in {} MiB PATCHes",
            args.chunked_mib, args.chunk_mib
        );
        let data = &big[..(args.chunked_mib * MIB).min(big.len())];
        let digest = digest_of(data);
        for t in &targets {
            sys::warm_page_pool(&args.data_dir, data.len());
            let machine_before = sys::machine_busy_seconds();
            let r = chunked_push(t, data, &digest, args.chunk_mib * MIB);
            let machine = sys::cpu_per_gib(machine_before, sys::machine_busy_seconds(), data.len());
            record(
                t,
                "b. chunked push, MB/s (x min(sha256, durable write))",
                show(r.as_ref().map(|&v| ratio(v, limits.push()))),
            );
            record(
                t,
                "b. x min(push pipeline, durable write)",
                show(r.map(|v| format!("{:.2}x", v / limits.push_on_these_cores()))),
            );
            record_machine_cpu(&mut record, t, "b. machine CPU s per GiB", machine);
            note_peak(t);
        }
    }
    if only('c') {
        eprintln!("c. {} MiB pull", args.big_mib);
        for t in &targets {
            if !only('a') {
                let _ = monolithic_push(t, &big, &big_digest);
            }
            let before = cpu_of(t);
            let r = pull(t, &big_digest, big.len() as u64, 2);
            record(
                t,
                "c. pull, MB/s (x loopback)",
                show(r.map(|v| ratio(v, limits.loopback.value))),
            );
            record_cpu(&mut record, t, "c. server CPU s", before, cpu_of(t));
            if let Some(c) = cluster.as_ref().filter(|c| c.target.name == t.name) {
                let key = format!("blobs/sha256/{}", big_digest.trim_start_matches("sha256:"));
                let raw = objects::get_mbps(&c.objects, &key);
                record(
                    t,
                    "c. its object store's own GET, MB/s",
                    show(raw.map(|v| format!("{v:.0}"))),
                );
            }
            note_peak(t);
        }
    }
    if only('d') {
        eprintln!(
            "d. {} clients x {} small blobs, {} rounds",
            args.clients, args.per_client, args.small_rounds
        );
        let rounds = args.small_rounds.max(1);
        for t in &targets {
            let before = cpu_of(t);
            cpu.busy_since_last();
            // f is the peak through one round, the workload it was set on:
            // each later round leaves 1,600 more blobs' rows in redb's
            // cache of the database, ~0.7 MiB, shown on a row of its own.
            let r = (0..rounds)
                .map(|round| {
                    let pushed = small_blobs(t, args.clients, args.per_client);
                    if round == 0 {
                        note_peak(t);
                    }
                    pushed
                })
                .collect::<io::Result<Vec<_>>>();
            let busy = cpu.busy_since_last();
            record(
                t,
                "d. small blobs/s, median of rounds (each round)",
                show(r.map(|rounds| {
                    let mut rates: Vec<f64> = rounds.iter().map(|&(v, _)| v).collect();
                    let each = rates.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>();
                    rates.sort_by(f64::total_cmp);
                    let errors: usize = rounds.iter().map(|&(_, e)| e).sum();
                    format!(
                        "{:.0} ({}) ({errors} errors)",
                        rates[rates.len() / 2],
                        each.join(" / ")
                    )
                })),
            );
            let after = cpu_of(t);
            if let (Some(b), Some(a)) = (before, after) {
                record(
                    t,
                    "d. server CPU s per round",
                    format!("{:.2}", (a - b) / rounds as f64),
                );
            }
            record(t, "d. machine busy", format!("{:.0}%", busy * 100.0));
            if let Some(c) = cluster.as_ref().filter(|c| c.target.name == t.name) {
                let raw = objects::small_puts(&c.objects, args.clients, args.per_client);
                record(
                    t,
                    "d. its object store's own small PUTs/s",
                    show(raw.map(|v| format!("{v:.0}"))),
                );
            }
            if rounds > 1 {
                record_peak(&mut record, t, "d. peak RSS after every round, MiB");
            }
        }
    }
    for t in &targets {
        if let Some(p) = peak.get(&t.name) {
            record(
                t,
                "f. peak RSS a-d, MiB",
                format!("{:.1}", *p as f64 / 1024.0),
            );
        }
    }
    if only('k') {
        let size = (256 * MIB).min(big.len());
        let (blob, clients) = (&big[..size], 64);
        let digest = digest_of(blob);
        eprintln!(
            "k. {clients} clients pulling one {} MiB blob at once",
            size / MIB
        );
        for t in &targets {
            if let Err(e) = push_blob(&mut Conn::new(t), "bench/a", blob, &digest) {
                record(
                    t,
                    "k. 64 pulls at once, MB/s (x loopback)",
                    format!("failed: {e}"),
                );
                continue;
            }
            if let Some(pid) = t.pid {
                sys::reset_peak_rss(pid);
            }
            let r = crowd::many_pulls(t, &digest, size as u64, clients);
            record(
                t,
                "k. 64 pulls at once, MB/s (x loopback)",
                show(
                    r.map(|(v, bad)| format!("{}{}", ratio(v, limits.loopback.value), errors(bad))),
                ),
            );
            record_peak(&mut record, t, "k. peak RSS, MiB");
        }
    }
    if only('l') {
        eprintln!(
            "l. manifest GETs while a {} MiB push, {} small-blob pushers and a prune run",
            args.big_mib, args.clients
        );
        for t in &targets {
            // berth's own run gets a berth that prunes every second.
            let pruning = berth.as_ref().filter(|b| b.target.name == t.name).map(|_| {
                Berth::start_with(
                    &args.data_dir.join("mixed-data"),
                    true,
                    &["--prune-interval", "1s", "--grace", "1s"],
                )
            });
            let on = pruning.as_ref().map_or(t, |b| &b.target);
            if let Err(e) = push_small_image(on, "bench/e") {
                record(
                    t,
                    "l. GET under load, req/s (p50/p99 ms)",
                    format!("failed: {e}"),
                );
                continue;
            }
            let m = crowd::mixed_load(
                on,
                &big,
                args.clients,
                args.connections,
                Duration::from_secs(args.seconds),
            );
            record(
                t,
                "l. GET under load, req/s (p50/p99 ms)",
                format!(
                    "{:.0} ({:.2}/{:.2}){}",
                    m.gets.per_second,
                    m.gets.p50_ms,
                    m.gets.p99_ms,
                    errors(m.gets.errors)
                ),
            );
            record(
                t,
                "l. meanwhile: big pushes (MB/s), small blobs (failed)",
                format!(
                    "{} ({:.0}), {} ({}){}",
                    m.pushes,
                    m.push_mbps,
                    m.small,
                    m.small_failed,
                    if pruning.is_some() {
                        ", pruning every 1 s"
                    } else {
                        ""
                    }
                ),
            );
            drop(pruning);
            let _ = std::fs::remove_dir_all(args.data_dir.join("mixed-data"));
        }
    }
    if only('m') && !args.no_berth {
        eprintln!("m. instructions under callgrind");
        let r = instructions::count(
            Path::new(env!("CARGO_BIN_EXE_berth")),
            &args.data_dir.join("callgrind"),
        );
        if let Some(b) = &berth {
            match r {
                Ok(c) => {
                    record(
                        &b.target,
                        "m. instructions per manifest GET",
                        format!("{:.0}", c.per_get),
                    );
                    record(
                        &b.target,
                        "m. instructions per MiB pushed",
                        format!("{:.0}", c.per_mib_pushed),
                    );
                }
                Err(e) => record(
                    &b.target,
                    "m. instructions per manifest GET",
                    format!("failed: {e}"),
                ),
            }
        }
    }
    if only('n') {
        eprintln!("n. {} MiB pulled through a berth mirror", args.big_mib);
        for t in &targets {
            if !only('a') && !only('c') {
                let _ = monolithic_push(t, &big, &big_digest);
            }
            let size = big.len() as u64;
            let direct = pull(t, &big_digest, size, 2);
            let dir = args.data_dir.join("mirror-data");
            let upstream = format!("up.bench=http://{}", t.addr);
            let mirror = Berth::start_with(&dir, true, &["--upstream", &upstream]);
            let through =
                |reps| pull_from(&mirror.target, "up.bench/bench/a", &big_digest, size, reps);
            // A first pull writes the blob into new page-cache pages, whose
            // speed on a VM swings widely: measured now, beside it.
            let write_now = sys::disk_write_mbps(&args.data_dir, &big, false);
            record(
                t,
                "n. page-cache write now, MB/s",
                format!("{write_now:.0}"),
            );
            let first = through(1);
            let second = through(2);
            let ratio = |r: &io::Result<f64>| match (r, &direct) {
                (Ok(r), Ok(d)) if *d > 0.0 => format!("{r:.0} ({:.2}x direct)", r / d),
                (Ok(r), _) => format!("{r:.0}"),
                (Err(e), _) => format!("failed: {e}"),
            };
            let shown = match &direct {
                Ok(v) => format!("{v:.0}"),
                Err(e) => format!("failed: {e}"),
            };
            record(t, "n. direct pull, MB/s", shown);
            let first_shown = match &first {
                Ok(r) => format!("{} ({:.2}x that write)", ratio(&first), r / write_now),
                Err(_) => ratio(&first),
            };
            record(t, "n. first pull through a mirror, MB/s", first_shown);
            record(t, "n. second pull through it, MB/s", ratio(&second));
            if let Some(k) = mirror.target.pid.and_then(sys::peak_rss_kib) {
                record(
                    t,
                    "n. mirror peak RSS, MiB",
                    format!("{:.1}", k as f64 / 1024.0),
                );
            }
            drop(mirror);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if only('o') && !args.no_berth {
        eprintln!("o. {} MiB single-layer berth import", args.big_mib);
        let dir = args.data_dir.join("import");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("import dir");
        let archive = dir.join("image.tar");
        write_layout(&archive, &big, &big_digest);
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["import", "--data"])
            .arg(dir.join("data"))
            .arg(&archive)
            .env("RUST_LOG", "warn")
            .output()
            .expect("berth import runs");
        let secs = start.elapsed().as_secs_f64();
        let shown = if out.status.success() {
            let mbps = big.len() as f64 / secs / 1e6;
            format!("{} durable write", ratio(mbps, limits.durable_write.value))
        } else {
            format!("failed: {}", String::from_utf8_lossy(&out.stdout))
        };
        if let Some(b) = &berth {
            record(&b.target, "o. import, MB/s", shown);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if only('p') && !args.no_berth {
        let preload_mib = 100.min(args.big_mib);
        eprintln!("p. ephemeral start, and start with a {preload_mib} MiB preload");
        let dir = args.data_dir.join("fixture");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let mut starts: Vec<f64> = (0..10).map(|_| fixture_start(&[]).1).collect();
        starts.sort_by(f64::total_cmp);
        let layer = &big[..preload_mib << 20];
        let archive = dir.join("preload.tar");
        write_layout(&archive, layer, &digest_of(layer));
        let (ready, _) = fixture_start(&["--preload", archive.to_str().expect("a UTF-8 path")]);
        let mbps = layer.len() as f64 / (ready / 1000.0) / 1e6;
        if let Some(b) = &berth {
            record(
                &b.target,
                "p. ephemeral start to first /v2/ 200, ms (median of 10)",
                format!("{:.1}", starts[starts.len() / 2]),
            );
            record(
                &b.target,
                "p. start to ready with a 100 MiB preload, ms",
                format!(
                    "{ready:.0} ({} MB/s durable write)",
                    ratio(mbps, limits.durable_write.value)
                ),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(big);
    if only('e') {
        eprintln!(
            "e. manifest GET/HEAD by tag, {} connections, {} s each",
            args.connections, args.seconds
        );
        let load = |t: &Target, method, path| {
            manifest_load(
                t,
                method,
                path,
                args.connections,
                Duration::from_secs(args.seconds),
            )
        };
        let manifest_path = "/v2/bench/e/manifests/v1";
        for t in &targets {
            if let Err(e) = push_small_image(t, "bench/e") {
                record(t, "e. GET req/s", format!("failed: {e}"));
                continue;
            }
            if limits.nginx.is_none() {
                // nginx serves the same bytes, to the same client, first.
                let manifest = Conn::new(t)
                    .request(
                        "GET",
                        manifest_path,
                        &[("Accept", OCI_MANIFEST)],
                        Body::Empty,
                        Keep::All,
                    )
                    .map(|(r, _)| r.body)
                    .unwrap_or_default();
                if let Some(nginx) = limits::Nginx::start(&args.data_dir, &manifest) {
                    let limit = |method| {
                        let l = load(&nginx.target, method, nginx.path);
                        limits::Limit {
                            value: l.per_second,
                            how: if l.errors == 0 {
                                "nginx, a static file of the manifest's bytes, same client"
                            } else {
                                "nginx, with errors"
                            },
                        }
                    };
                    limits.nginx = Some((limit("GET"), limit("HEAD")));
                }
            }
            for method in ["GET", "HEAD"] {
                let l = load(t, method, manifest_path);
                let (key, limit): (&'static str, _) = if method == "GET" {
                    (
                        "e. GET req/s (x nginx) (p50/p99 ms)",
                        limits.nginx.as_ref().map(|n| n.0.value),
                    )
                } else {
                    (
                        "e. HEAD req/s (x nginx) (p50/p99 ms)",
                        limits.nginx.as_ref().map(|n| n.1.value),
                    )
                };
                record(
                    t,
                    key,
                    format!(
                        "{} ({:.2}/{:.2}){}",
                        ratio(l.per_second, limit.unwrap_or(0.0)),
                        l.p50_ms,
                        l.p99_ms,
                        errors(l.errors)
                    ),
                );
            }
        }
    }
    if only('g') {
        eprintln!("g. same 64 MiB blob, 8 clients at once, HEAD after each 201");
        for t in &targets {
            if let Some(pid) = t.pid {
                sys::reset_peak_rss(pid);
            }
            let r = same_blob_race(t, 64 * MIB, 8, args.race_rounds, Duration::from_secs(240));
            record(
                t,
                "g. race: bad HEADs / failed PUTs / bad GETs",
                format!(
                    "{} / {} / {} in {} rounds",
                    r.bad_heads, r.failed_puts, r.bad_gets, r.rounds
                ),
            );
            record_peak(&mut record, t, "g. peak RSS, MiB");
        }
    }
    if only('i') {
        eprintln!(
            "i. listings: {} repositories, {} tags",
            args.repos, args.tags
        );
        for t in &targets {
            match listings(t, args.repos, args.tags) {
                Ok(l) => {
                    record(
                        t,
                        "i. _catalog page of 1000, ms",
                        format!("{:.2}", l.catalog),
                    );
                    record(t, "i. tags/list page of 1000, ms", format!("{:.2}", l.tags));
                    if let Some([home, filtered, tags]) = l.pages {
                        record(t, "i. web page: repositories, ms", format!("{home:.2}"));
                        record(
                            t,
                            "i. web page: filtered repositories, ms",
                            format!("{filtered:.2}"),
                        );
                        record(t, "i. web page: 100 tags, ms", format!("{tags:.2}"));
                    }
                }
                Err(e) => record(t, "i. _catalog page of 1000, ms", format!("failed: {e}")),
            }
        }
    }
    drop(berth);
    if let Some(bt) = (!args.no_berth).then(|| targets[0].clone())
        && (only('h') || only('j'))
    {
        startup_and_prune(&args, &bt, &mut record, only('j'));
    }

    let table = render(&targets, &results, &limits);
    println!("{table}");
    if let Some(path) = &args.md {
        std::fs::write(path, &table).expect("write markdown");
    }
}

fn errors(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} errors")
    }
}

fn show<E: std::fmt::Display>(r: Result<String, E>) -> String {
    r.unwrap_or_else(|e| format!("failed: {e}"))
}

fn kib_to_mib(k: Option<u64>) -> f64 {
    k.unwrap_or(0) as f64 / 1024.0
}

/// The target's peak RSS since it was last reset, if its PID is known.
fn record_peak(
    record: &mut impl FnMut(&Target, &'static str, String),
    t: &Target,
    key: &'static str,
) {
    if let Some(k) = t.pid.and_then(sys::peak_rss_kib) {
        record(t, key, format!("{:.1}", k as f64 / 1024.0));
    }
}

fn record_cpu(
    record: &mut impl FnMut(&Target, &'static str, String),
    t: &Target,
    key: &'static str,
    before: Option<f64>,
    after: Option<f64>,
) {
    if let (Some(b), Some(a)) = (before, after) {
        record(t, key, format!("{:.2}", a - b));
    }
}

/// Core-seconds per GiB the whole machine spent on a push (client and
/// kernel included), beside the push pipeline's (see limits.rs): what the
/// registry costs above the least work, however fast the cores were.
fn record_machine_cpu(
    record: &mut impl FnMut(&Target, &'static str, String),
    t: &Target,
    key: &'static str,
    per_gib: Option<f64>,
) {
    if let Some(cpu) = per_gib {
        record(t, key, format!("{cpu:.2}"));
    }
}

/// What (i) measured, in ms: medians of 20.
struct Listings {
    catalog: f64,
    tags: f64,
    /// The web page, where there is one: the first page of repositories,
    /// one filtered by a name (every repository read), a middle page of
    /// the tags.
    pages: Option<[f64; 3]>,
}

/// (i) fills `repos` repositories and `tags` tags, then times one middle
/// page of each listing (median of 20).
fn listings(t: &Target, repos: usize, tags: usize) -> std::io::Result<Listings> {
    let blob = b"listing";
    let digest = digest_of(blob);
    parallel(repos, 32, t, |conn, i| {
        push_blob(conn, &format!("bench/i/r{i:06}"), blob, &digest).map(|_| ())
    })?;
    push_small_image(t, "bench/i/tags")?;
    let mut conn = Conn::new(t);
    let (resp, _) = conn.request(
        "GET",
        "/v2/bench/i/tags/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        Body::Empty,
        Keep::All,
    )?;
    let manifest = resp.body;
    parallel(tags, 32, t, |conn, i| {
        let (resp, _) = conn.request(
            "PUT",
            &format!("/v2/bench/i/tags/manifests/t{i:06}"),
            &[("Content-Type", OCI_MANIFEST)],
            Body::Bytes(&manifest),
            Keep::All,
        )?;
        if resp.status == 201 {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("tag PUT: {}", resp.status)))
        }
    })?;
    let time = |conn: &mut Conn, path: &str| -> std::io::Result<f64> {
        let mut samples = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            let (resp, _) = conn.request("GET", path, &[], Body::Empty, Keep::All)?;
            if resp.status != 200 {
                return Err(std::io::Error::other(format!(
                    "{path}: HTTP {}",
                    resp.status
                )));
            }
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[samples.len() / 2])
    };
    let catalog = time(
        &mut conn,
        &format!("/v2/_catalog?n=1000&last=bench/i/r{:06}", repos / 2),
    )?;
    let tag_list = time(
        &mut conn,
        &format!("/v2/bench/i/tags/tags/list?n=1000&last=t{:06}", tags / 2),
    )?;
    let (home, _) = conn.request("GET", "/", &[], Body::Empty, Keep::All)?;
    let pages = if home.status == 200 {
        Some([
            time(&mut conn, "/")?,
            time(&mut conn, &format!("/?q=r{:06}", repos / 2))?,
            time(
                &mut conn,
                &format!("/r/bench/i/tags?after=t{:06}", tags / 2),
            )?,
        ])
    } else {
        None
    };
    Ok(Listings {
        catalog,
        tags: tag_list,
        pages,
    })
}

/// Runs `work(conn, i)` for i in 0..n over `threads` connections.
fn parallel(
    n: usize,
    threads: usize,
    t: &Target,
    work: impl Fn(&mut Conn, usize) -> std::io::Result<()> + Sync,
) -> std::io::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let work = &work;
                scope.spawn(move || {
                    let mut conn = Conn::new(t);
                    (k..n).step_by(threads).try_for_each(|i| work(&mut conn, i))
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("worker"))
    })
}

/// (h) start-up to the first 200 on /v2/, empty and with `blobs` blobs;
/// (j) `berth prune` over `manifests` manifests and `blobs` blobs.
fn startup_and_prune(
    args: &Args,
    _berth: &Target,
    record: &mut impl FnMut(&Target, &'static str, String),
    prune: bool,
) {
    let dir = args.data_dir.join("berth-startup");
    let _ = std::fs::remove_dir_all(&dir);
    let empty = Berth::time_to_first_200(&dir);
    let label = Target {
        name: "berth".into(),
        ..Target::parse("berth=http://127.0.0.1:1").unwrap()
    };
    record(
        &label,
        "h. start-up, empty store, ms",
        format!("{empty:.1}"),
    );
    eprintln!(
        "h/j. filling a store with {} blobs and {} manifests",
        args.blobs, args.manifests
    );
    let berth = Berth::start(&dir, false);
    let fill = Instant::now();
    let blob = |i: usize| format!("blob {i:09} of the start-up and prune data set").into_bytes();
    let filled = parallel(args.blobs, 32, &berth.target, |conn, i| {
        let data = blob(i);
        push_blob(conn, "bench/h", &data, &digest_of(&data)).map(|_| ())
    })
    .and_then(|()| {
        parallel(args.manifests, 32, &berth.target, |conn, i| {
            let (config, layer) = (blob(2 * i), blob(2 * i + 1));
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
                digest_of(&config),
                config.len(),
                digest_of(&layer),
                layer.len()
            );
            let (resp, _) = conn.request(
                "PUT",
                &format!("/v2/bench/h/manifests/m{i:06}"),
                &[("Content-Type", OCI_MANIFEST)],
                Body::Bytes(manifest.as_bytes()),
                Keep::All,
            )?;
            if resp.status == 201 { Ok(()) } else { Err(std::io::Error::other(format!("manifest PUT: {}", resp.status))) }
        })
    });
    let fill_secs = fill.elapsed().as_secs_f64();
    // What a long-lived store costs in memory: the database's page cache
    // grows with what the fill touched, up to its bound.
    let full_rss = berth.target.pid.map(|pid| kib_to_mib(sys::rss_kib(pid)));
    drop(berth);
    if let Err(e) = filled {
        record(
            &label,
            "h. start-up, full store, ms",
            format!("failed to fill: {e}"),
        );
        return;
    }
    record(
        &label,
        "h. filling it: blobs+manifests/s",
        format!("{:.0}", (args.blobs + args.manifests) as f64 / fill_secs),
    );
    if let Some(mib) = full_rss {
        record(&label, "h. RSS after filling it, MiB", format!("{mib:.1}"));
    }
    let full = Berth::time_to_first_200(&dir);
    record(&label, "h. start-up, full store, ms", format!("{full:.1}"));
    if prune {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["prune", "--grace", "0s", "--data"])
            .arg(&dir)
            .output()
            .expect("berth prune runs");
        let secs = start.elapsed().as_secs_f64();
        let report = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        record(&label, "j. prune, s", format!("{secs:.2} ({report})"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (m) `berth serve --ephemeral` with `extra` arguments: milliseconds from
/// the spawn to its ready line, and to its first 200 on /v2/.
fn fixture_start(extra: &[&str]) -> (f64, f64) {
    let start = Instant::now();
    let args = [&["--ephemeral", "--ready-json"], extra].concat();
    let berth = Berth::spawn(&args);
    let ready = start.elapsed().as_secs_f64() * 1000.0;
    (ready, berth.first_200(start))
}

/// An OCI layout archive of one image whose layer is `layer`.
fn write_layout(path: &Path, layer: &[u8], layer_digest: &str) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        digest_of(config),
        config.len(),
        layer.len()
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"bench/import:1"}}}}]}}"#,
        digest_of(manifest.as_bytes()),
        manifest.len()
    );
    let mut tar = tar::Builder::new(std::fs::File::create(path).expect("archive"));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes)
            .expect("tar entry");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index.as_bytes());
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    add(&blob(&digest_of(config)), config);
    add(&blob(&digest_of(manifest.as_bytes())), manifest.as_bytes());
    add(&blob(layer_digest), layer);
    tar.finish().expect("tar end");
}

/// Three berth nodes on one PostgreSQL and one Swift, all on loopback.
struct Cluster {
    // Dropped in this order: the nodes, then the servers under them.
    _nodes: Vec<Berth>,
    _servers: Servers,
    target: Target,
    /// The object store, as the nodes were given it.
    objects: berth::store::cluster::ObjectSettings,
}

/// Servers started by tests/servers/ in `dir`, stopped by the PIDs they
/// recorded when this goes.
struct Servers {
    dir: PathBuf,
}

fn server_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers")
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = Command::new(server_scripts().join("stop.sh"))
            .arg(&self.dir)
            .arg("--rm")
            .stdout(Stdio::null())
            .status();
    }
}

impl Cluster {
    fn start(dir: &Path, nodes: usize) -> Cluster {
        // What an earlier run left behind goes first.
        drop(Servers {
            dir: dir.to_path_buf(),
        });
        std::fs::create_dir_all(dir).expect("cluster dir");
        let servers = Servers {
            dir: dir.to_path_buf(),
        };
        let start = |script: &str, port: &str, key: &str| {
            let out = Command::new(server_scripts().join(script))
                .arg(dir)
                .arg(port)
                .stderr(Stdio::inherit())
                .output()
                .expect("run a server start script");
            assert!(out.status.success(), "{script} failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{script} printed no {key}"))
                .to_owned()
        };
        let postgres = start("start-postgres.sh", "56432", "DATABASE_URL=");
        let s3 = start("start-swift.sh", "59080", "S3_ENDPOINT=");
        let credentials = dir.join("s3-credentials");
        std::fs::write(
            &credentials,
            "aws_access_key_id = berth:admin\naws_secret_access_key = berth-secret\n",
        )
        .expect("credentials file");
        let blobs = format!("s3://bench?endpoint={s3}");
        let objects = berth::store::cluster::ObjectSettings::parse(&blobs, Some(&credentials))
            .expect("the object store's settings");
        let credentials = credentials.to_str().expect("a UTF-8 path");
        let nodes: Vec<Berth> = (0..nodes)
            .map(|i| {
                let data = dir.join(format!("node{i}"));
                Berth::spawn(&[
                    "--data",
                    data.to_str().expect("a UTF-8 path"),
                    "--metadata",
                    &postgres,
                    "--blobs",
                    &blobs,
                    "--blobs-credentials",
                    credentials,
                ])
            })
            .collect();
        let mut target = nodes[0].target.clone();
        target.name = format!("berth x{} (pg+swift)", nodes.len());
        target.nodes = nodes.iter().map(|n| n.target.addr).collect();
        Cluster {
            _nodes: nodes,
            _servers: servers,
            target,
            objects,
        }
    }
}

/// berth, started from the binary this bench was built with.
struct Berth {
    child: Child,
    target: Target,
}

impl Berth {
    fn start(dir: &Path, fresh: bool) -> Berth {
        Berth::start_with(dir, fresh, &[])
    }

    /// As [`Berth::start`], with more `berth serve` arguments.
    fn start_with(dir: &Path, fresh: bool, extra: &[&str]) -> Berth {
        if fresh {
            let _ = std::fs::remove_dir_all(dir);
        }
        let dir = dir.to_str().expect("a UTF-8 path");
        Berth::spawn(&[&["--data", dir], extra].concat())
    }

    /// `berth serve --listen 127.0.0.1:0 ARGS`, once it has said where it
    /// listens (as text, or as JSON with `--ready-json`).
    fn spawn(args: &[&str]) -> Berth {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("berth starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address line");
        let url = match line.split_once("\"url\":\"") {
            Some((_, rest)) => rest.split('"').next().unwrap_or(""),
            None => line.trim().rsplit(' ').next().unwrap_or(""),
        };
        let mut target = Target::parse(&format!("berth={url}")).expect("berth's address");
        target.pid = Some(child.id());
        Berth { child, target }
    }

    /// Milliseconds from spawning berth to its first 200 on /v2/.
    fn time_to_first_200(dir: &Path) -> f64 {
        let start = Instant::now();
        Berth::start(dir, false).first_200(start)
    }

    /// Milliseconds from `start` to this berth's first 200 on /v2/.
    fn first_200(&self, start: Instant) -> f64 {
        let mut conn = Conn::new(&self.target);
        while !conn
            .request("GET", "/v2/", &[], Body::Empty, Keep::All)
            .is_ok_and(|(r, _)| r.status == 200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "berth never answered"
            );
        }
        start.elapsed().as_secs_f64() * 1000.0
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn render(targets: &[Target], results: &Results, limits: &Limits) -> String {
    let mut keys: Vec<&'static str> = Vec::new();
    for r in results.values() {
        for k in r.keys() {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
    }
    keys.sort();
    let mut names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    if !names.contains(&"berth".to_owned()) && results.contains_key("berth") {
        names.insert(0, "berth".into());
    }
    let mut out = format!(
        "| test | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for k in keys {
        let row: Vec<String> = names
            .iter()
            .map(|n| {
                results
                    .get(n)
                    .and_then(|r| r.get(k))
                    .cloned()
                    .unwrap_or_else(|| "-".into())
            })
            .collect();
        out.push_str(&format!("| {k} | {} |\n", row.join(" | ")));
    }
    out.push_str("\n| machine limit | measured |\n|---|---|\n");
    for (k, v) in limits.rows() {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}
