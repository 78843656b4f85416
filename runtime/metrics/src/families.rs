//! The metric families of one scrape, and their Prometheus text encoding.

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Labels of one sample, in order.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Default, Clone)]
struct Family {
    help: String,
    samples: Vec<(Labels, f64)>,
}

/// The samples of a scrape, by metric name. Every metric is a gauge, as Flink's Prometheus
/// reporter exposes its counters (a Flink counter may go down when a task restarts), so
/// names carry no `_total` suffix and are exactly Flink's.
#[derive(Debug, Default, Clone)]
pub struct Families {
    by_name: BTreeMap<String, Family>,
}

impl Families {
    /// Adds a sample of `name`; `help` is kept from the first sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let f = self.by_name.entry(name.to_string()).or_default();
        if f.help.is_empty() {
            f.help = help.to_string();
        }
        f.samples.push((
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), escape(v)))
                .collect(),
            value,
        ));
    }

    /// The samples of `name`.
    pub fn samples(&self, name: &str) -> &[(Labels, f64)] {
        self.by_name
            .get(name)
            .map(|f| f.samples.as_slice())
            .unwrap_or(&[])
    }

    /// The metric names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Adds another scrape's families.
    pub fn extend(&mut self, other: Families) {
        for (name, f) in other.by_name {
            let mine = self.by_name.entry(name).or_default();
            if mine.help.is_empty() {
                mine.help = f.help;
            }
            mine.samples.extend(f.samples);
        }
    }

    /// The Prometheus text exposition (OpenMetrics flavour, which Prometheus reads).
    pub fn encode(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(self)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// A label value as the text format needs it (the encoder writes values as given).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
struct Snapshot(Families);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (name, f) in &self.0.by_name {
            let mut family = encoder.encode_descriptor(name, &f.help, None, MetricType::Gauge)?;
            match f.samples.as_slice() {
                // A metric of the process: no labels, no `{}`.
                [(labels, v)] if labels.is_empty() => ConstGauge::new(*v).encode(family)?,
                samples => {
                    for (labels, v) in samples {
                        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_gauges_with_flinks_names_and_escaped_labels() {
        let mut f = Families::default();
        f.gauge(
            "flink_taskmanager_job_task_numRecordsIn",
            "numRecordsIn (scope: taskmanager_job_task)",
            &[("job_id", "j1"), ("task_name", "Source: \"s\" -> Sink")],
            42.0,
        );
        f.gauge(
            "flink_taskmanager_job_task_numRecordsIn",
            "ignored",
            &[("job_id", "j1"), ("task_name", "other")],
            1.5,
        );
        let text = f.encode().expect("encodes");
        assert!(
            text.contains("# TYPE flink_taskmanager_job_task_numRecordsIn gauge"),
            "{text}"
        );
        assert!(
            text.contains(
                "flink_taskmanager_job_task_numRecordsIn{job_id=\"j1\",task_name=\"Source: \\\"s\\\" -> Sink\"} 42.0"
            ),
            "{text}"
        );
        assert!(text.contains("task_name=\"other\"} 1.5"), "{text}");
        assert!(!text.contains("ignored"), "{text}");
    }
}
