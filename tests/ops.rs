//! Seeing inside berth: `/metrics` in the Prometheus text format (read
//! here by a Prometheus text parser), `/healthz` and `/readyz`, a second
//! address for them, and the access log of `berth serve --access-log`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestRegistry;
use common::clients::htpasswd;
use common::http;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::Value as Json;

/// Every sample `/metrics` at `url` gives.
#[track_caller]
fn scrape_at(url: &str, headers: &[(&str, &str)]) -> Vec<Sample> {
    let resp = http::request("GET", url, headers, b"");
    assert_eq!(resp.status, 200, "{url}: {resp:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{resp:?}"
    );
    let lines = resp
        .text()
        .lines()
        .map(|l| Ok(l.to_owned()))
        .collect::<Vec<_>>();
    Scrape::parse(lines.into_iter()).unwrap().samples
}

#[track_caller]
fn scrape(base: &str) -> Vec<Sample> {
    scrape_at(&format!("{base}/metrics"), &[])
}

/// The value of `metric` with exactly these labels among its own; 0 when
/// there is no such series.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            // A histogram's value here is its count: the +Inf bucket.
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("no summaries here"),
        })
        .sum()
}

#[test]
fn the_metrics_move_exactly_with_a_known_workload() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let before = scrape(&base);
    let image = http::push_image(&base, "team/app", Some("1"), 7);
    for _ in 0..3 {
        let resp = http::get(&http::manifest_url(&base, "team/app", "1"));
        assert_eq!(resp.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            http::head(&http::blob_url(&base, "team/app", &image.layer_digest)).status,
            200
        );
    }
    assert_eq!(
        http::get(&http::manifest_url(&base, "team/app", "nope")).status,
        404
    );
    let open = http::start_upload(&base, "team/app");
    let after = scrape(&base);

    let requests = "berth_http_requests_total";
    let count = |route, method, status| {
        value(
            &after,
            requests,
            &[("route", route), ("method", method), ("status", status)],
        ) - value(
            &before,
            requests,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(count("manifest", "GET", "200"), 3.0);
    assert_eq!(count("manifest", "GET", "404"), 1.0);
    assert_eq!(count("manifest", "PUT", "201"), 1.0);
    assert_eq!(count("blob", "HEAD", "200"), 2.0);
    // Two monolithic pushes and the session left open.
    assert_eq!(count("upload", "POST", "201"), 2.0);
    assert_eq!(count("upload", "POST", "202"), 1.0);
    let latency = "berth_http_request_duration_seconds";
    assert_eq!(
        value(&after, latency, &[("route", "manifest"), ("method", "GET")]),
        4.0
    );
    let pushed = (image.config.len() + image.layer.len() + image.manifest.len()) as f64;
    let received = value(&after, "berth_http_received_bytes_total", &[])
        - value(&before, "berth_http_received_bytes_total", &[]);
    assert_eq!(received, pushed, "request body bytes");
    let sent = value(&after, "berth_http_sent_bytes_total", &[])
        - value(&before, "berth_http_sent_bytes_total", &[]);
    assert!(sent >= 3.0 * image.manifest.len() as f64, "sent {sent}");
    assert_eq!(value(&after, "berth_stored_blobs", &[]), 2.0);
    assert_eq!(
        value(&after, "berth_stored_bytes", &[]),
        (image.config.len() + image.layer.len()) as f64
    );
    assert_eq!(value(&after, "berth_uploads_in_progress", &[]), 1.0);
    assert!(value(&after, "berth_store_commit_batch_size", &[]) >= 3.0);
    assert!(value(&after, "berth_store_commit_duration_seconds", &[]) >= 3.0);

    assert_eq!(http::delete(&open).status, 204);
    let closed = scrape(&base);
    assert_eq!(value(&closed, "berth_uploads_in_progress", &[]), 0.0);
}

#[test]
fn names_a_client_makes_up_never_become_series() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let mut rng = http::random_bytes(8192, 99).into_iter();
    let mut made_up = || -> String {
        (0..12)
            .map(|_| char::from(b'a' + rng.next().unwrap() % 26))
            .collect()
    };
    let ask = |made_up: &mut dyn FnMut() -> String| {
        let (repo, tag) = (made_up(), made_up());
        http::get(&http::manifest_url(&base, &repo, &tag));
        http::get(&format!("{base}/v2/{repo}/tags/list"));
        http::head(&http::blob_url(
            &base,
            &repo,
            &http::sha256_digest(tag.as_bytes()),
        ));
        http::get(&format!("{base}/v2/{repo}/nothing/{tag}"));
        http::get(&format!("{base}/{tag}"));
        repo
    };
    ask(&mut made_up);
    // A scrape is a request too: its own series exist from the first.
    scrape(&base);
    let first = scrape(&base);
    let mut names = Vec::new();
    for _ in 0..200 {
        names.push(ask(&mut made_up));
    }
    let then = scrape(&base);
    let series = |samples: &[Sample]| {
        let mut keys: Vec<String> = samples
            .iter()
            .map(|s| format!("{}{{{}}}", s.metric, s.labels))
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(series(&first), series(&then), "new series appeared");
    let page = http::get(&format!("{base}/metrics")).text();
    for name in &names {
        assert!(!page.contains(name.as_str()), "{name} is in the metrics");
    }
}

#[test]
fn probes_answer_and_a_second_address_keeps_them_off_the_registry() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let healthz = http::get(&format!("{base}/healthz"));
    assert_eq!((healthz.status, healthz.text().as_str()), (200, "ok\n"));
    let readyz = http::get(&format!("{base}/readyz"));
    assert_eq!((readyz.status, readyz.text().as_str()), (200, "ready\n"));

    // More free space asked for than any disk has: not ready, and why.
    let picky = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.min_free_space = u64::MAX / 2;
    });
    let readyz = http::get(&format!("{}/readyz", picky.url()));
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(readyz.text().contains("bytes free"), "{}", readyz.text());
    assert_eq!(http::get(&format!("{}/healthz", picky.url())).status, 200);

    let apart = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let ops = format!(
        "http://{}",
        apart.metrics_addr().expect("a metrics address")
    );
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            http::get(&format!("{}{path}", apart.url())).status,
            404,
            "{path}"
        );
        assert_eq!(http::get(&format!("{ops}{path}")).status, 200, "{path}");
    }
    assert_eq!(http::get(&format!("{ops}/v2/")).status, 404);
    // What the registry serves is counted on the second address.
    http::push_image(&apart.url(), "team/app", Some("1"), 3);
    let samples = scrape(&ops);
    assert_eq!(value(&samples, "berth_stored_blobs", &[]), 2.0);
}

