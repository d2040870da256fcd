//! The web page at `/`: from the repository list to an image's platforms,
//! layers, config and referrers; deletes only from the page's own form;
//! every manifest value escaped; with auth on, a login and only what the
//! user may pull. The last test drives a real headless Chromium through
//! chromedriver and saves a screenshot of each page under
//! `target/ui-screenshots/`.

mod common;

use std::path::PathBuf;

use common::TestRegistry;
use common::clients::{htpasswd, require_programs};
use common::http::{self, OCI_INDEX, OCI_MANIFEST};
use common::webdriver::Browser;
use serde_json::{Value, json};

const EVIL: &str = "<script>alert('x')</script>";

/// What [`populate`] pushed.
struct Pushed {
    /// `team/app:1`: one image whose config has an entrypoint, an
    /// environment and a label holding [`EVIL`].
    app: Value,
    app_digest: String,
    /// `team/multi:2`: an index of linux/amd64 and linux/arm64/v8.
    index_digest: String,
    arm_digest: String,
    /// A signature of the index.
    signature_digest: String,
}

fn image(base: &str, repo: &str, arch: &str, variant: Option<&str>, seed: u8) -> (Vec<u8>, String) {
    let mut config = json!({
        "architecture": arch, "os": "linux",
        "created": "2026-11-01T10:00:00Z",
        "config": {
            "Entrypoint": ["/bin/serve", "--port", "8080"],
            "Env": ["PATH=/usr/bin", format!("SEED={seed}")],
            "Labels": {"org.example.evil": EVIL},
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let layer = http::random_bytes(3000 + seed as usize, seed as u64);
    http::push_blob(base, repo, &config);
    http::push_blob(base, repo, &layer);
    let mut manifest: Value = serde_json::from_slice(&http::image_manifest(
        &http::descriptor(http::OCI_CONFIG, &config),
        &[http::descriptor(http::OCI_LAYER, &layer)],
    ))
    .unwrap();
    manifest["annotations"] = json!({"org.example.note": EVIL});
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = http::sha256_digest(&manifest);
    http::push_manifest(base, repo, &digest, OCI_MANIFEST, &manifest);
    (manifest, digest)
}

fn populate(base: &str) -> Pushed {
    let (app, app_digest) = image(base, "team/app", "amd64", None, 1);
    http::push_manifest(base, "team/app", "1", OCI_MANIFEST, &app);
    let (amd, amd_digest) = image(base, "team/multi", "amd64", None, 2);
    let (arm, arm_digest) = image(base, "team/multi", "arm64", Some("v8"), 3);
    let descriptor = |body: &[u8], digest: &str, arch: &str, variant: Option<&str>| {
        let mut d = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch}});
        if let Some(v) = variant {
            d["platform"]["variant"] = json!(v);
        }
        d
    };
    let index = http::image_index(&[
        descriptor(&amd, &amd_digest, "amd64", None),
        descriptor(&arm, &arm_digest, "arm64", Some("v8")),
    ]);
    http::push_manifest(base, "team/multi", "2", OCI_INDEX, &index);
    let index_digest = http::sha256_digest(&index);
    http::push_blob(base, "team/multi", b"{}");
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": http::descriptor(http::OCI_EMPTY, b"{}"),
        "layers": [http::descriptor(http::OCI_EMPTY, b"{}")],
        "subject": {"mediaType": OCI_INDEX, "digest": index_digest, "size": index.len()},
    }))
    .unwrap();
    let signature_digest = http::sha256_digest(&signature);
    http::push_manifest(
        base,
        "team/multi",
        &signature_digest,
        OCI_MANIFEST,
        &signature,
    );
    Pushed {
        app: serde_json::from_slice(&app).unwrap(),
        app_digest,
        index_digest,
        arm_digest,
        signature_digest,
    }
}

