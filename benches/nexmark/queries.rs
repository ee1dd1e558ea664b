//! The Nexmark queries, written with Sabot's public `Stream` API as a user would write them.
//!
//! Each query reads the generator's streams (`person`, `auction`, `bid`) through
//! [`Stream::from_source`]. Event time is `date_time`, with watermarks 4 s behind the largest
//! time seen, as in Flink's Nexmark DDL (`WATERMARK FOR dateTime AS dateTime - INTERVAL '4'
//! SECOND`). The queries follow Flink's Nexmark SQL (`nexmark-flink/src/main/resources/queries`)
//! with the generator's value conventions (lowercase US states, prices in cents).

use std::sync::Arc;
use std::time::Duration;

use sabot::deps::arrow;
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::prelude::*;
use sabot::state::{ListState, ListStateDescriptor, ValueState, ValueStateDescriptor};

use arrow::datatypes::DataType;

use super::generator::{EventKind, NexmarkGenerator};

/// How far watermarks trail the largest event time seen.
pub const WATERMARK_DELAY: Duration = Duration::from_secs(4);
/// q5's sliding windows: 10 s long, one every 2 s.
pub const Q5_SIZE: Duration = Duration::from_secs(10);
/// q5's window slide.
pub const Q5_SLIDE: Duration = Duration::from_secs(2);
/// q7's and q12's tumbling windows.
pub const TUMBLE: Duration = Duration::from_secs(10);
/// q11's session gap.
pub const SESSION_GAP: Duration = Duration::from_secs(10);
/// q8's tumbling windows.
pub const Q8_WINDOW: Duration = Duration::from_secs(10);
/// q3's states (the generator writes them in lowercase).
pub const Q3_STATES: [&str; 3] = ["or", "id", "ca"];
/// q3's category.
pub const Q3_CATEGORY: i64 = 10;
/// q2 keeps the bids on auctions whose id is a multiple of this.
pub const Q2_MODULUS: i64 = 123;
/// q1's dollar-to-euro rate.
pub const Q1_RATE: f64 = 0.908;

/// The queries this module implements, in the order the benchmark runs them.
pub const QUERIES: [&str; 9] = ["q0", "q1", "q2", "q3", "q5", "q7", "q8", "q11", "q12"];

/// One short line per query, for reports.
pub fn describe(query: &str) -> &'static str {
    match query {
        "q0" => "pass-through: auction, bidder, price, date_time, extra",
        "q1" => "currency conversion: price * 0.908",
        "q2" => "selection: auction % 123 == 0",
        "q3" => "local item suggestion: auctions of category 10 joined with their OR/ID/CA sellers",
        "q5" => "hot items: bids per auction in 10 s windows every 2 s, the auctions with the most",
        "q7" => "highest bid: the bids with the top price of each 10 s window",
        "q8" => "new users: people who opened an auction in the 10 s window they registered in",
        "q11" => "user sessions: bids per bidder per session (gap 10 s)",
        "q12" => "bids per bidder per 10 s tumbling window (event time; Flink: processing time)",
        _ => "unknown query",
    }
}

/// The streams of one generated data set, read with `parallelism` partitions.
#[derive(Debug, Clone)]
pub struct Nexmark {
    generator: Arc<NexmarkGenerator>,
    parallelism: usize,
}

impl Nexmark {
    /// The streams of `generator`'s events.
    pub fn new(generator: Arc<NexmarkGenerator>, parallelism: usize) -> Nexmark {
        Nexmark { generator, parallelism: parallelism.max(1) }
    }

    /// The generator.
    pub fn generator(&self) -> &Arc<NexmarkGenerator> {
        &self.generator
    }

    fn stream(&self, kind: EventKind) -> Stream {
        Stream::from_source(self.generator.source(kind)).with_parallelism(self.parallelism)
    }

    /// `person(id, name, email_address, credit_card, city, state, date_time, extra)`.
    pub fn persons(&self) -> Stream {
        self.stream(EventKind::Person)
    }

    /// `auction(id, item_name, description, initial_bid, reserve, date_time, expires, seller,
    /// category, extra)`.
    pub fn auctions(&self) -> Stream {
        self.stream(EventKind::Auction)
    }

