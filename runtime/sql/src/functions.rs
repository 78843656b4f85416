//! Flink SQL's built-in scalar functions that DataFusion lacks or spells differently, so a
//! Flink script runs unchanged: `DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')` (Java date patterns),
//! `SPLIT_INDEX(s, sep, i)` (0-based, NULL past the end), `REGEXP_EXTRACT(s, re, group)`,
//! `TO_TIMESTAMP_LTZ(epoch, precision)` and `MOD(a, b)` (typed as `b`, as Flink types it).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{DataFusionError, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

type DfResult<T> = std::result::Result<T, DataFusionError>;

/// Registers the functions with a planning (or oracle) context, and Flink's result types
/// for `SUM` and `AVG` (`crate::aggregates`).
pub fn register_flink_functions(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(DateFormat::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(SplitIndex::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(RegexpExtract::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(ToTimestampLtz::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Mod::new()));
    for f in crate::aggregates::flink_typed_aggregates() {
        ctx.register_udaf(f);
    }
}

/// An integer literal argument (an `INT` or a `BIGINT`).
fn int_literal(v: &ColumnarValue) -> Option<i64> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Int32(Some(v))) => Some(i64::from(*v)),
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Some(*v),
        _ => None,
    }
}

/// A literal argument, as a string (`None` when it is a column).
fn literal_str(v: &ColumnarValue) -> Option<Option<&str>> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
        ) => Some(s.as_deref()),
        _ => None,
    }
}

/// Turns a Java `SimpleDateFormat` pattern into a chrono format string. Letters: `yyyy`/`yy`,
/// `MM`, `dd`, `HH`, `hh`, `mm`, `ss`, `SSS`, `a`, `EEE`, `MMM`; text in single quotes is
/// copied (`''` is a quote).
pub fn java_date_pattern(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let Some(end) = chars[i + 1..].iter().position(|&x| x == '\'') else {
                return Err(format!("unclosed quote in date pattern `{pattern}`"));
            };
            for &t in &chars[i + 1..i + 1 + end] {
                if t == '%' {
                    out.push_str("%%");
                } else {
                    out.push(t);
                }
            }
            i += end + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let spec = match (c, run) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1 | 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', _) => "%d",
            ('H', _) => "%H",
            ('h', _) => "%I",
            ('m', _) => "%M",
            ('s', _) => "%S",
            ('S', 3) => "%3f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            _ => {
                return Err(format!(
                    "date pattern letter `{}` in `{pattern}` is not supported (use yyyy, yy, MM, MMM, dd, HH, hh, mm, ss, SSS, a, EEE)",
                    chars[i..i + run].iter().collect::<String>()
                ));
            }
        };
        out.push_str(spec);
        i += run;
    }
    Ok(out)
}

/// `DATE_FORMAT(timestamp, pattern)`: the timestamp (UTC wall clock) formatted with a Java
/// date pattern.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    fn new() -> Self {
        let ts = |u| DataType::Timestamp(u, None);
        let sig = [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Microsecond,
            TimeUnit::Nanosecond,
        ]
        .into_iter()
        .map(|u| TypeSignature::Exact(vec![ts(u), DataType::Utf8]))
        .collect();
        DateFormat {
            signature: Signature::one_of(sig, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    /// Checks the pattern while planning, so a bad one is a planning error (with the
    /// statement's position), not a failure of the running job.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        match args.scalar_arguments.get(1) {
            Some(Some(
                ScalarValue::Utf8(p) | ScalarValue::LargeUtf8(p) | ScalarValue::Utf8View(p),
            )) => {
                if let Some(p) = p {
                    java_date_pattern(p).map_err(DataFusionError::Plan)?;
                }
            }
            _ => return plan_err!("DATE_FORMAT's pattern must be a string literal"),
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return exec_err!("DATE_FORMAT takes a timestamp and a pattern");
        };
        let Some(pattern) = literal_str(pattern) else {
            return plan_err!("DATE_FORMAT's pattern must be a string literal");
        };
        let Some(pattern) = pattern else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let fmt = java_date_pattern(pattern).map_err(DataFusionError::Plan)?;
        let array = value.to_array(args.number_rows)?;
        let millis =
            arrow::compute::cast(&array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = millis.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let items = chrono::format::StrftimeItems::new(&fmt)
            .parse()
            .map_err(|_| DataFusionError::Plan(format!("invalid date pattern `{pattern}`")))?;
        let mut b = StringBuilder::with_capacity(millis.len(), millis.len() * fmt.len());
        for i in 0..millis.len() {
            if millis.is_null(i) {
                b.append_null();
                continue;
            }
            match chrono::DateTime::from_timestamp_millis(millis.value(i)) {
                Some(t) => {
                    b.append_value(t.naive_utc().format_with_items(items.iter()).to_string())
                }
                None => b.append_null(),
            }
        }
        let out: ArrayRef = Arc::new(b.finish());
        Ok(ColumnarValue::Array(out))
    }
}

