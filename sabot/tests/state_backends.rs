//! Keyed state: one suite run against every backend (memory always, RocksDB with the
//! `rocksdb` feature), plus RocksDB-only tests of persistence, instance sharing and
//! compaction.

use std::time::Duration;

use sabot::SabotError;
use sabot::state::{
    KeyedStateStore, ListStateDescriptor, ManualClock, MapStateDescriptor, ReducingStateDescriptor, StateBackend,
    ValueStateDescriptor,
};
use serde::{Deserialize, Serialize};

type R = Result<(), SabotError>;

/// A backend plus the temporary directory its data and snapshots live in.
struct Env {
    backend: StateBackend,
    dir: tempfile::TempDir,
}

fn memory() -> Env {
    Env { backend: StateBackend::Memory, dir: tempfile::tempdir().unwrap() }
}

#[cfg(feature = "rocksdb")]
fn rocksdb() -> Env {
    let dir = tempfile::tempdir().unwrap();
    Env { backend: StateBackend::RocksDb { path: dir.path().join("worker-0") }, dir }
}

impl Env {
    fn open(&self, operator: &str) -> KeyedStateStore {
        KeyedStateStore::open(&self.backend, operator).unwrap()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Stats {
    count: u64,
    total: f64,
    tags: Vec<String>,
}

fn value_semantics(env: &Env) -> R {
    let mut store = env.open("op");
    let count = store.value_state(&ValueStateDescriptor::<i64>::new("count"))?;
    let stats = store.value_state(&ValueStateDescriptor::<Stats>::new("stats"))?;

    // No current key yet.
    assert!(matches!(count.value(&mut store), Err(SabotError::State { .. })));

    store.set_current_key(b"k1");
    assert_eq!(count.value(&mut store)?, None);
    count.update(&mut store, 5)?;
    assert_eq!(count.value(&mut store)?, Some(5));
    count.update(&mut store, -3)?;
    assert_eq!(count.value(&mut store)?, Some(-3));
    count.update_with(&mut store, |c| c.copied().unwrap_or(0) + 10)?;
    assert_eq!(count.value(&mut store)?, Some(7));

    let s = Stats { count: 2, total: 3.5, tags: vec!["a".into(), "b".into()] };
    stats.update(&mut store, s.clone())?;
    assert_eq!(stats.value(&mut store)?, Some(s.clone()));

    // Explicit keys, independent of the current key.
    count.update_for(&mut store, b"k2", 100)?;
    count.update_with_for(&mut store, b"k3", |c| c.copied().unwrap_or(1) * 2)?;
    assert_eq!(count.value_for(&mut store, b"k2")?, Some(100));
    assert_eq!(count.value_for(&mut store, b"k3")?, Some(2));
    assert_eq!(count.value(&mut store)?, Some(7));
    assert_eq!(stats.value_for(&mut store, b"k2")?, None);

    count.clear(&mut store)?;
    assert_eq!(count.value(&mut store)?, None);
    assert_eq!(stats.value(&mut store)?, Some(s));
    count.clear_for(&mut store, b"k2")?;
    assert_eq!(count.value_for(&mut store, b"k2")?, None);
    // Clearing what is absent is fine; writing after clearing works.
    count.clear(&mut store)?;
    count.update(&mut store, 1)?;
    assert_eq!(count.value(&mut store)?, Some(1));
    Ok(())
}

fn list_semantics(env: &Env) -> R {
    let mut store = env.open("op");
    let list = store.list_state(&ListStateDescriptor::<String>::new("events"))?;
    store.set_current_key(b"k");
    assert!(list.get(&mut store)?.is_empty());
    list.add(&mut store, "a".into())?;
    list.add(&mut store, "b".into())?;
    list.add_all(&mut store, ["c".to_string(), "".to_string(), "e".to_string()])?;
    assert_eq!(list.get(&mut store)?, ["a", "b", "c", "", "e"]);
    list.update(&mut store, vec!["x".into(), "y".into()])?;
    assert_eq!(list.get(&mut store)?, ["x", "y"]);
    list.update(&mut store, vec![])?;
    assert!(list.get(&mut store)?.is_empty());
    list.add(&mut store, "z".into())?;
    list.clear(&mut store)?;
    assert!(list.get(&mut store)?.is_empty());

    list.add_for(&mut store, b"other", "o1".into())?;
    list.add_for(&mut store, b"other", "o2".into())?;
    assert_eq!(list.get_for(&mut store, b"other")?, ["o1", "o2"]);
    assert!(list.get(&mut store)?.is_empty());

    let numbers = store.list_state(&ListStateDescriptor::<u64>::new("numbers"))?;
    store.set_current_key(b"n");
    for i in 0..1000u64 {
        numbers.add(&mut store, i * i)?;
    }
    let got = numbers.get(&mut store)?;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().enumerate().all(|(i, v)| *v == (i * i) as u64));
    Ok(())
}

fn map_semantics(env: &Env) -> R {
    let mut store = env.open("op");
    let map = store.map_state(&MapStateDescriptor::<String, Stats>::new("per_symbol"))?;
    store.set_current_key(b"acct");
    assert!(map.is_empty(&mut store)?);
    let s = |n: u64| Stats { count: n, total: n as f64, tags: vec![] };
    map.put(&mut store, "AAPL".into(), s(1))?;
    map.put(&mut store, "MSFT".into(), s(2))?;
    map.put(&mut store, "AAPL".into(), s(3))?;
    assert_eq!(map.get(&mut store, &"AAPL".into())?, Some(s(3)));
    assert_eq!(map.get(&mut store, &"GOOG".into())?, None);
    assert!(map.contains(&mut store, &"MSFT".into())?);
    assert!(!map.contains(&mut store, &"GOOG".into())?);

    let mut keys = map.keys(&mut store)?;
    keys.sort();
    assert_eq!(keys, ["AAPL", "MSFT"]);
    let mut entries: Vec<(String, Stats)> = map.iter(&mut store)?.collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(entries, [("AAPL".to_string(), s(3)), ("MSFT".to_string(), s(2))]);

    map.remove(&mut store, &"AAPL".into())?;
    assert_eq!(map.get(&mut store, &"AAPL".into())?, None);
    assert_eq!(map.keys(&mut store)?, ["MSFT"]);
    map.remove(&mut store, &"nothing".into())?;

    map.put_for(&mut store, b"acct2", "IBM".into(), s(9))?;
    assert_eq!(map.get_for(&mut store, b"acct2", &"IBM".into())?, Some(s(9)));
    assert_eq!(map.get(&mut store, &"IBM".into())?, None);

    map.clear(&mut store)?;
    assert!(map.is_empty(&mut store)?);
    assert_eq!(map.iter(&mut store)?.count(), 0);
    assert_eq!(map.get_for(&mut store, b"acct2", &"IBM".into())?, Some(s(9)));
    Ok(())
}

fn reducing_semantics(env: &Env) -> R {
    let mut store = env.open("op");
    let sum = store.reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| a + b))?;
    let max = store.reducing_state(&ReducingStateDescriptor::new("max", |a: &f64, b: &f64| a.max(*b)))?;
    store.set_current_key(b"k");
    assert_eq!(sum.get(&mut store)?, None);
    for v in [5, -2, 10] {
        sum.add(&mut store, v)?;
    }
    for v in [1.5, 9.25, 3.0] {
        max.add(&mut store, v)?;
    }
    assert_eq!(sum.get(&mut store)?, Some(13));
    assert_eq!(max.get(&mut store)?, Some(9.25));
    sum.add_for(&mut store, b"j", 7)?;
    sum.add_for(&mut store, b"j", 7)?;
    assert_eq!(sum.get_for(&mut store, b"j")?, Some(14));
    sum.clear(&mut store)?;
    assert_eq!(sum.get(&mut store)?, None);
    sum.add(&mut store, 1)?;
    assert_eq!(sum.get(&mut store)?, Some(1));
    assert_eq!(max.get(&mut store)?, Some(9.25));
    Ok(())
}

