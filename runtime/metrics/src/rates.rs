//! Per-second rates from counters, as Flink's meters (`numRecordsInPerSecond`,
//! `backPressuredTimeMsPerSecond`).
//!
//! Nothing on the record path: each time a rate is asked for, the counters' current values
//! are remembered (at most one sample a second per series), and the rate is the increase
//! over the last [`WINDOW`] or, when the previous sample is older (a scrape every 15 s), since
//! that sample. A counter that went down (a restarted task starts from zero) counts from zero.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back a rate looks when samples are at hand.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Samples closer than this to the newest are not kept.
const SPACING: Duration = Duration::from_secs(1);
/// Samples older than this are dropped; a series unseen for this long is forgotten.
const KEEP: Duration = Duration::from_secs(300);
/// The youngest sample a rate may be taken against.
const MIN_SPAN: Duration = Duration::from_millis(200);

type Series = VecDeque<(Instant, Vec<f64>)>;

/// The samples of every series, by key.
#[derive(Debug, Default)]
pub struct Rates {
    series: Mutex<HashMap<String, Series>>,
}

impl Rates {
    /// The per-second rate of each of `values` (counters) of series `key` at `now`; 0 until
    /// a sample at least 200 ms old is at hand.
    pub fn per_second(&self, key: &str, now: Instant, values: &[f64]) -> Vec<f64> {
        let Ok(mut all) = self.series.lock() else {
            return vec![0.0; values.len()];
        };
        let s = all.entry(key.to_string()).or_default();
        while s
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > KEEP && s.len() > 1)
        {
            s.pop_front();
        }
        // The youngest sample at least WINDOW old, else the oldest at least MIN_SPAN old.
        let base = s
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= WINDOW)
            .or_else(|| {
                s.iter()
                    .find(|(t, _)| now.saturating_duration_since(*t) >= MIN_SPAN)
            });
        let rates = match base {
            Some((t, old)) if old.len() == values.len() => {
                let dt = now.saturating_duration_since(*t).as_secs_f64();
                values
                    .iter()
                    .zip(old)
                    .map(|(v, o)| if v >= o { (v - o) / dt } else { v / dt })
                    .collect()
            }
            _ => vec![0.0; values.len()],
        };
        if s.back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SPACING)
        {
            s.push_back((now, values.to_vec()));
        }
        rates
    }

    /// Forgets series not asked for in [`KEEP`] (tasks of ended attempts).
    pub fn prune(&self, now: Instant) {
        if let Ok(mut all) = self.series.lock() {
            all.retain(|_, s| {
                s.back()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) <= KEEP)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_increase_over_the_window_or_since_the_previous_scrape() {
        let r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.per_second("a", t0, &[0.0]), vec![0.0]);
        // One sample a second, 100 a second.
        for s in 1..=10u64 {
            let rate = r.per_second("a", t0 + Duration::from_secs(s), &[100.0 * s as f64]);
            assert!((rate[0] - 100.0).abs() < 1e-9, "second {s}: {rate:?}");
        }
        // A scrape 15 s later: the rate since the previous sample.
        let rate = r.per_second("a", t0 + Duration::from_secs(25), &[1000.0 + 1500.0 * 2.0]);
        assert!((rate[0] - 200.0).abs() < 1e-9, "{rate:?}");
        // A restarted task counts from zero (over the window: since the sample at 10 s).
        let rate = r.per_second("a", t0 + Duration::from_secs(27), &[170.0]);
        assert!((rate[0] - 10.0).abs() < 1e-9, "{rate:?}");
        // Series are separate.
        assert_eq!(
            r.per_second("b", t0 + Duration::from_secs(27), &[5.0]),
            vec![0.0]
        );
        r.prune(t0 + Duration::from_secs(27) + KEEP + Duration::from_secs(1));
        assert_eq!(
            r.per_second("a", t0 + Duration::from_secs(400), &[1.0]),
            vec![0.0]
        );
    }
}
