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

/// Seconds the machine's cores together have been busy since boot (user,
/// nice, system, irq and softirq in /proc/stat; not idle, I/O wait or
/// steal), in the ticks [`cpu_seconds`] reads. The difference over a
/// measurement counts every process's and the kernel's work for it, the
/// client's too, which one process's CPU time leaves out.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i))
        .sum::<Option<f64>>()?;
    Some(busy / 100.0)
}

/// Core-seconds per GiB the machine spent between two readings of
/// [`machine_busy_seconds`] while `bytes` moved.
pub fn cpu_per_gib(before: Option<f64>, after: Option<f64>, bytes: usize) -> Option<f64> {
    Some((after? - before?) * (1u64 << 30) as f64 / bytes as f64)
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

/// Writes `len` bytes to a scratch file and removes it at once, so that
/// the page cache's next `len` bytes land on pages the guest just freed.
/// This VM hands memory that stays free for a few seconds back to its host
/// (virtio-balloon free page reporting), and the first touch of such a page
/// is slow: writing 1 GiB to the page cache took 0.19 s on just-freed pages
/// and up to 2.7 s on handed-back ones (dd, 2026-12-02). A host that has
/// run for a while has its memory full of page cache, which writes recycle;
/// warming first measures every registry and limit in that state, not in
/// whatever state the test before it left.
pub fn warm_page_pool(dir: &Path, len: usize) {
    let path = dir.join("warm-pages.tmp");
    let zeros = vec![0u8; 1 << 20];
    if let Ok(mut file) = std::fs::File::create(&path) {
        for _ in 0..len.div_ceil(zeros.len()) {
            if file.write_all(&zeros).is_err() {
                break;
            }
        }
    }
    // Removed with its pages still dirty: they are dropped, never written.
    let _ = std::fs::remove_file(&path);
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
    through_loopback(data, |mut stream| {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match stream.read(&mut buf).expect("read") {
                0 => return got,
                n => got += n,
            }
        }
    })
}

/// Sends `data` over a loopback connection in 1 MiB writes to `receive`,
/// which gets the accepted stream on a thread of its own and returns how
/// many bytes it took in. MB/s from the connect to `receive`'s return.
fn through_loopback(data: &[u8], receive: impl FnOnce(TcpStream) -> usize + Send + 'static) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let receiver = std::thread::spawn(move || receive(listener.accept().expect("accept").0));
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    for chunk in data.chunks(1 << 20) {
        stream.write_all(chunk).expect("send");
    }
    drop(stream);
    let got = receiver.join().expect("receiver");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, data.len(), "the receiver took every byte");
    got as f64 / secs / 1e6
}

pub fn sha256_mbps(data: &[u8]) -> f64 {
    let start = Instant::now();
    let digest = Sha256::digest(data);
    std::hint::black_box(digest);
    data.len() as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// MB/s of the least work a push must do on the machine's cores, in
/// process: a client sends `data` over loopback in 1 MiB writes; one
/// thread receives it into 1 MiB buffers, another hashes them (sha256), a
/// third writes them to the page cache. No HTTP, no database, no sync (the
/// disk's own bound is the durable write), buffers reused: the client, the
/// kernel's TCP and page-cache work and the hash share two cores here, so
/// this is what a registry's push could reach when the disk is not the
/// bound.
pub fn push_pipeline_mbps(dir: &Path, data: &[u8]) -> f64 {
    use std::sync::mpsc::{channel, sync_channel};

    const BUF: usize = 1 << 20;
    let path = dir.join("limit-pipeline.tmp");
    let file = std::fs::File::create(&path).expect("temp file");
    let mbps = through_loopback(data, move |mut stream| {
        let (free_tx, free_rx) = channel::<Vec<u8>>();
        for _ in 0..4 {
            free_tx.send(vec![0u8; BUF]).expect("the pool is open");
        }
        let (hash_tx, hash_rx) = sync_channel::<(Vec<u8>, usize)>(1);
        let (write_tx, write_rx) = sync_channel::<(Vec<u8>, usize)>(1);
        let hasher = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            for (buf, len) in hash_rx {
                sha.update(&buf[..len]);
                write_tx.send((buf, len)).expect("the writer runs");
            }
            sha.finalize()
        });
        let writer = std::thread::spawn(move || {
            let mut file = file;
            for (buf, len) in write_rx {
                file.write_all(&buf[..len]).expect("write");
                // The receiver may have finished and dropped the pool.
                let _ = free_tx.send(buf);
            }
        });
        let mut got = 0;
        loop {
            let mut buf = free_rx.recv().expect("a free buffer");
            let mut filled = 0;
            while filled < BUF {
                match stream.read(&mut buf[filled..]).expect("read") {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            got += filled;
            hash_tx.send((buf, filled)).expect("the hasher runs");
        }
        // The push is done once the last batch is hashed and written.
        drop(hash_tx);
        std::hint::black_box(hasher.join().expect("hasher"));
        writer.join().expect("writer");
        got
    });
    let _ = std::fs::remove_file(&path);
    mbps
}
