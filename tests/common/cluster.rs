//! The clustered store's servers for the test suites: a real PostgreSQL
//! and a real OpenStack Swift with its S3 API, on loopback.
//!
//! `.ci/run` starts one pair for the whole run and names them in
//! `BERTH_TEST_POSTGRES` (a URL) and `BERTH_TEST_S3` (an endpoint). Without
//! them, the first test that needs a cluster starts its own pair with
//! `tests/servers/`, stopped by a watchdog once the test process is gone.
//! Each registry gets a schema and a key prefix of its own (Swift refuses
//! many buckets made at once), so tests never see each other's data; a
//! data directory remembers its name, so a registry restarted over it
//! finds its data again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use berth::store::cluster::{ObjectSettings, Settings};

const ACCESS_KEY: &str = "berth:admin";
const SECRET_KEY: &str = "berth-secret";

struct Servers {
    postgres: String,
    s3: String,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers")
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        if let (Ok(postgres), Ok(s3)) = (
            std::env::var("BERTH_TEST_POSTGRES"),
            std::env::var("BERTH_TEST_S3"),
        ) {
            return Servers { postgres, s3 };
        }
        start_servers()
    })
}

/// Runs a start script, trying other ports if one is taken; returns the
/// `KEY=value` lines it printed.
fn start(script: &str, dir: &Path, span: u16, sub: &str) -> Vec<(String, String)> {
    start_with_env(script, dir, span, sub, &[])
}

fn start_with_env(
    script: &str,
    dir: &Path,
    span: u16,
    sub: &str,
    env: &[(&str, &Path)],
) -> Vec<(String, String)> {
    let mut last = String::new();
    for attempt in 0..8u16 {
        // A failed start stopped what it started; its directory goes too.
        let _ = std::fs::remove_dir_all(dir.join(sub));
        let port = 20000 + (std::process::id() as u16 % 2000) * 20 + attempt * 5 * span;
        let out = Command::new(scripts().join(script))
            .arg(dir)
            .arg(port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run a server start script");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if !last.contains("already in use") {
            break;
        }
    }
    panic!(
        "{script} failed. The clustered store's tests need PostgreSQL and Swift: \
         apt-get install -y postgresql swift-proxy swift-account swift-container \
         swift-object memcached (see tests/servers/README.md).\n{last}"
    );
}

fn start_servers() -> Servers {
    let dir = tempfile::Builder::new()
        .prefix("berth-cluster-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // Stops both once this process is gone, however it ends: a watchdog
    // in the background of a shell that exits at once.
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(
            r#"(while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; exec "$2/stop.sh" "$3" --rm) \
               </dev/null >/dev/null 2>&1 &"#,
        )
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(scripts())
        .arg(&dir)
        .status()
        .expect("start the servers' watchdog");
    assert!(watchdog.success(), "the servers' watchdog did not start");
    let pg = start("start-postgres.sh", &dir, 1, "pg");
    let swift = start("start-swift.sh", &dir, 5, "swift");
    let get = |lines: &[(String, String)], key: &str| {
        lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} from the start script"))
    };
    Servers {
        postgres: get(&pg, "DATABASE_URL"),
        s3: get(&swift, "S3_ENDPOINT"),
    }
}