    /// `bid(auction, bidder, price, channel, url, date_time, extra)`.
    pub fn bids(&self) -> Stream {
        self.stream(EventKind::Bid)
    }

    /// Bids with event time and watermarks.
    fn timed_bids(&self) -> Result<Stream> {
        self.bids().with_watermarks("date_time", watermarks())
    }

    /// The query named `name` (`q0`, `q1`, …; see [`QUERIES`]).
    pub fn query(&self, name: &str) -> Result<Stream> {
        match name {
            "q0" => self.q0(),
            "q1" => self.q1(),
            "q2" => self.q2(),
            "q3" => self.q3(),
            "q5" => self.q5(),
            "q7" => self.q7(),
            "q8" => self.q8(),
            "q11" => self.q11(),
            "q12" => self.q12(),
            other => Err(SabotError::plan(format!("unknown Nexmark query {other}; known: {QUERIES:?}"))),
        }
    }

    /// q0, pass-through: `SELECT auction, bidder, price, dateTime, extra FROM bid`. Measures
    /// the source and the engine's plumbing.
    pub fn q0(&self) -> Result<Stream> {
        self.bids().select(["auction", "bidder", "price", "date_time", "extra"])
    }

    /// q1, currency conversion: `SELECT auction, bidder, 0.908 * price AS price, dateTime,
    /// extra FROM bid` (price becomes a `Float64` in euros-cents).
    pub fn q1(&self) -> Result<Stream> {
        self.bids().select([
            col("auction"),
            col("bidder"),
            (col("price").cast(DataType::Float64) * lit(Q1_RATE)).alias("price"),
            col("date_time"),
            col("extra"),
        ])
    }

    /// q2, selection: `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.
    pub fn q2(&self) -> Result<Stream> {
        self.bids().filter((col("auction") % lit(Q2_MODULUS)).eq(lit(0i64)))?.select(["auction", "price"])
    }

    /// q3, local item suggestion: `SELECT P.name, P.city, P.state, A.id FROM auction A JOIN
    /// person P ON A.seller = P.id WHERE A.category = 10 AND P.state IN ('or', 'id', 'ca')`.
    ///
    /// A stream–table join: the filtered auctions are enriched from the table of filtered
    /// persons (latest row per id; ids are unique). The person stream is bounded here, so the
    /// table is complete before the first auction is joined, and the result equals Flink's
    /// regular join; on an unbounded person stream an auction would see the persons that
    /// arrived before it (its seller always has, except for the few `PERSON_ID_LEAD` ids
    /// ahead of the last registered person).
    pub fn q3(&self) -> Result<Stream> {
        let auctions = self.auctions().filter(col("category").eq(lit(Q3_CATEGORY)))?;
        let in_states = Q3_STATES.iter().map(|s| col("state").eq(lit(*s))).reduce(Expr::or).expect("three states");
        let persons = self.persons().filter(in_states)?;
        auctions.table_join(&persons, ["seller"], ["id"], JoinType::Inner)?.select(["name", "city", "state", "id"])
    }

    /// q8, monitor new users: the people who registered and opened an auction in the same
    /// 10 s tumbling window. As in Flink's q8, the auctions are first reduced to one row per
    /// (seller, window) by a window aggregate, then joined with the persons in the same
    /// windows on `person.id = seller` (Flink also groups persons by id and name per window,
    /// which changes nothing: person ids are unique).
    ///
    /// The sellers' rows carry their window's start as event time, so the window join puts
    /// them in the window they were counted in. Output: `id, name, window_start`.
    pub fn q8(&self) -> Result<Stream> {
        let window = WindowSpec::tumbling(Q8_WINDOW);
        let sellers = self
            .auctions()
            .with_watermarks("date_time", watermarks())?
            .key_by(["seller"])
            .window(window)
            .aggregate([count_all().alias("auctions")])?
            .select([col("seller"), col("window_start").alias("seller_window")])?
            .with_watermarks("seller_window", WatermarkStrategy::monotonous())?;
        let persons = self.persons().with_watermarks("date_time", watermarks())?.select(["id", "name", "date_time"])?;
        persons.window_join(&sellers, ["id"], ["seller"], window)?.select(["id", "name", "window_start"])
    }