/// A page's HTML, asserting it is one.
#[track_caller]
fn page(url: &str, headers: &[(&str, &str)]) -> String {
    let resp = http::request("GET", url, headers, b"");
    assert_eq!(resp.status, 200, "GET {url}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    resp.text()
}

/// The confirmation page's form: its token.
fn token_of(confirm: &str) -> String {
    let at = confirm
        .find(r#"name="token" value=""#)
        .expect("a token field")
        + 20;
    let len = confirm[at..].find('"').expect("the field's end");
    confirm[at..at + len].to_owned()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// [`populate`]'s images in a berth where `pusher` may push everything
/// and `reader` only pull `team/app`: pushed to an open berth, whose data
/// is then served with auth on.
fn secured() -> (TestRegistry, Pushed, tempfile::TempDir) {
    let open = TestRegistry::start();
    let pushed = populate(&open.url());
    let data = open.stop();
    let files = tempfile::tempdir().unwrap();
    let users = files.path().join("users");
    htpasswd(&users, "pusher", "push-pw");
    htpasswd(&users, "reader", "read-pw");
    let access = files.path().join("access");
    std::fs::write(&access, "pusher push *\nreader pull team/app\n").unwrap();
    let reg = TestRegistry::start_with(data, move |c| {
        let mut auth = berth::auth::AuthConfig::new(users);
        auth.access = Some(access);
        c.auth = Some(auth);
    });
    (reg, pushed, files)
}

/// Where the browser test leaves its screenshots.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../ui-screenshots")
}

#[test]
fn a_browser_finds_platforms_layers_and_signatures_in_three_clicks() {
    require_programs(
        "browser",
        &[
            ("chromium", "chromium"),
            ("chromedriver", "chromium-driver"),
        ],
    );
    let open = TestRegistry::start();
    let pushed = populate(&open.url());
    let shots = screenshots();
    let browser = Browser::start(&[]);

    // 1: the repository list, 2: the repository, 3: the index, 4: a platform.
    browser.open(&format!("{}/", open.url()));
    browser.screenshot(&shots.join("1-repositories.png"));
    browser.find_text("ul.repos a", "team/multi").click();
    assert!(
        browser.url().ends_with("/r/team/multi"),
        "{}",
        browser.url()
    );
    browser.screenshot(&shots.join("2-tags.png"));
    browser.find_text("article.tag h2 a", "2").click();
    browser.screenshot(&shots.join("3-index.png"));
    let page = browser.source();
    assert!(
        page.contains("linux/arm64/v8"),
        "no platforms in three clicks"
    );
    assert!(
        page.contains("application/vnd.dev.cosign.artifact.sig.v1+json"),
        "no signature in three clicks"
    );
    let arm = browser
        .find_all("table a")
        .into_iter()
        .find(|a| pushed.arm_digest.starts_with(&a.text()))
        .expect("a link to the arm64 image");
    arm.click();
    browser.screenshot(&shots.join("4-image.png"));
    let image = browser.source();
    assert!(image.contains("Layers") && image.contains("/bin/serve --port 8080"));
    // An annotation holding a script is text on the page, never a script.
    assert!(
        browser.find_all("script").is_empty(),
        "a script made it into the page"
    );
    assert!(image.contains("&lt;script&gt;"), "{image}");

    // On a phone's width the page still reads: one column, nothing cut.
    browser.resize(390, 844);
    browser.screenshot(&shots.join("8-image-on-a-phone.png"));
    browser.find("a.brand").click();
    assert!(browser.url().ends_with('/'), "{}", browser.url());
}

#[test]
fn in_a_browser_a_push_user_deletes_a_tag_and_a_pull_user_is_refused() {
    require_programs(
        "browser",
        &[
            ("chromium", "chromium"),
            ("chromedriver", "chromium-driver"),
        ],
    );
    let (reg, _, _files) = secured();
    let base = reg.url();
    let shots = screenshots();

    let reader = Browser::start(&[("Authorization", &basic("reader", "read-pw"))]);
    reader.open(&format!("{base}/r/team/app"));
    assert!(
        reader.find_all("a.delete").is_empty(),
        "a pull user is offered a delete"
    );
    reader.open(&format!("{base}/r/team/app/-/delete?tag=1"));
    reader.screenshot(&shots.join("5-refused.png"));
    assert_eq!(reader.title(), "Forbidden · berth");
    drop(reader);

    let pusher = Browser::start(&[("Authorization", &basic("pusher", "push-pw"))]);
    pusher.open(&format!("{base}/r/team/app"));
    pusher.find("a.delete").click();
    pusher.screenshot(&shots.join("6-confirm.png"));
    assert_eq!(pusher.title(), "Delete? · berth");
    pusher.find("button.danger").click();
    pusher.screenshot(&shots.join("7-deleted.png"));
    assert!(pusher.url().ends_with("/r/team/app"), "{}", pusher.url());
    assert!(pusher.source().contains("No tags."), "{}", pusher.source());
    let tag = http::request(
        "GET",
        &http::manifest_url(&base, "team/app", "1"),
        &[("Authorization", &basic("pusher", "push-pw"))],
        b"",
    );
    assert_eq!(tag.status, 404, "the tag is still there");
}

common::both_engines! {
#[test]
fn the_pages_lead_from_repositories_to_platforms_layers_config_and_referrers() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let pushed = populate(&base);
    for i in 0..105 {
        http::push_blob(&base, &format!("many/r{i:03}"), b"x");
        let m = http::image_manifest(&http::descriptor(http::OCI_CONFIG, b"x"), &[]);
        http::push_manifest(&base, &format!("many/r{i:03}"), "latest", OCI_MANIFEST, &m);
    }
    let home = page(&format!("{base}/"), &[]);
    assert!(home.contains(r#"href="/r/many/r000""#), "{home}");
    assert!(home.contains("Next page"), "100 to a page: {home}");
    let second = page(&format!("{base}/?after=many%2Fr099"), &[]);
    assert!(second.contains("/r/team/multi") && second.contains("/r/many/r104"));
    let filtered = page(&format!("{base}/?q=team"), &[]);
    assert!(filtered.contains("/r/team/app") && !filtered.contains("/r/many/"));

    let multi = page(&format!("{base}/r/team/multi"), &[]);
    for part in [
        "linux/amd64",
        "linux/arm64/v8",
        &pushed.index_digest[..19],
        &format!("docker pull {}/team/multi:2", reg.host()),
        &format!("podman pull {}/team/multi:2", reg.host()),
        "just now",
    ] {
        assert!(
            multi.contains(part),
            "no {part:?} on the tags page: {multi}"
        );
    }
    let index = page(
        &format!("{base}/r/team/multi/-/manifest/{}", pushed.index_digest),
        &[],
    );
    assert!(index.contains(&format!("/r/team/multi/-/manifest/{}", pushed.arm_digest)));
    assert!(
        index.contains("application/vnd.dev.cosign.artifact.sig.v1+json"),
        "{index}"
    );
    assert!(index.contains(&format!(
        "/r/team/multi/-/manifest/{}",
        pushed.signature_digest
    )));
    let arm = page(
        &format!("{base}/r/team/multi/-/manifest/{}", pushed.arm_digest),
        &[],
    );
    let layer = pushed.app["layers"][0]["digest"].as_str().unwrap();
    for part in [
        "/bin/serve --port 8080",
        "SEED=3",
        "linux/arm64/v8",
        "2026-11-01T10:00:00Z",
        "Layers",
    ] {
        assert!(
            arm.contains(part),
            "no {part:?} on the manifest page: {arm}"
        );
    }
    let app = page(
        &format!("{base}/r/team/app/-/manifest/{}", pushed.app_digest),
        &[],
    );
    assert!(app.contains(&layer[..19]), "{app}");
    assert_eq!(http::get(&format!("{base}/r/team/nothing")).status, 404);
    let css = http::get(&format!("{base}/-/berth.css"));
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // The registry API is where it was.
    assert_eq!(http::get(&format!("{base}/v2/")).status, 200);
}

#[test]
fn every_value_from_a_manifest_is_escaped() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let pushed = populate(&base);
    let html = page(
        &format!("{base}/r/team/app/-/manifest/{}", pushed.app_digest),
        &[],
    );
    assert!(
        !html.contains("<script>"),
        "a manifest's value came through raw: {html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let filter = page(&format!("{base}/?q=%22%3E%3Cscript%3E"), &[]);
    assert!(!filter.contains("<script>"), "{filter}");
    let resp = http::get(&format!("{base}/"));
    let policy = resp.header("content-security-policy").unwrap_or("");
    assert!(policy.contains("default-src 'none'"), "{policy}");
}

#[test]
fn a_delete_takes_the_pages_own_form_and_its_token() {
    let reg = TestRegistry::start();
    let base = reg.url();
    populate(&base);
    let confirm = page(&format!("{base}/r/team/app/-/delete?tag=1"), &[]);
    assert!(
        confirm.contains("Delete?") && confirm.contains("tag 1"),
        "{confirm}"
    );
    let token = token_of(&confirm);
    let delete = |form: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        http::request(
            "POST",
            &format!("{base}/r/team/app/-/delete"),
            &all,
            form.as_bytes(),
        )
    };
    let tag_url = http::manifest_url(&base, "team/app", "1");
    let origin = format!("http://{}", reg.host());
    for (form, headers) in [
        ("tag=1", vec![("Origin", origin.as_str())]),
        (
            &*format!("tag=1&token={}", "0".repeat(64)),
            vec![("Origin", origin.as_str())],
        ),
        (
            &*format!("tag=1&token={token}"),
            vec![("Origin", "http://evil.example")],
        ),
        (
            &*format!("tag=1&token={token}"),
            vec![("Sec-Fetch-Site", "cross-site")],
        ),
    ] {
        let resp = delete(form, &headers);
        assert_eq!(resp.status, 403, "{form} {headers:?}: {}", resp.text());
        assert_eq!(
            http::get(&tag_url).status,
            200,
            "deleted by {form} {headers:?}"
        );
    }
    let resp = delete(
        &format!("tag=1&token={token}"),
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.header("location"), Some("/r/team/app"));
    assert_eq!(http::get(&tag_url).status, 404);
}

#[test]
fn with_auth_the_page_asks_for_a_login_and_shows_only_what_the_user_may_pull() {
    let (reg, _, _files) = secured();
    let base = reg.url();
    let resp = http::get(&format!("{base}/"));
    assert_eq!(resp.status, 401);
    assert!(
        resp.header("www-authenticate")
            .unwrap_or("")
            .starts_with("Basic "),
        "{resp:?}"
    );
    let wrong = http::request(
        "GET",
        &format!("{base}/"),
        &[("Authorization", &basic("reader", "nope"))],
        b"",
    );
    assert_eq!(wrong.status, 401);

    let reader = basic("reader", "read-pw");
    let home = page(&format!("{base}/"), &[("Authorization", &reader)]);
    assert!(
        home.contains("/r/team/app") && !home.contains("/r/team/multi"),
        "{home}"
    );
    let app = page(&format!("{base}/r/team/app"), &[("Authorization", &reader)]);
    assert!(
        !app.contains("Delete"),
        "a pull user is offered a delete: {app}"
    );
    let hidden = http::request(
        "GET",
        &format!("{base}/r/team/multi"),
        &[("Authorization", &reader)],
        b"",
    );
    assert_eq!(
        hidden.status, 404,
        "a repository the user may not pull is shown"
    );
    let refused = http::request(
        "GET",
        &format!("{base}/r/team/app/-/delete?tag=1"),
        &[("Authorization", &reader)],
        b"",
    );
    assert_eq!(refused.status, 403);

    let pusher = basic("pusher", "push-pw");
    let multi = page(
        &format!("{base}/r/team/multi"),
        &[("Authorization", &pusher)],
    );
    assert!(multi.contains("Delete tag"), "{multi}");
}

#[test]
fn a_manifest_page_shows_only_what_its_own_repository_holds() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let pushed = populate(&base);
    // An index may name any config: one of team/app's, pushed to team/other.
    let secret = pushed.app["config"].clone();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "config": secret,
        "manifests": [],
        "layers": [{"mediaType": "x", "digest": "sha256:aéééééééééééééé", "size": 1}],
    }))
    .unwrap();
    http::push_blob(&base, "team/other", b"unrelated");
    let digest = http::sha256_digest(&index);
    http::push_manifest(&base, "team/other", "1", OCI_INDEX, &index);
    let html = page(&format!("{base}/r/team/other/-/manifest/{digest}"), &[]);
    assert!(
        !html.contains("SEED=1"),
        "another repository's config is shown: {html}"
    );
    let tags = page(&format!("{base}/r/team/other"), &[]);
    assert!(!tags.contains("linux/amd64"), "{tags}");
}

