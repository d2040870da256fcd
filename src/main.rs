//! The `berth` command: thin; parse the arguments, call the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use berth::auth::AuthConfig;
use berth::config::TlsConfig;
use berth::store::Store;
use berth::store::prune::Policy;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// berth: a container image registry in one binary.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Box<Serve>),
    Prune(Prune),
    Fsck(Fsck),
    Passwd(Passwd),
    Export(Export),
    Import(Import),
}

/// Serve the OCI Distribution API.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// address to listen on (default 127.0.0.1:5000; port 0 picks a free port)
    #[argh(option, default = "berth::config::DEFAULT_LISTEN.parse().unwrap()")]
    listen: SocketAddr,
    /// data directory, created if missing (default ./berth-data)
    #[argh(option)]
    data: Option<PathBuf>,
    /// keep every index and upload in this PostgreSQL database
    /// (postgres://USER@HOST:PORT/DB; password from PGPASSWORD) and blobs in
    /// --blobs, shared with every node given the same two (also
    /// $BERTH_METADATA)
    #[argh(option)]
    metadata: Option<String>,
    /// with --metadata: the S3-compatible bucket for blob bytes,
    /// s3://BUCKET?endpoint=URL&region=REGION (also $BERTH_BLOBS); the key
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --blobs-credentials
    #[argh(option)]
    blobs: Option<String>,
    /// a file with aws_access_key_id = ... and aws_secret_access_key = ...
    /// lines, for --blobs
    #[argh(option)]
    blobs_credentials: Option<PathBuf>,
    /// keep the data in a fresh private temporary directory, removed when
    /// berth exits (and swept at the next start if it was killed)
    #[argh(switch)]
    ephemeral: bool,
    /// an OCI layout (directory or tar archive) to import, verified, before
    /// the first request is served (repeatable)
    #[argh(option)]
    preload: Vec<PathBuf>,
    /// print the ready line as JSON: {"url":...,"pid":...,"data":...}
    #[argh(switch)]
    ready_json: bool,
    /// stop (as on SIGTERM) once the process that started berth is gone,
    /// however it ended: for test harnesses, so a fixture never outlives
    /// its test run
    #[argh(switch)]
    exit_with_parent: bool,
    /// largest manifest accepted, in bytes (default 4194304: 4 MiB)
    #[argh(option, default = "berth::api::DEFAULT_MAX_MANIFEST_BYTES")]
    max_manifest_bytes: usize,
    /// connections served at once; more wait to be accepted (default 4096)
    #[argh(option, default = "berth::config::DEFAULT_MAX_CONNECTIONS")]
    max_connections: usize,
    /// upload sessions open at once; more get 429 (default 10000)
    #[argh(option, default = "berth::config::DEFAULT_MAX_UPLOADS")]
    max_uploads: usize,
    /// upload sessions open at once in one repository (default 1000)
    #[argh(option, default = "berth::config::DEFAULT_MAX_UPLOADS_PER_REPO")]
    max_uploads_per_repo: usize,
    /// nice value (0-19) of the threads that write, hash and prune, so
    /// that answering requests comes first on a busy machine; 0 keeps
    /// them at the server's own (default 19)
    #[argh(option, default = "berth::bulk::DEFAULT_NICE", from_str_fn(parse_nice))]
    bulk_nice: i32,
    /// a transfer must move --min-transfer-rate bytes a second over this
    /// window, or it is cut (default 60s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(60)"
    )]
    body_timeout: Duration,
    /// bytes a second a transfer must average (default 1024)
    #[argh(option, default = "berth::config::DEFAULT_MIN_TRANSFER_RATE")]
    min_transfer_rate: u64,
    /// prune in the background this often, e.g. 1h (default: never)
    #[argh(option, from_str_fn(parse_duration))]
    prune_interval: Option<Duration>,
    /// uploads idle longer than this are removed (default 1h)
    #[argh(option, from_str_fn(parse_duration), default = "HOUR")]
    upload_expiration: Duration,
    /// manifests older than this are removed with their tags, unless a kept
    /// index needs them (default: never)
    #[argh(option, from_str_fn(parse_duration))]
    manifest_expiration: Option<Duration>,
    /// nothing younger than this is pruned (default 1h; 0s allowed)
    #[argh(option, from_str_fn(parse_duration), default = "HOUR")]
    grace: Duration,
    /// also remove manifests that no tag names and nothing kept needs
    #[argh(switch)]
    untagged: bool,
    /// manifests a pull-through cache fetched and nobody pulled for this
    /// long are removed, with their blobs (default 7d; 0s: never)
    #[argh(option, from_str_fn(parse_duration), default = "WEEK")]
    cache_expiration: Duration,
    /// turn auth on: users and bcrypt hashes in htpasswd format
    #[argh(option)]
    htpasswd: Option<PathBuf>,
    /// access rules, one a line: USER pull|push REPOSITORY-PATTERN (needs --htpasswd)
    #[argh(option)]
    access: Option<PathBuf>,
    /// let anyone pull anything (needs --htpasswd)
    #[argh(switch)]
    anonymous_pull: bool,
    /// lifetime of issued bearer tokens, a day at most (default 5m)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(300)"
    )]
    token_ttl: Duration,
    /// the URL clients reach berth at through a proxy, e.g.
    /// https://registry.example.com: the token realm is URL/token (default:
    /// from each request's Host header)
    #[argh(option, from_str_fn(parse_public_url))]
    public_url: Option<String>,
    /// a proxy in front (its address, or a network of proxies only;
    /// repeatable) whose X-Forwarded-For names the client, for the
    /// failed-login limit and the access log
    #[argh(option, from_str_fn(parse_trusted_proxy))]
    trusted_proxy: Vec<ipnet::IpNet>,
    /// serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// the PEM private key of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// make namespace NS a pull-through cache of the registry at URL, e.g.
    /// docker.io=https://registry-1.docker.io (repeatable)
    #[argh(option, from_str_fn(parse_upstream))]
    upstream: Vec<(String, String)>,
    /// how long an upstream's answer about a tag is trusted (default 1m)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(60)"
    )]
    upstream_ttl: Duration,
    /// how long an upstream may take to connect, answer, or send the next
    /// piece of an answer (default 30s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(30)"
    )]
    upstream_timeout: Duration,
    /// a docker config.json with the upstreams' credentials
    #[argh(option)]
    upstream_auth: Option<PathBuf>,
    /// PEM certificates trusted for upstreams beside the system's roots
    #[argh(option)]
    upstream_ca: Option<PathBuf>,
    /// serve /metrics, /healthz and /readyz on this address (plain HTTP, no
    /// login) instead of beside the registry
    #[argh(option)]
    metrics_listen: Option<SocketAddr>,
    /// log one line per request to stderr
    #[argh(switch)]
    access_log: bool,
    /// the access log's format: text (default) or json
    #[argh(option, default = "berth::ops::LogFormat::Text")]
    log_format: berth::ops::LogFormat,
    /// free bytes the data directory needs for /readyz to say ready
    /// (default 1 GiB)
    #[argh(option, default = "berth::ops::DEFAULT_MIN_FREE_SPACE")]
    min_free_space: u64,
}

