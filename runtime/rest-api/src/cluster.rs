//! The cluster: `GET /overview`, `GET /config`, `GET /jobmanager/config`, `GET /taskmanagers`.

use serde::{Deserialize, Serialize};

/// `GET /overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterOverview {
    pub taskmanagers: usize,
    pub slots_total: usize,
    pub slots_available: usize,
    pub jobs_running: usize,
    pub jobs_finished: usize,
    pub jobs_cancelled: usize,
    pub jobs_failed: usize,
    pub flink_version: String,
}

/// `GET /config`: what a dashboard needs to know of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DashboardConfig {
    pub flink_version: String,
    pub refresh_interval: u64,
    pub timezone_name: String,
    pub timezone_offset: i64,
}

/// One entry of `GET /jobmanager/config` (a list of them), as Flink lists its
/// configuration; values of secret-looking keys read `******`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
}

/// `GET /taskmanagers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManagers {
    pub taskmanagers: Vec<TaskManagerInfo>,
}

/// A registered taskmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerInfo {
    pub id: String,
    /// The address of its data plane.
    pub path: String,
    pub data_port: Option<u16>,
    pub slots_number: usize,
    pub free_slots: usize,
    /// Milliseconds.
    pub time_since_last_heartbeat: u64,
    /// Milliseconds since the epoch.
    pub registered_at: i64,
    pub hardware: Hardware,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// Bytes.
    pub physical_memory: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_and_taskmanagers_use_flinks_field_names() {
        let o = ClusterOverview {
            taskmanagers: 1,
            slots_total: 4,
            slots_available: 2,
            jobs_running: 1,
            jobs_finished: 0,
            jobs_cancelled: 0,
            jobs_failed: 0,
            flink_version: "flink-rs 0.1.0".into(),
        };
        let v = serde_json::to_value(&o).expect("serializes");
        assert_eq!(v["slots-total"], 4);
        assert_eq!(v["jobs-cancelled"], 0);
        let t = TaskManagerInfo {
            id: "tm-1".into(),
            path: "127.0.0.1:7000".into(),
            data_port: Some(7000),
            slots_number: 2,
            free_slots: 1,
            time_since_last_heartbeat: 10,
            registered_at: 1,
            hardware: Hardware { physical_memory: 8 },
        };
        let v = serde_json::to_value(&t).expect("serializes");
        assert_eq!(v["slotsNumber"], 2);
        assert_eq!(v["dataPort"], 7000);
        assert_eq!(v["hardware"]["physicalMemory"], 8);
    }
}
