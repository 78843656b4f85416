//! The progress line of `flink-rs run` on a terminal: records read, their rate, time
//! elapsed; redrawn every second on standard error.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flink_rs_core::executor::{TaskStats, split_task_name};

/// Records read by the job's sources: what their tasks took in.
pub fn records_read(tasks: &[TaskStats]) -> u64 {
    tasks
        .iter()
        .filter(|t| {
            split_task_name(&t.task)
                .map_or(t.task.as_str(), |s| s.0)
                .starts_with("Source:")
        })
        .map(|t| t.records_in)
        .sum()
}

/// One progress line.
pub fn line(read: u64, per_second: f64, elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    format!(
        "read {} records ({}/s), {}:{:02}:{:02}",
        thousands(read),
        thousands(per_second.round() as u64),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Draws the line until dropped; the last line stays.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(read: impl Fn() -> Vec<TaskStats> + Send + 'static) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut state = Drawn::new();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if state.at.elapsed() >= Duration::from_secs(1) {
                        state.draw(records_read(&read()), false);
                    }
                }
                state.draw(records_read(&read()), true);
            })
            .ok();
        Progress { done, thread }
    }
}

/// What the last line showed, for the rate of the next.
struct Drawn {
    started: Instant,
    records: u64,
    at: Instant,
}

impl Drawn {
    fn new() -> Drawn {
        let now = Instant::now();
        Drawn {
            started: now,
            records: 0,
            at: now,
        }
    }

    fn draw(&mut self, n: u64, final_line: bool) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        let rate = if final_line {
            n as f64 / now.duration_since(self.started).as_secs_f64().max(1e-3)
        } else if dt > 0.0 {
            n.saturating_sub(self.records) as f64 / dt
        } else {
            0.0
        };
        (self.records, self.at) = (n, now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", line(n, rate, now - self.started));
        if final_line {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, records_in: u64) -> TaskStats {
        TaskStats {
            task: name.into(),
            records_in,
            records_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            backpressured: Duration::ZERO,
            blocked: false,
            idle: Duration::ZERO,
            watermark: None,
            input_watermark: None,
        }
    }

    #[test]
    fn progress_counts_what_sources_read_and_formats_it() {
        let tasks = [
            task("Source: bids -> Calc (1/2)", 1_000),
            task("Source: bids -> Calc (2/2)", 234),
            task("Window (1/1)", 99_999),
        ];
        assert_eq!(records_read(&tasks), 1_234);
        assert_eq!(
            line(1_234_567, 89_012.4, Duration::from_secs(3_725)),
            "read 1,234,567 records (89,012/s), 1:02:05"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
    }
}