/// The clustered store's settings, if any: both or neither of its two.
fn cluster_settings(
    metadata: Option<String>,
    blobs: Option<String>,
    credentials: Option<&std::path::Path>,
) -> std::io::Result<Option<berth::store::cluster::Settings>> {
    use berth::store::cluster::{ObjectSettings, Settings};
    match (metadata, blobs) {
        (None, None) => Ok(None),
        (Some(metadata), Some(blobs)) => Ok(Some(Settings {
            metadata,
            blobs: ObjectSettings::parse(&blobs, credentials).map_err(std::io::Error::other)?,
        })),
        _ => Err(std::io::Error::other("--metadata and --blobs go together")),
    }
}

/// Add or change a user's password in an htpasswd file (bcrypt). The
/// password is read from standard input, one line.
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
struct Passwd {
    /// the htpasswd file, created if missing
    #[argh(option)]
    htpasswd: PathBuf,
    /// the user name
    #[argh(positional)]
    user: String,
}

/// Prune a stopped registry's data directory: expire uploads and manifests,
/// sweep blobs that nothing kept needs.
// The prune knobs are declared again here because argh cannot share a
// group of options between subcommands; `prune_policy` keeps their meaning
// in one place.
#[derive(FromArgs)]
#[argh(subcommand, name = "prune")]
struct Prune {
    /// data directory (default ./berth-data)
    #[argh(option, default = "PathBuf::from(berth::config::DEFAULT_DATA_DIR)")]
    data: PathBuf,
    /// prune the clustered store in this PostgreSQL database instead (with
    /// --blobs; also $BERTH_METADATA); safe while its nodes serve
    #[argh(option)]
    metadata: Option<String>,
    /// the clustered store's bucket, as `berth serve --blobs` (also $BERTH_BLOBS)
    #[argh(option)]
    blobs: Option<String>,
    /// a file with the object store's key, as `berth serve --blobs-credentials`
    #[argh(option)]
    blobs_credentials: Option<PathBuf>,
    /// list what would go, and how many bytes, without deleting anything
    #[argh(switch)]
    dry_run: bool,
    /// uploads idle longer than this are removed (default 1h)
    #[argh(option, from_str_fn(parse_duration), default = "HOUR")]
    upload_expiration: Duration,
    /// manifests older than this are removed with their tags, unless a kept
    /// index needs them (default: never)
    #[argh(option, from_str_fn(parse_duration))]
    manifest_expiration: Option<Duration>,
    /// nothing younger than this is pruned (default 1h; 0s allowed)
    #[argh(option, from_str_fn(parse_duration), default = "HOUR")]
    grace: Duration,
    /// also remove manifests that no tag names and nothing kept needs
    #[argh(switch)]
    untagged: bool,
    /// manifests a pull-through cache fetched and nobody pulled for this
    /// long are removed, with their blobs (default 7d; 0s: never)
    #[argh(option, from_str_fn(parse_duration), default = "WEEK")]
    cache_expiration: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);
