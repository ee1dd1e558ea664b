//! Windows: count windows, then event-time windows with out-of-order rows, allowed lateness,
//! and a late row on the side output.
//!
//! Part 1: 50 events with `value = 10 i`, count windows of 5 → 10 windows, window `j` sums to
//! `250 j + 100`.
//! Part 2: sensor readings with event times, tumbling 10 s windows, 2 s out-of-orderness,
//! 5 s allowed lateness: one reading is late but within lateness (its window fires again),
//! one is beyond it (side output).
//!
//! Run: `cargo run --release --example window_aggregation`

use std::time::Duration;

use sabot::prelude::*;

/// One input event of part 1.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub value: i64,
}

/// One sensor reading of part 2.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: String,
    #[record(event_time)]
    pub ts: Timestamp,
    pub celsius: f64,
}

/// Part 1: `(window index, sum)` of each count window.
pub fn count_windows() -> Result<Vec<(i64, i64)>> {
    let events: Vec<Event> = (0..50).map(|i| Event { id: i, value: 10 * i }).collect();
    let out = Stream::from_records(events)
        .with_parallelism(1)
        .window_all(WindowSpec::count(5))
        .aggregate([sum(col("value")).alias("total")])?
        .sort(["window_start"])?
        .collect_batch()?;
    let starts = out.column_by_name("window_start").expect("window_start");
    let totals = out.column_by_name("total").expect("total");
    let starts = starts.as_any().downcast_ref::<sabot::deps::arrow::array::Int64Array>().expect("i64");
    let totals = totals.as_any().downcast_ref::<sabot::deps::arrow::array::Int64Array>().expect("i64");
    Ok((0..out.num_rows()).map(|i| (starts.value(i) / 5, totals.value(i))).collect())
}

/// The readings of part 2, in arrival order (event times are out of order).
pub fn readings() -> Vec<Vec<Reading>> {
    let r = |sensor: &str, s: i64, celsius: f64| Reading {
        sensor: sensor.into(),
        ts: Timestamp::from_millis(s * 1000),
        celsius,
    };
    vec![
        vec![r("s1", 1, 20.0), r("s2", 3, 30.0), r("s1", 8, 22.0)], // watermark 6 s
        vec![r("s1", 12, 21.0), r("s1", 9, 23.0), r("s2", 14, 31.0)], // 9 s after 12 s: within the 2 s bound; watermark 12 s fires [0,10)
        vec![r("s2", 6, 35.0)],                                       // late, but 10 + 5 > 12: [0,10) of s2 fires again
        vec![r("s1", 25, 24.0)],                                      // watermark 23 s fires [10,20)
        vec![r("s1", 40, 26.0)],                                      // watermark 38 s fires [20,30)
        vec![r("s2", 7, 99.0)],                                       // beyond lateness: side output
    ]
}

/// Part 2: the window results as emitted (updates included) and the late rows.
pub fn event_time_windows() -> Result<(Vec<String>, Vec<String>)> {
    let late = LateData::new();
    let batches = readings().iter().map(|b| Reading::to_batch(b)).collect();
    let results = Stream::from_batches(batches)?
        .with_parallelism(1)
        .with_watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(2)))?
        .key_by(["sensor"])
        .window(WindowSpec::tumbling(Duration::from_secs(10)))
        .allowed_lateness(Duration::from_secs(5))
        .late_data(late.clone())
        .aggregate([count_all(), max(col("celsius")).alias("max_celsius")])?
        .collect()?;
    let render = |batches: &[sabot::deps::arrow::array::RecordBatch]| -> Vec<String> {
        let mut out = vec![];
        for b in batches {
            for row in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| sabot::deps::arrow::util::display::array_value_to_string(c, row).expect("displayable"))
                    .collect();
                out.push(cells.join(" | "));
            }
        }
        out
    };
    let late_rows = late.take();
    Ok((render(&results), render(&late_rows)))
}

fn main() -> Result<()> {
    println!("count windows of 5 (window, sum):");
    for (window, total) in count_windows()? {
        println!("  {window:>2}  {total:>5}   (250 × {window} + 100 = {})", 250 * window + 100);
    }
    let (results, late) = event_time_windows()?;
    println!("\ntumbling 10 s windows per sensor (sensor | start | end | count | max), in emission order:");
    for r in results {
        println!("  {r}");
    }
    println!("\nlate rows on the side output (sensor | ts | celsius):");
    for r in late {
        println!("  {r}");
    }
    Ok(())
}
