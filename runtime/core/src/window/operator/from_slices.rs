//! A window aggregate's state moving from the heap backend to one that spills, through a
//! savepoint: the heap backend runs event-time tumbling, sliding and cumulative window
//! aggregates on the sliced operator ([`SlicedWindowOperator`](super::super::SlicedWindowOperator),
//! layout [`SLICED_STATE_LAYOUT`](super::super::SLICED_STATE_LAYOUT)), whose tables live on
//! the heap; the disk backend runs them on this operator, with state and timers in its
//! store. Restoring a snapshot of the first into the second turns each key's slices into
//! the windows still to fire (a window's accumulator is the merge of its slices'), with
//! their timers, so the job goes on with the results it would have had. The other way
//! (windows into slices) is impossible for sliding and cumulative windows, whose slices
//! cannot be taken back out of a window's accumulator; that restore is refused.

use crate::checkpoint::RestoredState;
use crate::element::Timestamp;
use crate::error::Result;
use crate::window::{Window, WindowLogic};

use super::{WindowOperator, key_windows};

impl<L: WindowLogic> WindowOperator<L> {
    /// Loads the sliced operator's key groups in `state`. Windows that had fired before
    /// the snapshot (ending at or before the watermark the key group had) are not made
    /// again, and this instance starts at the lowest such watermark of its key groups, so
    /// a row for one of them, arriving before the next watermark, is late here as it was
    /// there.
    pub(super) fn restore_from_slices(&mut self, state: &RestoredState) -> Result<()> {
        let mut fired_up_to: Option<Timestamp> = None;
        let mut windows: Vec<Window> = Vec::new();
        for (kg, blob) in &state.keyed {
            let (fired, slices) = crate::window::sliced::decode_group::<L::Acc>(*kg, blob)?;
            fired_up_to = Some(fired_up_to.map_or(fired, |f| f.min(fired)));
            for (start, entries) in slices {
                windows.clear();
                self.spec.windows.assign(start, &mut windows);
                windows.retain(|w| w.max_timestamp() > fired);
                for (key, acc) in entries {
                    for w in &windows {
                        let list =
                            key_windows::<L::Acc>(self.store.as_mut(), self.acc_state, &key, *kg)?;
                        match list.iter_mut().find(|(x, _)| x == w) {
                            Some((_, a)) => self.logic.merge(a, acc.clone()),
                            None => {
                                list.push((*w, acc.clone()));
                                self.register_timers(&key, *w);
                            }
                        }
                    }
                }
            }
        }
        if let Some(f) = fired_up_to {
            self.watermark = self.watermark.max(f);
        }
        Ok(())
    }
}