fn per_key_isolation(env: &Env) -> R {
    let mut store = env.open("op");
    let v = store.value_state(&ValueStateDescriptor::<u32>::new("v"))?;
    let w = store.value_state(&ValueStateDescriptor::<u32>::new("w"))?;
    let l = store.list_state(&ListStateDescriptor::<u32>::new("l"))?;
    let m = store.map_state(&MapStateDescriptor::<Vec<u8>, u32>::new("m"))?;
    // Keys that are prefixes of one another, empty, or differ only in a trailing NUL.
    let keys: [&[u8]; 6] = [b"", b"a", b"ab", b"a\0", b"b", &[0xff, 0x00, 0xff]];
    for (i, key) in keys.iter().enumerate() {
        store.set_current_key(key);
        v.update(&mut store, i as u32)?;
        w.update(&mut store, 100 + i as u32)?;
        l.add(&mut store, i as u32)?;
        m.put(&mut store, b"x".to_vec(), i as u32)?;
        m.put(&mut store, key.to_vec(), 10 * i as u32)?;
    }
    for (i, key) in keys.iter().enumerate() {
        store.set_current_key(key);
        assert_eq!(v.value(&mut store)?, Some(i as u32));
        assert_eq!(w.value(&mut store)?, Some(100 + i as u32));
        assert_eq!(l.get(&mut store)?, [i as u32]);
        let mut entries: Vec<(Vec<u8>, u32)> = m.iter(&mut store)?.collect();
        entries.sort();
        let mut expected = vec![(b"x".to_vec(), i as u32), (key.to_vec(), 10 * i as u32)];
        expected.sort();
        expected.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(entries, expected, "map of key {key:?}");
    }
    store.set_current_key(b"a");
    m.clear(&mut store)?;
    v.clear(&mut store)?;
    store.set_current_key(b"ab");
    assert_eq!(m.keys(&mut store)?.len(), 2);
    assert_eq!(v.value(&mut store)?, Some(2));

    // Another operator on the same backend, with a state of the same name, sees nothing.
    let mut other = env.open("other_op");
    let v2 = other.value_state(&ValueStateDescriptor::<u32>::new("v"))?;
    assert_eq!(v2.value_for(&mut other, b"ab")?, None);
    v2.update_for(&mut other, b"ab", 999)?;
    assert_eq!(v.value_for(&mut store, b"ab")?, Some(2));

    // A handle only works with the store that made it.
    assert!(matches!(v.value_for(&mut other, b"ab"), Err(SabotError::State { .. })));
    Ok(())
}