#[test]
fn a_delete_form_that_trickles_in_is_cut() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.body_idle_timeout = std::time::Duration::from_secs(1);
    });
    let head = format!(
        "POST /r/team/app/-/delete HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 64\r\n\r\ntag=1",
        reg.host()
    );
    let reply = http::raw(
        reg.addr,
        head.as_bytes(),
        false,
        std::time::Duration::from_secs(10),
    );
    let resp = reply
        .response()
        .expect("an answer before the client gives up");
    assert_eq!(resp.status, 400, "{resp:?}");
}

#[test]
fn behind_a_proxy_the_public_urls_origin_may_delete() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.public_url = Some("https://registry.example".into());
    });
    let base = reg.url();
    populate(&base);
    let confirm = page(&format!("{base}/r/team/app/-/delete?tag=1"), &[]);
    let form = format!("tag=1&token={}", token_of(&confirm));
    let resp = http::request(
        "POST",
        &format!("{base}/r/team/app/-/delete"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://registry.example"),
        ],
        form.as_bytes(),
    );
    assert_eq!(resp.status, 303, "{}", resp.text());
}
}

/// Over HTTP/2 (as browsers speak to a TLS registry) a request names its
/// host in `:authority`, not `Host`: the page's pull lines and its delete
/// form's origin check use it (here HTTP/2 in the clear, with curl).
#[test]
fn over_http2_the_pages_know_their_host_and_a_delete_goes_through() {
    require_programs("over_http2_the_pages", &[("curl", "curl")]);
    let reg = TestRegistry::start();
    let base = reg.url();
    populate(&base);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let host = reg.host();
    let repository = curl(&[&format!("{base}/r/team/app")]);
    assert!(
        repository.contains(&format!("docker pull {host}/team/app")),
        "{repository}"
    );
    let confirm = curl(&[&format!("{base}/r/team/app/-/delete?tag=1")]);
    let token = token_of(&confirm);
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        "-H",
        &format!("Origin: http://{host}"),
        "-H",
        "Sec-Fetch-Site: same-origin",
        "--data",
        &format!("tag=1&token={token}"),
        &format!("{base}/r/team/app/-/delete"),
    ]);
    assert_eq!(status, "2 303");
    assert_eq!(
        http::get(&http::manifest_url(&base, "team/app", "1")).status,
        404
    );
}
