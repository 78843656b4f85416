//! Planning semi and anti joins: `WHERE k IN (SELECT …)` and `[NOT] EXISTS (SELECT … WHERE
//! a.k = b.k)`, which DataFusion plans as LEFT SEMI / LEFT ANTI joins on the equalities.

use datafusion::common::DataFusionError;
use datafusion::logical_expr::{ExprSchemable, Join, JoinType};

use crate::operators::semi_join::SemiJoin;
use crate::plan::join::{key_type, with_join_keys};
use crate::plan::{Planned, Planner};
use crate::plan::{arrow_schema, cast_output, df_error, is_updating, rows_schema};
use crate::script::{SqlError, Statement};
use crate::window_tvf::WindowTvf;
use flink_rs_core::key::KeySelector;

impl Planner<'_> {
    /// A semi or anti join (`join_word`: where the statement shows it, for errors).
    pub(crate) fn semi_join(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        j: &Join,
        join_word: usize,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let fail = |m: &str| st.error_at_offset(join_word, m.to_string());
        let (kept, anti) = match j.join_type {
            JoinType::LeftSemi => (0, false),
            JoinType::RightSemi => (1, false),
            JoinType::LeftAnti => (0, true),
            _ => (1, true),
        };
        if j.null_aware {
            return Err(fail(
                "NOT IN (SELECT …) is not supported: a NULL anywhere in the subquery empties its result, which needs the whole subquery at once; write NOT EXISTS (SELECT … WHERE a.k = b.k)",
            ));
        }
        if j.on.is_empty() {
            return Err(fail(
                "an IN/EXISTS subquery needs an equality between the two sides (a.k = b.k) here",
            ));
        }
        if j.filter.is_some() {
            return Err(fail(
                "an IN/EXISTS subquery may relate the two sides by equalities only here; move other conditions into the subquery's own WHERE",
            ));
        }
        if anti
            && (self.streaming_mode
                || !self.bounded_input(&j.left)
                || !self.bounded_input(&j.right))
        {
            return Err(fail(
                "NOT EXISTS over unbounded input is an updating result (a row comes out, then is retracted when a match arrives); it is supported over bounded input in batch mode",
            ));
        }
        let (ls, rs) = (j.left.schema().clone(), j.right.schema().clone());
        let left = self.translate(st, base, tvfs, &j.left)?.stream;
        let right = self.translate(st, base, tvfs, &j.right)?.stream;
        if is_updating(&left) || is_updating(&right) {
            return Err(fail(
                "an IN/EXISTS subquery over an updating result (a GROUP BY without a window) is not supported yet",
            ));
        }
        let key_types =
            j.on.iter()
                .map(|(l, r)| Ok(key_type(&l.get_type(&ls)?, &r.get_type(&rs)?)))
                .collect::<Result<Vec<_>, DataFusionError>>()
                .map_err(dferr)?;
        let (left, lk) =
            with_join_keys(&left, &ls, j.on.iter().map(|(l, _)| l), &key_types).map_err(dferr)?;
        let (right, rk) =
            with_join_keys(&right, &rs, j.on.iter().map(|(_, r)| r), &key_types).map_err(dferr)?;
        let widths = [ls.fields().len(), rs.fields().len()];
        let target = arrow_schema(&j.schema);
        let side = if kept == 0 { "Left" } else { "Right" };
        let name = match (anti, self.state_ttl) {
            (false, None) => format!("{side}SemiJoin"),
            (false, Some(ttl)) => format!("{side}SemiJoin[state ttl {ttl} ms]"),
            (true, None) => format!("{side}AntiJoin[at end of input]"),
            (true, Some(ttl)) => format!("{side}AntiJoin[at end of input, state ttl {ttl} ms]"),
        };
        let mut f = SemiJoin::new(kept, widths, anti);
        f.ttl = self.state_ttl;
        let joined = left
            .key_by(KeySelector::columns(lk))
            .connect(&right.key_by(KeySelector::columns(rk)))
            .process(rows_schema(&target), f)
            .name(&name);
        Ok(Planned {
            stream: cast_output(&joined, target, "Calc[semi join output]"),
        })
    }
}
