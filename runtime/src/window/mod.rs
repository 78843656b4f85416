//! Windows on keyed streams: assigners (tumbling, sliding, session, cumulative), the window
//! functions (incremental aggregation and full-window processing) and the window operator
//! with event-time triggers, allowed lateness and a side output for late records.

mod assigner;
mod functions;
mod operator;

pub use assigner::{Window, WindowKind, Windows};
pub use functions::{
    AggregateFunction, Avg, Count, Max, Min, ProcessWindowFunction, Reduce, RowRef, Sum,
    WindowLogic,
};
pub(crate) use functions::{AggregateLogic, ProcessLogic};
pub use operator::{WindowOperator, WindowSpec, window_output_schema};
