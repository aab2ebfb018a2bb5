//! The daemon's Prometheus metrics (ops.md §2): one [`Metrics`] per daemon, with its own
//! registry (no global one, so tests that run several daemons in one process keep theirs
//! apart), written in the Prometheus text format by `prometheus-client`.
//!
//! Counters move where things happen ([`Metrics::record_request`],
//! [`Metrics::record_decisions`]); the gauges that mirror state kept elsewhere (the cache,
//! the jobs, the config, the files, the process) are set from a [`Snapshot`] when scraped,
//! so serving a call never pays for them.
//!
//! Label values are bounded: methods are the registered ones (anything else is
//! `unknown`), outcomes are `ok` or one of rpc.md's error types, transports are fixed.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::eval::ReasonCode;

/// The `Content-Type` of `GET /metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `data.type` values of rpc.md's errors: the only outcomes besides `ok`.
const OUTCOMES: [&str; 12] = [
    "invalid_params",
    "invalid_request",
    "method_not_found",
    "parse_error",
    "not_found",
    "unauthenticated",
    "forbidden",
    "limit_exceeded",
    "conflict",
    "workflow_not_found",
    "internal_error",
    "unavailable",
];

/// The transports a call comes by (`rest` is the REST layer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ws,
    Rest,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
            Transport::Rest => "rest",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    send: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// What a scrape reads from the rest of the daemon, gathered by the caller (`rpc::ops`).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cache: crate::store::CacheStats,
    /// Jobs per status (`queued`, `processing`).
    pub jobs: Vec<(&'static str, u64)>,
    pub config_version: u64,
    pub config_reload_errors: u64,
    pub config_loaded_at: f64,
    /// Bytes of the database file and its WAL (SQLite).
    pub db_bytes: Option<u64>,
    pub wal_bytes: Option<u64>,
    /// The change log's newest `seq` (history.md).
    pub changes_head: i64,
    /// Writes committed, and the transactions that committed them.
    pub writes: crate::store::WriteStats,
    /// The newest backup: when it was made (unix seconds) and its size.
    pub last_backup: Option<(f64, u64)>,
}

/// A histogram family whose histograms all have the request buckets.
type Histograms = Family<MethodLabel, Histogram, fn() -> Histogram>;

/// 50 µs to about 13 s, ×4 per bucket: a cached read to a 1000-recipient evaluation.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Off (`PREFSD_METRICS=off`), calls and decisions are not counted: the baseline of
    /// the metrics benchmark.
    enabled: bool,
    /// Set once the method table is built ([`Metrics::set_methods`]).
    methods: OnceLock<HashSet<&'static str>>,
    requests: Family<RequestLabels, Counter>,
    durations: Histograms,
    /// `[send][code]`, made up front: counting a decision is one atomic add.
    decisions: [[Counter; ReasonCode::ALL.len()]; 2],
    connections: Gauge,
    job_rows: Family<OutcomeLabel, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    jobs: Family<StatusLabel, Gauge>,
    config_version: Gauge,
    config_reload_errors: Counter,
    config_loaded_at: FloatGauge,
    store_size: Family<FileLabel, Gauge>,
    process_cpu: Counter<f64, AtomicU64>,
    process_rss: Gauge,
    process_fds: Gauge,
    changes_head: Gauge,
    writes: Counter,
    write_transactions: Counter,
    last_backup_at: FloatGauge,
    last_backup_age: FloatGauge,
    last_backup_bytes: Gauge,
}

