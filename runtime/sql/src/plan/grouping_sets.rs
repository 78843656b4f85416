//! `GROUPING SETS`, `ROLLUP` and `CUBE`: an aggregate over several groupings is the union
//! of one aggregate per grouping set, each row padded with NULL for the columns its set
//! does not group by, and carrying the set's id (`__grouping_id`, which `GROUPING(…)` and
//! `GROUPING_ID(…)` read), as Flink's planner expands them. Each per-set aggregate is an
//! ordinary one (a window aggregate when every set groups by the window, as Flink
//! requires), so state, checkpoints and changelogs are theirs.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    Aggregate, Expr, GroupingSet, LogicalPlan, Projection, Union, utils::enumerate_grouping_sets,
};

/// The union that computes `agg`, when it groups by grouping sets (`None` otherwise).
pub(crate) fn expand(agg: &Aggregate) -> Result<Option<LogicalPlan>, DataFusionError> {
    let group = enumerate_grouping_sets(agg.group_expr.clone())?;
    let [Expr::GroupingSet(gs)] = group.as_slice() else {
        return Ok(None);
    };
    let sets: Vec<Vec<Expr>> = match gs {
        GroupingSet::GroupingSets(sets) => sets.clone(),
        GroupingSet::Rollup(e) => (0..=e.len()).rev().map(|i| e[..i].to_vec()).collect(),
        GroupingSet::Cube(e) => {
            if e.len() > 12 {
                return Err(DataFusionError::Plan(format!(
                    "CUBE of {} columns is {} grouping sets; at most 12 columns",
                    e.len(),
                    1u64 << e.len()
                )));
            }
            (0..1usize << e.len())
                .rev()
                .map(|mask| {
                    (0..e.len())
                        .filter(|i| mask & (1 << (e.len() - 1 - i)) != 0)
                        .map(|i| e[i].clone())
                        .collect()
                })
                .collect()
        }
    };
    let distinct: Vec<Expr> = gs.distinct_expr().into_iter().cloned().collect();
    let n = distinct.len();
    let schema = agg.schema.clone();
    let id_type = schema.field(n).data_type().clone();
    // The same set twice is two sets (rows twice), told apart by an ordinal above the bits.
    let mut seen: HashMap<Vec<bool>, u64> = HashMap::new();
    let mut inputs = Vec::with_capacity(sets.len());
    for set in &sets {
        let absent: Vec<bool> = distinct.iter().map(|d| !set.contains(d)).collect();
        let ordinal = {
            let o = seen.entry(absent.clone()).or_insert(0);
            *o += 1;
            *o - 1
        };
        let id = absent
            .iter()
            .fold(0u64, |acc, a| (acc << 1) | u64::from(*a))
            | (ordinal << n);
        let sub = LogicalPlan::Aggregate(Aggregate::try_new(
            agg.input.clone(),
            set.clone(),
            agg.aggr_expr.clone(),
        )?);
        let sub_schema = sub.schema().clone();
        let mut exprs = Vec::with_capacity(schema.fields().len());
        for (i, d) in distinct.iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(i);
            let e = match set.iter().position(|s| s == d) {
                Some(p) => Expr::Column(sub_schema.qualified_field(p).into()),
                None => Expr::Literal(ScalarValue::try_from(field.data_type())?, None),
            };
            exprs.push(e.alias_qualified(qualifier.cloned(), field.name()));
        }
        let (qualifier, field) = schema.qualified_field(n);
        let id_value = ScalarValue::UInt64(Some(id)).cast_to(&id_type)?;
        exprs.push(Expr::Literal(id_value, None).alias_qualified(qualifier.cloned(), field.name()));
        for j in 0..agg.aggr_expr.len() {
            let (qualifier, field) = schema.qualified_field(n + 1 + j);
            exprs.push(
                Expr::Column(sub_schema.qualified_field(set.len() + j).into())
                    .alias_qualified(qualifier.cloned(), field.name()),
            );
        }
        inputs.push(Arc::new(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(sub),
        )?)));
    }
    Ok(Some(LogicalPlan::Union(Union { inputs, schema })))
}
