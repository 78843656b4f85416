//! A job's state as a jobmanager reports it (`GET /jobs/{id}` → `state`), parsed once at the
//! edge into the REST API's own type ([`JobStatus`], shared with the jobmanager that writes
//! it), so the reconciler branches on variants, never on strings.

use std::fmt;

pub use flink_rs_rest_api::JobStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// A state of the REST API this operator was built with.
    Known(JobStatus),
    /// A state this operator does not know (a newer jobmanager): reported, never acted on.
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s.parse::<JobStatus>() {
            Ok(status) => JobState::Known(status),
            Err(unknown) => JobState::Other(unknown.0),
        }
    }

    /// Flink's name of the state, as status shows it.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Known(s) => s.as_str(),
            JobState::Other(s) => s,
        }
    }
}

impl From<JobStatus> for JobState {
    fn from(s: JobStatus) -> Self {
        JobState::Known(s)
    }
}

impl PartialEq<JobStatus> for JobState {
    fn eq(&self, other: &JobStatus) -> bool {
        *self == JobState::Known(*other)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{JobState, JobStatus};

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
        assert_eq!(JobState::parse("CANCELLED"), JobStatus::Canceled);
        assert_eq!(
            JobState::parse("SUSPENDED"),
            JobState::Other("SUSPENDED".into())
        );
    }
}
