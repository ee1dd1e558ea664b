//! Descriptors: the name, type and time-to-live of a keyed state, given to
//! [`KeyedStateStore`](super::KeyedStateStore) to get a handle.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The reduce function of a [`ReducingState`](super::ReducingState): combines the stored
/// value with a new one.
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

macro_rules! common_descriptor_methods {
    () => {
        /// Gives every value of this state a time-to-live: a value (or, for maps, an entry) is
        /// invisible once `ttl` has passed since it was last written, and is removed lazily
        /// when read or by [`KeyedStateStore::purge_expired`](super::KeyedStateStore::purge_expired)
        /// (and, on RocksDB, by compaction). TTL is counted in milliseconds (at least 1).
        ///
        /// ```
        /// use std::time::Duration;
        /// use sabot::state::ValueStateDescriptor;
        /// let desc = ValueStateDescriptor::<u8>::new("flag").with_ttl(Duration::from_millis(10));
        /// assert_eq!(desc.ttl(), Some(Duration::from_millis(10)));
        /// ```
        pub fn with_ttl(mut self, ttl: Duration) -> Self {
            self.ttl_ms = Some(ttl_ms(ttl));
            self
        }

        /// The state's name, unique within its operator.
        ///
        /// ```
        /// use sabot::state::ListStateDescriptor;
        /// assert_eq!(ListStateDescriptor::<u8>::new("seen").name(), "seen");
        /// ```
        pub fn name(&self) -> &str {
            &self.name
        }

        /// The time-to-live set with `with_ttl`, if any.
        ///
        /// ```
        /// use sabot::state::MapStateDescriptor;
        /// assert_eq!(MapStateDescriptor::<u8, u8>::new("m").ttl(), None);
        /// ```
        pub fn ttl(&self) -> Option<Duration> {
            self.ttl_ms.map(Duration::from_millis)
        }
    };
}

/// Describes a [`ValueState<T>`](super::ValueState): one value per key.
///
/// ```
/// use std::time::Duration;
/// use sabot::state::ValueStateDescriptor;
///
/// let desc = ValueStateDescriptor::<i64>::new("count").with_ttl(Duration::from_secs(60));
/// assert_eq!(desc.name(), "count");
/// assert_eq!(desc.ttl(), Some(Duration::from_secs(60)));
/// ```
pub struct ValueStateDescriptor<T> {
    pub(super) name: String,
    pub(super) ttl_ms: Option<u64>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ValueStateDescriptor<T> {
    /// A descriptor for the state `name`, without TTL.
    ///
    /// ```
    /// use sabot::state::ValueStateDescriptor;
    /// let desc = ValueStateDescriptor::<String>::new("last_seen");
    /// assert_eq!(desc.ttl(), None);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor { name: name.into(), ttl_ms: None, _type: PhantomData }
    }

    common_descriptor_methods!();
}

/// Describes a [`ListState<T>`](super::ListState): a list of values per key. The TTL applies to
/// a key's list as a whole: any write to the list renews it.
///
/// ```
/// use sabot::state::ListStateDescriptor;
/// let desc = ListStateDescriptor::<f64>::new("prices");
/// assert_eq!(desc.name(), "prices");
/// ```
pub struct ListStateDescriptor<T> {
    pub(super) name: String,
    pub(super) ttl_ms: Option<u64>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ListStateDescriptor<T> {
    /// A descriptor for the state `name`, without TTL.
    ///
    /// ```
    /// use sabot::state::ListStateDescriptor;
    /// let desc = ListStateDescriptor::<u32>::new("ids");
    /// assert_eq!(desc.ttl(), None);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor { name: name.into(), ttl_ms: None, _type: PhantomData }
    }

    common_descriptor_methods!();
}

/// Describes a [`MapState<K, V>`](super::MapState): a map per key. The TTL applies to each map
/// entry separately.
///
/// ```
/// use std::time::Duration;
/// use sabot::state::MapStateDescriptor;
/// let desc = MapStateDescriptor::<String, u64>::new("per_symbol").with_ttl(Duration::from_secs(5));
/// assert_eq!(desc.ttl(), Some(Duration::from_secs(5)));
/// ```
pub struct MapStateDescriptor<K, V> {
    pub(super) name: String,
    pub(super) ttl_ms: Option<u64>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapStateDescriptor<K, V> {
    /// A descriptor for the state `name`, without TTL.
    ///
    /// ```
    /// use sabot::state::MapStateDescriptor;
    /// let desc = MapStateDescriptor::<u32, String>::new("names");
    /// assert_eq!(desc.name(), "names");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor { name: name.into(), ttl_ms: None, _type: PhantomData }
    }

    common_descriptor_methods!();
}

/// Describes a [`ReducingState<T>`](super::ReducingState): one value per key, folded with a
/// reduce function on every `add`.
///
/// ```
/// use sabot::state::ReducingStateDescriptor;
/// let desc = ReducingStateDescriptor::new("max_price", |a: &f64, b: &f64| a.max(*b));
/// assert_eq!(desc.name(), "max_price");
/// ```
pub struct ReducingStateDescriptor<T> {
    pub(super) name: String,
    pub(super) ttl_ms: Option<u64>,
    pub(super) reduce: ReduceFn<T>,
}

impl<T> ReducingStateDescriptor<T> {
    /// A descriptor for the state `name` that folds values with `reduce(stored, new)`.
    ///
    /// ```
    /// use sabot::state::ReducingStateDescriptor;
    /// let desc = ReducingStateDescriptor::new("total", |a: &i64, b: &i64| a + b);
    /// assert_eq!(desc.ttl(), None);
    /// ```
    pub fn new(name: impl Into<String>, reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Self {
        ReducingStateDescriptor { name: name.into(), ttl_ms: None, reduce: Arc::new(reduce) }
    }

    common_descriptor_methods!();
}

macro_rules! debug_descriptor {
    ($name:ident < $($p:ident),+ >) => {
        impl<$($p),+> fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("name", &self.name).field("ttl_ms", &self.ttl_ms).finish()
            }
        }
    };
}

debug_descriptor!(ValueStateDescriptor<T>);
debug_descriptor!(ListStateDescriptor<T>);
debug_descriptor!(MapStateDescriptor<K, V>);
debug_descriptor!(ReducingStateDescriptor<T>);
