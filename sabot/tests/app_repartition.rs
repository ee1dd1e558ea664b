//! `key_by` across workers: two workers of one app, in one consumer group, over a topic that
//! is not keyed by the grouping column. Each user's clicks are spread over every partition,
//! yet each user's running count must be counted in one place: the repartition topic sends
//! all of a user's rows to one worker.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use sabot::app::{Worker, WorkerOptions};
use sabot::kafka::{EmbeddedCluster, StartOffset};
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::prelude::*;
use sabot::state::{ValueState, ValueStateDescriptor};

#[derive(sabot::Record, Debug, Clone)]
pub struct Click {
    pub user: String,
    pub page: i64,
}

#[derive(sabot::Record, Debug, Clone)]
pub struct Count {
    pub user: String,
    pub clicks: i64,
}

/// A running count of clicks per user, in keyed state.
#[derive(Default)]
pub struct CountClicks {
    count: Option<ValueState<i64>>,
}

impl KeyedProcessFunction for CountClicks {
    type In = Click;
    type Out = Count;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> sabot::Result<()> {
        self.count = Some(ctx.state().value_state(&ValueStateDescriptor::new("clicks"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        click: ClickView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Count>,
    ) -> sabot::Result<()> {
        let state = self.count.expect("opened");
        let clicks = state.value(ctx.state())?.unwrap_or(0) + 1;
        state.update(ctx.state(), clicks)?;
        out.push(Count { user: click.user.to_string(), clicks });
        Ok(())
    }
}

#[sabot::app(name = "clicks", main = false)]
mod clicks {
    use super::*;

    /// The topic is not keyed by user: `key_by(user)` goes through a repartition topic.
    #[agent("clicks", sink = "counts")]
    fn count(clicks: Stream<Click>) -> sabot::Result<Stream<Count>> {
        clicks.key_by(["user"]).process(CountClicks::default)
    }
}

/// A cluster with the `clicks` app's topics (input, output, repartition topic), each of
/// `partitions` partitions, and its bootstrap servers.
fn click_cluster(partitions: usize) -> (EmbeddedCluster, String) {
    let cluster = EmbeddedCluster::start(1).unwrap();
    for topic in ["clicks", "counts", "clicks-count-repartition-0"] {
        cluster.create_topic(topic, partitions).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// Waits until the group's partitions are split over both workers: each owns some, and
/// together they own all of them (so no rebalance is pending). Otherwise stops the workers
/// and fails with what they returned.
fn wait_for_split(workers: [Worker; 2], group: &str, partitions: u64) -> [Worker; 2] {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut owned = vec![];
    while Instant::now() < deadline {
        owned = workers.iter().map(|w| w.status().assigned_partitions(group)).collect();
        if owned.iter().all(|n| *n > 0) && owned.iter().sum::<u64>() == partitions {
            return workers;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended: Vec<String> = workers
        .into_iter()
        .map(|w| {
            w.stop();
            format!("{:?}", w.join())
        })
        .collect();
    panic!(
        "group {group} did not split its {partitions} partitions over the workers: {owned:?}; they returned {ended:?}"
    );
}

#[test]
fn two_workers_count_each_user_in_one_place_through_the_repartition_topic() {
    let (_cluster, brokers) = click_cluster(4);
    let explain = clicks::app().explain().unwrap();
    assert!(explain.contains("repartition topic 'clicks-count-repartition-0' by [user]"), "{explain}");

    let options = WorkerOptions::default()
        .with_broker(&brokers)
        .with_concurrency(1)
        .with_start_offset(StartOffset::Earliest)
        .with_property("session.timeout.ms", "2000")
        .with_property("heartbeat.interval.ms", "300");
    let workers = [0, 1].map(|_| clicks::app().start_worker(&options).unwrap());
    let workers = wait_for_split(workers, "clicks-count", 4);
    let workers = wait_for_split(workers, "clicks-count-repartition", 4);

    // 20 users x 25 clicks, round-robin over the 4 partitions.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let mut n = 0;
    for click in 0..25 {
        for user in 0..20 {
            let payload = format!(r#"{{"user": "u{user}", "page": {click}}}"#);
            producer.send(BaseRecord::<(), str>::to("clicks").payload(&payload).partition(n % 4)).unwrap();
            n += 1;
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let counts = read_counts(&brokers, "count-reader", 500);
    workers.iter().for_each(Worker::stop);
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(counts.len(), 20);
    for (user, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(seen, (1..=25).collect::<Vec<_>>(), "user {user} counted in one place, each click once");
    }
}

/// `--state-dir` puts the agents' keyed state in the worker's RocksDB instance: counts go on
/// as in memory, and the state is in RocksDB on disk after the worker stopped.
#[cfg(feature = "rocksdb")]
#[test]
fn a_worker_with_a_state_dir_keeps_keyed_state_in_rocksdb() {
    let (_cluster, brokers) = click_cluster(2);
    let state = tempfile::tempdir().unwrap();
    let options = WorkerOptions::default()
        .with_broker(&brokers)
        .with_concurrency(1)
        .with_start_offset(StartOffset::Earliest)
        .with_property("session.timeout.ms", "2000")
        .with_state_dir(state.path());
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for click in 0..5 {
        for user in 0..10 {
            let payload = format!(r#"{{"user": "u{user}", "page": {click}}}"#);
            producer.send(BaseRecord::<(), str>::to("clicks").payload(&payload).partition(click % 2)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let worker = clicks::app().start_worker(&options).unwrap();

    let counts = read_counts(&brokers, "state-dir-reader", 50);
    worker.stop();
    worker.join().unwrap();
    assert_eq!(counts.len(), 10);
    for (user, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(seen, (1..=5).collect::<Vec<_>>(), "user {user}");
    }
    let families = sabot::state::RocksDbInstance::open(state.path()).unwrap().column_families();
    assert!(families.iter().any(|cf| cf.ends_with("/clicks")), "the counts are in RocksDB: {families:?}");
}

/// Clicks seen by the async agent below (agents are plain functions: state outside them
/// goes through statics or channels).
static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[sabot::app(name = "audit", main = false)]
mod audit {
    use super::*;
    use sabot::app::AgentStream;

    /// Faust style: the records one by one, the state in the agent's variables.
    #[agent("audited")]
    async fn tally(mut clicks: AgentStream<Click>) -> sabot::Result<()> {
        let mut pages = 0;
        while let Some(click) = clicks.next().await {
            pages += click.page;
            SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        tracing::info!(pages, "tally done");
        Ok(())
    }
}

#[test]
fn an_async_agent_takes_every_record_and_its_offsets_are_committed() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("audited", 2).unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for i in 0..300 {
        let payload = format!(r#"{{"user": "u{}", "page": {i}}}"#, i % 7);
        producer.send(BaseRecord::<(), str>::to("audited").payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let options = WorkerOptions::default()
        .with_broker(&brokers)
        .with_concurrency(1)
        .with_start_offset(StartOffset::Earliest)
        .with_property("session.timeout.ms", "2000");
    let worker = audit::app().start_worker(&options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while SEEN.load(std::sync::atomic::Ordering::SeqCst) < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.stop();
    let produced = worker.join().unwrap();
    assert_eq!(produced, vec![("tally".to_string(), 300)]);
    assert_eq!(SEEN.load(std::sync::atomic::Ordering::SeqCst), 300);

    // The group resumes after everything: all 300 offsets were committed.
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "audit-tally").create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("audited", 0);
    tpl.add_partition("audited", 1);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 300);
}

/// Reads `n` counts from the `counts` topic (or what arrives within 60 s), per user.
fn read_counts(brokers: &str, group: &str, n: usize) -> BTreeMap<String, Vec<i64>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["counts"]).unwrap();
    let mut counts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = 0;
    while received < n && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            let row: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            counts.entry(row["user"].as_str().unwrap().to_string()).or_default().push(row["clicks"].as_i64().unwrap());
            received += 1;
        }
    }
    counts
}

fn produce_round(brokers: &str, rounds: std::ops::Range<i64>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let mut n = 0;
    for click in rounds {
        for user in 0..20 {
            let payload = format!(r#"{{"user": "u{user}", "page": {click}}}"#);
            producer.send(BaseRecord::<(), str>::to("clicks").payload(&payload).partition(n % 4)).unwrap();
            n += 1;
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Workers with ids share their checkpoint directory: when a second worker joins and the
/// first leaves, the per-user counts behind the repartition topic move with their
/// partitions, so every count continues where the other worker left it.
#[test]
fn keyed_state_moves_between_workers_that_share_a_checkpoint_directory() {
    let (_cluster, brokers) = click_cluster(4);
    let checkpoints = tempfile::tempdir().unwrap();
    let options = |id: &str| {
        WorkerOptions::default()
            .with_broker(&brokers)
            .with_concurrency(1)
            .with_start_offset(StartOffset::Earliest)
            .with_property("session.timeout.ms", "2000")
            .with_property("heartbeat.interval.ms", "300")
            .with_checkpoints(checkpoints.path(), Duration::from_millis(200))
            .with_worker_id(id)
    };
    let first = clicks::app().start_worker(&options("w1")).unwrap();
    produce_round(&brokers, 0..10);
    let counts = read_counts(&brokers, "reader-1", 200);
    assert_eq!(counts.values().map(Vec::len).sum::<usize>(), 200);

    let second = clicks::app().start_worker(&options("w2")).unwrap();
    let workers = [first, second];
    let workers = wait_for_split(workers, "clicks-count-repartition", 4);
    produce_round(&brokers, 10..20);
    assert_eq!(read_counts(&brokers, "reader-2", 400).values().map(Vec::len).sum::<usize>(), 400);

    let [first, second] = workers;
    first.stop();
    first.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.status().assigned_partitions("clicks-count-repartition") < 4 {
        assert!(Instant::now() < deadline, "the second worker did not take every partition");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce_round(&brokers, 20..30);
    let counts = read_counts(&brokers, "reader-3", 600);
    std::thread::sleep(Duration::from_millis(300));
    second.stop();
    second.join().unwrap();
    assert_eq!(counts.len(), 20);
    for (user, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(seen, (1..=30).collect::<Vec<_>>(), "user {user}: counts carried across workers, each once");
    }
    // The keyed stage's store: every key group's newest state is the second worker's.
    let store =
        sabot::checkpoint::KeyGroupStore::new(checkpoints.path().join("count/stage-1"), "clicks-count-repartition");
    for partition in 0..4 {
        let holder = store.locate("clicks-count-repartition-0", partition).unwrap().expect("a holder");
        assert!(holder.checkpoint.to_string_lossy().contains("/w2/"), "{partition}: {holder:?}");
    }
}

/// A savepoint of workers that share their checkpoints: two workers count, stop, and the
/// app's savepoint copies every worker's checkpoints; two new workers start from it with an
/// empty checkpoint directory (as after an upgrade) and every count continues exactly.
#[test]
fn keyed_state_of_several_workers_survives_a_savepoint() {
    let (_cluster, brokers) = click_cluster(4);
    let (before, after, savepoint) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = |id: &str, checkpoints: &std::path::Path| {
        WorkerOptions::default()
            .with_broker(&brokers)
            .with_concurrency(1)
            .with_start_offset(StartOffset::Earliest)
            .with_property("session.timeout.ms", "2000")
            .with_property("heartbeat.interval.ms", "300")
            .with_checkpoints(checkpoints, Duration::from_millis(200))
            .with_worker_id(id)
    };
    let run =
        |checkpoints: &std::path::Path, from: Option<&std::path::Path>, rounds: std::ops::Range<i64>, n: usize| {
            let start = |id: &str| {
                let mut options = options(id, checkpoints);
                options.from_savepoint = from.map(|p| p.to_path_buf());
                clicks::app().start_worker(&options).unwrap()
            };
            let workers = [start("w1"), start("w2")];
            let workers = wait_for_split(workers, "clicks-count-repartition", 4);
            produce_round(&brokers, rounds.clone());
            let counts = read_counts(&brokers, &format!("reader-{}", rounds.start), n);
            for worker in workers {
                worker.stop();
                worker.join().unwrap();
            }
            counts
        };
    assert_eq!(run(before.path(), None, 0..10, 200).values().map(Vec::len).sum::<usize>(), 200);
    let target = savepoint.path().join("v1");
    let copied = clicks::app().savepoint(before.path(), &target).unwrap();
    assert!(copied.iter().any(|(stage, ids)| stage == "count/stage-1" && ids.len() >= 2), "{copied:?}");

    let counts = run(after.path(), Some(&target), 10..20, 400);
    assert_eq!(counts.len(), 20);
    for (user, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "user {user}: counts continue from the savepoint, each once");
    }
    // The new store was seeded from the savepoint: a third start from it is accepted, one
    // from an unrelated store's savepoint is not.
    let mut other = options("w1", after.path());
    other.from_savepoint = Some(before.path().join("count/stage-1").to_path_buf());
    assert!(clicks::app().run_worker(&other, None).is_err(), "a store seeded from another savepoint");
}