const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn parse_duration(s: &str) -> Result<Duration, String> {
    berth::config::parse_duration(s)
}

fn parse_nice(s: &str) -> Result<i32, String> {
    use berth::bulk::MAX_NICE;
    match s.parse() {
        Ok(n) if (0..=MAX_NICE).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a nice value from 0 to {MAX_NICE}")),
    }
}

fn parse_trusted_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    berth::api::forwarded::parse_trusted(s)
}

fn parse_public_url(s: &str) -> Result<String, String> {
    berth::config::parse_public_url(s)
}

fn parse_upstream(s: &str) -> Result<(String, String), String> {
    let (namespace, url) = s.split_once('=').ok_or_else(|| {
        format!("{s:?} is not NAMESPACE=URL, like docker.io=https://registry-1.docker.io")
    })?;
    Ok((namespace.to_ascii_lowercase(), url.to_owned()))
}

/// Check a stopped registry's data directory: re-hash every blob, find
/// missing, corrupt and orphaned files.
#[derive(FromArgs)]
#[argh(subcommand, name = "fsck")]
struct Fsck {
    /// data directory (default ./berth-data)
    #[argh(option, default = "PathBuf::from(berth::config::DEFAULT_DATA_DIR)")]
    data: PathBuf,
    /// check the clustered store in this PostgreSQL database instead (with
    /// --blobs; also $BERTH_METADATA); safe while its nodes serve
    #[argh(option)]
    metadata: Option<String>,
    /// the clustered store's bucket, as `berth serve --blobs` (also $BERTH_BLOBS)
    #[argh(option)]
    blobs: Option<String>,
    /// a file with the object store's key, as `berth serve --blobs-credentials`
    #[argh(option)]
    blobs_credentials: Option<PathBuf>,
    /// remove orphaned files and take missing or corrupt blobs out of service
    #[argh(switch)]
    repair: bool,
}

