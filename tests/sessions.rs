//! Upload sessions are bounded: open ones are capped per repository and in
//! total (a clear 429 past the cap), and stale ones expire on a live
//! server by default, not only when a prune runs.

mod common;

use std::time::{Duration, Instant};

use common::TestRegistry;
use common::http::{self, *};

#[track_caller]
fn assert_capped(base: &str, repo: &str) {
    let resp = http::post(&uploads_url(base, repo), &[], b"");
    assert_error(&resp, 429, "TOOMANYREQUESTS");
}

#[test]
fn stale_uploads_expire_on_a_live_server_without_a_prune_interval() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.prune.upload_expiration = Duration::from_secs(1);
    });
    let base = reg.url();
    let upload = start_upload(&base, "app");
    assert_eq!(
        http::patch(&resolve(&base, &upload), &[], b"half a blob").status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = http::get(&resolve(&base, &upload)).status;
        if status == 404 {
            break;
        }
        assert_eq!(status, 204);
        assert!(
            Instant::now() < deadline,
            "an upload idle for 10 s with a 1 s expiration is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::fs::read_dir(reg.data.path().join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "the expired upload's file is gone"
    );
}

common::both_engines! {
#[test]
fn open_sessions_are_capped_per_repository_and_in_total() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.max_uploads = 12;
        c.max_uploads_per_repo = 5;
    });
    let base = reg.url();
    let first: Vec<String> = (0..5).map(|_| start_upload(&base, "a")).collect();
    assert_capped(&base, "a");
    // A finished session frees its place; so does a cancelled one.
    let data = b"one blob".to_vec();
    let digest = sha256_digest(&data);
    let resp = http::put(
        &with_query(&resolve(&base, &first[0]), &format!("digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        &data,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    start_upload(&base, "a");
    assert_capped(&base, "a");
    assert_eq!(http::delete(&resolve(&base, &first[1])).status, 204);
    start_upload(&base, "a");
    // Other repositories have their own places, up to the total.
    for _ in 0..5 {
        start_upload(&base, "b");
    }
    start_upload(&base, "c");
    start_upload(&base, "c");
    assert_capped(&base, "d");
    // A whole blob in one request needs no session, and still works.
    let other = b"monolithic".to_vec();
    let resp = http::post(
        &with_query(
            &uploads_url(&base, "d"),
            &format!("digest={}", sha256_digest(&other)),
        ),
        &[("Content-Type", "application/octet-stream")],
        &other,
    );
    assert_eq!(resp.status, 201, "{resp:?}");
}

#[test]
fn the_cap_counts_sessions_left_open_before_a_restart() {
    let reg = TestRegistry::start_with(tempfile::tempdir().unwrap(), |c| {
        c.max_uploads_per_repo = 3;
    });
    for _ in 0..3 {
        start_upload(&reg.url(), "a");
    }
    let data = reg.stop();
    let reg = TestRegistry::start_with(data, |c| c.max_uploads_per_repo = 3);
    assert_capped(&reg.url(), "a");
}
}

/// The upload file of session `upload` (its absolute URL) in `reg`'s data.
fn upload_file(reg: &TestRegistry, upload: &str) -> std::path::PathBuf {
    let id = upload
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    reg.data.path().join("uploads").join(id)
}

#[test]
fn a_session_whose_committed_bytes_are_gone_ends_as_unknown() {
    let reg = TestRegistry::start();
    let base = reg.url();
    // One session's file is cut short, the other's removed, behind berth's back.
    type Lose = fn(&std::path::Path);
    let lose: [(&str, Lose); 2] = [
        ("cut short", |f| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(3)
                .unwrap()
        }),
        ("removed", |f| std::fs::remove_file(f).unwrap()),
    ];
    for (how, lose) in lose {
        let upload = start_upload(&base, "app");
        let first = http::patch(&upload, &[], b"the first chunk");
        assert_eq!(first.status, 202, "{how}: {first:?}");
        let upload = resolve(&base, first.location());
        let file = upload_file(&reg, &upload);
        lose(&file);
        let next = http::patch(&upload, &[], b"the second chunk");
        assert_error(&next, 404, "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(http::get(&upload).status, 404, "{how}: the session is over");
        assert!(!file.exists(), "{how}: its file is gone");
    }
}

#[test]
fn a_first_chunk_replaces_what_a_failed_request_left_in_the_file() {
    let reg = TestRegistry::start();
    let base = reg.url();
    let upload = start_upload(&base, "app");
    // Bytes nothing committed, as a request that failed midway leaves them.
    std::fs::write(upload_file(&reg, &upload), vec![b'x'; 100]).unwrap();
    let data = b"the whole blob, sent again";
    let digest = sha256_digest(data);
    let resp = http::put(&with_query(&upload, &format!("digest={digest}")), &[], data);
    assert_eq!(resp.status, 201, "{resp:?}");
    let got = http::get(&blob_url(&base, "app", &digest));
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body, data,
        "the blob is what was sent, nothing left before it"
    );
    assert_eq!(
        std::fs::metadata(common::blob_file(reg.data.path(), &digest))
            .unwrap()
            .len(),
        data.len() as u64,
        "the blob's file holds the blob and nothing after it"
    );
}
