//! The exactly-once Kafka sink's bookkeeping: messages written since the last barrier, the
//! ones pre-committed per checkpoint (stored in it), and which of a restored writer's
//! pending messages its marker shows as already committed. No broker is involved here; the
//! sink ([`super::sink`]) does the transactions.

use serde::{Deserialize, Serialize};

use flink_rs_core::checkpoint::{CheckpointId, FINAL_CHECKPOINT};
use flink_rs_core::error::{Error, Result};

/// One message to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Msg {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub partition: Option<i32>,
}

/// Messages pre-committed for a checkpoint, waiting for it to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    pub checkpoint: CheckpointId,
    pub messages: Vec<Msg>,
}

/// The marker offset a transaction commits with the messages of checkpoints up to
/// `checkpoint` (the final checkpoint sorts after every other).
pub(super) fn marker_of(checkpoint: CheckpointId) -> i64 {
    if checkpoint == FINAL_CHECKPOINT {
        i64::MAX
    } else {
        i64::try_from(checkpoint).unwrap_or(i64::MAX)
    }
}

/// Staged and pending messages of one writer.
#[derive(Debug, Default)]
pub(super) struct WriteAhead {
    staged: Vec<Msg>,
    pending: Vec<Pending>,
}

impl WriteAhead {
    /// Messages written since the last barrier.
    pub fn stage(&mut self, msgs: impl IntoIterator<Item = Msg>) {
        self.staged.extend(msgs);
    }

    /// A barrier (or the end of input, as `FINAL_CHECKPOINT`): what was staged becomes
    /// pending for `checkpoint`.
    pub fn seal(&mut self, checkpoint: CheckpointId) {
        let messages = std::mem::take(&mut self.staged);
        self.pending.push(Pending {
            checkpoint,
            messages,
        });
    }

    /// What the checkpoint stores: every pending message not yet committed, or nothing.
    pub fn state(&self) -> Result<Option<Vec<u8>>> {
        if self.pending.iter().all(|p| p.messages.is_empty()) {
            return Ok(None);
        }
        bincode::serialize(&self.pending)
            .map(Some)
            .map_err(|e| Error::state("kafka sink pending messages", e))
    }

    /// Checkpoint `checkpoint` completed: the pending messages of it and of earlier ones, in
    /// order (empty when there is nothing to write).
    pub fn take_ready(&mut self, checkpoint: CheckpointId) -> Vec<Pending> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.checkpoint <= checkpoint);
        self.pending = later;
        if ready.iter().all(|p| p.messages.is_empty()) {
            return Vec::new();
        }
        ready
    }
}

/// Of a restored writer's pending messages (its stored state), those its marker does not
/// show as committed: a transaction commits checkpoints in order, with the last one's id as
/// the marker.
pub(super) fn not_yet_committed(state: &[u8], marker: i64) -> Result<Vec<Pending>> {
    let pending: Vec<Pending> =
        bincode::deserialize(state).map_err(|e| Error::state("kafka sink pending messages", e))?;
    Ok(pending
        .into_iter()
        .filter(|p| marker_of(p.checkpoint) > marker && !p.messages.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: &str) -> Msg {
        Msg {
            key: None,
            value: Some(v.as_bytes().to_vec()),
            timestamp: None,
            partition: None,
        }
    }

    fn values(p: &[Pending]) -> Vec<(CheckpointId, Vec<String>)> {
        p.iter()
            .map(|p| {
                (
                    p.checkpoint,
                    p.messages
                        .iter()
                        .map(|m| {
                            String::from_utf8_lossy(m.value.as_deref().unwrap_or_default())
                                .into_owned()
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn pending_messages_wait_for_their_checkpoint_and_go_out_in_order() -> Result<()> {
        let mut w = WriteAhead::default();
        assert_eq!(w.state()?, None, "nothing to store before any write");
        w.stage([msg("a"), msg("b")]);
        w.seal(1);
        w.stage([msg("c")]);
        w.seal(2);
        w.stage([msg("d")]);
        // Checkpoint 2 stores both pending checkpoints, not what came after its barrier.
        let stored = w.state()?.expect("pending messages are stored");
        assert_eq!(
            values(&not_yet_committed(&stored, -1)?),
            vec![(1, vec!["a".into(), "b".into()]), (2, vec!["c".into()])]
        );
        // Checkpoint 1's completion was missed (it failed to be acknowledged): 2 commits both.
        assert_eq!(
            values(&w.take_ready(2)),
            vec![(1, vec!["a".into(), "b".into()]), (2, vec!["c".into()])]
        );
        assert!(w.take_ready(2).is_empty());
        w.seal(FINAL_CHECKPOINT);
        assert_eq!(
            values(&w.take_ready(FINAL_CHECKPOINT)),
            vec![(FINAL_CHECKPOINT, vec!["d".into()])]
        );
        Ok(())
    }

    #[test]
    fn a_restored_writer_resends_only_what_its_marker_does_not_cover() -> Result<()> {
        let mut w = WriteAhead::default();
        for (cp, v) in [(3, "x"), (4, "y"), (5, "z")] {
            w.stage([msg(v)]);
            w.seal(cp);
        }
        let stored = w.state()?.expect("stored");
        // Nothing committed, 3 committed, 3 and 4 committed, all committed.
        assert_eq!(not_yet_committed(&stored, -1)?.len(), 3);
        assert_eq!(
            values(&not_yet_committed(&stored, 3)?),
            vec![(4, vec!["y".into()]), (5, vec!["z".into()])]
        );
        assert_eq!(
            values(&not_yet_committed(&stored, 4)?),
            vec![(5, vec!["z".into()])]
        );
        assert!(not_yet_committed(&stored, 5)?.is_empty());
        // The final checkpoint's marker covers everything.
        assert!(not_yet_committed(&stored, marker_of(FINAL_CHECKPOINT))?.is_empty());
        Ok(())
    }

    #[test]
    fn checkpoints_with_nothing_written_store_and_send_nothing() -> Result<()> {
        let mut w = WriteAhead::default();
        w.seal(1);
        w.seal(2);
        assert_eq!(w.state()?, None);
        assert!(w.take_ready(2).is_empty());
        Ok(())
    }
}
