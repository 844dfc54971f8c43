//! What `custody demo` shows a person: a progress bar while the workload runs (on a terminal
//! only; nothing is drawn into a pipe or a file), then a short account of what was found and
//! where to look, in place of a log line per alert.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use custody_operators::Metrics;
use custody_operators::record::ViewId;
use custody_reports::live::LiveViews;
use prometheus::IntCounter;
use prometheus::core::Collector;

/// A progress bar on stderr, redrawn a few times a second from the input counter.
pub struct Progress {
    done: Arc<AtomicBool>,
    drawer: Option<JoinHandle<()>>,
}

impl Progress {
    /// Draws the progress of `counter` towards `total` on stderr if it is a terminal.
    pub fn start(counter: IntCounter, total: u64) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let drawer = (std::io::stderr().is_terminal() && total > 0).then(|| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let started = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    let line = bar(counter.get(), total, started.elapsed());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r{line}\x1b[K");
                    let _ = err.flush();
                    drop(err);
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            })
        });
        Progress { done, drawer }
    }

    /// Stops drawing and clears the bar.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// One line: `[#####-----]  50%  500,000 / 1,000,000 events  180,000 events/s`.
fn bar(done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let done = done.min(total);
    let filled = (done * WIDTH / total.max(1)) as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "[{}{}] {:>3}%  {} / {} events  {} events/s",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total.max(1),
        grouped(done),
        grouped(total),
        grouped(rate as u64)
    )
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The alerts raised, by kind (`custody_alerts_raised_total`, counted as they are committed).
fn alerts_by_kind(metrics: &Metrics) -> BTreeMap<String, u64> {
    let mut by_kind = BTreeMap::new();
    for family in metrics.alerts_raised.collect() {
        for m in family.get_metric() {
            let kind = m.get_label().first().map(|l| l.value().to_string());
            let n = m.get_counter().get_value() as u64;
            if let Some(kind) = kind
                && n > 0
            {
                by_kind.insert(kind, n);
            }
        }
    }
    by_kind
}

/// What the run found (alerts by kind, SLA breaches, policy violations) and where to look.
pub fn findings(
    live: &LiveViews,
    metrics: &Metrics,
    addr: Option<&SocketAddr>,
    warehouse: &Path,
) -> String {
    let mut out = String::new();
    let alerts = alerts_by_kind(metrics);
    let total: u64 = alerts.values().sum();
    let kinds: Vec<String> = alerts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = write!(out, "  alerts raised: {total}");
    if !kinds.is_empty() {
        let _ = write!(out, " ({})", kinds.join(", "));
    }
    let violations: usize = live
        .tenants()
        .iter()
        .map(|t| live.rows(ViewId::PolicyViolations, t).len())
        .sum();
    let _ = writeln!(
        out,
        "; HITL SLA breaches: {}; policy violations: {violations}",
        metrics.sla_breaches.get()
    );
    // The busiest tenant is the one worth opening first.
    let tenant = live
        .tenants()
        .into_iter()
        .max_by_key(|t| live.rows(ViewId::Alerts, t).len())
        .unwrap_or_default();
    if let Some(addr) = addr {
        let _ = writeln!(
            out,
            "  look: http://{addr}/dashboard#tenant={tenant}  (API index: http://{addr}/, \
             alerts: http://{addr}/v1/tenants/{tenant}/views/alerts)"
        );
    }
    let _ = writeln!(
        out,
        "  verify: custody verify --warehouse {}",
        warehouse.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_grouping() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        let line = bar(500_000, 1_000_000, Duration::from_secs(2));
        assert!(line.starts_with(&format!("[{}{}]", "#".repeat(15), "-".repeat(15))));
        assert!(line.contains(" 50%  500,000 / 1,000,000 events  250,000 events/s"));
        assert!(bar(2_000, 1_000, Duration::from_secs(1)).contains("100%"));
    }
}
