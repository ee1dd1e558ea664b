//! `process()` with processing time: state TTL seen through a KeyedProcessFunction, and
//! processing-time timers that fire while no data arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot::io::channel::ChannelSource;
use sabot::operator::{KeyedProcessFunction, KeyedProcessOperator, ProcessContext};
use sabot::prelude::*;
use sabot::state::{ManualClock, StateBackend, ValueState, ValueStateDescriptor};
use sabot::testing::OperatorHarness;

#[derive(sabot::Record, Debug, Clone)]
pub struct Login {
    pub user: String,
    pub attempt: i64,
}

#[derive(sabot::Record, Debug, Clone, PartialEq)]
pub struct Note {
    pub user: String,
    pub kind: String,
    pub value: i64,
}

/// Remembers each user's last attempt for 10 s (TTL), and 1 s after every login reports
/// "quiet" on a processing-time timer.
#[derive(Default)]
pub struct Remember {
    last: Option<ValueState<i64>>,
}

impl KeyedProcessFunction for Remember {
    type In = Login;
    type Out = Note;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> sabot::Result<()> {
        let descriptor = ValueStateDescriptor::new("last").with_ttl(Duration::from_secs(10));
        self.last = Some(ctx.state().value_state(&descriptor)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        login: LoginView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Note>,
    ) -> sabot::Result<()> {
        let last = self.last.expect("opened");
        // The previous attempt if it is still alive, -1 once its TTL has passed.
        let previous = last.value(ctx.state())?.unwrap_or(-1);
        out.push(Note { user: login.user.to_string(), kind: "previous".into(), value: previous });
        last.update(ctx.state(), login.attempt)?;
        let at = ctx.processing_time() + 1000;
        ctx.register_processing_time_timer(at);
        Ok(())
    }

    fn on_timer(&mut self, time: i64, ctx: &mut ProcessContext<'_>, out: &mut Vec<Note>) -> sabot::Result<()> {
        let user = String::from_utf8_lossy(ctx.current_key()).chars().filter(|c| c.is_alphanumeric()).collect();
        out.push(Note { user, kind: "quiet".into(), value: time });
        Ok(())
    }
}

fn logins(rows: &[(&str, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("user", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as _),
        ("attempt", Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as _),
    ])
    .unwrap()
}

fn notes(harness: &mut OperatorHarness<KeyedProcessOperator<Remember>>) -> Vec<(String, String, i64)> {
    harness
        .take_output()
        .iter()
        .flat_map(|b| {
            let user = b.column(0).as_string::<i32>().clone();
            let kind = b.column(1).as_string::<i32>().clone();
            let value = b.column(2).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (user.value(i).to_string(), kind.value(i).to_string(), value.value(i)))
        })
        .collect()
}

#[test]
fn state_ttl_and_processing_time_timers_through_process() {
    let clock = ManualClock::new(1_000_000);
    let op = KeyedProcessOperator::new("remember".into(), Remember::default(), vec![col("user")], StateBackend::Memory)
        .with_clock(clock.clone());
    let mut harness = OperatorHarness::new(op);
    harness.process(logins(&[("ann", 1)])).unwrap();
    assert_eq!(notes(&mut harness), vec![("ann".into(), "previous".into(), -1)]);

    // 5 s later the state is alive; the timer of the first login (t+1 s) fires on the next
    // message, before it.
    clock.advance(Duration::from_secs(5));
    harness.process(logins(&[("ann", 2)])).unwrap();
    assert_eq!(
        notes(&mut harness),
        vec![("ann".into(), "previous".into(), 1), ("ann".into(), "quiet".into(), 1_001_000)]
    );

    // With no data at all, a heartbeat (the exchange repeating its watermark) fires the
    // processing-time timer once its time has come, and not before.
    clock.advance(Duration::from_millis(500));
    harness.watermark(i64::MIN).unwrap();
    assert_eq!(notes(&mut harness), vec![]);
    clock.advance(Duration::from_millis(600));
    harness.watermark(i64::MIN).unwrap();
    assert_eq!(notes(&mut harness), vec![("ann".into(), "quiet".into(), 1_006_000)]);

    // 11 s after the last write the value has expired: invisible.
    clock.advance(Duration::from_secs(11));
    harness.process(logins(&[("ann", 3)])).unwrap();
    assert_eq!(notes(&mut harness)[0], ("ann".into(), "previous".into(), -1));
}

