//! Flink's legacy group windows, `GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)` with
//! `TUMBLE_START(…)`, `TUMBLE_END(…)` and `TUMBLE_ROWTIME(…)` (and the same for `HOP(ts,
//! slide, size)` and `SESSION(ts, gap)`), rewritten into the window TVF they mean:
//!
//! ```sql
//! SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS ws, auction, COUNT(*)
//! FROM bids WHERE price > 10 GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), auction
//! -- is planned as
//! SELECT window_start AS ws, auction, COUNT(*)
//! FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) WHERE price > 10
//! GROUP BY window_start, window_end, auction
//! ```
//!
//! `*_END` is the window's exclusive end (`window_end`) and `*_ROWTIME` its last instant
//! (`window_time`), as in Flink. A legacy `SESSION` window groups sessions per key: the
//! other GROUP BY columns become the TVF's `PARTITION BY`. The window must be over one table
//! or view (what Flink's planner also requires of an event-time attribute that has not lost
//! its watermark); anything else is an error naming the construct.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, Query,
    Select, SetExpr, Statement, TableFactor, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

const KINDS: [&str; 3] = ["TUMBLE", "HOP", "SESSION"];

/// `text` with its legacy group windows rewritten; `None` when it has none (or is not a
/// query sqlparser reads, which the planner then reports itself).
pub fn rewrite(text: &str) -> Result<Option<String>, String> {
    // A group window is in a GROUP BY: only such statements are parsed here.
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    if !words.windows(2).any(|w| w == ["GROUP", "BY"]) {
        return Ok(None);
    }
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, text) else {
        return Ok(None);
    };
    let [statement] = statements.as_mut_slice() else {
        return Ok(None);
    };
    let mut tvfs = Vec::new();
    match statement {
        Statement::Query(q) => query(q, &mut tvfs)?,
        Statement::Insert(insert) => {
            if let Some(q) = insert.source.as_mut() {
                query(q, &mut tvfs)?;
            }
        }
        _ => return Ok(None),
    }
    if tvfs.is_empty() {
        return Ok(None);
    }
    let mut out = statement.to_string();
    for (placeholder, tvf) in &tvfs {
        out = out.replacen(placeholder.as_str(), tvf, 1);
    }
    Ok(Some(out))
}

fn query(q: &mut Query, tvfs: &mut Vec<(String, String)>) -> Result<(), String> {
    if let Some(with) = q.with.as_mut() {
        for cte in &mut with.cte_tables {
            query(&mut cte.query, tvfs)?;
        }
    }
    set_expr(&mut q.body, tvfs)
}

fn set_expr(body: &mut SetExpr, tvfs: &mut Vec<(String, String)>) -> Result<(), String> {
    match body {
        SetExpr::Select(s) => select(s, tvfs),
        SetExpr::Query(q) => query(q, tvfs),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left, tvfs)?;
            set_expr(right, tvfs)
        }
        _ => Ok(()),
    }
}

/// The name of a call to a function without a schema, upper-cased.
fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) if f.name.0.len() == 1 => Some(f.name.to_string().to_ascii_uppercase()),
        _ => None,
    }
}

fn function_args(e: &Expr) -> Vec<Expr> {
    let Expr::Function(f) = e else {
        return Vec::new();
    };
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.to_string()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.to_string()),
        _ => None,
    }
}