fn registration(env: &Env) -> R {
    let mut store = env.open("op");
    let desc = ValueStateDescriptor::<u64>::new("count");
    let a = store.value_state(&desc)?;
    a.update_for(&mut store, b"k", 1)?;
    let b = store.value_state(&desc)?;
    assert_eq!(b.value_for(&mut store, b"k")?, Some(1));
    assert!(store.value_state(&ValueStateDescriptor::<String>::new("count")).is_err());
    assert!(store.list_state(&ListStateDescriptor::<u64>::new("count")).is_err());
    assert!(store.value_state(&desc.clone_with_ttl()).is_err());
    assert!(store.value_state(&ValueStateDescriptor::<u64>::new("a/b")).is_err());
    assert!(store.value_state(&ValueStateDescriptor::<u64>::new("")).is_err());
    assert!(KeyedStateStore::open(&env.backend, "bad/operator").is_err());
    Ok(())
}

trait CloneWithTtl {
    fn clone_with_ttl(&self) -> Self;
}

impl<T> CloneWithTtl for ValueStateDescriptor<T> {
    fn clone_with_ttl(&self) -> Self {
        ValueStateDescriptor::new(self.name()).with_ttl(Duration::from_secs(1))
    }
}

fn ttl_expiry_and_purge(env: &Env) -> R {
    let clock = ManualClock::new(1_000_000);
    let mut store = env.open("op").with_clock(clock.clone());
    let ttl = Duration::from_millis(1_000);
    let v = store.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))?;
    let forever = store.value_state(&ValueStateDescriptor::<u64>::new("forever"))?;
    let l = store.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(ttl))?;
    let m = store.map_state(&MapStateDescriptor::<u64, u64>::new("m").with_ttl(ttl))?;
    let r = store.reducing_state(&ReducingStateDescriptor::new("r", |a: &u64, b: &u64| a + b).with_ttl(ttl))?;

    // t = 0: ten keys in `v`; t = 500: ten more, plus the other states.
    for i in 0..10u64 {
        v.update_for(&mut store, &i.to_be_bytes(), i)?;
        forever.update_for(&mut store, &i.to_be_bytes(), i)?;
    }
    clock.advance(Duration::from_millis(500));
    for i in 10..20u64 {
        v.update_for(&mut store, &i.to_be_bytes(), i)?;
    }
    store.set_current_key(b"k");
    l.add(&mut store, 1)?;
    m.put(&mut store, 1, 10)?;
    r.add(&mut store, 5)?;

    // t = 999: everything visible.
    clock.advance(Duration::from_millis(499));
    assert_eq!(v.value_for(&mut store, &0u64.to_be_bytes())?, Some(0));
    // Updating key 1 at t = 999 renews its TTL to t = 1999.
    v.update_for(&mut store, &1u64.to_be_bytes(), 11)?;

    // t = 1000: the first ten (but key 1) are invisible at once, before any cleanup.
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.stored_entries()?, 20 + 10 + 3);
    assert_eq!(v.value_for(&mut store, &0u64.to_be_bytes())?, None);
    assert_eq!(v.value_for(&mut store, &1u64.to_be_bytes())?, Some(11));
    assert_eq!(v.value_for(&mut store, &9u64.to_be_bytes())?, None);
    assert_eq!(v.value_for(&mut store, &10u64.to_be_bytes())?, Some(10));
    assert_eq!(forever.value_for(&mut store, &0u64.to_be_bytes())?, Some(0));
    // Reads removed keys 0 and 9 lazily; the purge takes the other seven.
    assert_eq!(store.stored_entries()?, 20 + 10 + 3 - 2);
    assert_eq!(store.purge_expired()?, 7);
    assert_eq!(store.stored_entries()?, 11 + 10 + 3);

    // A map entry written later outlives an earlier one of the same key.
    clock.advance(Duration::from_millis(200)); // t = 1200
    m.put(&mut store, 2, 20)?;
    l.add(&mut store, 2)?; // renews the whole list
    clock.advance(Duration::from_millis(300)); // t = 1500: list/map entry 2/r from t=500 expire
    assert_eq!(m.get(&mut store, &1)?, None);
    assert_eq!(m.get(&mut store, &2)?, Some(20));
    assert_eq!(m.keys(&mut store)?, [2]);
    assert!(m.contains(&mut store, &2)?);
    assert_eq!(l.get(&mut store)?, [1, 2]);
    assert_eq!(r.get(&mut store)?, None);
    // Adding to an expired reducing value starts over.
    r.add(&mut store, 7)?;
    assert_eq!(r.get(&mut store)?, Some(7));

    // t = 3000: all TTL state gone after a purge; state without TTL stays.
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(l.get(&mut store)?, Vec::<u64>::new());
    assert!(m.is_empty(&mut store)?);
    store.purge_expired()?;
    assert_eq!(store.stored_entries()?, 10);
    assert_eq!(forever.value_for(&mut store, &9u64.to_be_bytes())?, Some(9));
    Ok(())
}

