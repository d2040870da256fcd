//! The machine's own limits, measured in the same run and the same way as
//! ../shared/peers/perf.py measures them: sha256 on one core (openssl
//! speed), a durable write (fio: 1 MiB writes, one fsync at the end), TCP
//! over loopback (iperf3), and nginx serving a static file (measured by the
//! same load client as the registries, see main.rs's e). Where a tool is
//! missing, the bench's own in-process measure stands in, and says so.
//! Beside them, one perf.py lacks: the least CPU work of a push on these
//! cores (`sys::push_pipeline_mbps`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Body, Conn, Keep, Target};
use crate::sys;

/// One limit: its value, and what measured it.
pub struct Limit {
    pub value: f64,
    pub how: &'static str,
}

pub struct Limits {
    /// MB/s.
    pub sha256: Limit,
    pub durable_write: Limit,
    pub page_cache_write: Limit,
    pub loopback: Limit,
    /// A push's least work on this machine's cores (receive, hash, write
    /// to the page cache): see [`sys::push_pipeline_mbps`].
    pub push_pipeline: Limit,
    /// Core-seconds per GiB the whole machine spent on the push pipeline:
    /// with the client on the same cores, a push of any registry does at
    /// least this work, so these cores carry at most `cores / this` GiB/s
    /// of it whatever sha256 alone could reach.
    pub push_pipeline_cpu: Option<f64>,
    /// req/s of nginx serving the manifest's bytes as a file: GET, HEAD.
    pub nginx: Option<(Limit, Limit)>,
}

impl Limits {
    pub fn measure(dir: &Path, big: &[u8]) -> Limits {
        let sha256 = openssl_sha256().map_or_else(
            || Limit {
                value: sys::sha256_mbps(big),
                how: "sha2 crate, in process (no openssl)",
            },
            |value| Limit {
                value,
                how: "openssl speed -evp sha256, 1 MiB blocks, one core",
            },
        );
        // A limit is the most the machine does, and one fio run can fall
        // far below it: on 2026-12-03 one gave 767 MB/s where another
        // that hour gave 1,981, and berth's durable push went 1.42x that
        // "limit". The better of two runs.
        let fio = (0..2)
            .filter_map(|_| {
                sys::warm_page_pool(dir, big.len());
                fio_durable(dir, big.len())
            })
            .reduce(f64::max);
        let durable_write = fio.map_or_else(
            || Limit {
                value: sys::disk_write_mbps(dir, big, true),
                how: "write + fdatasync, in process (no fio)",
            },
            |value| Limit {
                value,
                how: "fio: 1 MiB buffered writes, fsync at the end, better of two",
            },
        );
        sys::warm_page_pool(dir, big.len());
        let page_cache_write = Limit {
            value: sys::disk_write_mbps(dir, big, false),
            how: "write to the page cache, in process",
        };
        // Once on 2026-12-03 an installed iperf3 gave nothing, and the
        // in-process copy, some three times faster on this VM, made the
        // run's pull look slow: a second try before that other ruler.
        let loopback = iperf3().or_else(iperf3).map_or_else(
            || Limit {
                value: sys::loopback_mbps(big),
                how: "TCP copy over loopback, in process (iperf3 gave no figure)",
            },
            |value| Limit {
                value,
                how: "iperf3 over loopback, one stream, 5 s",
            },
        );
        sys::warm_page_pool(dir, big.len());
        let before = sys::machine_busy_seconds();
        let push_pipeline = Limit {
            value: sys::push_pipeline_mbps(dir, big),
            how: "in process: loopback TCP, a sha256 thread, a page-cache write thread",
        };
        let push_pipeline_cpu = sys::cpu_per_gib(before, sys::machine_busy_seconds(), big.len());
        Limits {
            sha256,
            durable_write,
            page_cache_write,
            loopback,
            push_pipeline,
            push_pipeline_cpu,
            nginx: None,
        }
    }

    /// What a push can go at: hashing on one core or writing durably,
    /// whichever is slower.
    pub fn push(&self) -> f64 {
        self.sha256.value.min(self.durable_write.value)
    }

