//! The report of a load run: the medians of each workload's rounds, the ratio against the
//! baseline, the daemon's CPU and memory, as a table and as JSON.

use std::time::Duration;

use serde_json::{Value, json};

use super::load::{Limit, LoadConfig, RunResult};
use super::stats::median;
use super::{Transport, Workload};

/// The report of all runs.
pub struct Report<'a> {
    pub config: &'a LoadConfig,
    pub results: &'a [RunResult],
    pub peak_rss_kib: Option<u64>,
    pub rss_kib: Option<u64>,
}

/// A group of runs: the medians of each figure over the runs, and the totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub runs: usize,
    /// All the runs' calls and errors.
    pub calls: u64,
    pub errors: u64,
    /// The median run's calls and errors, for the table's median row.
    pub median_calls: f64,
    pub median_errors: f64,
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    /// The largest of the runs' maxima.
    pub max_us: f64,
    /// The median of the runs' maxima.
    pub median_max_us: f64,
    pub server_us_per_call: Option<f64>,
    pub client_us_per_call: Option<f64>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Summary {
    pub fn of<'r>(runs: impl Iterator<Item = &'r RunResult>) -> Summary {
        let runs: Vec<&RunResult> = runs.collect();
        let m = |f: &dyn Fn(&RunResult) -> f64| {
            median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let opt = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
            median(&v)
        };
        Summary {
            runs: runs.len(),
            calls: runs.iter().map(|r| r.calls).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            median_calls: m(&|r| r.calls as f64),
            median_errors: m(&|r| r.errors as f64),
            calls_per_s: m(&|r| r.calls_per_s()),
            p50_us: m(&|r| us(r.latency.p50)),
            p90_us: m(&|r| us(r.latency.p90)),
            p99_us: m(&|r| us(r.latency.p99)),
            max_us: runs.iter().map(|r| us(r.latency.max)).fold(0.0, f64::max),
            median_max_us: m(&|r| us(r.latency.max)),
            server_us_per_call: opt(&|r| r.server_us_per_call()),
            client_us_per_call: opt(&|r| r.client_us_per_call()),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "runs": self.runs,
            "calls": self.calls,
            "errors": self.errors,
            "calls_per_s": round1(self.calls_per_s),
            "latency_us": {
                "p50": round1(self.p50_us),
                "p90": round1(self.p90_us),
                "p99": round1(self.p99_us),
                "max": round1(self.max_us),
            },
            "server_cpu_us_per_call": self.server_us_per_call.map(round2),
            "client_cpu_us_per_call": self.client_us_per_call.map(round2),
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

impl Report<'_> {
    fn measured(&self) -> Summary {
        Summary::of(self.results.iter().filter(|r| !r.baseline))
    }

    fn baseline(&self) -> Option<Summary> {
        self.config
            .compare
            .map(|_| Summary::of(self.results.iter().filter(|r| r.baseline)))
    }

    /// Recipients per call of the measured workload (1 unless evaluate-batch).
    fn recipients_per_call(&self) -> u32 {
        match self.config.workload {
            Workload::EvaluateBatch => self.config.batch,
            _ => 1,
        }
    }

    fn limit_text(&self) -> String {
        let limit = match self.config.limit {
            Limit::Duration(d) => format!("{:.1}s per run", d.as_secs_f64()),
            Limit::Calls(c) => format!("{c} calls per run"),
        };
        match self.config.rate {
            Some(rate) => format!("{limit}, {rate} calls/s"),
            None => limit,
        }
    }

    pub fn table(&self) -> String {
        let c = self.config;
        let mut out = String::new();
        let what = match c.transport {
            Transport::Http => "connections",
            Transport::Ws => "in flight on 1 WebSocket",
        };
        out.push_str(&format!(
            "prefsd bench: workload {}{}, transport {}, {} {what}, {}, {} round(s), users {}, daemon pid {}\n",
            c.workload.as_str(),
            if c.workload == Workload::EvaluateBatch {
                format!(" ({} recipients)", c.batch)
            } else if c.workload == Workload::Mixed {
                format!(
                    " (reads={},evaluates={},writes={})",
                    c.mix.reads, c.mix.evaluates, c.mix.writes
                )
            } else {
                String::new()
            },
            c.transport.as_str(),
            c.connections,
            self.limit_text(),
            c.rounds,
            if c.users.skew == 0.0 {
                c.users.count.to_string()
            } else {
                format!("{} (skew {})", c.users.count, c.users.skew)
            },
            c.pid.map_or_else(|| "unknown (no CPU/RSS figures)".into(), |p| p.to_string()),
        ));
        let header = [
            "run",
            "calls",
            "calls/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs",
            "errors",
            "srv µs/call",
            "cli µs/call",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        if self.results.len() > 1 {
            for r in self.results {
                rows.push(vec![
                    format!("{} #{}", r.workload.as_str(), r.round),
                    r.calls.to_string(),
                    format!("{:.0}", r.calls_per_s()),
                    format!("{:.0}", us(r.latency.p50)),
                    format!("{:.0}", us(r.latency.p90)),
                    format!("{:.0}", us(r.latency.p99)),
                    format!("{:.0}", us(r.latency.max)),
                    r.errors.to_string(),
                    fmt_opt(r.server_us_per_call()),
                    fmt_opt(r.client_us_per_call()),
                ]);
            }
        }
        let label = if c.rounds > 1 { "median " } else { "" };
        // Every column of the median row is a median over the runs; the totals and the
        // largest maximum are a line of their own below the table.
        let summary_row = |name: String, s: &Summary| {
            vec![
                name,
                format!("{:.0}", s.median_calls),
                format!("{:.0}", s.calls_per_s),
                format!("{:.0}", s.p50_us),
                format!("{:.0}", s.p90_us),
                format!("{:.0}", s.p99_us),
                format!("{:.0}", s.median_max_us),
                format!("{:.0}", s.median_errors),
                fmt_opt(s.server_us_per_call),
                fmt_opt(s.client_us_per_call),
            ]
        };
        let measured = self.measured();
        let baseline = self.baseline();
        if let (Some(b), Some(w)) = (baseline, c.compare) {
            rows.push(summary_row(format!("{label}{}", w.as_str()), &b));
        }
        rows.push(summary_row(
            format!("{label}{}", c.workload.as_str()),
            &measured,
        ));
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.push('\n');
        }
        if c.rounds > 1 {
            for (name, s) in baseline
                .zip(c.compare)
                .map(|(b, w)| (w.as_str(), b))
                .into_iter()
                .chain([(c.workload.as_str(), measured)])
            {
                out.push_str(&format!(
                    "{name}, all {} runs: {} calls, {} errors, largest max {:.0} µs\n",
                    s.runs, s.calls, s.errors, s.max_us
                ));
            }
        }
        if let (Some(b), Some(w)) = (baseline, c.compare) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push_str(&format!(
                "ratio {}/{}: calls/s {:.2}, server CPU per call {}\n",
                c.workload.as_str(),
                w.as_str(),
                ratio(measured.calls_per_s, b.calls_per_s),
                measured
                    .server_us_per_call
                    .zip(b.server_us_per_call)
                    .map_or_else(|| "-".into(), |(m, b)| format!("{:.2}", ratio(m, b)))
            ));
        }
        let per = self.recipients_per_call();
        if per > 1 {
            out.push_str(&format!(
                "per recipient ({per} per call): server CPU {} µs, latency p50 {:.2} µs, {:.0} recipients/s\n",
                measured
                    .server_us_per_call
                    .map_or_else(|| "-".into(), |s| format!("{:.2}", s / f64::from(per))),
                measured.p50_us / f64::from(per),
                measured.calls_per_s * f64::from(per),
            ));
        }
        let kib = |k: Option<u64>| {
            k.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        };
        if c.pid.is_some() {
            out.push_str(&format!(
                "daemon: peak RSS (VmHWM) {}, RSS now {}\n",
                kib(self.peak_rss_kib),
                kib(self.rss_kib)
            ));
        }
        out.push_str(&format!(
            "errors: {}\n",
            self.results.iter().map(|r| r.errors).sum::<u64>()
        ));
        out
    }

    pub fn to_json(&self) -> Value {
        let c = self.config;
        let measured = self.measured();
        let baseline = self.baseline();
        let runs: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload.as_str(),
                    "baseline": r.baseline,
                    "round": r.round,
                    "calls": r.calls,
                    "errors": r.errors,
                    "seconds": r.elapsed.as_secs_f64(),
                    "calls_per_s": round1(r.calls_per_s()),
                    "latency_us": {
                        "p50": round1(us(r.latency.p50)),
                        "p90": round1(us(r.latency.p90)),
                        "p99": round1(us(r.latency.p99)),
                        "max": round1(us(r.latency.max)),
                        "mean": round1(us(r.latency.mean)),
                    },
                    "server_cpu_us_per_call": r.server_us_per_call().map(round2),
                    "client_cpu_us_per_call": r.client_us_per_call().map(round2),
                    "first_error": r.first_error,
                })
            })
            .collect();
        let ratio = baseline.map(|b| {
            json!({
                "calls_per_s": (b.calls_per_s > 0.0).then(|| round2(measured.calls_per_s / b.calls_per_s)),
                "server_cpu_per_call": measured.server_us_per_call.zip(b.server_us_per_call)
                    .filter(|(_, b)| *b > 0.0)
                    .map(|(m, b)| round2(m / b)),
            })
        });
        let per = self.recipients_per_call();
        json!({
            "config": {
                "socket": c.socket.display().to_string(),
                "transport": c.transport.as_str(),
                "connections": c.connections,
                "duration_s": match c.limit { Limit::Duration(d) => Some(d.as_secs_f64()), Limit::Calls(_) => None },
                "calls_per_run": match c.limit { Limit::Calls(n) => Some(n), Limit::Duration(_) => None },
                "rate": c.rate,
                "workload": c.workload.as_str(),
                "compare": c.compare.map(Workload::as_str),
                "rounds": c.rounds,
                "batch": c.batch,
                "mix": { "reads": c.mix.reads, "evaluates": c.mix.evaluates, "writes": c.mix.writes },
                "users": c.users.count,
                "skew": c.users.skew,
                "seed": c.seed,
            },
            "daemon": {
                "pid": c.pid,
                "peak_rss_kib": self.peak_rss_kib,
                "rss_kib": self.rss_kib,
            },
            "runs": runs,
            "summary": measured.to_json(),
            "baseline": baseline.map(Summary::to_json),
            "ratio": ratio,
            "per_recipient": (per > 1).then(|| json!({
                "recipients_per_call": per,
                "server_cpu_us": measured.server_us_per_call.map(|s| round2(s / f64::from(per))),
                "latency_p50_us": round2(measured.p50_us / f64::from(per)),
                "recipients_per_s": round1(measured.calls_per_s * f64::from(per)),
            })),
            "errors": self.results.iter().map(|r| r.errors).sum::<u64>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Latency;

    #[test]
    fn summaries_take_medians_and_the_largest_max() {
        let run = |calls: u64, p50: u64, max: u64, cpu_ms: u64| RunResult {
            workload: Workload::Get,
            baseline: false,
            round: 1,
            calls,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latency: Latency {
                p50: Duration::from_micros(p50),
                max: Duration::from_micros(max),
                ..Latency::default()
            },
            server_cpu: Some(Duration::from_millis(cpu_ms)),
            client_cpu: None,
            first_error: None,
        };
        let runs = [
            run(1000, 10, 100, 20),
            run(3000, 30, 900, 30),
            run(2000, 20, 50, 40),
        ];
        let s = Summary::of(runs.iter());
        assert_eq!(s.calls, 6000);
        assert_eq!(s.calls_per_s, 2000.0);
        assert_eq!(s.p50_us, 20.0);
        assert_eq!(s.max_us, 900.0);
        // The median row's figures are medians too, not the sum and the largest.
        assert_eq!(s.median_calls, 2000.0);
        assert_eq!(s.median_max_us, 100.0);
        // 20 µs, 10 µs and 20 µs per call.
        assert_eq!(s.server_us_per_call, Some(20.0));
        assert_eq!(s.client_us_per_call, None);
    }
}
