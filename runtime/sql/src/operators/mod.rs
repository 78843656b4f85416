//! The streaming operators SQL plans, beside the engine's own (windows, process functions):
//! group aggregation ([`group_aggregate`]), joins on keyed list state
//! ([`keyed_list_join`]: outer joins, joins with a state TTL) or on columnar segments by
//! expiry ([`segment_join`]: the other inner joins) with the join
//! condition they share ([`join_condition`]), ranking ([`rank`]: Top-N, deduplication), and
//! OVER aggregates ([`over_aggregate`]), semi and anti joins ([`semi_join`]).

pub(crate) mod group_aggregate;
pub(crate) mod join_condition;
pub(crate) mod keyed_list_join;
pub(crate) mod over_aggregate;
pub(crate) mod rank;
pub(crate) mod segment_join;
pub(crate) mod semi_join;
