//! Prometheus metrics of the operator: reconciles, failures, and their durations.

use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile-duration histogram buckets.
const BUCKETS: [f64; 8] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default)]
struct Inner {
    reconciles: u64,
    failures: u64,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, failed: bool) {
        if let Ok(mut m) = self.inner.lock() {
            m.reconciles += 1;
            if failed {
                m.failures += 1;
            }
            let s = took.as_secs_f64();
            m.sum += s;
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    m.buckets[i] += 1;
                }
            }
        }
    }

    /// Text exposition format 0.0.4.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP flinkrs_operator_reconciles_total Reconciles run.\n# TYPE flinkrs_operator_reconciles_total counter\nflinkrs_operator_reconciles_total {}",
            m.reconciles
        );
        let _ = writeln!(
            out,
            "# HELP flinkrs_operator_reconcile_errors_total Reconciles that failed.\n# TYPE flinkrs_operator_reconcile_errors_total counter\nflinkrs_operator_reconcile_errors_total {}",
            m.failures
        );
        let _ = writeln!(
            out,
            "# HELP flinkrs_operator_reconcile_duration_seconds Reconcile durations.\n# TYPE flinkrs_operator_reconcile_duration_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "flinkrs_operator_reconcile_duration_seconds_bucket{{le=\"{b}\"}} {}",
                m.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "flinkrs_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.reconciles
        );
        let _ = writeln!(
            out,
            "flinkrs_operator_reconcile_duration_seconds_sum {}",
            m.sum
        );
        let _ = writeln!(
            out,
            "flinkrs_operator_reconcile_duration_seconds_count {}",
            m.reconciles
        );
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram() {
        let m = super::Metrics::default();
        m.reconciled(std::time::Duration::from_millis(20), false);
        m.reconciled(std::time::Duration::from_secs(2), true);
        let t = m.render();
        assert!(t.contains("flinkrs_operator_reconciles_total 2"), "{t}");
        assert!(
            t.contains("flinkrs_operator_reconcile_errors_total 1"),
            "{t}"
        );
        assert!(t.contains("_bucket{le=\"0.05\"} 1"), "{t}");
        assert!(t.contains("_bucket{le=\"5\"} 2"), "{t}");
    }
}
