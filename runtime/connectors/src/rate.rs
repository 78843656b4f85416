//! A rows-per-second budget shared by the generating sources.

use std::time::Instant;

/// Allows `rate` rows per second, measured from the first call.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    per_second: f64,
    start: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_second: f64) -> Self {
        RateLimit {
            per_second,
            start: None,
        }
    }

    /// True when `emitted` rows are ahead of the budget.
    pub fn ahead(&mut self, emitted: u64) -> bool {
        let start = *self.start.get_or_insert_with(Instant::now);
        let allowed = start.elapsed().as_secs_f64() * self.per_second;
        emitted as f64 >= allowed.max(1.0)
    }
}