fn select(s: &mut Select, tvfs: &mut Vec<(String, String)>) -> Result<(), String> {
    // Windows in subqueries of the FROM clause first.
    for t in &mut s.from {
        if let TableFactor::Derived { subquery, .. } = &mut t.relation {
            query(subquery, tvfs)?;
        }
        for j in &mut t.joins {
            if let TableFactor::Derived { subquery, .. } = &mut j.relation {
                query(subquery, tvfs)?;
            }
        }
    }
    let GroupByExpr::Expressions(groups, _) = &mut s.group_by else {
        return Ok(());
    };
    let windows: Vec<usize> = groups
        .iter()
        .enumerate()
        .filter(|(_, e)| function_name(e).is_some_and(|n| KINDS.contains(&n.as_str())))
        .map(|(i, _)| i)
        .collect();
    let at = match windows.as_slice() {
        [] => return Ok(()),
        [i] => *i,
        _ => {
            return Err(
                "a GROUP BY takes at most one group window (TUMBLE, HOP or SESSION)".into(),
            );
        }
    };
    let call = groups.remove(at);
    let kind = function_name(&call).unwrap_or_default();
    let args = function_args(&call);
    let expected = if kind == "HOP" { 3 } else { 2 };
    if args.len() != expected {
        return Err(format!(
            "the group window {kind} takes {} arguments (the event-time column, {}), found {}",
            expected,
            match kind.as_str() {
                "HOP" => "the slide and the size",
                "SESSION" => "the gap",
                _ => "the size",
            },
            args.len()
        ));
    }
    let Some(time) = column_name(&args[0]) else {
        return Err(format!(
            "the first argument of the group window {kind} must be the event-time column, found `{}`",
            args[0]
        ));
    };
    let partition = if kind == "SESSION" {
        let keys: Option<Vec<String>> = groups.iter().map(column_name).collect();
        match keys {
            Some(k) if k.is_empty() => String::new(),
            Some(k) => format!(" PARTITION BY {}", k.join(", ")),
            None => {
                return Err(
                    "a SESSION group window groups by columns only (they become its PARTITION BY)"
                        .into(),
                );
            }
        }
    } else {
        String::new()
    };
    groups.insert(at, Expr::Identifier(Ident::new("window_end")));
    groups.insert(at, Expr::Identifier(Ident::new("window_start")));
    let table = match s.from.as_mut_slice() {
        [t] if t.joins.is_empty() => match &mut t.relation {
            TableFactor::Table { name, .. } => name,
            _ => {
                return Err(format!(
                    "a group window {kind}(…) needs a table or view in FROM; over a subquery, use the window TVF TABLE({kind}(TABLE …, DESCRIPTOR({time}), …))"
                ));
            }
        },
        _ => {
            return Err(format!(
                "a group window {kind}(…) reads one table or view; over a join, window each side with a TVF"
            ));
        }
    };
    let placeholder = format!("__group_window_{}", tvfs.len());
    let rest: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
    tvfs.push((
        placeholder.clone(),
        format!(
            "TABLE({kind}(TABLE {table}{partition}, DESCRIPTOR({time}), {}))",
            rest.join(", ")
        ),
    ));
    *table = ObjectName::from(vec![Ident::new(placeholder)]);
    // TUMBLE_START(…) and the like, wherever the SELECT list, HAVING or QUALIFY use them.
    let mut wrong = None;
    let mut aux = |e: &mut Expr| {
        if let Some(name) = function_name(e) {
            if let Some((k, part)) = name.rsplit_once('_') {
                let column = match part {
                    "START" => Some("window_start"),
                    "END" => Some("window_end"),
                    "ROWTIME" => Some("window_time"),
                    _ => None,
                };
                if let (true, Some(column)) = (KINDS.contains(&k), column) {
                    if k != kind {
                        wrong = Some(format!("{name}(…) in a query grouped by {kind}(…)"));
                    }
                    *e = Expr::Identifier(Ident::new(column));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    };
    for item in &mut s.projection {
        let _ = visit_expressions_mut(item, &mut aux);
    }
    if let Some(h) = s.having.as_mut() {
        let _ = visit_expressions_mut(h, &mut aux);
    }
    match wrong {
        Some(w) => Err(w),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn legacy_windows_become_window_tvfs() {
        let cases = [
            (
                "SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS ws, auction, COUNT(*) FROM bids WHERE price > 10 GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), auction",
                "SELECT window_start AS ws, auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) WHERE price > 10 GROUP BY window_start, window_end, auction",
            ),
            (
                "INSERT INTO out SELECT HOP_END(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE), HOP_ROWTIME(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE), SUM(price) FROM bids b GROUP BY HOP(b.ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE) HAVING HOP_START(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE) > TIMESTAMP '2024-01-01 00:00:00'",
                "INSERT INTO out SELECT window_end, window_time, SUM(price) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE)) b GROUP BY window_start, window_end HAVING window_start > TIMESTAMP '2024-01-01 00:00:00'",
            ),
            (
                "SELECT bidder, SESSION_START(ts, INTERVAL '5' SECOND), COUNT(*) FROM bids GROUP\n  BY bidder, SESSION(ts, INTERVAL '5' SECOND)",
                "SELECT bidder, window_start, COUNT(*) FROM TABLE(SESSION(TABLE bids PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY bidder, window_start, window_end",
            ),
        ];
        for (legacy, tvf) in cases {
            let got = rewrite(legacy).expect("rewrites").expect("has a window");
            assert_eq!(squash(&got), squash(tvf));
        }
        assert_eq!(
            rewrite("SELECT auction, COUNT(*) FROM bids GROUP BY auction").expect("ok"),
            None
        );
    }

    #[test]
    fn what_a_group_window_cannot_read_is_an_error() {
        for (sql, message) in [
            (
                "SELECT COUNT(*) FROM a JOIN b ON a.k = b.k GROUP BY TUMBLE(a.ts, INTERVAL '1' MINUTE)",
                "over a join",
            ),
            (
                "SELECT COUNT(*) FROM bids GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), HOP(ts, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE)",
                "at most one group window",
            ),
            (
                "SELECT COUNT(*) FROM bids GROUP BY HOP(ts, INTERVAL '1' MINUTE)",
                "takes 3 arguments",
            ),
            (
                "SELECT HOP_START(ts, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE) FROM bids GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)",
                "HOP_START(…) in a query grouped by TUMBLE(…)",
            ),
        ] {
            let e = rewrite(sql).expect_err(sql);
            assert!(e.contains(message), "{sql}: {e}");
        }
    }
}
