//! Typed handles over a [`KeyedStore`], scoped to the current key through [`KeyedContext`].
//!
//! A function registers its states once (in `open`, through [`StateRegistry`]) and gets small
//! `Copy`-able handles; every access passes the context that knows the current key, key group
//! and namespace, so a handle can never touch another key's state.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::{KeyedStore, Namespace, StateId, StateValue, TimeDomain, TimerService, codec};
use crate::element::Timestamp;
use crate::key::{Key, KeyGroup};

/// When a TTL'd value's clock restarts (Flink's `StateTtlConfig.UpdateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlUpdate {
    /// On creation and every write.
    OnCreateAndWrite,
    /// On creation, every write and every read.
    OnReadAndWrite,
}

/// Time-to-live of state values, in processing time. Expired values are never returned
/// (`NeverReturnExpired`) and are removed when next touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtlConfig {
    pub ttl: Duration,
    pub update: TtlUpdate,
}

impl StateTtlConfig {
    /// A TTL refreshed on create and write.
    pub fn new(ttl: Duration) -> Self {
        StateTtlConfig {
            ttl,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }

    /// Refresh on reads too.
    pub fn refresh_on_read(mut self) -> Self {
        self.update = TtlUpdate::OnReadAndWrite;
        self
    }
}

pub(crate) struct TtlCell<T> {
    pub(crate) value: T,
    pub(crate) stamp: Timestamp,
}

/// What a keyed function sees while it handles one element or timer: the current key, time,
/// timers, and the state of that key.
pub struct KeyedContext<'a> {
    pub(crate) store: &'a mut dyn KeyedStore,
    pub(crate) timers: &'a mut TimerService,
    pub(crate) key: &'a Key,
    pub(crate) kg: KeyGroup,
    pub(crate) ns: Namespace,
    pub(crate) now: Timestamp,
    pub(crate) watermark: Timestamp,
    pub(crate) timestamp: Option<Timestamp>,
}

impl KeyedContext<'_> {
    /// The key being processed.
    pub fn current_key(&self) -> &Key {
        self.key
    }

    /// Event time of the element being processed (or the firing time inside a timer).
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The processing-time clock (epoch ms).
    pub fn processing_time(&self) -> Timestamp {
        self.now
    }

    /// Runs `f` with the current key's state scoped to `ns`: a key's state is kept per
    /// namespace (a window's, or any slice a function chooses, such as the rows of one
    /// timestamp), each stored and loaded apart. Timers registered inside carry `ns` too.
    pub fn with_namespace<R>(&mut self, ns: Namespace, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = std::mem::replace(&mut self.ns, ns);
        let r = f(self);
        self.ns = saved;
        r
    }

    /// Fires `on_timer` for the current key when the watermark reaches `ts`.
    pub fn register_event_time_timer(&mut self, ts: Timestamp) {
        self.timers
            .register(TimeDomain::EventTime, ts, self.key.clone(), self.ns);
    }

    /// Fires `on_timer` for the current key when the wall clock reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: Timestamp) {
        self.timers
            .register(TimeDomain::ProcessingTime, ts, self.key.clone(), self.ns);
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: Timestamp) {
        self.timers
            .delete(TimeDomain::EventTime, ts, self.key.clone(), self.ns);
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: Timestamp) {
        self.timers
            .delete(TimeDomain::ProcessingTime, ts, self.key.clone(), self.ns);
    }

    fn expired(&self, ttl: &StateTtlConfig, stamp: Timestamp) -> bool {
        self.now.saturating_sub(stamp) >= ttl.ttl.as_millis() as i64
    }

    /// The live value of a state for the current key, honouring TTL.
    fn cell<T: Send + 'static>(
        &mut self,
        id: StateId,
        ttl: Option<&StateTtlConfig>,
        reading: bool,
    ) -> Option<&mut T> {
        let (kg, ns) = (self.kg, self.ns);
        match ttl {
            None => self
                .store
                .get_mut(id, kg, self.key, ns)?
                .downcast_mut::<T>(),
            Some(cfg) => {
                let stamp = self
                    .store
                    .get(id, kg, self.key, ns)?
                    .downcast_ref::<TtlCell<T>>()?
                    .stamp;
                if self.expired(cfg, stamp) {
                    self.store.remove(id, kg, self.key, ns);
                    return None;
                }
                let now = self.now;
                let c = self
                    .store
                    .get_mut(id, kg, self.key, ns)?
                    .downcast_mut::<TtlCell<T>>()?;
                if !reading || cfg.update == TtlUpdate::OnReadAndWrite {
                    c.stamp = now;
                }
                Some(&mut c.value)
            }
        }
    }

    fn put<T: Send + 'static>(&mut self, id: StateId, ttl: Option<&StateTtlConfig>, value: T) {
        let cell: super::Cell = match ttl {
            None => Box::new(value),
            Some(_) => Box::new(TtlCell {
                value,
                stamp: self.now,
            }),
        };
        self.store.put(id, self.kg, self.key.clone(), self.ns, cell);
    }

    /// The value for writing: existing, or created with `init`. `None` only when the same
    /// state name was registered with another value type.
    fn cell_or_insert<T: Send + 'static>(
        &mut self,
        id: StateId,
        ttl: Option<&StateTtlConfig>,
        init: impl FnOnce() -> T,
    ) -> Option<&mut T> {
        if self.cell::<T>(id, ttl, false).is_none() {
            self.put(id, ttl, init());
        }
        self.cell::<T>(id, ttl, false)
    }

    fn clear(&mut self, id: StateId) {
        self.store.remove(id, self.kg, self.key, self.ns);
    }
}

