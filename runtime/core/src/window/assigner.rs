//! Window assigners: which windows a timestamp belongs to (Flink's `TumblingEventTimeWindows`,
//! `SlidingEventTimeWindows`, `EventTimeSessionWindows` and SQL's `CUMULATE`).

use std::time::Duration;

use crate::element::Timestamp;
use crate::state::{Namespace, TimeDomain};

/// A time window `[start, end)`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// The last timestamp inside the window (`end - 1`): when its trigger fires.
    pub fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }

    /// Flink's `TimeWindow.intersects`: windows that overlap or touch are merged.
    pub fn intersects(&self, other: &Window) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl From<Window> for Namespace {
    fn from(w: Window) -> Self {
        Namespace {
            start: w.start,
            end: w.end,
        }
    }
}

impl From<Namespace> for Window {
    fn from(n: Namespace) -> Self {
        Window {
            start: n.start,
            end: n.end,
        }
    }
}

/// The shape of windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping.
    Tumbling { size: i64, offset: i64 },
    /// Fixed-size windows starting every `slide`.
    Sliding { size: i64, slide: i64, offset: i64 },
    /// Per key, records closer than `gap` share a window.
    Session { gap: i64 },
    /// Windows of one `max_size` period growing by `step`: `[s, s+step)`, `[s, s+2·step)`, ….
    Cumulative {
        step: i64,
        max_size: i64,
        offset: i64,
    },
}

/// A window assigner: the kind of window and the clock it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub kind: WindowKind,
    pub domain: TimeDomain,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Flink's `TimeWindow.getWindowStartWithOffset`, correct for negative timestamps too.
pub(crate) fn window_start(ts: Timestamp, offset: i64, size: i64) -> Timestamp {
    ts - (ts - offset).rem_euclid(size)
}

impl Windows {
    /// Tumbling event-time windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        Self::event(WindowKind::Tumbling {
            size: ms(size),
            offset: 0,
        })
    }

    /// Sliding event-time windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::event(WindowKind::Sliding {
            size: ms(size),
            slide: ms(slide),
            offset: 0,
        })
    }

    /// Event-time session windows closed by a `gap` of inactivity.
    pub fn session(gap: Duration) -> Self {
        Self::event(WindowKind::Session { gap: ms(gap) })
    }

    /// Cumulative event-time windows growing by `step` up to `max_size`.
    pub fn cumulative(step: Duration, max_size: Duration) -> Self {
        Self::event(WindowKind::Cumulative {
            step: ms(step),
            max_size: ms(max_size),
            offset: 0,
        })
    }

    fn event(kind: WindowKind) -> Self {
        Windows {
            kind,
            domain: TimeDomain::EventTime,
        }
    }

    /// The same windows on the processing-time clock.
    pub fn processing_time(mut self) -> Self {
        self.domain = TimeDomain::ProcessingTime;
        self
    }

    /// Shifts window boundaries by `offset` (e.g. for time zones).
    pub fn with_offset(mut self, offset: Duration) -> Self {
        let o = ms(offset);
        match &mut self.kind {
            WindowKind::Tumbling { offset, .. }
            | WindowKind::Sliding { offset, .. }
            | WindowKind::Cumulative { offset, .. } => *offset = o,
            WindowKind::Session { .. } => {}
        }
        self
    }

    /// True for session windows, whose windows merge.
    pub fn is_merging(&self) -> bool {
        matches!(self.kind, WindowKind::Session { .. })
    }

    /// Checks sizes are positive and consistent; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            WindowKind::Tumbling { size, .. } if size <= 0 => Err("window size must be > 0".into()),
            WindowKind::Sliding { size, slide, .. } if size <= 0 || slide <= 0 => {
                Err("window size and slide must be > 0".into())
            }
            WindowKind::Session { gap } if gap <= 0 => Err("session gap must be > 0".into()),
            WindowKind::Cumulative { step, max_size, .. }
                if step <= 0 || max_size <= 0 || max_size % step != 0 =>
            {
                Err("cumulative step must be > 0 and divide the max size".into())
            }
            _ => Ok(()),
        }
    }

    /// Appends the windows `ts` belongs to (for sessions: the proto-window `[ts, ts+gap)`).
    pub fn assign(&self, ts: Timestamp, out: &mut Vec<Window>) {
        match self.kind {
            WindowKind::Tumbling { size, offset } => {
                let start = window_start(ts, offset, size);
                out.push(Window {
                    start,
                    end: start + size,
                });
            }
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut start = window_start(ts, offset, slide);
                while start > ts - size {
                    out.push(Window {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
            }
            WindowKind::Session { gap } => out.push(Window {
                start: ts,
                end: ts + gap,
            }),
            WindowKind::Cumulative {
                step,
                max_size,
                offset,
            } => {
                let start = window_start(ts, offset, max_size);
                let mut end = start + step;
                while end <= start + max_size {
                    if end > ts {
                        out.push(Window { start, end });
                    }
                    end += step;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(w: Windows, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        w.assign(ts, &mut v);
        let mut r: Vec<_> = v.into_iter().map(|w| (w.start, w.end)).collect();
        r.sort();
        r
    }

    #[test]
    fn assigners_match_flink() {
        let s = Duration::from_millis;
        assert_eq!(assign(Windows::tumbling(s(10)), 15), vec![(10, 20)]);
        assert_eq!(assign(Windows::tumbling(s(10)), -1), vec![(-10, 0)]);
        assert_eq!(
            assign(Windows::sliding(s(10), s(5)), 12),
            vec![(5, 15), (10, 20)]
        );
        assert_eq!(
            assign(Windows::cumulative(s(5), s(20)), 7),
            vec![(0, 10), (0, 15), (0, 20)]
        );
        assert_eq!(assign(Windows::session(s(3)), 7), vec![(7, 10)]);
        assert_eq!(
            assign(Windows::tumbling(s(10)).with_offset(s(3)), 2),
            vec![(-7, 3)]
        );
    }
}