    /// What a push can go at on these cores: its least CPU work or the
    /// durable write, whichever is slower.
    pub fn push_on_these_cores(&self) -> f64 {
        self.push_pipeline.value.min(self.durable_write.value)
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        let mut limits = vec![
            ("sha256, MB/s", &self.sha256),
            ("durable write, MB/s", &self.durable_write),
            ("page-cache write, MB/s", &self.page_cache_write),
            ("loopback TCP, MB/s", &self.loopback),
            ("push pipeline, MB/s", &self.push_pipeline),
        ];
        if let Some((get, head)) = &self.nginx {
            limits.push(("nginx static GET, req/s", get));
            limits.push(("nginx static HEAD, req/s", head));
        }
        let mut rows: Vec<(String, String)> = limits
            .into_iter()
            .map(|(k, l)| (k.to_owned(), format!("{:.0} ({})", l.value, l.how)))
            .collect();
        if let Some(cpu) = self.push_pipeline_cpu {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            rows.push((
                "push pipeline, machine CPU s per GiB".to_owned(),
                format!("{cpu:.2} (client, kernel and its threads, from /proc/stat)"),
            ));
            rows.push((
                format!("push pipeline's work on {cores} cores, MB/s"),
                format!(
                    "{:.0} (cores / its CPU per byte: the most they carry, never idle)",
                    cores as f64 * (1u64 << 30) as f64 / cpu / 1e6
                ),
            ));
        }
        rows
    }
}

/// `value` and its ratio to `limit`.
pub fn ratio(value: f64, limit: f64) -> String {
    if limit > 0.0 {
        format!("{value:.0} ({:.2}x)", value / limit)
    } else {
        format!("{value:.0}")
    }
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn openssl_sha256() -> Option<f64> {
    let out = run(Command::new("openssl").args([
        "speed", "-seconds", "2", "-bytes", "1048576", "-evp", "sha256",
    ]))?;
    let line = out
        .lines()
        .rfind(|l| l.to_ascii_lowercase().starts_with("sha256"))?;
    let kilo: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kilo * 1000.0 / 1e6)
}

fn fio_durable(dir: &Path, size: usize) -> Option<f64> {
    let file = dir.join("fio.test");
    let out = run(Command::new("fio").args([
        "--name=w",
        &format!("--filename={}", file.display()),
        "--rw=write",
        "--bs=1M",
        &format!("--size={}M", (size >> 20).max(64)),
        "--end_fsync=1",
        "--ioengine=psync",
        "--output-format=json",
    ]));
    let _ = std::fs::remove_file(&file);
    let json: serde_json::Value = serde_json::from_str(&out?).ok()?;
    Some(json["jobs"][0]["write"]["bw_bytes"].as_f64()? / 1e6)
}

fn free_port() -> Option<u16> {
    Some(
        TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

/// A child process stopped and reaped when this goes: asked with SIGTERM
/// first, since nginx's master stops its workers only when asked (killed,
/// it leaves them running), then killed if it has not gone in 5 s.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf3() -> Option<f64> {
    let port = free_port()?.to_string();
    let _server = Reaped(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?,
    );
    // iperf3 -s binds a moment after it starts; the client retries.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(out) =
            run(Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port, "-t", "5", "-J"]))
        {
            let json: serde_json::Value = serde_json::from_str(&out).ok()?;
            let got = &json["end"]["sum_received"];
            return Some(got["bytes"].as_f64()? / got["seconds"].as_f64()? / 1e6);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// nginx serving one file, `bytes`, at `/m`: one worker per core, access
/// log off, as perf.py runs it.
pub struct Nginx {
    _child: Reaped,
    pub target: Target,
    pub path: &'static str,
}

impl Nginx {
    pub fn start(dir: &Path, bytes: &[u8]) -> Option<Nginx> {
        let root = dir.join("nginx");
        let www = root.join("www");
        std::fs::create_dir_all(&www).ok()?;
        std::fs::write(www.join("m"), bytes).ok()?;
        let port = free_port()?;
        let r = root.display();
        let conf = root.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; worker_processes auto; pid {r}/nginx.pid; error_log {r}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; keepalive_requests 1000000;\n\
                 client_body_temp_path {r}; proxy_temp_path {r}; fastcgi_temp_path {r};\n\
                 uwsgi_temp_path {r}; scgi_temp_path {r};\n\
                 server {{ listen 127.0.0.1:{port}; root {r}/www; }} }}\n"
            ),
        )
        .ok()?;
        let binary = ["nginx", "/usr/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|b| {
                Command::new(b)
                    .arg("-v")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })?;
        let child = Reaped(
            Command::new(binary)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?,
        );
        let target = Target::parse(&format!("nginx=http://127.0.0.1:{port}")).ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answered = Conn::new(&target)
                .request("GET", "/m", &[], Body::Empty, Keep::All)
                .is_ok_and(|(r, _)| r.status == 200);
            if answered {
                return Some(Nginx {
                    _child: child,
                    target,
                    path: "/m",
                });
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
