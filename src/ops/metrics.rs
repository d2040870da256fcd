//! Prometheus metrics, in the Prometheus text format. The request path
//! records into counters and histograms that cost an atomic add or a short
//! lock; what the other rooms keep (the store's holdings, failed logins,
//! the caches' counts) is read at each scrape. No label ever holds a value
//! a client chose (no repository, no tag, no path), so no client can grow
//! the number of series.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::Authority;
use crate::mirror::Mirrors;
use crate::store::prune::Report;
use crate::store::{self, Holdings, Store};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// How many kinds of answer `Metrics::series` remembers; labels come from
/// fixed sets (route classes, methods, the statuses berth sends), so this
/// is never reached, and past it the families answer as before.
const MAX_SERIES: usize = 256;

struct Series {
    route: &'static str,
    method: &'static str,
    status: u16,
    count: Counter,
    latency: Histogram,
}

impl Series {
    fn record(&self, took: f64) {
        self.count.inc();
        self.latency.observe(took);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    namespace: String,
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The series each kind of answer records into, as found in the two
    /// families above: a family hashes its labels (SipHash) at every
    /// lookup, ~820 of a manifest GET's 20,400 instructions (callgrind).
    /// A clone of a counter or histogram shares its values.
    series: RwLock<Vec<Series>>,
    received: Counter,
    sent: Counter,
    rate_limited: Counter,
    prunes: Counter,
    pruned_blobs: Counter,
    pruned_bytes: Counter,
    pruned_manifests: Counter,
    pruned_uploads: Counter,
}

impl Metrics {
    /// Metrics that read the store's holdings, the logins refused and the
    /// caches' counts at each scrape.
    pub fn new(
        store: Arc<Store>,
        authority: Option<Arc<Authority>>,
        mirrors: Arc<Mirrors>,
    ) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route class, method and status",
            requests.clone(),
        );
        let latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 4.0, 10))
            });
        registry.register(
            "http_request_duration_seconds",
            "From a request's head to the end of its answer's body",
            latency.clone(),
        );
        let received = Counter::default();
        registry.register(
            "http_received_bytes",
            "Request body bytes read",
            received.clone(),
        );
        let sent = Counter::default();
        registry.register("http_sent_bytes", "Response body bytes sent", sent.clone());
        let rate_limited = Counter::default();
        registry.register(
            "http_rate_limited_requests",
            "Requests refused with 429 (failed-login limits, upload caps)",
            rate_limited.clone(),
        );
        let commit_jobs = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "store_commit_batch_size",
            "Writes that shared one group commit",
            commit_jobs.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "store_commit_duration_seconds",
            "How long a group commit took, syncs included",
            commit_seconds.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let prunes = counter(&mut registry, "prune_runs", "Prunes run");
        let pruned_blobs = counter(&mut registry, "pruned_blobs", "Blobs a prune swept");
        let pruned_bytes = counter(
            &mut registry,
            "pruned_bytes",
            "Bytes a prune freed (blobs and expired uploads)",
        );
        let pruned_manifests = counter(
            &mut registry,
            "pruned_manifests",
            "Manifests a prune expired",
        );
        let pruned_uploads = counter(
            &mut registry,
            "pruned_uploads",
            "Stale upload sessions expired",
        );
        store.watch(Arc::new(Commits {
            jobs: commit_jobs.clone(),
            seconds: commit_seconds.clone(),
        }));
        registry.register_collector(Box::new(Kept {
            store,
            authority,
            mirrors,
        }));
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            series: RwLock::new(Vec::new()),
            received,
            sent,
            rate_limited,
            prunes,
            pruned_blobs,
            pruned_bytes,
            pruned_manifests,
            pruned_uploads,
        })
    }

    /// One request answered: its route class and method (one of a fixed
    /// few each), status, body bytes each way, and time taken.
    pub fn request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        received: u64,
        sent: u64,
        took: Duration,
    ) {
        let took = took.as_secs_f64();
        let same = |s: &&Series| s.status == status && s.route == route && s.method == method;
        let known = self.series.read().unwrap_or_else(|p| p.into_inner());
        if let Some(series) = known.iter().find(same) {
            series.record(took);
        } else {
            drop(known);
            let mut known = self.series.write().unwrap_or_else(|p| p.into_inner());
            if let Some(series) = known.iter().find(same) {
                series.record(took);
            } else {
                let series = Series {
                    route,
                    method,
                    status,
                    count: self
                        .requests
                        .get_or_create(&RequestLabels {
                            route,
                            method,
                            status,
                        })
                        .clone(),
                    latency: self
                        .latency
                        .get_or_create(&RouteLabels { route, method })
                        .clone(),
                };
                series.record(took);
                if known.len() < MAX_SERIES {
                    known.push(series);
                }
            }
        }
        self.received.inc_by(received);
        self.sent.inc_by(sent);
        if status == 429 {
            self.rate_limited.inc();
        }
    }

    pub fn pruned(&self, report: &Report) {
        self.prunes.inc();
        self.pruned_blobs.inc_by(report.blobs);
        self.pruned_bytes.inc_by(report.bytes);
        self.pruned_manifests.inc_by(report.manifests);
        self.pruned_uploads.inc_by(report.uploads);
    }

    /// The page a scrape gets. It reads the store: call it from a
    /// blocking thread.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// The store's commits, told to the two histograms: a watcher of its
/// own, since the metrics hold the store and the store its watcher.
struct Commits {
    jobs: Histogram,
    seconds: Histogram,
}

impl store::Watcher for Commits {
    fn committed(&self, jobs: usize, took: Duration) {
        self.jobs.observe(jobs as f64);
        self.seconds.observe(took.as_secs_f64());
    }
}

/// What other rooms keep, read at each scrape.
struct Kept {
    store: Arc<Store>,
    authority: Option<Arc<Authority>>,
    mirrors: Arc<Mirrors>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

impl Collector for Kept {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let holdings = self.store.holdings().unwrap_or_else(|e| {
            log::warn!("reading the store's totals for metrics: {e}");
            Holdings::default()
        });
        let gauges = [
            ("stored_blobs", "Blobs stored", holdings.blobs),
            (
                "stored_bytes",
                "Bytes of all blobs, each once",
                holdings.bytes,
            ),
            (
                "uploads_in_progress",
                "Upload sessions open",
                holdings.uploads,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(authority) = &self.authority {
            let counter = ConstCounter::new(authority.failed_logins());
            counter.encode(encoder.encode_descriptor(
                "failed_logins",
                "Logins refused for a wrong user or password",
                None,
                counter.metric_type(),
            )?)?;
        }
        let stats = self.mirrors.stats();
        if stats.is_empty() {
            return Ok(());
        }
        let per_namespace = [
            (
                "upstream_requests",
                "Requests sent to a namespace's upstream",
            ),
            (
                "upstream_failures",
                "Upstream requests that got no answer in time or a 5xx",
            ),
        ];
        for (i, (name, help)) in per_namespace.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for s in &stats {
                let labels = NamespaceLabels {
                    namespace: s.namespace.clone(),
                };
                let value = if i == 0 { s.fetches } else { s.failures };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "cache_lookups",
            "Manifests and blobs of a cached namespace: served from the cache (hit) or asked of the upstream (miss)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for s in &stats {
            for (result, value) in [("hit", s.hits), ("miss", s.misses)] {
                let labels = CacheLabels {
                    namespace: s.namespace.clone(),
                    result,
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