/// The users of the first `n` "quiet" notes received (at most 10 s), sorted.
fn quiet_users(rx: &std::sync::mpsc::Receiver<RecordBatch>, n: usize) -> Vec<String> {
    let start = Instant::now();
    let mut quiet = vec![];
    while quiet.len() < n && start.elapsed() < Duration::from_secs(10) {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(50)) {
            let kind = batch.column(1).as_string::<i32>();
            let user = batch.column(0).as_string::<i32>();
            quiet
                .extend((0..batch.num_rows()).filter(|&i| kind.value(i) == "quiet").map(|i| user.value(i).to_string()));
        }
    }
    quiet.sort();
    quiet
}

#[test]
fn processing_time_timers_fire_on_an_idle_unbounded_stream() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("attempt", DataType::Int64, false),
    ]));
    let (source, sender) = ChannelSource::new(schema, 4);
    let stream =
        Stream::from_source(Arc::new(source)).with_parallelism(2).key_by(["user"]).process(Remember::default).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        stream.for_each_batch(|b| {
            tx.send(b).unwrap();
            Ok(())
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(sender.send(logins(&[("bob", 1), ("cy", 1)]))).unwrap();
    // The channel stays open and silent: only the timers can produce the "quiet" notes.
    let start = Instant::now();
    assert_eq!(quiet_users(&rx, 2), vec!["bob".to_string(), "cy".to_string()]);
    assert!(start.elapsed() >= Duration::from_millis(900), "not before the timers' time");
    drop(sender);
    runner.join().unwrap().unwrap();
}

/// The same timers behind a streaming join whose sides stay open and silent: the exchange in
/// front of `process()` repeats the join's watermark as a heartbeat. (Both sides are channels,
/// which are unbounded: the table side is not loaded first, which would wait forever.)
#[test]
fn processing_time_timers_fire_after_an_idle_join() {
    let logins_schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("attempt", DataType::Int64, false),
    ]));
    let levels_schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("level", DataType::Int64, false),
    ]));
    let (logins_source, logins_tx) = ChannelSource::new(logins_schema, 4);
    let (levels_source, levels_tx) = ChannelSource::new(levels_schema.clone(), 4);
    let levels = Stream::from_source(Arc::new(levels_source));
    let stream = Stream::from_source(Arc::new(logins_source))
        .with_parallelism(2)
        .table_join(&levels, ["user"], ["user"], sabot::plan::JoinType::Left)
        .unwrap()
        .select(["user", "attempt"])
        .unwrap()
        .key_by(["user"])
        .process(Remember::default)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        stream.for_each_batch(|b| {
            tx.send(b).unwrap();
            Ok(())
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let level = RecordBatch::try_new(
        levels_schema,
        vec![Arc::new(StringArray::from(vec!["bob"])), Arc::new(Int64Array::from(vec![3]))],
    )
    .unwrap();
    runtime.block_on(levels_tx.send(level)).unwrap();
    runtime.block_on(logins_tx.send(logins(&[("bob", 1), ("cy", 1)]))).unwrap();
    // Both channels stay open and silent: only the timers can produce the "quiet" notes.
    let start = Instant::now();
    assert_eq!(quiet_users(&rx, 2), vec!["bob".to_string(), "cy".to_string()]);
    assert!(start.elapsed() >= Duration::from_millis(900), "not before the timers' time");
    drop((logins_tx, levels_tx));
    runner.join().unwrap().unwrap();
}
