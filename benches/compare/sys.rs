//! What the benchmark reads about processes and the machine: a process's
//! peak RSS and CPU time, machine-wide busy CPU, and the machine's own
//! limits (durable disk writes, loopback TCP, sha256).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// Peak resident set (VmHWM) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak RSS counter, so the next reading covers what follows.
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// User plus system CPU seconds `pid` has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The PID listening on a loopback TCP port, from /proc/net/tcp and the
/// fds of every process.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && p == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Busy share of all CPUs since the previous reading, from /proc/stat.
pub struct CpuMeter {
    last: (u64, u64),
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        CpuMeter {
            last: read_proc_stat(),
        }
    }

    pub fn busy_since_last(&mut self) -> f64 {
        let now = read_proc_stat();
        let (busy, total) = (now.0 - self.last.0, now.1 - self.last.1);
        self.last = now;
        if total == 0 {
            0.0
        } else {
            busy as f64 / total as f64
        }
    }
}

fn read_proc_stat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let nums: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// MB/s (10^6 bytes) of writing `bytes` to a file, with or without a final
/// fdatasync: what a durable push is bound by.
pub fn disk_write_mbps(dir: &Path, data: &[u8], durable: bool) -> f64 {
    let path = dir.join("limit-write.tmp");
    let start = Instant::now();
    {
        let mut file = std::fs::File::create(&path).expect("temp file");
        for chunk in data.chunks(1 << 20) {
            file.write_all(chunk).expect("write");
        }
        if durable {
            file.sync_data().expect("fdatasync");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    data.len() as f64 / secs / 1e6
}

/// MB/s of copying `data` through a loopback TCP connection, write() to
/// read(), in 1 MiB blocks: the most a server that copies in user space
/// can send.
pub fn loopback_mbps(data: &[u8]) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let len = data.len();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < len {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    for chunk in data.chunks(1 << 20) {
        stream.write_all(chunk).expect("send");
    }
    drop(stream);
    let got = reader.join().expect("reader");
    got as f64 / start.elapsed().as_secs_f64() / 1e6
}

pub fn sha256_mbps(data: &[u8]) -> f64 {
    let start = Instant::now();
    let digest = Sha256::digest(data);
    std::hint::black_box(digest);
    data.len() as f64 / start.elapsed().as_secs_f64() / 1e6
}
