//! Built-in operators other than windows: stateless batch and row transformations, the keyed
//! process operator (state and timers, one or two inputs) and the sink operator.

mod basic;
mod process;
mod sink;

pub use basic::{
    BatchFn, FilterOperator, FlatMapFn, FlatMapRowsOperator, IdentityOperator, MapBatchOperator,
    PredicateFn,
};
pub use process::{ForeignRows, ProcessContext, ProcessFunction, ProcessOperator, RowCollector};
pub use sink::SinkOperator;