#[test]
fn with_auth_on_metrics_need_a_login_probes_do_not_and_failed_logins_count() {
    let files = tempfile::tempdir().unwrap();
    let users = files.path().join("users");
    htpasswd(&users, "alice", "right");
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.auth = Some(berth::auth::AuthConfig::new(users));
    });
    let base = reg.url();
    assert_eq!(http::get(&format!("{base}/metrics")).status, 401);
    // Nor does the token anyone gets without a password.
    let anonymous = http::get(&format!("{base}/token?service=berth")).json();
    let bearer = format!("Bearer {}", anonymous["token"].as_str().unwrap());
    let resp = http::request(
        "GET",
        &format!("{base}/metrics"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(resp.status, 401, "an anonymous token read the metrics");
    assert_eq!(http::get(&format!("{base}/healthz")).status, 200);
    assert_eq!(http::get(&format!("{base}/readyz")).status, 200);
    let basic = |password: &str| {
        use base64::Engine;
        let pair = format!("alice:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let wrong = http::request(
        "GET",
        &format!("{base}/v2/"),
        &[("Authorization", &basic("wrong"))],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let samples = scrape_at(
        &format!("{base}/metrics"),
        &[("Authorization", &basic("right"))],
    );
    assert_eq!(value(&samples, "berth_failed_logins_total", &[]), 1.0);
}

#[test]
fn a_cached_namespace_counts_its_hits_misses_and_upstream_requests() {
    let upstream = TestRegistry::start();
    let image = http::push_image(&upstream.url(), "library/app", Some("1"), 5);
    let host = upstream.host();
    let url = upstream.url();
    let mirror = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.upstreams = vec![(host.clone(), url)];
    });
    let repo = format!("{host}/library/app");
    let layer = http::blob_url(&mirror.url(), &repo, &image.layer_digest);
    assert_eq!(http::get(&layer).status, 200);
    assert_eq!(http::get(&layer).status, 200);
    let by_digest = http::manifest_url(&mirror.url(), &repo, &image.digest);
    assert_eq!(http::get(&by_digest).status, 200);
    let samples = scrape(&mirror.url());
    let lookups = |result| {
        value(
            &samples,
            "berth_cache_lookups_total",
            &[("namespace", host.as_str()), ("result", result)],
        )
    };
    // The layer: fetched once, then served from the cache; the manifest: fetched.
    assert_eq!(lookups("miss"), 2.0);
    assert_eq!(lookups("hit"), 1.0);
    assert!(
        value(
            &samples,
            "berth_upstream_requests_total",
            &[("namespace", host.as_str())]
        ) >= 2.0
    );
    assert_eq!(
        value(
            &samples,
            "berth_upstream_failures_total",
            &[("namespace", host.as_str())]
        ),
        0.0
    );
}

#[test]
fn a_background_prune_is_counted() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.prune_interval = Some(Duration::from_millis(100));
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = scrape(&reg.url());
        if value(&samples, "berth_prune_runs_total", &[]) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no prune counted in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `berth serve` with `args`, its stderr read line by line: the address it
/// listens on, and the lines it writes once stopped.
fn serve_and_log(args: &[&str], work: impl FnOnce(&str)) -> Vec<String> {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("berth listening on ")
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    work(&base);
    let stderr = child.stderr.take().unwrap();
    // SIGTERM: it drains and exits, and stderr ends.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let lines: Vec<String> = BufReader::new(stderr).lines().map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    lines
}

#[test]
fn the_access_log_has_a_line_per_request_as_text_or_json() {
    let mut upload = String::new();
    let lines = serve_and_log(&["--access-log", "--log-format", "json"], |base| {
        http::push_blob(base, "team/app", b"twelve bytes");
        let started = http::start_upload(base, "team/app");
        upload = started.rsplit('/').next().unwrap().to_owned();
        http::put(
            &http::with_query(&started, &format!("digest={}", http::sha256_digest(b"abc"))),
            &[],
            b"abc",
        );
        http::get(&http::manifest_url(base, "team/app", "none"));
    });
    let entries: Vec<Json> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(entries.len(), 4, "one JSON line per request: {lines:#?}");
    let first = &entries[0];
    assert_eq!(first["method"], "POST");
    assert!(
        first["path"]
            .as_str()
            .unwrap()
            .ends_with("/v2/team/app/blobs/uploads/")
    );
    assert_eq!(first["status"], 201);
    assert_eq!(first["received"], 12);
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["user"].is_null());
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    humantime::parse_rfc3339(first["time"].as_str().unwrap()).unwrap();
    // The session is named from the answer that opened it, and by the PUT.
    assert_eq!(entries[1]["upload"], upload.as_str());
    assert_eq!(entries[2]["upload"], upload.as_str());
    assert_eq!(entries[2]["received"], 3);
    assert_eq!(
        (entries[3]["method"].as_str(), entries[3]["status"].as_u64()),
        (Some("GET"), Some(404))
    );
    assert!(
        entries[3]["sent"].as_u64().unwrap() > 0,
        "the error body is counted"
    );

    let lines = serve_and_log(&["--access-log"], |base| {
        http::get(&format!("{base}/v2/"));
    });
    let line = lines
        .iter()
        .find(|l| l.contains("\"GET /v2/\""))
        .unwrap_or_else(|| panic!("no text line: {lines:#?}"));
    let fields: Vec<&str> = line.split(' ').collect();
    humantime::parse_rfc3339(fields[0]).unwrap();
    assert!(fields[1].starts_with("127.0.0.1:"), "{line}");
    assert_eq!(fields[2], "-", "{line}");
    assert_eq!(&fields[5..8], ["200", "0", "2"], "{line}");
    assert!(fields[8].ends_with("ms") && fields[9] == "-", "{line}");

    let quiet = serve_and_log(&[], |base| {
        http::get(&format!("{base}/v2/"));
    });
    assert!(!quiet.iter().any(|l| l.contains("GET /v2/")), "{quiet:#?}");
}

/// /readyz needs no login and its check writes to the database: a flood
/// of probes shares one check a second instead of a commit each.
#[test]
fn a_flood_of_readiness_probes_shares_one_database_write_a_second() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let commits = |base: &str| value(&scrape(base), "berth_store_commit_batch_size", &[]);
    let before = commits(&base);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(http::get(&format!("{base}/readyz")).status, 200);
    }
    let seconds = started.elapsed().as_secs_f64();
    let written = commits(&base) - before;
    assert!(
        written <= seconds.ceil() + 1.0,
        "100 probes in {seconds:.1} s took {written} commits"
    );
}