/// Write images of a stopped registry's data directory, or of a running
/// registry, with everything they need, as one OCI layout tar archive.
#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
struct Export {
    /// data directory (default ./berth-data)
    #[argh(option)]
    data: Option<PathBuf>,
    /// a running registry to export from instead: https://HOST[:PORT],
    /// http://HOST[:PORT], or HOST[:PORT] for https
    #[argh(option)]
    registry: Option<String>,
    /// USER:PASSWORD for --registry (default: the docker config file's)
    #[argh(option)]
    creds: Option<String>,
    /// the docker config file with logins for --registry (default
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json)
    #[argh(option)]
    authfile: Option<PathBuf>,
    /// PEM certificates --registry may be signed by, beside the system's
    /// (default /etc/docker/certs.d/HOST/ca.crt or
    /// /etc/containers/certs.d/HOST/ca.crt, if there)
    #[argh(option)]
    ca: Option<PathBuf>,
    /// the archive to write
    #[argh(option)]
    out: PathBuf,
    /// leave out every blob an earlier export carried: its archive, or its
    /// index.json alone
    #[argh(option)]
    since: Option<PathBuf>,
    /// export only this platform of each index, as os/arch[/variant]
    /// (repeatable); the index itself goes whole
    #[argh(option)]
    platform: Vec<String>,
    /// what to export: REPOSITORY, REPOSITORY:TAG, REPOSITORY@DIGEST or
    /// PREFIX* (default: everything)
    #[argh(positional, from_str_fn(parse_selection))]
    selection: Vec<berth::transfer::Selection>,
}

/// Read an OCI layout (a tar archive or a directory) into a stopped
/// registry's data directory, or push it to a running registry, checking
/// every blob and image first.
#[derive(FromArgs)]
#[argh(subcommand, name = "import")]
struct Import {
    /// data directory (default ./berth-data)
    #[argh(option)]
    data: Option<PathBuf>,
    /// a running registry to import into instead: https://HOST[:PORT],
    /// http://HOST[:PORT], or HOST[:PORT] for https
    #[argh(option)]
    registry: Option<String>,
    /// USER:PASSWORD for --registry (default: the docker config file's)
    #[argh(option)]
    creds: Option<String>,
    /// the docker config file with logins for --registry (default
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json)
    #[argh(option)]
    authfile: Option<PathBuf>,
    /// PEM certificates --registry may be signed by, beside the system's
    /// (default /etc/docker/certs.d/HOST/ca.crt or
    /// /etc/containers/certs.d/HOST/ca.crt, if there)
    #[argh(option)]
    ca: Option<PathBuf>,
    /// the repository for images the layout names by a bare tag (as
    /// skopeo's oci:DIR:TAG does)
    #[argh(option)]
    into: Option<String>,
    /// the archive or layout directory
    #[argh(positional)]
    source: PathBuf,
}