fn many_keys(env: &Env) -> R {
    const KEYS: u64 = 100_000;
    let mut store = env.open("op");
    let count = store.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
    let sum = store.reducing_state(&ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| a + b))?;
    for round in 0..2u64 {
        for k in 0..KEYS {
            store.set_current_key(&k.to_le_bytes());
            let c = count.value(&mut store)?.unwrap_or(0);
            count.update(&mut store, c + 1)?;
            sum.add(&mut store, k + round)?;
        }
    }
    assert_eq!(store.stored_entries()?, 2 * KEYS as usize);
    for k in (0..KEYS).step_by(7) {
        store.set_current_key(&k.to_le_bytes());
        assert_eq!(count.value(&mut store)?, Some(2));
        assert_eq!(sum.get(&mut store)?, Some(2 * k + 1));
    }
    assert_eq!(count.value_for(&mut store, &KEYS.to_le_bytes())?, None);
    Ok(())
}

fn snapshot_restore(env: &Env) -> R {
    let clock = ManualClock::new(10_000);
    let value = ValueStateDescriptor::<String>::new("value");
    let ttl_value = ValueStateDescriptor::<u32>::new("ttl_value").with_ttl(Duration::from_secs(10));
    let list = ListStateDescriptor::<u32>::new("list");
    let map = MapStateDescriptor::<String, u32>::new("map");
    let sum = ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| a + b);
    let snap = env.dir.path().join("snapshot-1");
    {
        let mut store = env.open("op").with_clock(clock.clone());
        let (v, t, l, m, s) = (
            store.value_state(&value)?,
            store.value_state(&ttl_value)?,
            store.list_state(&list)?,
            store.map_state(&map)?,
            store.reducing_state(&sum)?,
        );
        for i in 0..1000u32 {
            store.set_current_key(&i.to_le_bytes());
            v.update(&mut store, format!("v{i}"))?;
            t.update(&mut store, i)?;
            l.add_all(&mut store, [i, i + 1])?;
            m.put(&mut store, format!("m{}", i % 3), i)?;
            s.add(&mut store, u64::from(i))?;
        }
        store.snapshot(&snap)?;
        // Changes after the snapshot are not in it.
        v.update_for(&mut store, &0u32.to_le_bytes(), "changed".into())?;
        v.update_for(&mut store, &5000u32.to_le_bytes(), "new".into())?;
        store.flush()?;
        // A snapshot directory that exists already is refused.
        assert!(store.snapshot(&snap).is_err());
    }
    let mut store = KeyedStateStore::restore(&env.backend, "op", &snap)?.with_clock(clock.clone());
    let (v, t, l, m, s) = (
        store.value_state(&value)?,
        store.value_state(&ttl_value)?,
        store.list_state(&list)?,
        store.map_state(&map)?,
        store.reducing_state(&sum)?,
    );
    for i in (0..1000u32).step_by(37) {
        store.set_current_key(&i.to_le_bytes());
        assert_eq!(v.value(&mut store)?, Some(format!("v{i}")));
        assert_eq!(t.value(&mut store)?, Some(i));
        assert_eq!(l.get(&mut store)?, [i, i + 1]);
        assert_eq!(m.iter(&mut store)?.collect::<Vec<_>>(), [(format!("m{}", i % 3), i)]);
        assert_eq!(s.get(&mut store)?, Some(u64::from(i)));
    }
    assert_eq!(v.value_for(&mut store, &0u32.to_le_bytes())?.as_deref(), Some("v0"));
    assert_eq!(v.value_for(&mut store, &5000u32.to_le_bytes())?, None);
    // TTL survives the round trip.
    clock.advance(Duration::from_secs(10));
    assert_eq!(t.value_for(&mut store, &3u32.to_le_bytes())?, None);
    assert_eq!(v.value_for(&mut store, &3u32.to_le_bytes())?.as_deref(), Some("v3"));

    // A snapshot belongs to its operator.
    drop(store);
    assert!(KeyedStateStore::restore(&env.backend, "someone_else", env.dir.path().join("missing")).is_err());
    Ok(())
}

