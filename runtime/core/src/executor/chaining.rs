//! Graph validation and chaining: what the executor checks of a [`JobGraph`] before
//! anything runs, and which operators share a task.
//!
//! Chaining rule (Flink's): node B joins the chain of A when A→B is A's only output, B's only
//! input, a forward edge of the main output, and both have the same parallelism.

use crate::error::{Error, Result};
use crate::graph::{JobGraph, NodeId, NodeKind, Partitioning};

/// Checks what the executor relies on, with messages naming the offending node.
pub fn validate(graph: &JobGraph) -> Result<()> {
    for (i, n) in graph.nodes.iter().enumerate() {
        if n.id != i {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has id {} at position {i}",
                n.name, n.id
            )));
        }
        if n.parallelism == 0 {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has parallelism 0",
                n.name
            )));
        }
        if n.parallelism > usize::from(graph.config.max_parallelism) {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has parallelism {} above max parallelism {}",
                n.name, n.parallelism, graph.config.max_parallelism
            )));
        }
        let has_inputs = graph.inputs(i).next().is_some();
        match n.kind {
            NodeKind::Source { .. } if has_inputs => {
                return Err(Error::InvalidGraph(format!(
                    "source `{}` has inputs",
                    n.name
                )));
            }
            NodeKind::Operator(_) if !has_inputs => {
                return Err(Error::InvalidGraph(format!(
                    "operator `{}` has no input",
                    n.name
                )));
            }
            _ => {}
        }
    }
    for e in &graph.edges {
        if e.from >= e.to || e.to >= graph.nodes.len() {
            return Err(Error::InvalidGraph(format!(
                "edge {} -> {} is not forward in the graph",
                e.from, e.to
            )));
        }
        if matches!(e.partitioning, Partitioning::Forward)
            && graph.nodes[e.from].parallelism != graph.nodes[e.to].parallelism
        {
            return Err(Error::InvalidGraph(format!(
                "forward edge `{}` -> `{}` joins different parallelisms ({} and {}); use rebalance",
                graph.nodes[e.from].name,
                graph.nodes[e.to].name,
                graph.nodes[e.from].parallelism,
                graph.nodes[e.to].parallelism
            )));
        }
    }
    Ok(())
}

/// Groups nodes into chains; returns the chains (lists of node ids, head first).
pub fn chains(graph: &JobGraph) -> Vec<Vec<NodeId>> {
    let mut chain_of: Vec<usize> = Vec::with_capacity(graph.nodes.len());
    let mut chains: Vec<Vec<NodeId>> = Vec::new();
    for n in &graph.nodes {
        let ins: Vec<_> = graph.inputs(n.id).collect();
        let joined = match ins.as_slice() {
            [e] if graph.config.chaining
                && matches!(e.partitioning, Partitioning::Forward)
                && e.side_output.is_none()
                && e.input == 0
                && graph.outputs(e.from).count() == 1
                && graph.nodes[e.from].parallelism == n.parallelism =>
            {
                Some(chain_of[e.from])
            }
            _ => None,
        };
        match joined {
            Some(c) => {
                chains[c].push(n.id);
                chain_of.push(c);
            }
            None => {
                chain_of.push(chains.len());
                chains.push(vec![n.id]);
            }
        }
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StreamExecutionEnvironment;
    use crate::testing::SequenceSource;

    /// source → filter ⇒ rebalance ⇒ filter → collect, at parallelism 2.
    fn pipeline(chaining: bool) -> JobGraph {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        env.configure(|c| c.chaining = chaining);
        let _ = env
            .from_source(SequenceSource::new(10, 5), None)
            .filter_rows(|_| true)
            .rebalance()
            .filter_rows(|_| true)
            .collect();
        env.graph()
    }

    #[test]
    fn forward_edges_of_equal_parallelism_chain_and_a_rebalance_breaks_the_chain() {
        let g = pipeline(true);
        validate(&g).expect("a well-formed graph");
        let c = chains(&g);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].first(), Some(&0), "the source heads the first chain");
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), g.nodes.len());
        // Each chain is a run of forward edges: no edge inside a chain redistributes.
        for chain in &c {
            for w in chain.windows(2) {
                let e = g
                    .edges
                    .iter()
                    .find(|e| e.from == w[0] && e.to == w[1])
                    .expect("chained nodes are joined by an edge");
                assert!(matches!(e.partitioning, Partitioning::Forward));
            }
        }
    }

    #[test]
    fn without_chaining_every_operator_is_its_own_task() {
        let g = pipeline(false);
        assert_eq!(chains(&g).len(), g.nodes.len());
    }

    #[test]
    fn a_forward_edge_between_parallelisms_is_refused_naming_both_nodes() {
        let mut g = pipeline(true);
        let sink = g.nodes.len() - 1;
        g.nodes[sink].parallelism = 1;
        let e = validate(&g).expect_err("forward edge 2 -> 1");
        let msg = e.to_string();
        assert!(
            msg.contains("forward edge") && msg.contains("use rebalance"),
            "{msg}"
        );
    }

    #[test]
    fn parallelism_above_the_key_groups_and_zero_are_refused() {
        let mut g = pipeline(true);
        g.config.max_parallelism = 1;
        let msg = validate(&g).expect_err("2 > 1").to_string();
        assert!(msg.contains("above max parallelism 1"), "{msg}");
        let mut g = pipeline(true);
        for n in &mut g.nodes {
            n.parallelism = 0;
        }
        let msg = validate(&g).expect_err("parallelism 0").to_string();
        assert!(msg.contains("parallelism 0"), "{msg}");
    }
}