fn parse_selection(s: &str) -> Result<berth::transfer::Selection, String> {
    berth::transfer::Selection::parse(s)
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Args = argh::from_env();
    let result = match args.command {
        Command::Serve(serve) => run_serve(*serve).map(|()| ExitCode::SUCCESS),
        Command::Prune(prune) => run_prune(prune),
        Command::Fsck(fsck) => run_fsck(fsck),
        Command::Export(export) => run_export(export).map(|()| ExitCode::SUCCESS),
        Command::Import(import) => run_import(import),
        Command::Passwd(passwd) => run_passwd(passwd).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates under contention an arena of
/// its own, up to eight per core, and memory freed in one is not reused by
/// another: 32 clients pushing small blobs left their bytes across six
/// arenas. Two hold the peak through benches a-d 1-2.5 MiB lower at the
/// same speed. MALLOC_ARENA_MAX, when set, still rules.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable, and no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn run_serve(args: Serve) -> std::io::Result<()> {
    // Read first: a parent gone before the check starts must count too.
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    // Only the server's own process: see berth::bulk.
    berth::bulk::give_way_in_this_process(args.bulk_nice);
    // Blocking work is disk I/O and database calls, each short: more
    // threads than this only contend, and a burst of clients (hundreds of
    // downloads opening at once) must not leave hundreds of threads behind.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((16 * cores).max(32))
        .build()?;
    runtime.block_on(async {
        if args.ephemeral && args.data.is_some() {
            return Err(std::io::Error::other(
                "give --data or --ephemeral, not both",
            ));
        }
        let data = args
            .data
            .unwrap_or_else(|| PathBuf::from(berth::config::DEFAULT_DATA_DIR));
        let mut config = berth::Config::new(&data);
        config.listen = args.listen;
        config.cluster = match args.ephemeral {
            // Its data is its own: a clustered store exported for other
            // tests must not receive a fixture's pushes.
            true if args.metadata.is_some() || args.blobs.is_some() => {
                return Err(std::io::Error::other(
                    "--ephemeral keeps the data in a temporary directory: \
                     no --metadata or --blobs with it",
                ));
            }
            true => None,
            false => cluster_settings(
                args.metadata
                    .or_else(|| std::env::var("BERTH_METADATA").ok()),
                args.blobs.or_else(|| std::env::var("BERTH_BLOBS").ok()),
                args.blobs_credentials.as_deref(),
            )?,
        };
        config.preload = args.preload;
        config.max_manifest_bytes = args.max_manifest_bytes;
        config.max_connections = args.max_connections;
        config.max_uploads = args.max_uploads;
        config.max_uploads_per_repo = args.max_uploads_per_repo;
        config.body_idle_timeout = args.body_timeout;
        config.min_transfer_rate = args.min_transfer_rate;
        config.prune_interval = args.prune_interval.filter(|i| !i.is_zero());
        config.prune = prune_policy(
            args.upload_expiration,
            args.manifest_expiration,
            args.grace,
            args.untagged,
            args.cache_expiration,
        );
        config.auth = match args.htpasswd {
            Some(htpasswd) => {
                let mut auth = AuthConfig::new(htpasswd);
                auth.access = args.access;
                auth.anonymous_pull = args.anonymous_pull;
                auth.token_ttl = args.token_ttl;
                Some(auth)
            }
            None if args.access.is_some() || args.anonymous_pull => {
                return Err(std::io::Error::other(
                    "--access and --anonymous-pull need --htpasswd",
                ));
            }
            None => None,
        };
        config.public_url = args.public_url;
        config.trusted_proxies = args.trusted_proxy;
        config.upstreams = args.upstream;
        config.upstream_ttl = args.upstream_ttl;
        config.upstream_timeout = args.upstream_timeout;
        config.upstream_auth = args.upstream_auth;
        config.upstream_ca = args.upstream_ca;
        config.metrics_listen = args.metrics_listen;
        config.access_log = args.access_log.then_some(args.log_format);
        config.min_free_space = args.min_free_space;
        config.tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => {
                return Err(std::io::Error::other(
                    "--tls-cert and --tls-key go together",
                ));
            }
        };
        // Handlers first: a harness may send SIGTERM the moment it reads
        // the ready line, and that must be a clean stop (which is also what
        // removes an ephemeral directory).
        let mut stops = Stops::install()?;
        let builder = berth::Registry::builder().configure(|c| *c = config);
        let builder = if args.ephemeral {
            builder.ephemeral()
        } else {
            builder.data(data)
        };
        let registry = builder.serve().await?;
        // One line on stdout with the real address, for harnesses to read.
        let mut stdout = std::io::stdout();
        if args.ready_json {
            let ready = serde_json::json!({
                "url": registry.url(),
                "pid": std::process::id(),
                "data": registry.data_dir(),
            });
            writeln!(stdout, "{ready}")?;
        } else {
            writeln!(stdout, "berth listening on {}", registry.url())?;
        }
        if let Some(addr) = registry.metrics_addr() {
            writeln!(stdout, "berth metrics on http://{addr}")?;
        }
        stdout.flush()?;
        tokio::select! {
            () = stops.next() => {}
            () = parent_gone(parent), if args.exit_with_parent => {
                log::info!("the process that started berth is gone");
            }
        }
        log::info!("shutting down");
        // Requests in flight are waited for (a while); asked again, berth
        // stops at once (an ephemeral directory is then swept by the next
        // ephemeral start).
        tokio::select! {
            () = registry.shutdown() => {}
            () = stops.next() => {
                log::warn!("stopped again: not waiting for the requests in flight");
                std::process::exit(1);
            }
        }
        Ok(())
    })
}

/// The signals that stop berth: SIGTERM, SIGINT, SIGHUP and SIGQUIT.
struct Stops([Signal; 4]);

impl Stops {
    fn install() -> std::io::Result<Stops> {
        Ok(Stops([
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::quit())?,
        ]))
    }

    /// The next of them to arrive.
    async fn next(&mut self) {
        let [term, interrupt, hangup, quit] = &mut self.0;
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
            _ = hangup.recv() => {}
            _ = quit.recv() => {}
        }
    }
}

