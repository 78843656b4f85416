//! Which batches of a generated (or in-memory) input a reader owns, and how far it got, in a
//! form that survives a restore at another parallelism.
//!
//! Batch `b` (rows `b·batch .. (b+1)·batch`) belongs to subtask `b mod p`, and each reader
//! reads its batches in increasing order, so its position is one number per reader: the next
//! batch. After a restore at the same parallelism every reader resumes at its number. After a
//! restore at another parallelism, the old positions become a "generation": batch `b` is done
//! when `b < next[b mod p_old]`; the new readers stride over the batches of their own residue
//! and skip those that are done. Generations chain over several rescales.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::rate::RateLimit;
use flink_rs_core::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Generation {
    /// Next batch per residue `0..next.len()` (the parallelism of that generation).
    next: Vec<u64>,
}

impl Generation {
    fn done(&self, b: u64) -> bool {
        let p = self.next.len() as u64;
        p > 0 && b < self.next[(b % p) as usize]
    }
}

/// A reader's position as stored in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RangesState {
    batch: u64,
    parallelism: u64,
    subtask: u64,
    next_batch: u64,
    older: Vec<Generation>,
}

/// Row-range bookkeeping shared by the generating sources.
#[derive(Debug, Clone)]
pub(crate) struct Ranges {
    rows: Option<u64>,
    batch: u64,
    subtask: u64,
    step: u64,
    next_batch: u64,
    older: Vec<Generation>,
    emitted: u64,
    rate: Option<RateLimit>,
}

impl Ranges {
    pub fn new(
        rows: Option<u64>,
        batch: usize,
        rate: Option<f64>,
        subtask: usize,
        parallelism: usize,
    ) -> Self {
        // Under a rate limit, small batches keep the output smooth: about 100 ms of the
        // whole source's rows at most (at 2 rows per second one row, not all at once). Not
        // per subtask, so every parallelism uses the same batches.
        let batch = match rate {
            Some(r) => batch.min(1024).min((r / 10.0).floor().max(1.0) as usize),
            None => batch,
        };
        Ranges {
            rows,
            batch: batch.max(1) as u64,
            subtask: subtask as u64,
            step: parallelism.max(1) as u64,
            next_batch: subtask as u64,
            older: Vec::new(),
            emitted: 0,
            rate: rate.map(|r| RateLimit::new(r / parallelism.max(1) as f64)),
        }
    }

    /// A reader resuming from the positions of every old reader.
    pub fn restore(
        rows: Option<u64>,
        batch: usize,
        rate: Option<f64>,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Self> {
        let mut r = Ranges::new(rows, batch, rate, subtask, parallelism);
        let mut decoded: Vec<RangesState> = states
            .iter()
            .map(|(_, b)| bincode::deserialize(b).map_err(|e| Error::state("source position", e)))
            .collect::<Result<_>>()?;
        decoded.sort_by_key(|s| s.subtask);
        let Some(first) = decoded.first() else {
            return Ok(r);
        };
        // Positions count batches of the size they were taken with: keep it (a changed rate
        // or batch setting would otherwise make them unmappable).
        if first.batch == 0 {
            return Err(Error::SnapshotCorrupt(
                "source position with a batch size of 0".into(),
            ));
        }
        r.batch = first.batch;
        let old_p = first.parallelism;
        let residues: Vec<u64> = decoded.iter().map(|s| s.subtask).collect();
        if residues != (0..old_p).collect::<Vec<_>>() {
            return Err(Error::SnapshotCorrupt(format!(
                "source positions of subtasks {residues:?} do not cover parallelism {old_p}"
            )));
        }
        r.older = first.older.clone();
        if old_p == r.step {
            r.next_batch = decoded[subtask].next_batch;
        } else {
            r.older.push(Generation {
                next: decoded.iter().map(|s| s.next_batch).collect(),
            });
        }
        Ok(r)
    }

    /// This reader's position.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        bincode::serialize(&RangesState {
            batch: self.batch,
            parallelism: self.step,
            subtask: self.subtask,
            next_batch: self.next_batch,
            older: self.older.clone(),
        })
        .map_err(|e| Error::state("source position", e))
    }

    /// The next `[start, end)` of row indices: `None` when throttled, `Some(None)` when done.
    pub fn next(&mut self) -> Option<Option<(u64, u64)>> {
        if let Some(r) = &mut self.rate {
            if r.ahead(self.emitted) {
                return None;
            }
        }
        loop {
            let start = self.next_batch * self.batch;
            let mut end = start + self.batch;
            if let Some(n) = self.rows {
                if start >= n {
                    return Some(None);
                }
                end = end.min(n);
            }
            let b = self.next_batch;
            self.next_batch += self.step;
            if self.older.iter().any(|g| g.done(b)) {
                continue;
            }
            self.emitted += end - start;
            return Some(Some((start, end)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut Ranges, limit: usize) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        while v.len() < limit {
            match r.next() {
                Some(Some(x)) => v.push(x),
                _ => break,
            }
        }
        v
    }

    /// Reads some batches at parallelism `p1`, restores at `p2`, then at `p3`, and checks
    /// every row is read exactly once.
    fn rescale(p1: usize, p2: usize, p3: usize) -> Result<()> {
        let rows = Some(1000);
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for s in 0..p1 {
            let mut r = Ranges::new(rows, 10, None, s, p1);
            seen.extend(drain(&mut r, s * 3 + 1));
            states.push((s, Bytes::from(r.snapshot()?)));
        }
        let mut states2 = Vec::new();
        for s in 0..p2 {
            let mut r = Ranges::restore(rows, 10, None, s, p2, &states)?;
            seen.extend(drain(&mut r, 5 + s));
            states2.push((s, Bytes::from(r.snapshot()?)));
        }
        for s in 0..p3 {
            let mut r = Ranges::restore(rows, 10, None, s, p3, &states2)?;
            seen.extend(drain(&mut r, usize::MAX));
        }
        seen.sort();
        let expected: Vec<(u64, u64)> = (0..100).map(|b| (b * 10, b * 10 + 10)).collect();
        assert_eq!(seen, expected, "p {p1} -> {p2} -> {p3}");
        Ok(())
    }

    #[test]
    fn every_row_once_across_rescales() -> Result<()> {
        for (a, b, c) in [
            (1, 1, 1),
            (2, 1, 4),
            (2, 4, 1),
            (3, 2, 5),
            (4, 4, 2),
            (1, 3, 3),
        ] {
            rescale(a, b, c)?;
        }
        Ok(())
    }

    /// A restore keeps the batch size the positions were taken with, whatever the new job
    /// asks for (a changed rate changes it): still every row exactly once.
    #[test]
    fn a_restore_keeps_the_saved_batch_size() -> Result<()> {
        let rows = Some(1000);
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for s in 0..2 {
            let mut r = Ranges::new(rows, 10, None, s, 2);
            seen.extend(drain(&mut r, 4));
            states.push((s, Bytes::from(r.snapshot()?)));
        }
        for s in 0..3 {
            let mut r = Ranges::restore(rows, 7, Some(1e9), s, 3, &states)?;
            seen.extend(drain(&mut r, usize::MAX));
        }
        seen.sort();
        let expected: Vec<(u64, u64)> = (0..100).map(|b| (b * 10, b * 10 + 10)).collect();
        assert_eq!(seen, expected);
        Ok(())
    }
}
