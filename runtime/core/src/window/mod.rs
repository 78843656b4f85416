//! Windows on keyed streams: assigners (tumbling, sliding, session, cumulative), the window
//! functions (incremental aggregation and full-window processing) and the window operator
//! with event-time triggers, allowed lateness and a side output for late records.

mod assigner;
mod functions;
mod operator;
mod sliced;

pub use assigner::{Window, WindowKind, Windows};
pub use functions::{
    AggregateFunction, AggregateLogic, Avg, Count, Max, Min, ProcessLogic, ProcessWindowFunction,
    Reduce, RowRef, Sum, WindowLogic,
};
pub use operator::{WindowOperator, WindowSpec, window_output_schema};
pub use sliced::{SLICED_STATE_LAYOUT, SlicedWindowOperator, slicing};