macro_rules! suite {
    ($module:ident, $make:ident) => {
        mod $module {
            suite!(@tests $make; value_semantics, list_semantics, map_semantics, reducing_semantics,
                per_key_isolation, registration, ttl_expiry_and_purge, many_keys, snapshot_restore);
        }
    };
    (@tests $make:ident; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                let env = super::$make();
                super::$test(&env).unwrap();
            }
        )*
    };
}

suite!(memory_backend, memory);
#[cfg(feature = "rocksdb")]
suite!(rocksdb_backend, rocksdb);

#[cfg(feature = "rocksdb")]
mod rocksdb_only {
    use super::*;
    use sabot::state::RocksDbInstance;

    /// Batched reads ahead (MultiGet) load what RocksDB holds, absent keys as absent and
    /// expired values not at all, and the reads that follow return exactly that.
    #[test]
    fn prefetched_reads_equal_plain_reads() -> R {
        let env = rocksdb();
        let clock = ManualClock::new(1_000);
        let count = ValueStateDescriptor::<u64>::new("count");
        let session = ValueStateDescriptor::<u64>::new("session").with_ttl(Duration::from_millis(100));
        {
            let mut store = env.open("op").with_clock(clock.clone());
            let (c, s) = (store.value_state(&count)?, store.value_state(&session)?);
            for k in 0..20_000u64 {
                c.update_for(&mut store, &k.to_be_bytes(), k * 2)?;
                s.update_for(&mut store, &k.to_be_bytes(), k)?;
            }
            store.flush()?;
        }
        // Reopened: nothing cached, every read goes to RocksDB; the sessions have expired.
        clock.advance(Duration::from_millis(100));
        let mut store = env.open("op").with_clock(clock.clone());
        let (c, s) = (store.value_state(&count)?, store.value_state(&session)?);
        let batch: Vec<[u8; 8]> = (0..30_000u64).step_by(3).chain([5, 5, 29_999]).map(u64::to_be_bytes).collect();
        c.prefetch_for(&mut store, batch.iter().map(|k| &k[..]))?;
        s.prefetch_for(&mut store, batch.iter().map(|k| &k[..]))?;
        for key in &batch {
            let k = u64::from_be_bytes(*key);
            assert_eq!(c.value_for(&mut store, key)?, (k < 20_000).then_some(k * 2), "key {k}");
            assert_eq!(s.value_for(&mut store, key)?, None, "session {k} expired");
        }
        Ok(())
    }

