//! The `berth` binary's bulk threads (store work, hashing, links) run at a
//! lower priority than the threads that answer requests, so a busy
//! machine keeps answering; a registry embedded in another program leaves
//! that program's threads as they were.

mod common;

use common::TestRegistry;
use common::http::{self, get, push_blob};
use common::process::ServerProcess;

/// Each thread of process `pid`: its name and nice value.
fn threads(pid: &str) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread that ended between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue;
        };
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        // The name, in parentheses, may hold spaces; the fields after it
        // start at the third, so the nice value (19th) is the 17th.
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = after.split_whitespace().nth(16).unwrap().parse().unwrap();
        found.push((name.trim().to_string(), nice));
    }
    found
}

fn nice_of(threads: &[(String, i32)], name: &str) -> Vec<i32> {
    threads
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, nice)| *nice)
        .collect()
}

#[test]
fn the_binarys_bulk_threads_give_way_and_its_request_threads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let server = ServerProcess::start(&data, &log);
    let base = server.url();
    // Store work: each push runs on the blocking pool and queues a link.
    let blob = http::random_bytes(64 << 10, 1);
    let digest = push_blob(&base, "prio/a", &blob);
    push_blob(&base, "prio/a", &http::random_bytes(1 << 20, 2));

    let seen = threads(&server.pid().to_string());
    let workers = nice_of(&seen, "tokio-rt-worker");
    assert!(
        workers.contains(&19),
        "no blocking thread gave way: {seen:?}"
    );
    // The runtime starts one request thread per core; they keep nice 0.
    let cores = std::thread::available_parallelism().unwrap().get();
    let at_zero = workers.iter().filter(|n| **n == 0).count();
    assert!(
        at_zero >= cores,
        "{at_zero} request threads at nice 0 for {cores} cores: {seen:?}"
    );
    assert_eq!(nice_of(&seen, "berth-settle"), [19], "{seen:?}");
    // Every push waits for the commit thread: it does not give way.
    assert_eq!(nice_of(&seen, "berth-commit"), [0], "{seen:?}");
    assert_eq!(nice_of(&seen, "berth"), [0], "{seen:?}");

    let resp = get(&http::blob_url(&base, "prio/a", &digest));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, blob);
    server.stop();
}

#[test]
fn bulk_nice_sets_how_far_bulk_threads_give_way_and_0_not_at_all() {
    for (flag, want) in [("5", 5), ("0", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let (data, log) = (dir.path().join("data"), dir.path().join("log"));
        let server = ServerProcess::start_with(&data, &log, &["--bulk-nice", flag]);
        push_blob(&server.url(), "prio/c", &http::random_bytes(64 << 10, 5));
        let seen = threads(&server.pid().to_string());
        assert_eq!(nice_of(&seen, "berth-settle"), [want], "{seen:?}");
        let most = nice_of(&seen, "tokio-rt-worker").into_iter().max();
        assert_eq!(most, Some(want), "{seen:?}");
        server.stop();
    }
}

#[test]
fn a_bulk_nice_out_of_range_is_refused() {
    let out = std::process::Command::new(common::process::BERTH)
        .args([
            "serve",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--bulk-nice",
            "20",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("0 to 19"), "{said}");
}

#[test]
fn a_registry_embedded_in_a_program_leaves_its_threads_priorities_alone() {
    let registry = TestRegistry::start();
    let base = format!("http://{}", registry.addr);
    push_blob(&base, "prio/b", &http::random_bytes(64 << 10, 3));
    push_blob(&base, "prio/b", &http::random_bytes(1 << 20, 4));
    let seen = threads("self");
    assert!(
        seen.iter().any(|(name, _)| name == "berth-settle"),
        "the registry runs in this process: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, nice)| *nice == 0),
        "a thread's priority changed: {seen:?}"
    );
    drop(registry);
}