/// Resolves once this process's parent is no longer `parent` (it ended:
/// the process was handed to init or a subreaper). Polled: no signal says
/// so for a whole process (PR_SET_PDEATHSIG follows the parent's thread,
/// and a test harness often starts a fixture from a thread that ends).
async fn parent_gone(parent: libc::pid_t) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        // SAFETY: getppid has no preconditions and cannot fail.
        if unsafe { libc::getppid() } != parent {
            return;
        }
    }
}

fn prune_policy(
    upload_expiration: Duration,
    manifest_expiration: Option<Duration>,
    grace: Duration,
    untagged: bool,
    cache_expiration: Duration,
) -> Policy {
    Policy {
        upload_expiration,
        manifest_expiration,
        grace,
        untagged,
        cache_expiration: (!cache_expiration.is_zero()).then_some(cache_expiration),
    }
}

fn run_passwd(args: Passwd) -> std::io::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(std::io::Error::other("no password on standard input"));
    }
    let text = match std::fs::read_to_string(&args.htpasswd) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let text = berth::auth::htpasswd::set_password(&text, &args.user, password)
        .map_err(std::io::Error::other)?;
    // A new file is its owner's alone; one already there keeps its mode.
    berth::whole_file::replace(&args.htpasswd, text.as_bytes(), 0o600)?;
    eprintln!(
        "set the password of {} in {}",
        args.user,
        args.htpasswd.display()
    );
    Ok(())
}

fn run_prune(args: Prune) -> std::io::Result<ExitCode> {
    let cluster = cluster_settings(
        args.metadata
            .or_else(|| std::env::var("BERTH_METADATA").ok()),
        args.blobs.or_else(|| std::env::var("BERTH_BLOBS").ok()),
        args.blobs_credentials.as_deref(),
    )?;
    let store = match cluster {
        Some(cluster) => Store::open_cluster(&cluster).map_err(std::io::Error::other)?,
        None => open_existing(&args.data)?,
    };
    let policy = prune_policy(
        args.upload_expiration,
        args.manifest_expiration,
        args.grace,
        args.untagged,
        args.cache_expiration,
    );
    let report = store
        .prune(&policy, args.dry_run)
        .map_err(std::io::Error::other)?;
    if args.dry_run {
        for item in &report.items {
            println!("would remove {item}");
        }
        println!(
            "dry run: {}",
            report.summary().replacen("pruned", "would prune", 1)
        );
    } else {
        println!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a data directory that must already hold a berth database, with the
/// same start-up recovery the server runs.
fn open_existing(data: &std::path::Path) -> std::io::Result<Store> {
    require_database(data)?;
    Store::open(data).map_err(std::io::Error::other)
}

/// Offline commands work on a registry's data, never on a mistyped path.
fn require_database(data: &std::path::Path) -> std::io::Result<()> {
    if data.join("berth.redb").exists() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} holds no berth database",
            data.display()
        )))
    }
}

/// Where export and import work: a stopped data directory, or a
/// running registry.
enum Side {
    Data(PathBuf),
    Registry(Box<berth::transfer::Registry>),
}

/// The options both export and import take to name their other side.
struct SideArgs {
    data: Option<PathBuf>,
    registry: Option<String>,
    creds: Option<String>,
    authfile: Option<PathBuf>,
    ca: Option<PathBuf>,
}

impl SideArgs {
    fn open(self) -> std::io::Result<Side> {
        let Some(registry) = self.registry else {
            if self.creds.is_some() || self.authfile.is_some() || self.ca.is_some() {
                return Err(std::io::Error::other(
                    "--creds, --authfile and --ca go with --registry",
                ));
            }
            let data = self
                .data
                .unwrap_or_else(|| PathBuf::from(berth::config::DEFAULT_DATA_DIR));
            return Ok(Side::Data(data));
        };
        if self.data.is_some() {
            return Err(std::io::Error::other("give --data or --registry, not both"));
        }
        let url = if registry.contains("://") {
            registry
        } else {
            format!("https://{registry}")
        };
        let host = url
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let mut settings = berth::upstream::Settings::new();
        let authfile = self.authfile.or_else(docker_config);
        if let Some(path) = authfile.filter(|p| p.exists()) {
            settings.credentials = berth::upstream::Credentials::load(&path)?;
        }
        if let Some(creds) = self.creds {
            let (user, password) = creds
                .split_once(':')
                .ok_or_else(|| std::io::Error::other("--creds is USER:PASSWORD"))?;
            settings
                .credentials
                .insert(&host, user.to_owned(), password.to_owned());
        }
        settings.extra_ca = self.ca.or_else(|| {
            [
                format!("/etc/docker/certs.d/{host}/ca.crt"),
                format!("/etc/containers/certs.d/{host}/ca.crt"),
            ]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        });
        let registry = berth::transfer::Registry::connect(&url, settings)?;
        Ok(Side::Registry(Box::new(registry)))
    }
}