/// Registers states when a function opens.
pub struct StateRegistry<'a> {
    pub(crate) store: &'a mut dyn KeyedStore,
}

impl StateRegistry<'_> {
    /// A single value per key.
    pub fn value<T: StateValue>(&mut self, name: &str) -> ValueState<T> {
        ValueState {
            id: self.store.register(name, codec::<T>()),
            ttl: None,
            _t: PhantomData,
        }
    }

    /// A list of values per key.
    pub fn list<T: StateValue>(&mut self, name: &str) -> ListState<T> {
        ListState {
            id: self.store.register(name, codec::<Vec<T>>()),
            ttl: None,
            _t: PhantomData,
        }
    }

    /// A map per key.
    pub fn map<K: Hash + Eq + StateValue, V: StateValue>(&mut self, name: &str) -> MapState<K, V> {
        MapState {
            id: self.store.register(name, codec::<HashMap<K, V>>()),
            ttl: None,
            _t: PhantomData,
        }
    }

    /// A value per key that new values are folded into with `reduce`.
    pub fn reducing<T: StateValue>(
        &mut self,
        name: &str,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> ReducingState<T> {
        ReducingState {
            id: self.store.register(name, codec::<T>()),
            ttl: None,
            reduce: Arc::new(reduce),
        }
    }

    /// An accumulator per key: `create` makes it, `add` folds an input in, `result` reads it.
    pub fn aggregating<IN, ACC: StateValue, OUT>(
        &mut self,
        name: &str,
        create: impl Fn() -> ACC + Send + Sync + 'static,
        add: impl Fn(&mut ACC, &IN) + Send + Sync + 'static,
        result: impl Fn(&ACC) -> OUT + Send + Sync + 'static,
    ) -> AggregatingState<IN, ACC, OUT> {
        AggregatingState {
            id: self.store.register(name, codec::<ACC>()),
            ttl: None,
            create: Arc::new(create),
            add: Arc::new(add),
            result: Arc::new(result),
        }
    }
}

macro_rules! with_ttl {
    () => {
        /// Values expire `ttl` after their last write (or read, if so configured).
        pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
            self.ttl = Some(ttl);
            self
        }
    };
}

type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;
type AddFn<ACC, IN> = Arc<dyn Fn(&mut ACC, &IN) + Send + Sync>;

/// One value per key (`ValueState`).
pub struct ValueState<T> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            id: self.id,
            ttl: self.ttl,
            _t: PhantomData,
        }
    }
}

impl<T: StateValue> ValueState<T> {
    with_ttl!();

    /// The current key's value.
    pub fn get(&self, ctx: &mut KeyedContext<'_>) -> Option<T> {
        ctx.cell::<T>(self.id, self.ttl.as_ref(), true).cloned()
    }

    /// Replaces the current key's value.
    pub fn update(&self, ctx: &mut KeyedContext<'_>, value: T) {
        ctx.put(self.id, self.ttl.as_ref(), value);
    }

    /// Changes the current key's value in place (created by `init` when there is none),
    /// without the copy a `get` and `update` pair makes: what large values (sets, maps)
    /// need. `None` only when the state holds another type.
    pub fn modify<R>(
        &self,
        ctx: &mut KeyedContext<'_>,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        ctx.cell_or_insert::<T>(self.id, self.ttl.as_ref(), init)
            .map(f)
    }

    /// Whether the current key has a value.
    pub fn contains(&self, ctx: &mut KeyedContext<'_>) -> bool {
        ctx.cell::<T>(self.id, self.ttl.as_ref(), true).is_some()
    }

    /// Removes the current key's value.
    pub fn clear(&self, ctx: &mut KeyedContext<'_>) {
        ctx.clear(self.id);
    }
}

/// A list of values per key (`ListState`).
pub struct ListState<T> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListState<T> {
    with_ttl!();

    /// Appends a value.
    pub fn add(&self, ctx: &mut KeyedContext<'_>, value: T) {
        if let Some(list) = ctx.cell_or_insert::<Vec<T>>(self.id, self.ttl.as_ref(), Vec::new) {
            list.push(value);
        }
    }