/// A schema and bucket name no other registry of this run uses.
fn fresh_name() -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{}x{}x{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one SQL command with psql against `url`, asserting it succeeds;
/// gives back what it printed, unaligned and without headers.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The settings of a cluster whose data belongs to `data`: a new schema
/// and bucket the first time, the same ones when a registry is restarted
/// over the directory.
pub fn settings_for(data: &Path) -> Settings {
    let servers = servers();
    let remembered = data.join(".test-cluster");
    let name = match std::fs::read_to_string(&remembered) {
        Ok(name) => name.trim().to_owned(),
        Err(_) => {
            let name = fresh_name();
            psql(&servers.postgres, &format!("CREATE SCHEMA {name}"));
            std::fs::write(&remembered, &name).expect("remember the cluster's name");
            name
        }
    };
    let separator = if servers.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    Settings {
        metadata: format!(
            "{}{separator}options=-c%20search_path%3D{name}",
            servers.postgres
        ),
        blobs: ObjectSettings {
            bucket: "berth-tests".into(),
            prefix: name,
            max_parts: 1000,
            endpoint: servers.s3.clone(),
            region: "us-east-1".into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        },
    }
}

/// `berth serve` flags for a node of the cluster that belongs to `data`
/// (the object store's key in a credentials file there).
pub fn node_args(data: &Path) -> Vec<String> {
    let settings = settings_for(data);
    let credentials = data.join(".test-s3-credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .expect("write the credentials file");
    vec![
        "--metadata".into(),
        settings.metadata,
        "--blobs".into(),
        format!(
            "s3://{}/{}?endpoint={}",
            settings.blobs.bucket, settings.blobs.prefix, settings.blobs.endpoint
        ),
        "--blobs-credentials".into(),
        credentials.display().to_string(),
    ]
}

/// A PostgreSQL of its own that serves TLS with `cert` and `key`, stopped
/// (by the PIDs its script recorded) when this goes.
pub struct TlsPostgres {
    dir: PathBuf,
    /// Its URL, without `sslmode`.
    pub url: String,
}

impl TlsPostgres {
    pub fn start(cert: &Path, key: &Path) -> TlsPostgres {
        let dir = tempfile::Builder::new()
            .prefix("berth-tls-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let lines = start_with_env(
            "start-postgres.sh",
            &dir,
            3,
            "pg",
            &[("PG_TLS_CERT", cert), ("PG_TLS_KEY", key)],
        );
        let url = lines
            .into_iter()
            .find(|(k, _)| k == "DATABASE_URL")
            .map(|(_, v)| v)
            .expect("a DATABASE_URL");
        TlsPostgres { dir, url }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("stop.sh"))
            .arg(&self.dir)
            .arg("--rm")
            .stdout(Stdio::null())
            .status();
    }
}

/// The object store of the cluster that belongs to `data`, looked at beside
/// berth with the S3 client berth uses.
struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The cluster's key prefix and a slash.
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl Store {
    fn of(data: &Path) -> Store {
        let settings = settings_for(data);
        Store {
            client: berth::store::cluster::s3_client(&settings.blobs),
            bucket: settings.blobs.bucket,
            prefix: format!("{}/", settings.blobs.prefix),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// The object key of a key of the cluster.
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key of the cluster from an object key.
    fn own(&self, key: &str) -> String {
        key.strip_prefix(&self.prefix).unwrap_or(key).to_owned()
    }
}

/// Keys (under the store's prefix) of the objects of the cluster that
/// belongs to `data` whose keys start with `under`.
pub fn objects(data: &Path, under: &str) -> Vec<String> {
    let store = Store::of(data);
    let page = store
        .runtime
        .block_on(
            store
                .client
                .list_objects_v2()
                .bucket(&store.bucket)
                .prefix(store.key(under))
                .send(),
        )
        .expect("list objects");
    assert_ne!(
        page.is_truncated(),
        Some(true),
        "more than a page of objects"
    );
    page.contents()
        .iter()
        .filter_map(|o| o.key())
        .map(|k| store.own(k))
        .collect()
}

/// Overwrites an object of the cluster that belongs to `data` (a key
/// under its prefix), as a failing disk or a careless hand would.
pub fn overwrite_object(data: &Path, key: &str, bytes: Vec<u8>) {
    let store = Store::of(data);
    store
        .runtime
        .block_on(
            store
                .client
                .put_object()
                .bucket(&store.bucket)
                .key(store.key(key))
                .body(bytes.into())
                .send(),
        )
        .expect("put object");
}

/// The bytes of an object of the cluster that belongs to `data`.
pub fn read_object(data: &Path, key: &str) -> Vec<u8> {
    let store = Store::of(data);
    store.runtime.block_on(async {
        let answer = store
            .client
            .get_object()
            .bucket(&store.bucket)
            .key(store.key(key))
            .send()
            .await
            .expect("get object");
        answer.body.collect().await.expect("read object").to_vec()
    })
}

/// Starts a multipart upload of `key` and leaves it, as a node that died
/// while composing a blob would.
pub fn leave_multipart(data: &Path, key: &str) {
    let store = Store::of(data);
    store
        .runtime
        .block_on(
            store
                .client
                .create_multipart_upload()
                .bucket(&store.bucket)
                .key(store.key(key))
                .send(),
        )
        .expect("create multipart upload");
}

/// The keys (under the store's prefix) of the unfinished multipart uploads
/// of the cluster that belongs to `data`.
pub fn multipart_uploads(data: &Path) -> Vec<String> {
    let store = Store::of(data);
    let page = store
        .runtime
        .block_on(
            store
                .client
                .list_multipart_uploads()
                .bucket(&store.bucket)
                .prefix(&store.prefix)
                .send(),
        )
        .expect("list multipart uploads");
    page.uploads()
        .iter()
        .filter_map(|u| u.key())
        .map(|k| store.own(k))
        .collect()
}

/// A psql session kept open, for a test to hold locks in while berth runs
/// into them; ended (its last transaction committed) when closed.
pub struct Session {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::io::BufReader<std::process::ChildStdout>,
    url: String,
    pid: String,
}

impl Session {
    pub fn open(url: &str) -> Session {
        let mut child = Command::new("psql")
            .arg(url)
            .args(["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run psql");
        let input = child.stdin.take();
        let output = std::io::BufReader::new(child.stdout.take().expect("psql's output"));
        let mut session = Session {
            child,
            input,
            output,
            url: url.to_owned(),
            pid: String::new(),
        };
        session.pid = session.run("SELECT pg_backend_pid()");
        session
    }

    /// Runs `sql` (statements, `;` between them) and waits until it is
    /// done; gives back what the last one printed.
    pub fn run(&mut self, sql: &str) -> String {
        use std::io::{BufRead as _, Write as _};
        let input = self.input.as_mut().expect("the session is open");
        writeln!(input, "{sql}; SELECT 'done';").expect("psql takes input");
        let (mut last, mut line) = (String::new(), String::new());
        loop {
            line.clear();
            let read = self.output.read_line(&mut line).expect("psql's output");
            assert!(read > 0, "psql ended running {sql}");
            match line.trim() {
                "done" => return last,
                printed => last = printed.to_owned(),
            }
        }
    }

    /// Whether some other session waits on a lock this one holds.
    pub fn holds_anyone_up(&self) -> bool {
        psql(
            &self.url,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE {} = ANY(pg_blocking_pids(pid))",
                self.pid
            ),
        ) != "0"
    }

    /// Waits (a bounded while) until another session waits on this one.
    pub fn until_holding_anyone_up(&self) {
        for _ in 0..300 {
            if self.holds_anyone_up() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("nobody ever waited on the psql session");
    }

    /// Runs `sql` and ends the session.
    pub fn close(mut self, sql: &str) {
        self.run(sql);
        drop(self.input.take());
        assert!(self.child.wait().expect("psql ends").success());
    }
}
