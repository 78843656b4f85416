//! What an inner join's operators are told of its condition: the bounds on the two sides'
//! event times ([`TimeBounds`]), where those times are ([`TimeColumns`]), and the comparisons
//! between the two sides that a row pair must pass ([`PairPredicate`]).

use flink_rs_core::rows::Value;

/// Bounds on `left time - right time`, in milliseconds (`None`: open on that end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeBounds {
    pub lower: Option<i64>,
    pub upper: Option<i64>,
}

impl TimeBounds {
    /// Narrows the bounds with `left - right >= v`.
    pub fn at_least(&mut self, v: i64) {
        self.lower = Some(self.lower.map_or(v, |l| l.max(v)));
    }

    /// Narrows the bounds with `left - right <= v`.
    pub fn at_most(&mut self, v: i64) {
        self.upper = Some(self.upper.map_or(v, |u| u.min(v)));
    }

    /// Whether rows of either side are ever removed.
    pub fn bounded(&self) -> bool {
        self.lower.is_some() || self.upper.is_some()
    }
}

/// The event-time columns (indexes into each side's row) the bounds relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeColumns {
    pub left: usize,
    pub right: usize,
}

/// One side of a simple comparison in the join condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Left(usize),
    Right(usize),
    Literal(Value),
}

/// A comparison of two values of the same type (`a.num >= b.maxn`), checked on each candidate
/// pair before the joined row is built; the full condition is still applied after the join.
#[derive(Debug, Clone, PartialEq)]
pub struct PairPredicate {
    pub a: Operand,
    pub op: std::cmp::Ordering,
    /// `op` or equal (`>=`, `<=`); `!=` is `op: Equal, negated`.
    pub or_equal: bool,
    pub negated: bool,
    pub b: Operand,
}

impl PairPredicate {
    pub(crate) fn holds(&self, l: &[Value], r: &[Value]) -> bool {
        self.holds_by(|side, i| if side == 0 { l } else { r }.get(i).cloned())
    }

    /// Whether the comparison holds, reading column `i` of side `side` (0 left, 1 right)
    /// through `value`.
    pub(crate) fn holds_by(&self, value: impl Fn(usize, usize) -> Option<Value>) -> bool {
        let get = |o: &Operand| -> Option<Value> {
            match o {
                Operand::Left(i) => value(0, *i),
                Operand::Right(i) => value(1, *i),
                Operand::Literal(v) => Some(v.clone()),
            }
        };
        let (Some(a), Some(b)) = (get(&self.a), get(&self.b)) else {
            return true;
        };
        if a == Value::Null || b == Value::Null {
            return false; // SQL: a comparison with NULL is not true
        }
        let Some(ord) = a.partial_cmp(&b) else {
            return true; // leave it to the filter after the join
        };
        let hit = ord == self.op || (self.or_equal && ord == std::cmp::Ordering::Equal);
        hit != self.negated
    }
}