    /// q5, hot items: the number of bids per auction in sliding windows (10 s, every 2 s),
    /// then per window the auctions whose count is the window's largest (ties all kept).
    ///
    /// Output: `auction, num, window_start, window_end`. The second step is a keyed process
    /// function on `window_end`: it tracks the largest count and its auctions, and emits them
    /// when the watermark passes the window's end (all counts of a window reach it before
    /// that watermark, since every upstream partition fires a window before forwarding the
    /// watermark that closed it).
    pub fn q5(&self) -> Result<Stream> {
        q5_of(self.timed_bids()?)
    }

    /// q7, highest bid: the bids whose price is the largest of their 10 s tumbling window
    /// `[start, start + 10 s)`. Flink's q7 joins the bids with the per-window maximum (its
    /// `BETWEEN end - 10 s AND end` also admits a bid at exactly the next window's start);
    /// here one keyed process function per window keeps the maximum and the bids at it, and
    /// emits them when the watermark passes the window's end, so bids below the running
    /// maximum are dropped on arrival instead of being buffered for a join.
    ///
    /// Output: `auction, price, bidder, date_time, extra`.
    pub fn q7(&self) -> Result<Stream> {
        let window = tumble_millis();
        let window_of = col("date_time").cast(DataType::Int64) / lit(window);
        self.timed_bids()?.key_by([window_of]).process(HighestBid::default)?.select([
            "auction",
            "price",
            "bidder",
            "date_time",
            "extra",
        ])
    }

    /// q11, user sessions: bids per bidder per session window (a session ends after 10 s
    /// without bids from that bidder). Output: `bidder, window_start, window_end, bid_count`;
    /// a session's `window_end` is its last bid's time + 10 s.
    pub fn q11(&self) -> Result<Stream> {
        self.timed_bids()?
            .key_by(["bidder"])
            .window(WindowSpec::session(SESSION_GAP))
            .aggregate([count_all().alias("bid_count")])
    }

    /// q12, bids per bidder per 10 s tumbling window. Flink's q12 windows on *processing time*
    /// (`PROCTIME()`); Sabot windows on event time instead: processing-time windows depend on
    /// the machine's speed and thread scheduling, so their output can neither be checked nor
    /// compared between runs or engines, and the generator's event time already advances at
    /// the configured event rate as a paced source's processing time would. The work per bid
    /// (one keyed window update) is the same. Output: `bidder, window_start, window_end,
    /// bid_count`.
    pub fn q12(&self) -> Result<Stream> {
        self.timed_bids()?
            .key_by(["bidder"])
            .window(WindowSpec::tumbling(TUMBLE))
            .aggregate([count_all().alias("bid_count")])
    }
}

/// q5 over `bids` (with event time and watermarks on `date_time`): the same operators
/// whatever the source (the generator, or Kafka in the checkpoint benchmark).
pub fn q5_of(bids: Stream) -> Result<Stream> {
    let counts = bids
        .key_by(["auction"])
        .window(WindowSpec::sliding(Q5_SIZE, Q5_SLIDE))
        .aggregate([count_all().alias("num")])?;
    counts.key_by(["window_end"]).process(HotItems::default)?.select(["auction", "num", "window_start", "window_end"])
}

/// The queries' watermarks: `WATERMARK_DELAY` behind the largest event time seen.
pub fn watermarks() -> WatermarkStrategy {
    WatermarkStrategy::bounded_out_of_orderness(WATERMARK_DELAY)
}

/// q7's and q12's window length in ms.
pub fn tumble_millis() -> i64 {
    TUMBLE.as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// q5: the auctions with the most bids per window.

/// A row of q5's first step: bids of one auction in one window.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct AuctionCount {
    /// The auction.
    pub auction: i64,
    /// The window's start.
    pub window_start: Timestamp,
    /// The window's end (exclusive).
    pub window_end: Timestamp,
    /// Bids on the auction in the window.
    pub num: i64,
}

/// A row of q5's result: one of the auctions with the most bids in a window.
#[derive(Record, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HotItem {
    /// The window's start.
    pub window_start: Timestamp,
    /// The window's end (exclusive).
    pub window_end: Timestamp,
    /// The auction.
    pub auction: i64,
    /// Its number of bids, the window's largest.
    pub num: i64,
}