    /// The current key's values (empty when none).
    pub fn get(&self, ctx: &mut KeyedContext<'_>) -> Vec<T> {
        ctx.cell::<Vec<T>>(self.id, self.ttl.as_ref(), true)
            .cloned()
            .unwrap_or_default()
    }

    /// Calls `f` with the current key's values in place (no copy; empty when none).
    pub fn with_values<R>(&self, ctx: &mut KeyedContext<'_>, f: impl FnOnce(&[T]) -> R) -> R {
        match ctx.cell::<Vec<T>>(self.id, self.ttl.as_ref(), true) {
            Some(list) => f(list),
            None => f(&[]),
        }
    }

    /// Changes the current key's list in place (an empty list when there is none; an empty
    /// list left behind is removed).
    pub fn modify<R>(&self, ctx: &mut KeyedContext<'_>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let Some(list) = ctx.cell_or_insert::<Vec<T>>(self.id, self.ttl.as_ref(), Vec::new) else {
            return f(&mut Vec::new());
        };
        let r = f(list);
        if list.is_empty() {
            ctx.clear(self.id);
        }
        r
    }

    /// Keeps the values for which `keep` holds; removes the list when none remain.
    pub fn retain(&self, ctx: &mut KeyedContext<'_>, keep: impl FnMut(&T) -> bool) {
        let empty = match ctx.cell::<Vec<T>>(self.id, self.ttl.as_ref(), false) {
            Some(list) => {
                list.retain(keep);
                list.is_empty()
            }
            None => false,
        };
        if empty {
            ctx.clear(self.id);
        }
    }

    /// Replaces the list.
    pub fn update(&self, ctx: &mut KeyedContext<'_>, values: Vec<T>) {
        ctx.put(self.id, self.ttl.as_ref(), values);
    }

    /// Removes the list.
    pub fn clear(&self, ctx: &mut KeyedContext<'_>) {
        ctx.clear(self.id);
    }
}

/// A map per key (`MapState`).
pub struct MapState<K, V> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Hash + Eq + StateValue, V: StateValue> MapState<K, V> {
    with_ttl!();

    /// The value under `k` for the current key.
    pub fn get(&self, ctx: &mut KeyedContext<'_>, k: &K) -> Option<V> {
        ctx.cell::<HashMap<K, V>>(self.id, self.ttl.as_ref(), true)?
            .get(k)
            .cloned()
    }

    /// Puts `k → v` for the current key.
    pub fn put(&self, ctx: &mut KeyedContext<'_>, k: K, v: V) {
        if let Some(m) =
            ctx.cell_or_insert::<HashMap<K, V>>(self.id, self.ttl.as_ref(), HashMap::new)
        {
            m.insert(k, v);
        }
    }

    /// Removes `k` for the current key.
    pub fn remove(&self, ctx: &mut KeyedContext<'_>, k: &K) -> Option<V> {
        let m = ctx.cell::<HashMap<K, V>>(self.id, self.ttl.as_ref(), false)?;
        let v = m.remove(k);
        if m.is_empty() {
            ctx.clear(self.id);
        }
        v
    }

    /// Every entry for the current key.
    pub fn entries(&self, ctx: &mut KeyedContext<'_>) -> Vec<(K, V)> {
        ctx.cell::<HashMap<K, V>>(self.id, self.ttl.as_ref(), true)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Removes the whole map of the current key.
    pub fn clear(&self, ctx: &mut KeyedContext<'_>) {
        ctx.clear(self.id);
    }
}

/// A value per key that added values are reduced into (`ReducingState`).
pub struct ReducingState<T> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    reduce: ReduceFn<T>,
}

impl<T: StateValue> ReducingState<T> {
    with_ttl!();

    /// Folds `value` into the current key's value.
    pub fn add(&self, ctx: &mut KeyedContext<'_>, value: T) {
        let next = match ctx.cell::<T>(self.id, self.ttl.as_ref(), false) {
            Some(cur) => (self.reduce)(cur, &value),
            None => value,
        };
        ctx.put(self.id, self.ttl.as_ref(), next);
    }

    /// The reduced value.
    pub fn get(&self, ctx: &mut KeyedContext<'_>) -> Option<T> {
        ctx.cell::<T>(self.id, self.ttl.as_ref(), true).cloned()
    }

    /// Removes the value.
    pub fn clear(&self, ctx: &mut KeyedContext<'_>) {
        ctx.clear(self.id);
    }
}

/// An accumulator per key (`AggregatingState`).
pub struct AggregatingState<IN, ACC, OUT> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    create: Arc<dyn Fn() -> ACC + Send + Sync>,
    add: AddFn<ACC, IN>,
    result: Arc<dyn Fn(&ACC) -> OUT + Send + Sync>,
}