    #[test]
    fn data_persists_across_reopen() -> R {
        let env = rocksdb();
        let desc = ValueStateDescriptor::<u64>::new("count");
        let map = MapStateDescriptor::<u32, String>::new("names");
        {
            let mut store = env.open("op");
            let count = store.value_state(&desc)?;
            let names = store.map_state(&map)?;
            for k in 0..50_000u64 {
                count.update_for(&mut store, &k.to_le_bytes(), k * 3)?;
            }
            names.put_for(&mut store, b"k", 1, "one".into())?;
            store.flush()?;
        }
        {
            let mut store = env.open("op");
            let count = store.value_state(&desc)?;
            let names = store.map_state(&map)?;
            for k in (0..50_000u64).step_by(11) {
                assert_eq!(count.value_for(&mut store, &k.to_le_bytes())?, Some(k * 3));
            }
            assert_eq!(names.get_for(&mut store, b"k", &1)?.as_deref(), Some("one"));
            // Writes left pending (no flush) are written when the store is dropped.
            count.update_for(&mut store, b"late", 7)?;
        }
        let mut store = env.open("op");
        let count = store.value_state(&desc)?;
        assert_eq!(count.value_for(&mut store, b"late")?, Some(7));
        // Only registered states count: `count` here (50,000 keys plus "late").
        assert_eq!(store.stored_entries()?, 50_000 + 1);
        Ok(())
    }