/// `SPLIT_INDEX(s, separator, index)`: the `index`-th (0-based) piece of `s` split at
/// `separator`; NULL when there are not that many.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    fn new() -> Self {
        SplitIndex {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        if args.len() != 3 {
            return plan_err!("SPLIT_INDEX takes a string, a separator and an index");
        }
        Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value, sep, index] = args.args.as_slice() else {
            return exec_err!("SPLIT_INDEX takes a string, a separator and an index");
        };
        let n = args.number_rows;
        let (values, seps, idx) = (value.to_array(n)?, sep.to_array(n)?, index.to_array(n)?);
        let (values, seps) = (values.as_string::<i32>(), seps.as_string::<i32>());
        let idx = idx.as_primitive::<arrow::datatypes::Int64Type>();
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for i in 0..n {
            if values.is_null(i) || seps.is_null(i) || idx.is_null(i) || idx.value(i) < 0 {
                b.append_null();
                continue;
            }
            let sep = seps.value(i);
            let piece = if sep.is_empty() {
                None
            } else {
                values.value(i).split(sep).nth(idx.value(i) as usize)
            };
            b.append_option(piece);
        }
        let out: ArrayRef = Arc::new(b.finish());
        Ok(ColumnarValue::Array(out))
    }
}

/// `REGEXP_EXTRACT(s, regex [, group])`: the text of capture group `group` (default 1; 0 is
/// the whole match) of the first match; NULL without a match.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    fn new() -> Self {
        RegexpExtract {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        match args.len() {
            2 => Ok(vec![DataType::Utf8, DataType::Utf8]),
            3 => Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64]),
            _ => plan_err!("REGEXP_EXTRACT takes a string, a regular expression and a group"),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let (value, re) = match args.args.as_slice() {
            [v, r] | [v, r, _] => (v, r),
            _ => {
                return exec_err!(
                    "REGEXP_EXTRACT takes a string, a regular expression and a group"
                );
            }
        };
        let group = match args.args.get(2) {
            None => 1usize,
            Some(g) => match int_literal(g).and_then(|g| usize::try_from(g).ok()) {
                Some(g) => g,
                None => {
                    return plan_err!(
                        "REGEXP_EXTRACT's group must be a non-negative integer literal"
                    );
                }
            },
        };
        let Some(re) = literal_str(re) else {
            return plan_err!("REGEXP_EXTRACT's regular expression must be a string literal");
        };
        let Some(re) = re else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let re = regex::Regex::new(re)
            .map_err(|e| DataFusionError::Plan(format!("REGEXP_EXTRACT: {e}")))?;
        let values = value.to_array(n)?;
        let values = values.as_string::<i32>();
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for i in 0..n {
            if values.is_null(i) {
                b.append_null();
                continue;
            }
            let m = re
                .captures(values.value(i))
                .and_then(|c| c.get(group))
                .map(|m| m.as_str());
            b.append_option(m);
        }
        let out: ArrayRef = Arc::new(b.finish());
        Ok(ColumnarValue::Array(out))
    }
}

/// `TO_TIMESTAMP_LTZ(epoch [, precision])`: epoch seconds (precision 0) or milliseconds
/// (precision 3, the default) as a `TIMESTAMP_LTZ(3)`, as in Flink; the usual source of an
/// event-time column (`ts AS TO_TIMESTAMP_LTZ(epoch_ms, 3)`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestampLtz {
    signature: Signature,
}