impl Metrics {
    /// Metrics that count calls when `enabled`; [`Metrics::from_env`] reads the switch.
    pub fn new(enabled: bool) -> Metrics {
        let mut r = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "prefsd_requests",
            "JSON-RPC calls answered, by method, transport and outcome (ok or the error's data.type)",
            requests.clone(),
        );
        let durations: Histograms = Family::new_with_constructor(request_histogram);
        r.register(
            "prefsd_request_duration_seconds",
            "Time to answer a JSON-RPC call, by method",
            durations.clone(),
        );
        let decision_family = Family::<DecisionLabels, Counter>::default();
        r.register(
            "prefsd_decisions",
            "Channel decisions made by preferences.evaluate, by send and reason code",
            decision_family.clone(),
        );
        let decisions = [false, true].map(|send| {
            ReasonCode::ALL.map(|code| {
                decision_family
                    .get_or_create(&DecisionLabels {
                        send: if send { "true" } else { "false" },
                        code: code.as_str(),
                    })
                    .clone()
            })
        });
        let m = Metrics {
            enabled,
            methods: OnceLock::new(),
            requests,
            durations,
            decisions,
            connections: Gauge::default(),
            job_rows: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            jobs: Family::default(),
            config_version: Gauge::default(),
            config_reload_errors: Counter::default(),
            config_loaded_at: FloatGauge::default(),
            store_size: Family::default(),
            process_cpu: Counter::default(),
            process_rss: Gauge::default(),
            process_fds: Gauge::default(),
            changes_head: Gauge::default(),
            writes: Counter::default(),
            write_transactions: Counter::default(),
            last_backup_at: FloatGauge::default(),
            last_backup_age: FloatGauge::default(),
            last_backup_bytes: Gauge::default(),
            registry: r,
        };
        m.register_rest()
    }

    fn register_rest(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "prefsd_connections",
            "Open HTTP connections",
            self.connections.clone(),
        );
        r.register(
            "prefsd_changes_head",
            "The newest seq of the change log (0 when empty)",
            self.changes_head.clone(),
        );
        r.register(
            "prefsd_store_writes",
            "Write transactions of calls and bulk chunks committed",
            self.writes.clone(),
        );
        r.register(
            "prefsd_store_commits",
            "Database commits; several writes queued together commit as one (SQLite)",
            self.write_transactions.clone(),
        );
        r.register(
            "prefsd_last_backup_timestamp_seconds",
            "When the newest backup this daemon made was taken (unix seconds; 0 before the first)",
            self.last_backup_at.clone(),
        );
        r.register(
            "prefsd_last_backup_age_seconds",
            "How old the newest backup this daemon made is, in seconds",
            self.last_backup_age.clone(),
        );
        r.register(
            "prefsd_last_backup_bytes",
            "Size of the newest backup this daemon made",
            self.last_backup_bytes.clone(),
        );
        r.register(
            "prefsd_job_rows",
            "Rows of bulk jobs processed, by outcome (success, error)",
            self.job_rows.clone(),
        );
        r.register(
            "prefsd_cache_hits",
            "Read-cache look-ups answered from memory",
            self.cache_hits.clone(),
        );
        r.register(
            "prefsd_cache_misses",
            "Read-cache look-ups that read the database",
            self.cache_misses.clone(),
        );
        r.register(
            "prefsd_cache_bytes",
            "Estimated memory held by the read cache",
            self.cache_bytes.clone(),
        );
        r.register(
            "prefsd_cache_entries",
            "Recipients and tenants in the read cache",
            self.cache_entries.clone(),
        );
        r.register("prefsd_jobs", "Bulk jobs, by status", self.jobs.clone());
        r.register(
            "prefsd_config_version",
            "Version of the config in force (1 at start, +1 per applied reload)",
            self.config_version.clone(),
        );
        r.register(
            "prefsd_config_reload_errors",
            "Config reloads refused as invalid",
            self.config_reload_errors.clone(),
        );
        r.register(
            "prefsd_config_last_reload_timestamp_seconds",
            "When the config in force was read (unix seconds)",
            self.config_loaded_at.clone(),
        );
        r.register(
            "prefsd_store_size_bytes",
            "Size of the SQLite files, by file (db, wal)",
            self.store_size.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "prefsd_build_info",
            "Always 1; the version in a label",
            build,
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            self.process_cpu.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.process_rss.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            self.process_fds.clone(),
        );
        let start = FloatGauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        r.register(
            "process_start_time_seconds",
            "When the daemon started (unix seconds)",
            start,
        );
        self
    }

    /// On unless `PREFSD_METRICS` is `off` (or `0`, `false`).
    pub fn from_env() -> Metrics {
        let off = std::env::var("PREFSD_METRICS")
            .is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false"));
        Metrics::new(!off)
    }

    /// The registered method names: the only `method` label values besides `unknown`.
    /// The first call wins.
    pub fn set_methods(&self, methods: impl IntoIterator<Item = &'static str>) {
        let _ = self.methods.set(methods.into_iter().collect());
    }

    /// `method` as a label value: a registered method, or `unknown`.
    pub fn method_label(&self, method: &str) -> &'static str {
        self.methods
            .get()
            .and_then(|methods| methods.get(method).copied())
            .unwrap_or("unknown")
    }

    /// Counts one answered call. `outcome` is `None` for success, else the error's
    /// `data.type` (an unknown type counts as `internal_error`).
    pub fn record_request(
        &self,
        method: &str,
        transport: Transport,
        outcome: Option<&str>,
        duration: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let method = self.method_label(method);
        let outcome = match outcome {
            None => "ok",
            Some(t) => OUTCOMES
                .iter()
                .find(|known| **known == t)
                .copied()
                .unwrap_or("internal_error"),
        };
        self.requests
            .get_or_create(&RequestLabels {
                method,
                transport: transport.as_str(),
                outcome,
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabel { method })
            .observe(duration.as_secs_f64());
    }

    /// Adds the decisions of one call.
    pub fn record_decisions(&self, counts: &DecisionCounts) {
        if !self.enabled {
            return;
        }
        for (row, counters) in counts.0.iter().zip(&self.decisions) {
            for (n, counter) in row.iter().zip(counters) {
                if *n > 0 {
                    counter.inc_by(*n);
                }
            }
        }
    }

    /// Counts rows of a bulk job chunk.
    pub fn record_job_rows(&self, success: u64, error: u64) {
        for (outcome, n) in [("success", success), ("error", error)] {
            if n > 0 {
                self.job_rows
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(n);
            }
        }
    }

    /// One more open connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// The text of `GET /metrics`, with the gauges set from `snapshot` and the process.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let s = snapshot;
        // Counters kept elsewhere as totals: moved up to them, never down.
        let up_to = |counter: &Counter, total: u64| {
            let have = counter.get();
            if total > have {
                counter.inc_by(total - have);
            }
        };
        up_to(&self.cache_hits, s.cache.hits);
        up_to(&self.cache_misses, s.cache.misses);
        up_to(&self.config_reload_errors, s.config_reload_errors);
        up_to(&self.writes, s.writes.writes);
        up_to(&self.write_transactions, s.writes.transactions);
        self.cache_bytes.set(gauge(s.cache.bytes as u64));
        self.cache_entries
            .set(gauge((s.cache.recipients + s.cache.tenants) as u64));
        for (status, n) in &s.jobs {
            self.jobs
                .get_or_create(&StatusLabel { status })
                .set(gauge(*n));
        }
        self.config_version.set(gauge(s.config_version));
        self.changes_head.set(s.changes_head);
        if let Some((at, bytes)) = s.last_backup {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(at, |d| d.as_secs_f64());
            self.last_backup_at.set(at);
            self.last_backup_age.set((now - at).max(0.0));
            self.last_backup_bytes.set(gauge(bytes));
        }
        self.config_loaded_at.set(s.config_loaded_at);
        for (file, bytes) in [("db", s.db_bytes), ("wal", s.wal_bytes)] {
            if let Some(bytes) = bytes {
                self.store_size
                    .get_or_create(&FileLabel { file })
                    .set(gauge(bytes));
            }
        }
        let process = process::read();
        if let Some(cpu) = process.cpu_seconds {
            let have = self.process_cpu.get();
            if cpu > have {
                self.process_cpu.inc_by(cpu - have);
            }
        }
        if let Some(rss) = process.rss_bytes {
            self.process_rss.set(gauge(rss));
        }
        if let Some(fds) = process.open_fds {
            self.process_fds.set(gauge(fds));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Decisions of one call, counted locally and added to the metrics once.
#[derive(Debug, Default)]
pub struct DecisionCounts([[u64; ReasonCode::ALL.len()]; 2]);

impl DecisionCounts {
    pub fn add(&mut self, send: bool, code: ReasonCode) {
        let i = ReasonCode::ALL
            .iter()
            .position(|c| *c == code)
            .unwrap_or_default();
        self.0[usize::from(send)][i] += 1;
    }
}

/// Holds one count of `prefsd_connections`.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process's own figures, from `/proc/self` (Linux; `None` elsewhere).
mod process {
    pub struct Figures {
        pub cpu_seconds: Option<f64>,
        pub rss_bytes: Option<u64>,
        pub open_fds: Option<u64>,
    }

    /// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on every Linux ABI).
    const USER_HZ: f64 = 100.0;

    pub fn read() -> Figures {
        Figures {
            cpu_seconds: cpu_seconds(),
            rss_bytes: rss_bytes(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
        }
    }

    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name (which may hold spaces), fields start at 3 (state);
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: f64 = fields.next()?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((utime + stime) / USER_HZ)
    }

    fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        let m = Metrics::new(true);
        m.set_methods(["daemon.ping"]);
        m.record_request(
            "daemon.ping",
            Transport::Http,
            None,
            Duration::from_millis(1),
        );
        m.record_request(
            "no.such",
            Transport::Ws,
            Some("method_not_found"),
            Duration::ZERO,
        );
        m.record_request(
            "daemon.ping",
            Transport::Http,
            Some("made_up"),
            Duration::ZERO,
        );
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains(
                r#"prefsd_requests_total{method="daemon.ping",transport="http",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"prefsd_requests_total{method="unknown",transport="ws",outcome="method_not_found"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"outcome="internal_error"} 1"#), "{text}");
        assert!(
            !text.contains("no.such") && !text.contains("made_up"),
            "{text}"
        );
    }
}
