//! Bounded memory: a pipeline without blocking operators streams its input. The source's
//! batches are tracked while alive; a slow consumer must hold back the producers instead of
//! letting batches pile up.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema};
use sabot::prelude::*;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Owns a batch's values and counts itself alive until Arrow drops the last reference.
struct Tracked(Vec<i64>);

impl Tracked {
    fn new(values: Vec<i64>) -> Arc<Tracked> {
        let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(live, Ordering::SeqCst);
        Arc::new(Tracked(values))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tracked_array(values: Vec<i64>) -> Int64Array {
    let owner = Tracked::new(values);
    let len = owner.0.len();
    let ptr = NonNull::new(owner.0.as_ptr() as *mut u8).expect("vec pointer");
    // SAFETY: `owner` keeps the vector (and so `ptr`) alive as long as the buffer lives.
    let buffer = unsafe { Buffer::from_custom_allocation(ptr, len * 8, owner) };
    Int64Array::new(ScalarBuffer::new(buffer, 0, len), None)
}

#[test]
fn slow_consumer_bounds_batches_in_flight() {
    const BATCHES: usize = 1500;
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let s = schema.clone();
    let stream = Stream::generate(schema, BATCHES, move |i| {
        let values = tracked_array((0..1024).map(|j| (i * 1024 + j) as i64).collect());
        Ok(RecordBatch::try_new(s.clone(), vec![Arc::new(values)])?)
    })
    .with_parallelism(2)
    .filter(col("id").gt_eq(lit(0)))
    .unwrap()
    .with_column("double", col("id") * lit(2i64))
    .unwrap();

    let mut rows = 0;
    let mut expected_first = 0i64;
    stream
        .for_each_batch(|batch| {
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(ids.value(0), expected_first, "batches arrive in source order");
            expected_first += batch.num_rows() as i64;
            rows += batch.num_rows();
            std::thread::sleep(Duration::from_micros(200));
            Ok(())
        })
        .unwrap();
    assert_eq!(rows, BATCHES * 1024);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0, "every batch was released");
    let peak = PEAK.load(Ordering::SeqCst);
    // Two partitions, each with a bounded channel of 4, plus the batches being worked on.
    assert!(peak <= 24, "at most a few dozen batches may be alive at once, saw {peak} of {BATCHES}");
}