/// Per window (the key): the start, the largest count so far, and the auctions with it.
type HotState = (i64, i64, Vec<i64>);

/// q5's second step: per window, the auctions with the largest count, emitted at the
/// window's end.
#[derive(Default)]
pub struct HotItems {
    best: Option<ValueState<HotState>>,
}

impl KeyedProcessFunction for HotItems {
    type In = AuctionCount;
    type Out = HotItem;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> Result<()> {
        self.best = Some(ctx.state().value_state(&ValueStateDescriptor::new("hot-items"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        row: AuctionCountView<'_>,
        ctx: &mut ProcessContext<'_>,
        _out: &mut Vec<HotItem>,
    ) -> Result<()> {
        let state = self.best.expect("opened");
        let (start, end) = (row.window_start.millis(), row.window_end.millis());
        let best = match state.value(ctx.state())? {
            Some((start, max, auctions)) if row.num < max => (start, max, auctions),
            Some((start, max, mut auctions)) if row.num == max => {
                auctions.push(row.auction);
                (start, max, auctions)
            }
            _ => (start, row.num, vec![row.auction]),
        };
        state.update(ctx.state(), best)?;
        ctx.register_event_time_timer(end);
        Ok(())
    }

    fn on_timer(&mut self, end: i64, ctx: &mut ProcessContext<'_>, out: &mut Vec<HotItem>) -> Result<()> {
        let state = self.best.expect("opened");
        if let Some((start, num, mut auctions)) = state.value(ctx.state())? {
            auctions.sort_unstable();
            out.extend(auctions.into_iter().map(|auction| HotItem {
                window_start: Timestamp::from_millis(start),
                window_end: Timestamp::from_millis(end),
                auction,
                num,
            }));
        }
        state.clear(ctx.state())
    }
}

// ---------------------------------------------------------------------------------------------
// q7: the highest bids per window.

/// The bid columns q7 reads.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct BidRow {
    /// The auction.
    pub auction: i64,
    /// The bidder.
    pub bidder: i64,
    /// The price in cents.
    pub price: i64,
    /// The bid's time.
    #[record(event_time)]
    pub date_time: Timestamp,
    /// Padding.
    pub extra: String,
}

/// A bid kept in q7's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct StoredBid {
    auction: i64,
    bidder: i64,
    price: i64,
    date_time: i64,
    extra: String,
}

/// q7: per 10 s window (the key), the largest price so far and the bids at that price,
/// emitted when the watermark passes the window's end.
#[derive(Default)]
pub struct HighestBid {
    max: Option<ValueState<i64>>,
    bids: Option<ListState<StoredBid>>,
}

impl KeyedProcessFunction for HighestBid {
    type In = BidRow;
    type Out = BidRow;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> Result<()> {
        self.max = Some(ctx.state().value_state(&ValueStateDescriptor::new("max-price"))?);
        self.bids = Some(ctx.state().list_state(&ListStateDescriptor::new("max-bids"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        bid: BidRowView<'_>,
        ctx: &mut ProcessContext<'_>,
        _out: &mut Vec<BidRow>,
    ) -> Result<()> {
        let (max, bids) = (self.max.expect("opened"), self.bids.expect("opened"));
        let current = max.value(ctx.state())?;
        if current.is_some_and(|m| bid.price < m) {
            return Ok(());
        }
        let stored = StoredBid {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price,
            date_time: bid.date_time.millis(),
            extra: bid.extra.to_string(),
        };
        if current == Some(bid.price) {
            return bids.add(ctx.state(), stored);
        }
        max.update(ctx.state(), bid.price)?;
        bids.update(ctx.state(), vec![stored])?;
        let window = tumble_millis();
        ctx.register_event_time_timer(bid.date_time.millis().div_euclid(window) * window + window);
        Ok(())
    }

    fn on_timer(&mut self, _end: i64, ctx: &mut ProcessContext<'_>, out: &mut Vec<BidRow>) -> Result<()> {
        let (max, bids) = (self.max.expect("opened"), self.bids.expect("opened"));
        out.extend(bids.get(ctx.state())?.into_iter().map(|b| BidRow {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: Timestamp::from_millis(b.date_time),
            extra: b.extra,
        }));
        bids.clear(ctx.state())?;
        max.clear(ctx.state())
    }
}