impl<IN, ACC: StateValue, OUT> AggregatingState<IN, ACC, OUT> {
    with_ttl!();

    /// Folds `value` into the accumulator.
    pub fn add(&self, ctx: &mut KeyedContext<'_>, value: &IN) {
        let create = self.create.clone();
        if let Some(acc) = ctx.cell_or_insert::<ACC>(self.id, self.ttl.as_ref(), move || create()) {
            (self.add)(acc, value);
        }
    }

    /// The current result, if anything was added.
    pub fn get(&self, ctx: &mut KeyedContext<'_>) -> Option<OUT> {
        ctx.cell::<ACC>(self.id, self.ttl.as_ref(), true)
            .map(|a| (self.result)(a))
    }

    /// Removes the accumulator.
    pub fn clear(&self, ctx: &mut KeyedContext<'_>) {
        ctx.clear(self.id);
    }
}

// Handles are cheap descriptors; clone them without requiring `T: Clone` bounds on the
// phantom types (derive would add them).
impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            id: self.id,
            ttl: self.ttl,
            _t: PhantomData,
        }
    }
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        MapState {
            id: self.id,
            ttl: self.ttl,
            _t: PhantomData,
        }
    }
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            id: self.id,
            ttl: self.ttl,
            reduce: self.reduce.clone(),
        }
    }
}

impl<IN, ACC, OUT> Clone for AggregatingState<IN, ACC, OUT> {
    fn clone(&self) -> Self {
        AggregatingState {
            id: self.id,
            ttl: self.ttl,
            create: self.create.clone(),
            add: self.add.clone(),
            result: self.result.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, TimerService};

    fn ctx<'a>(
        store: &'a mut MemoryStore,
        timers: &'a mut TimerService,
        key: &'a Key,
        now: Timestamp,
    ) -> KeyedContext<'a> {
        KeyedContext {
            store,
            timers,
            key,
            kg: key.key_group(128),
            ns: Namespace::VOID,
            now,
            watermark: i64::MIN,
            timestamp: None,
        }
    }

    #[test]
    fn ttl_expires_values_and_read_refresh_is_optional() {
        let mut store = MemoryStore::new(0..128);
        let mut timers = TimerService::default();
        let (plain, refreshed) = {
            let mut reg = StateRegistry { store: &mut store };
            let ttl = StateTtlConfig::new(Duration::from_millis(100));
            (
                reg.value::<i64>("a").with_ttl(ttl),
                reg.value::<i64>("b").with_ttl(ttl.refresh_on_read()),
            )
        };
        let key = Key::Int(7);
        let mut c = ctx(&mut store, &mut timers, &key, 1000);
        plain.update(&mut c, 1);
        refreshed.update(&mut c, 2);
        let mut c = ctx(&mut store, &mut timers, &key, 1090);
        assert_eq!(plain.get(&mut c), Some(1));
        assert_eq!(refreshed.get(&mut c), Some(2)); // refreshes b to 1090
        let mut c = ctx(&mut store, &mut timers, &key, 1150);
        assert_eq!(plain.get(&mut c), None, "written at 1000, expired at 1100");
        assert_eq!(
            refreshed.get(&mut c),
            Some(2),
            "read at 1090, lives to 1190"
        );
        let mut c = ctx(&mut store, &mut timers, &key, 1300);
        assert_eq!(refreshed.get(&mut c), None);
        assert!(store.is_empty(), "expired values are removed when touched");
    }

    #[test]
    fn state_is_scoped_to_the_current_key() {
        let mut store = MemoryStore::new(0..128);
        let mut timers = TimerService::default();
        let (list, agg) = {
            let mut reg = StateRegistry { store: &mut store };
            (
                reg.list::<i64>("l"),
                reg.aggregating(
                    "avg",
                    || (0i64, 0i64),
                    |a: &mut (i64, i64), v: &i64| {
                        a.0 += v;
                        a.1 += 1;
                    },
                    |a| a.0 as f64 / a.1 as f64,
                ),
            )
        };
        let (k1, k2) = (Key::Int(1), Key::Str("x".into()));
        for (k, v) in [(&k1, 1), (&k2, 10), (&k1, 3)] {
            let mut c = ctx(&mut store, &mut timers, k, 0);
            list.add(&mut c, v);
            agg.add(&mut c, &v);
        }
        let mut c = ctx(&mut store, &mut timers, &k1, 0);
        assert_eq!(list.get(&mut c), vec![1, 3]);
        assert_eq!(agg.get(&mut c), Some(2.0));
        let mut c = ctx(&mut store, &mut timers, &k2, 0);
        assert_eq!(list.get(&mut c), vec![10]);
        list.clear(&mut c);
        assert!(list.get(&mut c).is_empty());
    }
}