    #[test]
    fn one_instance_per_worker_one_column_family_per_state() -> R {
        let env = rocksdb();
        let StateBackend::RocksDb { path } = &env.backend else { unreachable!() };
        let mut join = env.open("join");
        let mut window = env.open("window");
        join.value_state(&ValueStateDescriptor::<u8>::new("left"))?;
        join.map_state(&MapStateDescriptor::<u8, u8>::new("right"))?;
        window.list_state(&ListStateDescriptor::<u8>::new("panes"))?;
        let instance = RocksDbInstance::open(path)?;
        assert_eq!(instance.column_families(), ["join/left", "join/right", "window/panes"]);
        // Same operator twice on one instance would break read-your-writes: refused.
        assert!(KeyedStateStore::open(&env.backend, "join").is_err());
        drop((join, window));
        let again = RocksDbInstance::open(path)?;
        assert_eq!(again.column_families(), ["join/left", "join/right", "window/panes"]);
        Ok(())
    }

    #[test]
    fn transient_operator_ids_are_reserved() {
        let env = rocksdb();
        let Err(err) = KeyedStateStore::open(&env.backend, "transient.mine") else { panic!("a reserved id opened") };
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn pending_writes_are_read_back_across_batches() -> R {
        let env = rocksdb();
        let mut store = env.open("op").with_write_batch_size(3);
        let v = store.value_state(&ValueStateDescriptor::<u32>::new("v"))?;
        let l = store.list_state(&ListStateDescriptor::<u32>::new("l"))?;
        for i in 0..20u32 {
            v.update_for(&mut store, &i.to_le_bytes(), i)?;
            assert_eq!(v.value_for(&mut store, &i.to_le_bytes())?, Some(i));
            l.add_for(&mut store, b"list", i)?;
            assert_eq!(l.get_for(&mut store, b"list")?.len(), i as usize + 1);
        }
        // A pending delete hides the value already in RocksDB.
        v.clear_for(&mut store, &0u32.to_le_bytes())?;
        assert_eq!(v.value_for(&mut store, &0u32.to_le_bytes())?, None);
        assert_eq!(l.get_for(&mut store, b"list")?, (0..20).collect::<Vec<_>>());

        // Cached (clean) entries never outlive a direct delete in RocksDB.
        let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
        store.set_current_key(b"k");
        for i in 0..10 {
            m.put(&mut store, i, i)?;
        }
        store.flush()?;
        assert_eq!(m.get(&mut store, &3)?, Some(3));
        m.clear(&mut store)?;
        assert_eq!(m.get(&mut store, &3)?, None);
        assert!(m.is_empty(&mut store)?);
        Ok(())
    }

    #[test]
    fn compaction_drops_expired_state() -> R {
        let env = rocksdb();
        let clock = ManualClock::new(0);
        let mut store = env.open("op").with_clock(clock.clone());
        let v = store.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(Duration::from_secs(1)))?;
        let keep = store.value_state(&ValueStateDescriptor::<u64>::new("keep"))?;
        for k in 0..1000u64 {
            v.update_for(&mut store, &k.to_le_bytes(), k)?;
            keep.update_for(&mut store, &k.to_le_bytes(), k)?;
        }
        store.flush()?;
        clock.advance(Duration::from_secs(2));
        assert_eq!(store.stored_entries()?, 2000);
        store.compact()?;
        assert_eq!(store.stored_entries()?, 1000);
        assert_eq!(keep.value_for(&mut store, &999u64.to_le_bytes())?, Some(999));
        Ok(())
    }

    #[test]
    fn memory_snapshot_is_not_restored_into_rocksdb() -> R {
        let mem = memory();
        let snap = mem.dir.path().join("snap");
        let mut store = mem.open("op");
        store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
        store.snapshot(&snap)?;
        let env = rocksdb();
        assert!(KeyedStateStore::restore(&env.backend, "op", &snap).is_err());
        Ok(())
    }
}