/// Where docker keeps its logins.
fn docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
        }
    }
}

fn run_export(args: Export) -> std::io::Result<()> {
    let side = SideArgs {
        data: args.data,
        registry: args.registry,
        creds: args.creds,
        authfile: args.authfile,
        ca: args.ca,
    }
    .open()?;
    let mut store;
    let mut registry;
    let source: &mut dyn berth::transfer::export::Source = match side {
        Side::Data(data) => {
            require_database(&data)?;
            store = Store::open(&data).map_err(std::io::Error::other)?;
            &mut store
        }
        Side::Registry(r) => {
            registry = r;
            &mut *registry
        }
    };
    let started = std::time::Instant::now();
    let progress = berth::transfer::Progress::command();
    let summary = berth::transfer::export(
        source,
        &args.selection,
        args.since.as_deref(),
        &args.platform,
        &args.out,
        &progress,
    )
    .map_err(std::io::Error::other)?;
    println!(
        "exported {} images, {} blobs, {} bytes to {} in {:.1}s",
        summary.images.len(),
        summary.blobs,
        summary.bytes,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!("{}  {}", summary.sha256, args.out.display());
    Ok(())
}

fn run_import(args: Import) -> std::io::Result<ExitCode> {
    let into = match &args.into {
        Some(name) => Some(berth::oci::RepoName::parse(name).ok_or_else(|| {
            std::io::Error::other(format!("--into {name:?} is no repository name"))
        })?),
        None => None,
    };
    let side = SideArgs {
        data: args.data,
        registry: args.registry,
        creds: args.creds,
        authfile: args.authfile,
        ca: args.ca,
    }
    .open()?;
    let started = std::time::Instant::now();
    let progress = berth::transfer::Progress::command();
    let summary = match side {
        Side::Data(data) => {
            let store = std::sync::Arc::new(Store::open(&data).map_err(std::io::Error::other)?);
            berth::transfer::import(&store, &args.source, into.as_ref(), &progress)
        }
        Side::Registry(mut registry) => {
            berth::transfer::registry::import(&mut registry, &args.source, into.as_ref(), &progress)
        }
    }
    .map_err(std::io::Error::other)?;
    println!(
        "imported {} images: {} blobs read and checked ({} bytes), {} already held; {} refused; {:.1}s",
        summary.imported.len(),
        summary.blobs_read,
        summary.bytes,
        summary.blobs_held,
        summary.damage.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if summary.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_fsck(args: Fsck) -> std::io::Result<ExitCode> {
    use std::io::IsTerminal;
    let cluster = cluster_settings(
        args.metadata
            .or_else(|| std::env::var("BERTH_METADATA").ok()),
        args.blobs.or_else(|| std::env::var("BERTH_BLOBS").ok()),
        args.blobs_credentials.as_deref(),
    )?;
    let store = match cluster {
        Some(cluster) => Store::open_cluster(&cluster).map_err(std::io::Error::other)?,
        None => {
            require_database(&args.data)?;
            Store::open_unrepaired(&args.data).map_err(std::io::Error::other)?
        }
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = |done: u64, total: u64, bytes: u64| {
        if tty {
            eprint!("\rchecked {done}/{total} blobs, {} MB", bytes / 1_000_000);
        }
    };
    let check = store
        .check(args.repair, &mut progress)
        .map_err(std::io::Error::other)?;
    if tty {
        eprintln!();
    }
    for finding in &check.findings {
        println!("{finding}");
    }
    println!(
        "{} blobs ({} bytes) checked, {} problems found, {} repaired",
        check.blobs,
        check.bytes,
        check.findings.len(),
        check.repaired
    );
    Ok(if check.findings.len() > check.repaired {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
