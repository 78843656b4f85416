//! The Ready, Progressing and Degraded conditions of a FlinkJob's status.

use crate::clock;
use crate::crd::{Condition, FlinkJobStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set(
    status: &mut FlinkJobStatus,
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let c = Condition {
        type_: type_.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: clock::now(),
        observed_generation: generation,
    };
    match status.conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(old) => {
            let t = if old.status == c.status {
                old.last_transition_time.clone()
            } else {
                c.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time: t,
                ..c
            };
        }
        None => status.conditions.push(c),
    }
}

/// The condition of `type_`, if set.
pub fn get<'a>(status: &'a FlinkJobStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut st = FlinkJobStatus::default();
        set(&mut st, READY, false, "Deploying", "a", Some(1));
        let t0 = "2000-01-01T00:00:00Z".to_string();
        st.conditions[0].last_transition_time = t0.clone();
        set(&mut st, READY, false, "Deploying", "b", Some(2));
        let c = get(&st, READY).expect("ready");
        assert_eq!(c.last_transition_time, t0);
        assert_eq!((c.message.as_str(), c.observed_generation), ("b", Some(2)));
        set(&mut st, READY, true, "JobRunning", "", Some(2));
        assert_ne!(
            get(&st, READY).expect("ready").last_transition_time,
            t0,
            "a flip is a transition"
        );
        assert_eq!(st.conditions.len(), 1);
    }
}
