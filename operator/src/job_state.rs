//! A job's state as a jobmanager reports it (`GET /jobs/{id}` → `state`), parsed once at the
//! edge into a type the reconciler branches on.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Submitted, waiting for slots.
    Created,
    Running,
    /// A task failed; the jobmanager restarts it from its latest checkpoint by itself.
    Restarting,
    /// Every task finished (also after stop-with-savepoint).
    Finished,
    /// The restart strategy gave up: only the operator can bring it back.
    Failed,
    Canceled,
    /// A state this operator does not know (a newer jobmanager): reported, never acted on.
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s {
            "CREATED" | "INITIALIZING" => JobState::Created,
            "RUNNING" => JobState::Running,
            "RESTARTING" => JobState::Restarting,
            "FINISHED" => JobState::Finished,
            "FAILED" => JobState::Failed,
            "CANCELED" | "CANCELLED" => JobState::Canceled,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Flink's name of the state, as status shows it.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Restarting => "RESTARTING",
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
            JobState::Other(s) => s,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobState;

    #[test]
    fn round_trips_flink_names_and_keeps_unknown_ones() {
        for s in [
            "CREATED",
            "RUNNING",
            "RESTARTING",
            "FINISHED",
            "FAILED",
            "CANCELED",
        ] {
            assert_eq!(JobState::parse(s).as_str(), s);
        }
        assert_eq!(
            JobState::parse("SUSPENDED"),
            JobState::Other("SUSPENDED".into())
        );
    }
}
