//! From DataFusion's logical plan to the engine's operators.
//!
//! Supported: table scans (with computed columns and window TVFs), projections and filters
//! (DataFusion physical expressions evaluated on each batch), subquery aliases, unions of
//! identical schemas, group aggregation over window TVF rows (COUNT, SUM, MIN, MAX, AVG), also
//! over the rows of other window aggregates, and, on bounded inputs, plain GROUP BY with the
//! final result at end of input; inner joins (regular, interval and window joins, see
//! [`join`]); INSERT INTO a sink table. Everything else is refused with the nearest
//! supported construct.

mod error;
mod expr;
mod grouping_sets;
pub(crate) mod join;
pub(crate) mod over;
pub(crate) mod rank;
mod schema;
mod semi_join;

pub(crate) use error::*;
pub(crate) use expr::*;
pub(crate) use schema::*;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;

use crate::computed_source::ComputedColumns;
use crate::connectors::{self, OptionError};
use crate::ddl::TableDef;
use crate::operators::group_aggregate::{AggKind, GroupAggregate};
use crate::script::{SqlError, Statement};
use crate::window_tvf::{self, WindowTvf};
use flink_rs_core::api::{DataStream, StreamExecutionEnvironment};

/// A declared table: its definition and the schema queries see.
pub struct Table {
    pub def: TableDef,
    /// Physical columns then computed columns.
    pub visible: SchemaRef,
    /// Computed columns as expressions over the physical schema.
    pub computed: Vec<(String, Expr)>,
    pub statement: usize,
}

pub struct Planner<'a> {
    pub env: &'a StreamExecutionEnvironment,
    pub ctx: &'a SessionContext,
    pub tables: HashMap<String, Table>,
    pub windows: usize,
    /// Views by lower-case name, as logical plans (window TVFs may read them).
    pub views: HashMap<String, LogicalPlan>,
    /// Every window TVF of the script (views keep theirs).
    pub all_tvfs: Vec<WindowTvf>,
    /// Row limits of ROW_NUMBER nodes (by address in the plan being translated) that a
    /// `rn <= N` filter above them allows.
    pub top_n: HashMap<usize, usize>,
    /// `execution.runtime-mode = streaming`: plain GROUP BYs update even on bounded input.
    pub streaming_mode: bool,
    /// The stream of each table read so far, by lower-case name.
    pub sources: std::cell::RefCell<HashMap<String, DataStream>>,
    /// `table.optimizer.reuse-source-enabled`: whether scans of one table share its source.
    pub reuse_sources: bool,
    /// `table.optimizer.reuse-sub-plan-enabled`: identical aggregations (the same GROUP BY
    /// over the same input, e.g. q5's two HOP counts) are computed once and shared.
    pub reuse_subplans: bool,
    /// Translated aggregations by [`Planner::subplan_key`].
    pub subplans: std::cell::RefCell<HashMap<String, DataStream>>,
    /// `table.exec.state.ttl` in milliseconds (`None`: state is kept, Flink's default 0).
    pub state_ttl: Option<i64>,
    /// Columns the translated plans read, whole or by field (projection push-down).
    pub field_uses: std::cell::RefCell<FieldUses>,
    /// The nexmark string fields nothing reads (shared with the job's nexmark generators).
    pub unread: flink_rs_connectors::UnreadFields,
}

/// What the plans translated so far read of struct columns, by column name (whatever the
/// table: a name read anywhere counts everywhere, which can only keep more).
#[derive(Default)]
pub struct FieldUses {
    /// Columns read whole (passed on, compared, or used other than through a field).
    whole: std::collections::HashSet<String>,
    /// `(column, field)` read through `column.field`.
    fields: std::collections::HashSet<(String, String)>,
}