impl ToTimestampLtz {
    fn new() -> Self {
        ToTimestampLtz {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ToTimestampLtz {
    fn name(&self) -> &str {
        "to_timestamp_ltz"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        let usage = "TO_TIMESTAMP_LTZ takes an integer epoch and a precision, 0 (seconds) or 3 (milliseconds)";
        match args {
            [epoch] | [epoch, _] if !epoch.is_integer() && !epoch.is_null() => {
                plan_err!("{usage}, not {epoch}")
            }
            [_] => Ok(vec![DataType::Int64]),
            [_, _] => Ok(vec![DataType::Int64, DataType::Int64]),
            _ => plan_err!("{usage}"),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some("UTC".into()),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let per_unit = match args.args.get(1) {
            None => 1,
            Some(p) if int_literal(p) == Some(3) => 1,
            Some(p) if int_literal(p) == Some(0) => 1_000,
            Some(other) => {
                return exec_err!(
                    "TO_TIMESTAMP_LTZ's precision must be the literal 0 (seconds) or 3 (milliseconds), not {other:?}"
                );
            }
        };
        let Some(epoch) = args.args.first() else {
            return exec_err!("TO_TIMESTAMP_LTZ takes an epoch");
        };
        let epoch = epoch.to_array(n)?;
        let millis: arrow::array::TimestampMillisecondArray = epoch
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|v| v.and_then(|v| v.checked_mul(per_unit)))
            .collect();
        let out: ArrayRef = Arc::new(millis.with_timezone("UTC"));
        Ok(ColumnarValue::Array(out))
    }
}

/// `MOD(a, b)` of integers: the remainder of `a / b` with the sign of `a`, typed as `b` (the
/// remainder always fits it), as Flink (Calcite) types it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        match args {
            [a, b] if (a.is_integer() || a.is_null()) && (b.is_integer() || b.is_null()) => {
                Ok(args.to_vec())
            }
            _ => plan_err!("MOD takes two integers, not {args:?}"),
        }
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args {
            [_, b] if b.is_integer() => Ok(b.clone()),
            _ => Ok(DataType::Int32),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let to = args.return_field.data_type().clone();
        let [a, b] = args.args.as_slice() else {
            return exec_err!("MOD takes two integers");
        };
        let wide = |v: &ColumnarValue| -> DfResult<ArrayRef> {
            Ok(arrow::compute::cast(&v.to_array(n)?, &DataType::Int64)?)
        };
        let rem = arrow::compute::kernels::numeric::rem(&wide(a)?, &wide(b)?)?;
        Ok(ColumnarValue::Array(arrow::compute::cast(&rem, &to)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(java_date_pattern("yyyy-MM-dd").as_deref(), Ok("%Y-%m-%d"));
        assert_eq!(java_date_pattern("HH:mm").as_deref(), Ok("%H:%M"));
        assert_eq!(
            java_date_pattern("yy/MMM/dd hh:mm:ss.SSS a").as_deref(),
            Ok("%y/%b/%d %I:%M:%S.%3f %p")
        );
        assert_eq!(
            java_date_pattern("yyyy'T'HH '100%' ''").as_deref(),
            Ok("%YT%H 100%% '")
        );
        let e = java_date_pattern("yyyy-ww");
        assert!(matches!(&e, Err(m) if m.contains("`ww`")), "{e:?}");
        assert!(java_date_pattern("'open").is_err());
    }

    #[tokio::test]
    async fn functions_give_flinks_results() -> DfResult<()> {
        let ctx = SessionContext::new();
        register_flink_functions(&ctx);
        let df = ctx
            .sql(
                "SELECT date_format(to_timestamp_millis(1700000000123), 'yyyy-MM-dd HH:mm:ss.SSS'),
                        date_format(to_timestamp_millis(0), 'dd.MM.yy'),
                        split_index('a/b/c', '/', 1), split_index('a/b/c', '/', 3) IS NULL,
                        split_index('a/b/c', '/', -1) IS NULL,
                        regexp_extract('x&channel_id=42&y', '(&|^)channel_id=([^&]*)', 2),
                        regexp_extract('abc', 'z(.)') IS NULL, regexp_extract('abc', 'b(.)')",
            )
            .await?;
        let batches = df.collect().await?;
        let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        let row: Vec<&str> = text
            .lines()
            .nth(3)
            .unwrap_or_default()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            row,
            [
                "2023-11-14 22:13:20.123",
                "01.01.70",
                "b",
                "true",
                "true",
                "42",
                "true",
                "c"
            ],
            "{text}"
        );
        Ok(())
    }
}
