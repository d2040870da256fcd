//! (m) Instructions berth executes per manifest GET and per MiB pushed,
//! counted by `valgrind --tool=callgrind`: the same count whatever else
//! the machine does, so a change that costs instructions shows even when
//! the timings are noisy. Each figure is the difference between two runs
//! of berth under callgrind that differ only in the work measured, divided
//! by how much more of it the second did.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cases::{digest_of, push_blob, push_small_image, random_bytes};
use crate::client::{Body, Conn, Keep, Target};

/// GETs and MiB measured: enough that start-up noise is a small share.
const GETS: usize = 2000;
const PUSH_MIB: usize = 32;

pub struct Counts {
    pub per_get: f64,
    pub per_mib_pushed: f64,
}

pub fn count(berth: &Path, dir: &Path) -> io::Result<Counts> {
    let blob = random_bytes(PUSH_MIB << 20, 77);
    let digest = digest_of(&blob);
    let gets = |t: &Target, n: usize| -> io::Result<()> {
        push_small_image(t, "bench/m")?;
        let mut conn = Conn::new(t);
        for _ in 0..n {
            let (resp, _) = conn.request(
                "GET",
                "/v2/bench/m/manifests/v1",
                &[("Accept", crate::cases::OCI_MANIFEST)],
                Body::Empty,
                Keep::All,
            )?;
            if resp.status != 200 {
                return Err(io::Error::other(format!("manifest GET: {}", resp.status)));
            }
        }
        Ok(())
    };
    let base = under_callgrind(berth, dir, |t| gets(t, 10))?;
    let more_gets = under_callgrind(berth, dir, |t| gets(t, 10 + GETS))?;
    let pushed = under_callgrind(berth, dir, |t| {
        gets(t, 10)?;
        push_blob(&mut Conn::new(t), "bench/m", &blob, &digest).map(|_| ())
    })?;
    Ok(Counts {
        per_get: more_gets.saturating_sub(base) as f64 / GETS as f64,
        per_mib_pushed: pushed.saturating_sub(base) as f64 / PUSH_MIB as f64,
    })
}

/// Instructions of one `berth serve --ephemeral` under callgrind, from
/// start to exit, with `work` done against it in between.
fn under_callgrind(
    berth: &Path,
    dir: &Path,
    work: impl FnOnce(&Target) -> io::Result<()>,
) -> io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join("callgrind.out");
    let _ = std::fs::remove_file(&out);
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(berth)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--ready-json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let url = line
        .split_once("\"url\":\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .ok_or_else(|| io::Error::other(format!("no ready line under valgrind: {line:?}")))?;
    let target = Target::parse(&format!("berth={url}")).map_err(io::Error::other)?;
    let worked = work(&target);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait()?;
    worked?;
    let text = std::fs::read_to_string(&out)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other("callgrind wrote no total"))
}