impl FieldUses {
    /// Records what `plan` (the whole subtree) reads: every column its expressions name,
    /// `col.field` accesses as fields only.
    pub fn note_plan(&mut self, plan: &LogicalPlan) {
        use datafusion::common::tree_node::TreeNodeRecursion;
        // Subqueries inside expressions too (what the optimizer has not turned into joins).
        let _ = plan.apply_with_subqueries(|node| {
            // Only struct columns matter; a column no input schema knows counts as one.
            let schemas: Vec<&DFSchema> = node
                .inputs()
                .iter()
                .map(|i| i.schema().as_ref())
                .chain(std::iter::once(node.schema().as_ref()))
                .collect();
            let may_be_struct = |c: &datafusion::common::Column| {
                let found: Vec<bool> = schemas
                    .iter()
                    .filter_map(|s| s.qualified_field_from_column(c).ok())
                    .map(|(_, f)| f)
                    .map(|f| matches!(f.data_type(), DataType::Struct(_)))
                    .collect();
                found.is_empty() || found.contains(&true)
            };
            for e in node.expressions() {
                self.note_expr_with(&e, &may_be_struct);
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    /// Records what `e` reads (any column it names may be a struct).
    pub fn note_expr(&mut self, e: &Expr) {
        self.note_expr_with(e, &|_| true);
    }

    fn note_expr_with(
        &mut self,
        e: &Expr,
        may_be_struct: &dyn Fn(&datafusion::common::Column) -> bool,
    ) {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let _ = e.apply(|e| {
            Ok(match e {
                Expr::ScalarFunction(f) if f.name() == "get_field" => match f.args.as_slice() {
                    [Expr::Column(c), Expr::Literal(v, _)] => match v.try_as_str() {
                        Some(Some(name)) => {
                            self.fields.insert((c.name.clone(), name.to_string()));
                            TreeNodeRecursion::Jump
                        }
                        _ => TreeNodeRecursion::Continue,
                    },
                    _ => TreeNodeRecursion::Continue,
                },
                Expr::Column(c) => {
                    if may_be_struct(c) {
                        self.whole.insert(c.name.clone());
                    }
                    TreeNodeRecursion::Continue
                }
                _ => TreeNodeRecursion::Continue,
            })
        });
    }

    /// Records what a plan whose rows go on whole (to a sink, or to a window TVF over a
    /// view) reads: its subtree, and its struct output columns.
    pub fn note_root(&mut self, plan: &LogicalPlan) {
        self.note_plan(plan);
        for f in plan.schema().fields() {
            if matches!(f.data_type(), DataType::Struct(_)) {
                self.whole.insert(f.name().clone());
            }
        }
    }

    /// Whether `path` (`column.field`) is read.
    pub fn reads(&self, path: &str) -> bool {
        let Some((col, field)) = path.split_once('.') else {
            return true;
        };
        self.whole.contains(col) || self.fields.contains(&(col.to_string(), field.to_string()))
    }
}

/// A translated plan node: a stream whose batches have exactly the node's schema.
pub(crate) struct Planned {
    pub(crate) stream: DataStream,
}

/// A sink the caller keeps a handle to.
struct SharedSink(flink_rs_core::source::SinkRef);

impl flink_rs_core::source::Sink for SharedSink {
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
    ) -> flink_rs_core::error::Result<Box<dyn flink_rs_core::source::SinkWriter>> {
        self.0.create_writer(subtask, parallelism, schema)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn empty_table(schema: SchemaRef) -> Result<Arc<MemTable>, DataFusionError> {
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

impl Planner<'_> {
    fn opt_err(&self, st: &Statement, def: &TableDef, e: OptionError) -> SqlError {
        let at = e
            .key
            .as_ref()
            .and_then(|k| def.option_at.get(k).copied())
            .or_else(|| crate::script::find_word(&st.text, "WITH"))
            .unwrap_or(0);
        st.error_at_offset(at, e.message)
    }

    /// `CREATE TABLE`: checks the connector options and registers the visible schema.
    pub fn declare(&mut self, st: &Statement, def: TableDef) -> Result<(), SqlError> {
        let key = def.name.to_ascii_lowercase();
        if self.tables.contains_key(&key) {
            return Err(st.error_near(
                &def.name,
                format!("table `{}` is already declared", def.name),
            ));
        }
        connectors::validate(&def).map_err(|e| self.opt_err(st, &def, e))?;
        let physical_schema =
            connectors::physical_schema(&def).map_err(|e| self.opt_err(st, &def, e))?;
        let df = DFSchema::try_from(physical_schema.as_ref().clone())
            .map_err(|e| df_error(st, &e, 0))?;
        let mut fields: Vec<Field> = physical_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut computed = Vec::new();
        for (name, text, at) in &def.computed {
            let e = self.ctx.parse_sql_expr(text, &df).map_err(|e| {
                st.error_at_offset(
                    *at,
                    format!(
                        "computed column `{name}`: {}",
                        e.to_string().trim_start_matches("Error during planning: ")
                    ),
                )
            })?;
            let (_, field) = e
                .to_field(&df)
                .map_err(|e| st.error_at_offset(*at, format!("computed column `{name}`: {e}")))?;
            let mut dt = field.data_type().clone();
            let mut e = e;
            if def.watermark.as_ref().is_some_and(|(c, _)| c == name) {
                // Event time is kept in milliseconds (TIMESTAMP(3), TIMESTAMP_LTZ(3)).
                match &dt {
                    DataType::Timestamp(TimeUnit::Millisecond, _) => {}
                    DataType::Timestamp(_, tz) => {
                        dt = DataType::Timestamp(TimeUnit::Millisecond, tz.clone());
                        e = Expr::Cast(datafusion::logical_expr::Cast::new(
                            Box::new(e),
                            dt.clone(),
                        ));
                    }
                    other => {
                        return Err(st.error_at_offset(
                            *at,
                            format!(
                                "the watermark column `{name}` must be a TIMESTAMP(3) or TIMESTAMP_LTZ(3), but `{text}` is {other}"
                            ),
                        ));
                    }
                }
            }
            fields.push(Field::new(name, dt, field.is_nullable()));
            computed.push((name.clone(), e));
        }
        let visible = Arc::new(Schema::new(fields));
        let provider = empty_table(visible.clone()).map_err(|e| df_error(st, &e, 0))?;
        self.ctx
            .register_table(def.name.as_str(), provider)
            .map_err(|e| df_error(st, &e, 0))?;
        self.tables.insert(
            key,
            Table {
                def,
                visible,
                computed,
                statement: st.number,
            },
        );
        Ok(())
    }

    fn rewrite(
        &mut self,
        st: &Statement,
        text: &str,
        base: usize,
    ) -> Result<(String, Vec<WindowTvf>), SqlError> {
        // Legacy group windows (`GROUP BY TUMBLE(ts, …)`) first, into the TVFs they mean.
        let legacy = crate::group_window::rewrite(text).map_err(|m| st.error_at_offset(base, m))?;
        let text = legacy.as_deref().unwrap_or(text);
        let (out, tvfs) = window_tvf::rewrite(text, &mut self.windows)
            .map_err(|(at, m)| st.error_at_offset(base + at, m))?;
        for w in &tvfs {
            let schema = if let Some(view) = self.views.get(&w.table.to_ascii_lowercase()) {
                let vs = arrow_schema(view.schema());
                match vs
                    .field_with_name(&w.time_column)
                    .map(|f| f.data_type().clone())
                {
                    Ok(DataType::Timestamp(TimeUnit::Millisecond, _)) => {}
                    Ok(other) => {
                        return Err(st.error_at_offset(base + w.at, format!(
                            "DESCRIPTOR({}) must be a TIMESTAMP(3) event-time column; in view `{}` it is {other}",
                            w.time_column, w.table)));
                    }
                    Err(_) => {
                        return Err(st.error_at_offset(
                            base + w.at,
                            format!("view `{}` has no column `{}`", w.table, w.time_column),
                        ));
                    }
                }
                window_tvf::output_schema(&vs)
            } else {
                let Some(t) = self.tables.get(&w.table.to_ascii_lowercase()) else {
                    return Err(st.error_at_offset(
                        base + w.at,
                        format!("unknown table `{}` in {}", w.table, "the window function"),
                    ));
                };
                match &t.def.watermark {
                    Some((c, _)) if c.eq_ignore_ascii_case(&w.time_column) => {}
                    Some((c, _)) => {
                        return Err(st.error_at_offset(base + w.at, format!(
                            "DESCRIPTOR({}) must name the event-time column of `{}`, which is `{c}` (its WATERMARK)",
                            w.time_column, w.table)));
                    }
                    None => {
                        return Err(st.error_at_offset(base + w.at, format!(
                            "table `{}` has no WATERMARK; windows need event time (add WATERMARK FOR {} AS {} - INTERVAL '1' SECOND)",
                            w.table, w.time_column, w.time_column)));
                    }
                }
                window_tvf::output_schema(&t.visible)
            };
            let provider = empty_table(schema).map_err(|e| df_error(st, &e, base))?;
            self.ctx
                .register_table(w.alias.as_str(), provider)
                .map_err(|e| df_error(st, &e, base))?;
        }
        self.all_tvfs.extend(tvfs.iter().cloned());
        Ok((out, tvfs))
    }

    /// `CREATE VIEW name AS query`.
    pub fn create_view(&mut self, st: &Statement) -> Result<(), SqlError> {
        let (text, _) = self.rewrite(st, &st.text, 0)?;
        let text = text
            .replacen("TEMPORARY ", "", 1)
            .replacen("temporary ", "", 1);
        block_on(self.ctx.sql(&text)).map_err(|e| df_error(st, &e, 0))?;
        // The view's name: the word after VIEW (and IF NOT EXISTS).
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut i = words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("VIEW"))
            .map_or(0, |i| i + 1);
        if words.get(i).is_some_and(|w| w.eq_ignore_ascii_case("IF")) {
            i += 3;
        }
        if let Some(name) = words.get(i) {
            let name = name.trim_matches('"').to_string();
            if let Ok(df) = block_on(self.ctx.table(name.as_str())) {
                self.views
                    .insert(name.to_ascii_lowercase(), df.logical_plan().clone());
            }
        }
        Ok(())
    }

    /// `INSERT INTO sink SELECT …` starting at byte `base` of the statement.
    pub fn insert(&mut self, st: &Statement, base: usize) -> Result<(), SqlError> {
        let (text, tvfs) = self.rewrite(st, &st.text[base..], base)?;
        let state = self.ctx.state();
        let plan =
            block_on(state.create_logical_plan(&text)).map_err(|e| df_error(st, &e, base))?;
        let plan = state.optimize(&plan).map_err(|e| df_error(st, &e, base))?;
        if std::env::var_os("FLINK_RS_DEBUG_PLAN").is_some() {
            eprintln!("{}", plan.display_indent());
        }
        let LogicalPlan::Dml(dml) = &plan else {
            return Err(st.error_at_offset(base, "expected INSERT INTO <table> SELECT …"));
        };
        if !matches!(dml.op, WriteOp::Insert(_)) {
            return Err(st.error_at_offset(
                base,
                format!("{} is not supported; only INSERT INTO", dml.op),
            ));
        }
        let sink_name = dml.table_name.table().to_ascii_lowercase();
        // Everything translated hangs below a query like this one or a window TVF's view:
        // what they read is recorded once, before anything is translated.
        self.note_field_uses(Some(&dml.input), &[]);
        let planned = self.translate(st, base, &tvfs, &dml.input)?;
        let Some(sink) = self.tables.get(&sink_name) else {
            return Err(st.error_near(
                dml.table_name.table(),
                format!("unknown table `{}`", dml.table_name.table()),
            ));
        };
        let def = sink.def.clone();
        if is_updating(&planned.stream) && !connectors::accepts_updates(&def) {
            // The way out depends on why the result updates.
            let hint = if self.bounded_input(&dml.input) {
                "the input is bounded, but in STREAMING runtime mode a GROUP BY without a window updates its result row by row; `SET 'execution.runtime-mode' = 'batch';` writes the final result once, at the end"
            } else {
                "over unbounded input a GROUP BY without a window updates its result for ever; write it to a print, blackhole or upsert-kafka table, or group by a window TVF (TUMBLE, HOP, CUMULATE or SESSION) so that each window's result is final"
            };
            return Err(st.error_near(
                "GROUP",
                format!(
                    "this query produces an updating result, but the `{}` connector of table `{}` accepts inserts only: {hint}",
                    def.options.get("connector").map_or("?", String::as_str),
                    def.name
                ),
            ));
        }
        connectors::sink(&planned.stream, &def).map_err(|e| st.error_near(&def.name, e.message))?;
        Ok(())
    }

    /// A bare `SELECT` (or `WITH … SELECT`), its rows written to `sink`: what the SQL
    /// client shows. An updating result carries its row kinds (`__op`), as for a print table.
    pub fn select(
        &mut self,
        st: &Statement,
        sink: flink_rs_core::source::SinkRef,
    ) -> Result<(), SqlError> {
        let (text, tvfs) = self.rewrite(st, &st.text, 0)?;
        let state = self.ctx.state();
        let plan = block_on(state.create_logical_plan(&text)).map_err(|e| df_error(st, &e, 0))?;
        let plan = state.optimize(&plan).map_err(|e| df_error(st, &e, 0))?;
        let plan = crate::type_rules::without_unsigned(plan).map_err(|e| df_error(st, &e, 0))?;
        self.note_field_uses(Some(&plan), &[]);
        let planned = self.translate(st, 0, &tvfs, &plan)?;
        planned.stream.sink(SharedSink(sink));
        Ok(())
    }

    /// Records what root plan `root` (a query, or a window TVF's view: every translated plan
    /// is one of them or below one) and `exprs` read, and narrows the nexmark generators'
    /// unread fields to match; a field nobody has shown to be unread is written.
    fn note_field_uses(&self, root: Option<&LogicalPlan>, exprs: &[Expr]) {
        let mut uses = self.field_uses.borrow_mut();
        if let Some(plan) = root {
            uses.note_root(plan);
        }
        for e in exprs {
            uses.note_expr(e);
        }
        if let Ok(mut unread) = self.unread.write() {
            *unread = flink_rs_connectors::STRING_FIELDS
                .iter()
                .filter(|f| !uses.reads(f))
                .map(|f| f.to_string())
                .collect();
        }
    }

    /// What identifies a sub-plan's result: its full display (every expression, table,
    /// projection and filter), with each window TVF's synthetic table name replaced by the
    /// TVF itself (its table, time column, kind and partition), so that two TVF calls with
    /// the same arguments read as the same input.
    fn subplan_key(&self, plan: &LogicalPlan, tvfs: &[WindowTvf]) -> String {
        let mut key = plan.display_indent_schema().to_string();
        let mut all: Vec<&WindowTvf> = tvfs.iter().chain(self.all_tvfs.iter()).collect();
        // `__window_10` before `__window_1`.
        all.sort_by_key(|w| std::cmp::Reverse(w.alias.len()));
        for w in all {
            let what = format!(
                "TVF({:?}, {:?}, {:?}, {:?})",
                w.table, w.time_column, w.kind, w.partition
            );
            key = key.replace(&w.alias, &what);
        }
        key
    }

    /// The rows of view `plan` that window TVF `w` reads, narrowed to `keep`, and their
    /// schema; a view with an updating result is refused.
    fn tvf_view(
        &mut self,
        st: &Statement,
        base: usize,
        w: &WindowTvf,
        plan: &LogicalPlan,
        keep: &[String],
    ) -> Result<(DataStream, SchemaRef), SqlError> {
        let plan = self.narrowed_view(plan, keep);
        let all = self.all_tvfs.clone();
        self.note_field_uses(Some(&plan), &[]);
        let s = self.translate(st, base, &all, &plan)?.stream;
        if is_updating(&s) {
            return Err(st.error_at_offset(
                base + w.at,
                format!(
                    "view `{}` is an updating result (a GROUP BY without a window); window TVFs need an append-only input",
                    w.table
                ),
            ));
        }
        Ok((s, arrow_schema(plan.schema())))
    }

    /// A simple view's plan (projections and filters over tables) narrowed to `columns` and
    /// optimized, so that what nobody reads is neither carried, computed nor generated
    /// (DataFusion pushes the projection down). Other views, or a column it does not have:
    /// the plan as it is.
    fn narrowed_view(&self, plan: &LogicalPlan, columns: &[String]) -> LogicalPlan {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let mut simple = true;
        let _ = plan.apply(|n| {
            simple &= matches!(
                n,
                LogicalPlan::Projection(_)
                    | LogicalPlan::Filter(_)
                    | LogicalPlan::TableScan(_)
                    | LogicalPlan::SubqueryAlias(_)
            );
            Ok(TreeNodeRecursion::Continue)
        });
        let cols: Vec<Expr> = columns
            .iter()
            .filter_map(|c| {
                let (q, f) = plan
                    .schema()
                    .qualified_field_with_unqualified_name(c)
                    .ok()?;
                Some(Expr::Column(datafusion::common::Column::new(
                    q.cloned(),
                    f.name(),
                )))
            })
            .collect();
        if !simple || cols.len() != columns.len() {
            return plan.clone();
        }
        datafusion::logical_expr::LogicalPlanBuilder::from(plan.clone())
            .project(cols)
            .and_then(|b| b.build())
            .and_then(|p| self.ctx.state().optimize(&p))
            .unwrap_or_else(|_| plan.clone())
    }

    /// The stream of table `name`: one source per table and job, however many scans read it
    /// (Flink's source reuse): a self-join, or several views over one table, read it once.
    fn source(
        &self,
        st: &Statement,
        base: usize,
        name: &str,
    ) -> Result<(DataStream, &Table), SqlError> {
        if !self.reuse_sources {
            return self.open_source(st, base, name);
        }
        let key = name.to_ascii_lowercase();
        let cached = self.sources.borrow().get(&key).cloned();
        if let (Some(s), Some(t)) = (cached, self.tables.get(&key)) {
            return Ok((s, t));
        }
        let (s, t) = self.open_source(st, base, name)?;
        self.sources.borrow_mut().insert(key, s.clone());
        Ok((s, t))
    }

    fn open_source(
        &self,
        st: &Statement,
        base: usize,
        name: &str,
    ) -> Result<(DataStream, &Table), SqlError> {
        let t = self
            .tables
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| st.error_near(name, format!("unknown table `{name}`")))?;
        // Computed columns are evaluated over the source's columns: in the source itself
        // when the watermark is on one of them, else in a projection after it.
        let computed: Vec<Expr> = t.computed.iter().map(|(_, e)| e.clone()).collect();
        self.note_field_uses(None, &computed);
        let in_source = match &t.def.watermark {
            Some((col, _)) if t.computed.iter().any(|(n, _)| n == col) => {
                Some(self.computed_columns(st, base, t)?)
            }
            _ => None,
        };
        let evaluated_in_source = in_source.is_some();
        let stream =
            connectors::source(self.env, &t.def, &self.unread, in_source).map_err(|e| {
                let at = crate::script::find_word(&st.text[base..], name)
                    .map(|a| a + base)
                    .unwrap_or(base);
                st.error_at_offset(
                    at,
                    format!(
                        "table `{}` (declared in statement {}): {}",
                        t.def.name, t.statement, e.message
                    ),
                )
            })?;
        let stream = stream.name(&format!("Source: {}", t.def.name));
        if t.computed.is_empty() || evaluated_in_source {
            return Ok((stream, t));
        }
        let physical_schema = stream.schema().clone();
        let df = DFSchema::try_from(physical_schema.as_ref().clone())
            .map_err(|e| df_error(st, &e, base))?;
        let mut exprs: Vec<Expr> = physical_schema
            .fields()
            .iter()
            .map(|f| Expr::Column(datafusion::common::Column::from_name(f.name())))
            .collect();
        exprs.extend(t.computed.iter().map(|(_, e)| e.clone()));
        let s = project(&stream, &exprs, &df, t.visible.clone(), "Computed columns")
            .map_err(|e| df_error(st, &e, base))?;
        Ok((s, t))
    }

    /// The table's computed columns as a function of the physical columns a source reads.
    fn computed_columns(
        &self,
        st: &Statement,
        base: usize,
        t: &Table,
    ) -> Result<ComputedColumns, SqlError> {
        let physical_schema =
            connectors::physical_schema(&t.def).map_err(|e| self.opt_err(st, &t.def, e))?;
        let df = DFSchema::try_from(physical_schema.as_ref().clone())
            .map_err(|e| df_error(st, &e, base))?;
        let exprs: Vec<Expr> = physical_schema
            .fields()
            .iter()
            .map(|f| Expr::Column(datafusion::common::Column::from_name(f.name())))
            .chain(t.computed.iter().map(|(_, e)| e.clone()))
            .collect();
        let phys = exprs
            .iter()
            .map(|e| expr::physical(e, &df))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| df_error(st, &e, base))?;
        let schema = t.visible.clone();
        let out = schema.clone();
        Ok(ComputedColumns {
            schema,
            evaluate: Arc::new(move |b| expr::eval_all(&phys, &out, b)),
        })
    }

    pub(crate) fn translate(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        plan: &LogicalPlan,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                let found = tvfs
                    .iter()
                    .chain(self.all_tvfs.iter())
                    .find(|w| w.alias == name)
                    .cloned();
                let (stream, schema) = if let Some(w) = found {
                    if matches!(w.kind, window_tvf::WindowKind::Session { .. }) {
                        return Err(st.error_at_offset(
                            base + w.at,
                            "SESSION windows exist only aggregated: GROUP BY window_start, window_end and the PARTITION BY columns, with COUNT, SUM, MIN, MAX, AVG or COUNT(DISTINCT) of columns",
                        ));
                    }
                    let view = self.views.get(&w.table.to_ascii_lowercase()).cloned();
                    let (s, visible) = match view {
                        Some(plan) => {
                            // Only the view's columns the query reads (and the time).
                            let full = window_tvf::output_schema(&arrow_schema(plan.schema()));
                            let mut keep: Vec<String> = match &scan.projection {
                                Some(p) => p
                                    .iter()
                                    .filter_map(|i| full.fields().get(*i))
                                    .map(|f| f.name().clone())
                                    .filter(|n| plan.schema().has_column_with_unqualified_name(n))
                                    .collect(),
                                None => arrow_schema(plan.schema())
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().clone())
                                    .collect(),
                            };
                            if !keep.contains(&w.time_column) {
                                keep.push(w.time_column.clone());
                            }
                            self.tvf_view(st, base, &w, &plan, &keep)?
                        }
                        None => {
                            let (s, t) = self.source(st, base, &w.table)?;
                            (s, t.visible.clone())
                        }
                    };
                    let out = window_tvf::output_schema(&visible);
                    let ti = visible
                        .index_of(&w.time_column)
                        .map_err(|e| st.error_at_offset(base + w.at, e.to_string()))?;
                    let (kind, out2) = (w.kind, out.clone());
                    let s = s
                        .map_batches(out.clone(), move |b| {
                            window_tvf::assign_batch(kind, ti, &out2, &b)
                        })
                        .name("Window assigner");
                    (s, out)
                } else {
                    let (s, t) = self.source(st, base, name)?;
                    (s, t.visible.clone())
                };
                // The scan's projection indexes the table's full schema (a window TVF over
                // a narrowed view has fewer columns): select by name.
                let full = scan.source.schema();
                let stream = match &scan.projection {
                    Some(p) => {
                        let names: Vec<String> = p
                            .iter()
                            .filter_map(|i| full.fields().get(*i))
                            .map(|f| f.name().clone())
                            .collect();
                        let same = names.len() == schema.fields().len()
                            && names
                                .iter()
                                .zip(schema.fields())
                                .all(|(a, f)| a == f.name());
                        if same {
                            stream
                        } else {
                            stream
                                .select(&names)
                                .map_err(|e| st.error_at_offset(base, e.to_string()))?
                        }
                    }
                    _ => stream,
                };
                if !scan.filters.is_empty() {
                    return Err(
                        st.error_at_offset(base, "internal: filters were pushed into a scan")
                    );
                }
                Ok(Planned { stream })
            }
            LogicalPlan::Projection(p) => {
                let input = self.translate(st, base, tvfs, &p.input)?;
                let out = arrow_schema(&p.schema);
                if is_updating(&input.stream) {
                    // The row kind passes through the projection.
                    let phys: Vec<_> = p
                        .expr
                        .iter()
                        .map(|e| physical(e, p.input.schema()))
                        .collect::<Result<_, _>>()
                        .map_err(dferr)?;
                    let values = out.clone();
                    let out = with_op(out, true);
                    let out2 = out.clone();
                    let s = input.stream.map_batches(out, move |b| {
                        let v = eval_all(&phys, &values, &b)?;
                        let mut cols = v.columns().to_vec();
                        cols.push(b.column(b.num_columns() - 1).clone());
                        Ok(RecordBatch::try_new(out2.clone(), cols)?)
                    });
                    return Ok(Planned {
                        stream: s.name("Calc"),
                    });
                }
                let s = project(&input.stream, &p.expr, p.input.schema(), out, "Calc")
                    .map_err(dferr)?;
                Ok(Planned { stream: s })
            }
            LogicalPlan::Filter(f) => {
                // `rn <= N` over ROW_NUMBER: the ranking keeps N rows per partition.
                for c in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
                    if let Some((w, n)) = Self::window_under_filter(c, &f.input) {
                        self.top_n.insert(std::ptr::from_ref(w) as usize, n);
                    }
                }
                let input = self.translate(st, base, tvfs, &f.input)?;
                let pred = physical(&f.predicate, f.input.schema()).map_err(dferr)?;
                Ok(Planned {
                    stream: filter_stream(&input.stream, pred),
                })
            }
            LogicalPlan::SubqueryAlias(a) => self.translate(st, base, tvfs, &a.input),
            LogicalPlan::Union(u) => {
                let mut parts = Vec::new();
                for i in &u.inputs {
                    parts.push(self.translate(st, base, tvfs, i)?.stream);
                }
                let updating = parts.iter().filter(|p| is_updating(p)).count();
                if updating != 0 && updating != parts.len() {
                    return Err(st.error_near(
                        "UNION",
                        "UNION ALL of an updating result with an append-only one is not supported yet",
                    ));
                }
                let out = with_op(arrow_schema(&u.schema), updating != 0);
                let first = parts.remove(0);
                let s = first
                    .union(&parts)
                    .map_err(|e| st.error_at_offset(base, e.to_string()))?;
                let out2 = out.clone();
                let s = s.map_batches(out, move |b| {
                    Ok(RecordBatch::try_new(out2.clone(), b.columns().to_vec())?)
                });
                Ok(Planned { stream: s })
            }
            LogicalPlan::Aggregate(agg) => {
                if let Some(union) =
                    grouping_sets::expand(agg).map_err(|e| df_error(st, &e, base))?
                {
                    return self.translate(st, base, tvfs, &union);
                }
                let key = self.reuse_subplans.then(|| self.subplan_key(plan, tvfs));
                if let Some(s) = key
                    .as_ref()
                    .and_then(|k| self.subplans.borrow().get(k).cloned())
                {
                    return Ok(Planned { stream: s });
                }
                let planned = self.aggregate(st, base, tvfs, agg)?;
                if let Some(k) = key {
                    self.subplans.borrow_mut().insert(k, planned.stream.clone());
                }
                Ok(planned)
            }
            LogicalPlan::Join(j) => self.join(st, base, tvfs, j),
            LogicalPlan::Window(w) => {
                let limit = self.top_n.get(&(std::ptr::from_ref(w) as usize)).copied();
                self.over_window(st, base, tvfs, w, limit)
            }
            other => {
                let (name, hint) = match other {
                    LogicalPlan::Sort(_) => ("ORDER BY", "streams are unordered; drop ORDER BY"),
                    LogicalPlan::Limit(_) => ("LIMIT", "drop LIMIT"),
                    LogicalPlan::Distinct(_) => ("DISTINCT", "use GROUP BY over a window TVF"),
                    _ => (
                        "this construct",
                        "supported: projections, filters, UNION ALL, window TVFs with GROUP BY window_start, window_end",
                    ),
                };
                let keyword = match other {
                    LogicalPlan::Sort(_) => "ORDER",
                    LogicalPlan::Limit(_) => "LIMIT",
                    LogicalPlan::Distinct(_) => "DISTINCT",
                    _ => "SELECT",
                };
                let at = crate::script::find_word(&st.text[base..], keyword)
                    .or_else(|| crate::script::find_word(&st.text[base..], "FROM"))
                    .map_or(base, |a| a + base);
                Err(st.error_at_offset(
                    at,
                    format!("{name} is not supported in streaming SQL yet: {hint}"),
                ))
            }
        }
    }

    /// Whether every table `plan` reads ends (a row count, a file, a number of events).
    pub(crate) fn bounded_input(&self, plan: &LogicalPlan) -> bool {
        if let LogicalPlan::TableScan(scan) = plan {
            let name = scan.table_name.table();
            let name = match self.all_tvfs.iter().find(|w| w.alias == name) {
                Some(w) => w.table.clone(),
                None => name.to_string(),
            };
            if let Some(view) = self.views.get(&name.to_ascii_lowercase()) {
                return self.bounded_input(view);
            }
            return self
                .tables
                .get(&name.to_ascii_lowercase())
                .is_some_and(|t| {
                    let o = &t.def.options;
                    o.contains_key("number-of-rows")
                        || o.contains_key("events.num")
                        || o.get("connector").is_some_and(|c| c == "filesystem")
                });
        }
        plan.inputs().iter().all(|p| self.bounded_input(p))
    }

    /// The fast path for `GROUP BY window_start, window_end, cols…` directly over a window
    /// TVF (optionally filtered, without window columns in the filter): the engine's window
    /// operator, keyed by the other group columns, with no per-window copies of rows.
    /// `None` when the query has another shape (the generic path handles it).
    fn window_aggregate(
        &mut self,
        st: &Statement,
        base: usize,
        agg: &datafusion::logical_expr::Aggregate,
    ) -> Result<Option<Planned>, SqlError> {
        use crate::operators::group_aggregate::WindowAggregate;
        use crate::window_tvf::WindowKind;
        use flink_rs_core::window::Windows;
        use std::time::Duration;
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let (filter, scan) = match agg.input.as_ref() {
            LogicalPlan::TableScan(s) => (None, s),
            LogicalPlan::Filter(f) => match f.input.as_ref() {
                LogicalPlan::TableScan(s) => (Some(&f.predicate), s),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Some(w) = self
            .all_tvfs
            .iter()
            .find(|w| w.alias == scan.table_name.table())
            .cloned()
        else {
            return Ok(None);
        };
        let is_window = |n: &str| matches!(n, "window_start" | "window_end" | "window_time");
        let mut group_cols = Vec::new();
        for g in &agg.group_expr {
            match g {
                Expr::Column(c) => group_cols.push(c.name.clone()),
                _ => return Ok(None),
            }
        }
        if !group_cols.iter().any(|c| c == "window_start")
            || !group_cols.iter().any(|c| c == "window_end")
        {
            return Ok(None);
        }
        if filter.is_some_and(|p| p.column_refs().iter().any(|c| is_window(&c.name))) {
            return Ok(None);
        }
        let mut aggs = Vec::new();
        for e in &agg.aggr_expr {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(f) = inner else {
                return Ok(None);
            };
            let fname = f.func.name().to_ascii_lowercase();
            if (f.params.distinct && fname != "count")
                || f.params.filter.is_some()
                || f.params.args.len() > 1
            {
                return Ok(None);
            }
            let kind = match fname.as_str() {
                "count" if f.params.distinct => AggKind::CountDistinct,
                "count" => AggKind::Count,
                "sum" => AggKind::Sum,
                "min" => AggKind::Min,
                "max" => AggKind::Max,
                "avg" | "mean" => AggKind::Avg,
                _ => return Ok(None),
            };
            // A cast of a column (AVG's input coercion) reads the column: accumulators work
            // on values, and the output is cast to the planned type at the end.
            let arg_expr = match f.params.args.first() {
                Some(Expr::Cast(c)) => Some(c.expr.as_ref()),
                other => other,
            };
            let arg = match arg_expr {
                Some(Expr::Column(c)) if !is_window(&c.name) => Some(c.name.clone()),
                Some(Expr::Literal(v, _)) if kind == AggKind::Count && !v.is_null() => None,
                None if kind == AggKind::Count => None,
                _ => return Ok(None),
            };
            aggs.push((kind, arg));
        }
        // Keep the columns used: group columns, aggregate arguments, filter columns, time.
        let keys: Vec<String> = group_cols
            .iter()
            .filter(|c| !is_window(c))
            .cloned()
            .collect();
        let mut needed: Vec<String> = Vec::new();
        let mut need = |c: &str| {
            if !needed.iter().any(|n| n == c) {
                needed.push(c.to_string());
            }
        };
        for k in &keys {
            need(k);
        }
        for a in aggs.iter().filter_map(|(_, a)| a.as_deref()) {
            need(a);
        }
        if let Some(p) = filter {
            for c in p.column_refs() {
                need(&c.name);
            }
        }
        need(&w.time_column);
        // The stream before window assignment: the table's (or view's) rows.
        let view = self.views.get(&w.table.to_ascii_lowercase()).cloned();
        let stream = match view {
            Some(plan) => self.tvf_view(st, base, &w, &plan, &needed)?.0,
            None => self.source(st, base, &w.table)?.0,
        };
        let mut stream = stream
            .select(&needed)
            .map_err(|e| st.error_at_offset(base, e.to_string()))?;
        if let Some(p) = filter {
            let schema = stream.schema().as_ref().clone();
            let df = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &schema)
                .map_err(dferr)?;
            let pred = physical(p, &df).map_err(dferr)?;
            stream = filter_stream(&stream, pred);
        }
        let key_cols = if keys.is_empty() {
            stream = stream.with_column(Field::new("__one", DataType::Int64, false), |b| {
                Ok(Arc::new(Int64Array::from(vec![0i64; b.num_rows()])))
            });
            vec!["__one".to_string()]
        } else {
            keys.clone()
        };
        if matches!(w.kind, WindowKind::Session { .. }) {
            let same = |a: &[String], b: &[String]| {
                a.len() == b.len()
                    && a.iter()
                        .all(|x| b.iter().any(|y| y.eq_ignore_ascii_case(x)))
            };
            if !same(&keys, &w.partition) {
                return Err(st.error_at_offset(
                    base + w.at,
                    format!(
                        "a SESSION window aggregate groups by window_start, window_end and exactly the PARTITION BY columns ({}), found ({})",
                        w.partition.join(", "),
                        keys.join(", ")
                    ),
                ));
            }
        }
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        let windows = match w.kind {
            WindowKind::Tumble { size, offset } => {
                Windows::tumbling(ms(size)).with_offset(ms(offset))
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => Windows::sliding(ms(size), ms(slide)).with_offset(ms(offset)),
            WindowKind::Cumulate { step, size } => Windows::cumulative(ms(step), ms(size)),
            WindowKind::Session { gap } => Windows::session(ms(gap)),
        };
        let n_keys = keys.len();
        let windowed = stream
            .key_by(flink_rs_core::key::KeySelector::columns(key_cols))
            .window(windows)
            .sliced_aggregate(WindowAggregate::new(keys.clone(), aggs.clone()))
            .map_err(|e| st.error_at_offset(base, e.to_string()))?;
        // Window output: [key, window_start, window_end, window_time, groups…, aggregates…].
        let mut pick: Vec<usize> = Vec::new();
        for g in &group_cols {
            pick.push(match g.as_str() {
                "window_start" => 1,
                "window_end" => 2,
                "window_time" => 3,
                other => 4 + keys.iter().position(|k| k == other).unwrap_or(0),
            });
        }
        pick.extend((0..aggs.len()).map(|i| 4 + n_keys + i));
        let target = arrow_schema(&agg.schema);
        let t2 = target.clone();
        let out = windowed
            .map_batches(target, move |b| {
                cast_to(pick.iter().map(|i| b.column(*i).clone()), &t2)
            })
            .name("Aggregate output");
        Ok(Some(Planned { stream: out }))
    }

    fn aggregate(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        agg: &datafusion::logical_expr::Aggregate,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        if let Some(p) = self.window_aggregate(st, base, agg)? {
            return Ok(p);
        }
        let input = self.translate(st, base, tvfs, &agg.input)?;
        let in_schema = agg.input.schema();
        // Group expressions, then each aggregate's argument, as columns g0.., a0...
        let mut exprs: Vec<Expr> = agg.group_expr.clone();
        let mut kinds = Vec::new();
        for e in &agg.aggr_expr {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(f) = inner else {
                return Err(st.error_at_offset(base, format!("unsupported aggregate `{e}`")));
            };
            let name = f.func.name().to_ascii_lowercase();
            if f.params.distinct && name != "count" {
                return Err(st.error_near(
                    "DISTINCT",
                    format!(
                        "{}(DISTINCT …) is not supported yet; COUNT(DISTINCT …), COUNT, SUM, MIN, MAX and AVG are",
                        name.to_uppercase()
                    ),
                ));
            }
            let kind = match name.as_str() {
                "count" if f.params.distinct => AggKind::CountDistinct,
                "count" => AggKind::Count,
                "sum" => AggKind::Sum,
                "min" => AggKind::Min,
                "max" => AggKind::Max,
                "avg" | "mean" => AggKind::Avg,
                other => return Err(st.error_near(
                    other,
                    format!(
                        "aggregate function {} is not supported; use COUNT, SUM, MIN, MAX or AVG",
                        other.to_uppercase()
                    ),
                )),
            };
            let mut arg = f.params.args.first().cloned().unwrap_or(Expr::Literal(
                datafusion::common::ScalarValue::Int64(Some(1)),
                None,
            ));
            // `agg(x) FILTER (WHERE p)` is `agg(CASE WHEN p THEN x END)`: every supported
            // aggregate skips NULLs, and a row failing `p` adds a NULL.
            if let Some(p) = &f.params.filter {
                arg = datafusion::logical_expr::when(p.as_ref().clone(), arg)
                    .end()
                    .map_err(dferr)?;
            }
            exprs.push(arg);
            kinds.push(kind);
        }
        let groups = agg.group_expr.len();
        // The window's end among the group columns (traced through views, subqueries and
        // window aggregates below): the aggregate fires per window.
        let window_end = self.window_end_group(agg);
        // Without a window, over unbounded input (or in STREAMING runtime mode) the result
        // is a changelog; over bounded input it is written once, at the end.
        let updating =
            window_end.is_none() && (self.streaming_mode || !self.bounded_input(&agg.input));
        if is_updating(&input.stream) {
            return Err(st.error_near(
                "GROUP",
                "an aggregate over an updating result (a GROUP BY without a window below it) is not supported yet; aggregate once, or over a window TVF",
            ));
        }
        let mut fields = Vec::new();
        for (i, e) in exprs.iter().enumerate() {
            let dt = e.get_type(in_schema).map_err(dferr)?;
            let name = if i < groups {
                format!("g{i}")
            } else {
                format!("a{}", i - groups)
            };
            fields.push(Field::new(name, builder_type(&dt), true));
        }
        fields.push(Field::new("__one", DataType::Int64, false));
        let pre_schema = Arc::new(Schema::new(fields.clone()));
        // The constant `__one` column keys a global aggregate.
        let one = Expr::Literal(datafusion::common::ScalarValue::Int64(Some(0)), None);
        let phys: Vec<_> = exprs
            .iter()
            .chain(std::iter::once(&one))
            .map(|e| physical(e, in_schema))
            .collect::<Result<_, _>>()
            .map_err(dferr)?;
        let pre2 = pre_schema.clone();
        let pre = input
            .stream
            .map_batches(pre_schema, move |b| eval_all(&phys, &pre2, &b))
            .name("Aggregate input");
        let keys: Vec<String> = if groups == 0 {
            vec!["__one".into()]
        } else {
            (0..groups).map(|i| format!("g{i}")).collect()
        };
        let out_fields: Vec<Field> = fields[..groups]
            .iter()
            .cloned()
            .chain(kinds.iter().enumerate().map(|(i, k)| {
                let dt = match k {
                    AggKind::Count => DataType::Int64,
                    AggKind::Avg => DataType::Float64,
                    _ => fields[groups + i].data_type().clone(),
                };
                Field::new(format!("r{i}"), dt, true)
            }))
            .collect();
        let mut out_fields = out_fields;
        if updating {
            out_fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        }
        let out_schema = Arc::new(Schema::new(out_fields));
        let mut f = GroupAggregate::new(groups, kinds, window_end);
        if updating {
            f = f.updating();
            f.ttl = self.state_ttl;
        }
        let ttl_name = f
            .ttl
            .map(|t| format!("GroupAggregate[updating, state ttl {t} ms]"));
        let aggregated = pre
            .key_by(flink_rs_core::key::KeySelector::columns(keys))
            .process(out_schema, f)
            .name(match (window_end, updating, &ttl_name) {
                (Some(_), _, _) => "WindowAggregate",
                (None, true, Some(n)) => n.as_str(),
                (None, true, None) => "GroupAggregate[updating]",
                (None, false, _) => "GroupAggregate[final result at end of input]",
            });
        // Cast to the types DataFusion gave the aggregate's output.
        let target = with_op(arrow_schema(&agg.schema), updating);
        Ok(Planned {
            stream: cast_output(&aggregated, target, "Aggregate output"),
        })
    }
}
