//! The Nexmark event generator, writing Arrow columns directly, as a parallel Sabot source.
//!
//! Nexmark models an online auction site with three event streams: new people, new auctions
//! and bids. The generation rules are those of the reference generator of Apache Beam
//! (`org.apache.beam.sdk.nexmark.sources.generator`: `GeneratorConfig`, `PersonGenerator`,
//! `AuctionGenerator`, `BidGenerator`), which Flink's `nexmark` benchmark copies, as ported to
//! Rust by RisingWave in the `nexmark` crate (version 0.2, Apache-2.0). That crate is the source
//! of truth here: with seed 0 this generator produces exactly its events, field for field (the
//! tests check a digest of the crate's output), but writes them straight into Arrow column
//! buffers instead of allocating one struct and several `String`s per event, and computes any
//! range of events independently of the others, so morsels are generated in parallel.
//!
//! The rules, by event number `n` (0, 1, 2, …):
//!
//! - **Kind.** Events come in epochs of 50 (`PROPORTION_DENOMINATOR`): `n % 50 == 0` is a
//!   person, `1..=3` are auctions, `4..=49` are bids (persons : auctions : bids = 1 : 3 : 46).
//! - **Time.** `date_time = base_time + round(n * inter_event_delay_us / 1000)` ms, where
//!   `inter_event_delay_us = 1e6 / events_per_second` (one generator, constant rate; computed
//!   in `f32` as the reference does). Event times never decrease.
//! - **Ids.** Person ids and auction ids are not random: they follow the event number.
//!   `lastBase0PersonId(n) = (n / 50) * 1 + min(n % 50, 0)` and `lastBase0AuctionId(n)` (the
//!   epoch's last auction so far, see [`auction_last_id`]); a person's id is
//!   `FIRST_PERSON_ID + lastBase0PersonId(n)`, an auction's `FIRST_AUCTION_ID +
//!   lastBase0AuctionId(n)`. References to other entities use `nextBase0PersonId` (one of the
//!   last `active_people` people, or up to `PERSON_ID_LEAD` people not yet created) and
//!   `nextBase0AuctionId` (one of the last `in_flight_auctions` auctions, or up to
//!   `AUCTION_ID_LEAD` ahead).
//! - **Hot entities.** A bid goes to the current *hot auction* (`lastBase0AuctionId / 100 *
//!   100`) with probability `1 - 1/hot_auction_ratio`, is made by the current *hot bidder*
//!   (`lastBase0PersonId / 100 * 100 + 1`) with probability `1 - 1/hot_bidder_ratio`, and uses
//!   one of 4 *hot channels* with probability `1 - 1/hot_channel_ratio` (else one of 10,000
//!   channels); an auction's seller is the current *hot seller* (`lastBase0PersonId / 100 *
//!   100`) with probability `1 - 1/hot_seller_ratio`.
//! - **Values.** Every event draws its random fields from its own generator seeded with its
//!   event id (rand 0.8's `SmallRng`, reproduced by [`SmallRng`]), so events do not depend on
//!   each other. Prices are `round(100 * 10^(6u))` cents for a uniform `u`; `extra` pads each
//!   event to an average size (`avg_*_byte_size`) with lowercase letters.
//!
//! A non-zero `seed` shifts the per-event generator seeds (`event id + seed * φ`), giving
//! another deterministic data set with the same ids, kinds and times.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use sabot::deps::arrow;
use sabot::io::{BatchIter, Scan, ScanRequest, Source};
use sabot::{Result, SabotError};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Persons per epoch of [`PROPORTION_DENOMINATOR`] events.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per epoch.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per epoch.
pub const BID_PROPORTION: u64 = 46;
/// Events per epoch: persons, then auctions, then bids.
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
/// The first person id (ids start high so that queries match even on tiny data sets).
pub const FIRST_PERSON_ID: u64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category id.
pub const FIRST_CATEGORY_ID: u64 = 10;
/// How many people ids ahead of the last created one a reference may point to.
pub const PERSON_ID_LEAD: u64 = 10;
/// How many auction ids ahead of the last created one a reference may point to.
pub const AUCTION_ID_LEAD: u64 = 10;
/// Hot sellers are the first of each batch of this many people.
pub const HOT_SELLER_BATCH: u64 = 100;
/// Hot auctions are the first of each batch of this many auctions.
pub const HOT_AUCTION_BATCH: u64 = 100;
/// Hot bidders are the second of each batch of this many people.
pub const HOT_BIDDER_BATCH: u64 = 100;
/// Number of non-hot channels.
pub const CHANNELS: usize = 10_000;

const US_STATES: [&str; 6] = ["az", "ca", "id", "or", "wa", "wy"];
const US_CITIES: [&str; 10] =
    ["phoenix", "los angeles", "san francisco", "boise", "portland", "bend", "redmond", "seattle", "kent", "cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["peter", "paul", "luke", "john", "saul", "vicky", "kate", "julie", "sarah", "deiter", "walter"];
const LAST_NAMES: [&str; 9] = ["shultz", "abrams", "spencer", "white", "bartels", "walton", "smith", "jones", "noris"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The three Nexmark event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// New people registering.
    Person,
    /// New auctions.
    Auction,
    /// Bids on auctions.
    Bid,
}

impl EventKind {
    /// The kind of event number `n`.
    #[inline]
    pub fn of(n: u64) -> EventKind {
        let r = n % PROPORTION_DENOMINATOR;
        if r < PERSON_PROPORTION {
            EventKind::Person
        } else if r < PERSON_PROPORTION + AUCTION_PROPORTION {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }

    /// This kind's events per epoch of 50.
    pub fn proportion(self) -> u64 {
        match self {
            EventKind::Person => PERSON_PROPORTION,
            EventKind::Auction => AUCTION_PROPORTION,
            EventKind::Bid => BID_PROPORTION,
        }
    }

    /// The offsets within an epoch that hold this kind.
    fn epoch_offsets(self) -> Range<u64> {
        match self {
            EventKind::Person => 0..PERSON_PROPORTION,
            EventKind::Auction => PERSON_PROPORTION..PERSON_PROPORTION + AUCTION_PROPORTION,
            EventKind::Bid => PERSON_PROPORTION + AUCTION_PROPORTION..PROPORTION_DENOMINATOR,
        }
    }

    /// How many of the events numbered `0..events` are of this kind.
    pub fn count_in(self, events: u64) -> u64 {
        let offsets = self.epoch_offsets();
        let partial = events % PROPORTION_DENOMINATOR;
        events / PROPORTION_DENOMINATOR * self.proportion() + partial.clamp(offsets.start, offsets.end) - offsets.start
    }

    /// The Arrow schema of this stream.
    pub fn schema(self) -> SchemaRef {
        match self {
            EventKind::Person => person_schema(),
            EventKind::Auction => auction_schema(),
            EventKind::Bid => bid_schema(),
        }
    }

    /// The stream's name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Person => "person",
            EventKind::Auction => "auction",
            EventKind::Bid => "bid",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn timestamp_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), false)
}

/// `person(id, name, email_address, credit_card, city, state, date_time, extra)`.
pub fn person_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("email_address", DataType::Utf8, false),
                Field::new("credit_card", DataType::Utf8, false),
                Field::new("city", DataType::Utf8, false),
                Field::new("state", DataType::Utf8, false),
                timestamp_field("date_time"),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// `auction(id, item_name, description, initial_bid, reserve, date_time, expires, seller,
/// category, extra)`.
pub fn auction_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("item_name", DataType::Utf8, false),
                Field::new("description", DataType::Utf8, false),
                Field::new("initial_bid", DataType::Int64, false),
                Field::new("reserve", DataType::Int64, false),
                timestamp_field("date_time"),
                timestamp_field("expires"),
                Field::new("seller", DataType::Int64, false),
                Field::new("category", DataType::Int64, false),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// `bid(auction, bidder, price, channel, url, date_time, extra)`.
pub fn bid_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("auction", DataType::Int64, false),
                Field::new("bidder", DataType::Int64, false),
                Field::new("price", DataType::Int64, false),
                Field::new("channel", DataType::Utf8, false),
                Field::new("url", DataType::Utf8, false),
                timestamp_field("date_time"),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------
// The per-event random generator.

/// rand 0.8's `SmallRng` on 64-bit targets (xoshiro256++, seeded through PCG32) and the
/// few rand 0.8 sampling routines the reference generator uses, bit for bit, so that events
/// equal those of the `nexmark` crate without depending on rand 0.8.
#[derive(Clone, Debug)]
pub struct SmallRng {
    s: [u64; 4],
}

impl SmallRng {
    /// `SmallRng::seed_from_u64`: rand_core 0.6's default, which fills the 32-byte seed with
    /// eight PCG32 outputs (little-endian) read as the four xoshiro256++ state words.
    #[inline]
    pub fn seed_from_u64(mut state: u64) -> SmallRng {
        const MUL: u64 = 6_364_136_223_846_793_005;
        const INC: u64 = 11_634_580_027_462_260_723;
        let mut pcg32 = || {
            state = state.wrapping_mul(MUL).wrapping_add(INC);
            let xorshifted = (((state >> 18) ^ state) >> 27) as u32;
            u64::from(xorshifted.rotate_right((state >> 59) as u32))
        };
        let mut s = [0u64; 4];
        for word in &mut s {
            let low = pcg32();
            *word = low | (pcg32() << 32);
        }
        // rand re-seeds an all-zero state; PCG32 never yields eight zero outputs in a row.
        SmallRng { s }
    }

    /// The next 64 random bits (xoshiro256++).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The next 32 random bits: the upper half of [`SmallRng::next_u64`].
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// `gen_range(0..n)` for 64-bit integers (rand 0.8 `UniformInt::sample_single`: widening
    /// multiply, rejection zone `(n << n.leading_zeros()) - 1`).
    #[inline]
    pub fn below_u64(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = (n << n.leading_zeros()).wrapping_sub(1);
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) <= zone {
                return (m >> 64) as u64;
            }
        }
    }

    /// `gen_range(0..n)` for 32-bit integers (`i32` literals, slice indices via `choose`).
    #[inline]
    pub fn below_u32(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0);
        let zone = (n << n.leading_zeros()).wrapping_sub(1);
        loop {
            let m = u64::from(self.next_u32()) * u64::from(n);
            if (m as u32) <= zone {
                return (m >> 32) as u32;
            }
        }
    }

    /// `gen_range(b'a'..=b'z')`: 8-bit ranges sample a `u32` with an exact rejection zone.
    #[inline]
    pub fn lowercase(&mut self) -> u8 {
        const RANGE: u32 = 26;
        const ZONE: u32 = u32::MAX - (u32::MAX - RANGE + 1) % RANGE;
        loop {
            let m = u64::from(self.next_u32()) * u64::from(RANGE);
            if (m as u32) <= ZONE {
                return b'a' + (m >> 32) as u8;
            }
        }
    }

    /// `gen::<f32>()`: 24 random bits scaled into `[0, 1)`.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        (self.next_u32() >> 8) as f32 * SCALE
    }

    /// `choose(slice)`: a uniform index below `len`.
    #[inline]
    fn index(&mut self, len: usize) -> usize {
        self.below_u32(len as u32) as usize
    }

    /// A price in cents: `round(10^(6u) * 100)`, log-uniform between $1 and $1M.
    #[inline]
    pub fn price(&mut self) -> u64 {
        (10.0_f32.powf(self.next_f32() * 6.0) * 100.0).round() as u64
    }

    /// The length of an `extra` string that pads an event of `current` bytes to an average of
    /// `desired` bytes (uniform within ±20%), or 0 when the event is already larger.
    #[inline]
    fn extra_len(&mut self, current: usize, desired: usize) -> usize {
        if current > desired {
            return 0;
        }
        let average = desired - current;
        let delta = (average + 2) / 5;
        let min = average - delta;
        min + if delta == 0 { 0 } else { self.below_u64(2 * delta as u64) as usize }
    }
}

// ---------------------------------------------------------------------------------------------
// Channels and URLs.

/// The fixed channel table: 4 hot channels with their URLs, and 10,000 others.
struct Channels {
    hot_urls: Vec<String>,
    names: Vec<String>,
    urls: Vec<String>,
}

/// `gen_string_with_delimiter(5, '_')`: 3 or 4 characters, each `_` with probability 1/13.
fn url_part(rng: &mut SmallRng, out: &mut String) {
    let len = 3 + rng.below_u64(2);
    for _ in 0..len {
        out.push(if rng.below_u32(13) == 0 { '_' } else { rng.lowercase() as char });
    }
}

/// The reference's `getBaseUrl(seed)`.
fn base_url(seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut url = String::from("https://www.nexmark.com/");
    url_part(&mut rng, &mut url);
    url.push('/');
    url_part(&mut rng, &mut url);
    url.push('/');
    url_part(&mut rng, &mut url);
    url.push_str("/item.htm?query=1");
    url
}

fn channels() -> &'static Channels {
    static CHANNELS_TABLE: OnceLock<Channels> = OnceLock::new();
    CHANNELS_TABLE.get_or_init(|| {
        let mut names = Vec::with_capacity(CHANNELS);
        let mut urls = Vec::with_capacity(CHANNELS);
        for i in 0..CHANNELS {
            let mut url = base_url(i as u64);
            // Nine channels in ten carry a channel id in their URL.
            if SmallRng::seed_from_u64(i as u64).below_u32(10) > 0 {
                url.push_str("&channel_id=");
                url.push_str(&i64::from((i as i32).reverse_bits()).abs().to_string());
            }
            names.push(format!("channel-{i}"));
            urls.push(url);
        }
        Channels { hot_urls: (0..HOT_CHANNELS.len() as u64).map(base_url).collect(), names, urls }
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration and ids.

/// What to generate. The defaults are the reference's (`NexmarkConfig` defaults: 10,000
/// events/s from one generator, 1,000 active people, 100 auctions in flight, ratios 4/2/4/2).
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Total events (persons, auctions and bids) numbered `0..events`.
    pub events: u64,
    /// Shifts the per-event random seeds; 0 reproduces the reference exactly.
    pub seed: u64,
    /// Event time of event 0 (ms since the epoch).
    pub base_time: i64,
    /// Event-time rate: events per second of event time (`firstEventRate`).
    pub events_per_second: u64,
    /// Events per morsel of the Sabot source (rounded up to a multiple of 50).
    pub events_per_morsel: u64,
    /// People considered active when choosing a seller or a bidder.
    pub active_people: u64,
    /// Auctions considered in flight when choosing the auction of a bid.
    pub in_flight_auctions: u64,
    /// An auction is from the hot seller with probability `1 - 1/hot_seller_ratio`.
    pub hot_seller_ratio: u64,
    /// A bid is on the hot auction with probability `1 - 1/hot_auction_ratio`.
    pub hot_auction_ratio: u64,
    /// A bid is by the hot bidder with probability `1 - 1/hot_bidder_ratio`.
    pub hot_bidder_ratio: u64,
    /// A bid uses a hot channel with probability `1 - 1/hot_channel_ratio`.
    pub hot_channel_ratio: u64,
    /// Number of auction categories.
    pub num_categories: u64,
    /// Average size of a person event in bytes (padded with `extra`).
    pub avg_person_byte_size: usize,
    /// Average size of an auction event in bytes.
    pub avg_auction_byte_size: usize,
    /// Average size of a bid event in bytes.
    pub avg_bid_byte_size: usize,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 1_000_000,
            seed: 0,
            // 2015-07-15T00:00:00Z, a multiple of every window size used by the queries.
            base_time: 1_436_918_400_000,
            events_per_second: 10_000,
            events_per_morsel: 50_000,
            active_people: 1000,
            in_flight_auctions: 100,
            hot_seller_ratio: 4,
            hot_auction_ratio: 2,
            hot_bidder_ratio: 4,
            hot_channel_ratio: 2,
            num_categories: 5,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
        }
    }
}

/// `lastBase0PersonId`: the id (from 0) of the last person created at or before event `n`.
/// (With one person per epoch, the `min` is always 0; it is kept to match the spec's formula.)
#[inline]
#[allow(clippy::unnecessary_min_or_max)]
pub fn person_last_id(n: u64) -> u64 {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = (n % PROPORTION_DENOMINATOR).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// `lastBase0AuctionId`: the id (from 0) of the last auction created at or before event `n`
/// (for a person event, the previous epoch's last auction).
#[inline]
pub fn auction_last_id(n: u64) -> u64 {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        epoch = epoch.wrapping_sub(1);
        offset = AUCTION_PROPORTION - 1;
    } else if PERSON_PROPORTION + AUCTION_PROPORTION <= offset {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch.wrapping_mul(AUCTION_PROPORTION).wrapping_add(offset)
}

/// The generator: configuration plus derived constants. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// `interEventDelayUs` (f32, as the reference computes it).
    inter_event_delay_us: f32,
    seed_shift: u64,
}

impl NexmarkGenerator {
    /// A generator for `config`.
    pub fn new(config: NexmarkConfig) -> NexmarkGenerator {
        let inter_event_delay_us = 1_000_000.0_f32 / config.events_per_second.max(1) as f32;
        let seed_shift = config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let config = NexmarkConfig {
            events_per_morsel: config.events_per_morsel.max(1).div_ceil(PROPORTION_DENOMINATOR)
                * PROPORTION_DENOMINATOR,
            ..config
        };
        NexmarkGenerator { config, inter_event_delay_us, seed_shift }
    }

    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The event time of event `n` (ms).
    #[inline]
    pub fn timestamp(&self, n: u64) -> i64 {
        self.config.base_time + ((n as f32 * self.inter_event_delay_us) / 1000.0).round() as i64
    }

    #[inline]
    fn rng(&self, n: u64) -> SmallRng {
        SmallRng::seed_from_u64(n.wrapping_add(self.seed_shift))
    }

    /// `nextBase0PersonId`: one of the `active_people` last people, or a few not yet created.
    #[inline]
    fn next_person_id(&self, n: u64, rng: &mut SmallRng) -> u64 {
        let people = person_last_id(n) + 1;
        let active = people.min(self.config.active_people);
        people - active + rng.below_u64(active + PERSON_ID_LEAD)
    }

    /// `nextBase0AuctionId`: one of the `in_flight_auctions` last auctions, or a few ahead.
    #[inline]
    fn next_auction_id(&self, n: u64, rng: &mut SmallRng) -> u64 {
        let max_auction = auction_last_id(n);
        let min_auction = max_auction.saturating_sub(self.config.in_flight_auctions);
        min_auction + rng.below_u64(max_auction - min_auction + 1 + AUCTION_ID_LEAD)
    }

    /// `nextAuctionLength`: uniform in `1..=2 * horizon`, where the horizon is the time until
    /// `in_flight_auctions` more auctions will have been created.
    #[inline]
    fn auction_length(&self, n: u64, time: i64, rng: &mut SmallRng) -> i64 {
        let events_for_auctions = self.config.in_flight_auctions * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon = (self.timestamp(n + events_for_auctions) - time) as u64;
        1 + rng.below_u64((horizon * 2).max(1)) as i64
    }

    /// The number of morsels of a source over this generator's events.
    pub fn morsel_count(&self) -> usize {
        self.config.events.div_ceil(self.config.events_per_morsel) as usize
    }

    /// The event numbers of morsel `index`.
    pub fn morsel_events(&self, index: usize) -> Range<u64> {
        let start = index as u64 * self.config.events_per_morsel;
        start.min(self.config.events)..(start + self.config.events_per_morsel).min(self.config.events)
    }

    /// The `kind` events among `events`, as a batch of `kind.schema()` with every column.
    pub fn batch(&self, kind: EventKind, events: Range<u64>) -> Result<RecordBatch> {
        let all: Vec<usize> = (0..kind.schema().fields().len()).collect();
        self.projected_batch(kind, events, &all)
    }

    /// The `kind` events among `events`, with the columns `projection` (indices into
    /// `kind.schema()`, in output order). Columns not asked for are not built; values do not
    /// depend on the projection.
    pub fn projected_batch(&self, kind: EventKind, events: Range<u64>, projection: &[usize]) -> Result<RecordBatch> {
        let schema = kind.schema();
        let mut wanted = vec![false; schema.fields().len()];
        for &i in projection {
            *wanted.get_mut(i).ok_or_else(|| {
                SabotError::plan(format!("projection index {i} out of range for the {kind} schema"))
            })? = true;
        }
        let rows = (kind.count_in(events.end) - kind.count_in(events.start)) as usize;
        let columns = match kind {
            EventKind::Person => self.persons(events, rows, &wanted),
            EventKind::Auction => self.auctions(events, rows, &wanted),
            EventKind::Bid => self.bids(events, rows, &wanted),
        };
        let projected_schema = Arc::new(schema.project(projection)?);
        let arrays = projection
            .iter()
            .map(|&i| columns[i].clone().expect("every wanted column is built"))
            .collect::<Vec<ArrayRef>>();
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(projected_schema, arrays, &options)?)
    }

    /// The event numbers of `kind` within `events`.
    fn numbers(kind: EventKind, events: Range<u64>) -> impl Iterator<Item = u64> {
        let offsets = kind.epoch_offsets();
        events.filter(move |n| offsets.contains(&(n % PROPORTION_DENOMINATOR)))
    }

    fn persons(&self, events: Range<u64>, rows: usize, wanted: &[bool]) -> Vec<Option<ArrayRef>> {
        let mut id = Ints::new(wanted[0], rows);
        let mut name = Strings::new(wanted[1], rows, 12);
        let mut email = Strings::new(wanted[2], rows, 17);
        let mut card = Strings::new(wanted[3], rows, 19);
        let mut city = Strings::new(wanted[4], rows, 8);
        let mut state = Strings::new(wanted[5], rows, 2);
        let mut date_time = Ints::new(wanted[6], rows);
        let mut extra = Strings::new(wanted[7], rows, 150);
        for n in Self::numbers(EventKind::Person, events) {
            let mut rng = self.rng(n);
            id.push((person_last_id(n) + FIRST_PERSON_ID) as i64);
            let first = FIRST_NAMES[rng.index(FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.index(LAST_NAMES.len())];
            name.push_parts(&[first.as_bytes(), b" ", last.as_bytes()]);
            // `{7 letters}@{5 letters}.com`
            email.push_random(&mut rng, 7);
            email.append(b"@");
            email.push_random(&mut rng, 5);
            email.append(b".com");
            email.finish_value();
            // `dddd dddd dddd dddd`
            for group in 0..4 {
                if group > 0 {
                    card.append(b" ");
                }
                let digits = rng.below_u32(10_000);
                card.append(&[
                    b'0' + (digits / 1000) as u8,
                    b'0' + (digits / 100 % 10) as u8,
                    b'0' + (digits / 10 % 10) as u8,
                    b'0' + (digits % 10) as u8,
                ]);
            }
            card.finish_value();
            let c = US_CITIES[rng.index(US_CITIES.len())];
            city.push_parts(&[c.as_bytes()]);
            let s = US_STATES[rng.index(US_STATES.len())];
            state.push_parts(&[s.as_bytes()]);
            date_time.push(self.timestamp(n));
            if extra.on {
                // name + email (17) + card (19) + city + state + 8
                let size = 8 + first.len() + 1 + last.len() + 17 + 19 + c.len() + s.len();
                let len = rng.extra_len(size, self.config.avg_person_byte_size);
                extra.push_random(&mut rng, len);
                extra.finish_value();
            }
        }
        vec![
            id.finish(),
            name.finish(),
            email.finish(),
            card.finish(),
            city.finish(),
            state.finish(),
            date_time.finish_timestamps(),
            extra.finish(),
        ]
    }

    fn auctions(&self, events: Range<u64>, rows: usize, wanted: &[bool]) -> Vec<Option<ArrayRef>> {
        let mut id = Ints::new(wanted[0], rows);
        let mut item_name = Strings::new(wanted[1], rows, 20);
        let mut description = Strings::new(wanted[2], rows, 100);
        let mut initial_bid = Ints::new(wanted[3], rows);
        let mut reserve = Ints::new(wanted[4], rows);
        let mut date_time = Ints::new(wanted[5], rows);
        let mut expires = Ints::new(wanted[6], rows);
        let mut seller = Ints::new(wanted[7], rows);
        let mut category = Ints::new(wanted[8], rows);
        let mut extra = Strings::new(wanted[9], rows, 340);
        let config = &self.config;
        for n in Self::numbers(EventKind::Auction, events) {
            let mut rng = self.rng(n);
            let time = self.timestamp(n);
            id.push((auction_last_id(n) + FIRST_AUCTION_ID) as i64);
            item_name.push_random(&mut rng, 20);
            item_name.finish_value();
            description.push_random(&mut rng, 100);
            description.finish_value();
            let initial = rng.price();
            initial_bid.push(initial as i64);
            reserve.push((initial + rng.price()) as i64);
            date_time.push(time);
            expires.push(time + self.auction_length(n, time, &mut rng));
            let base0_seller = if rng.below_u64(config.hot_seller_ratio) > 0 {
                person_last_id(n) / HOT_SELLER_BATCH * HOT_SELLER_BATCH
            } else {
                self.next_person_id(n, &mut rng)
            };
            seller.push((base0_seller + FIRST_PERSON_ID) as i64);
            category.push((FIRST_CATEGORY_ID + rng.below_u64(config.num_categories)) as i64);
            if extra.on {
                // id, 20 + 100 letters, initial_bid, reserve, date_time, expires, seller/category
                let size = 8 + 20 + 100 + 8 + 8 + 8 + 8 + 8;
                let len = rng.extra_len(size, config.avg_auction_byte_size);
                extra.push_random(&mut rng, len);
                extra.finish_value();
            }
        }
        vec![
            id.finish(),
            item_name.finish(),
            description.finish(),
            initial_bid.finish(),
            reserve.finish(),
            date_time.finish_timestamps(),
            expires.finish_timestamps(),
            seller.finish(),
            category.finish(),
            extra.finish(),
        ]
    }

    fn bids(&self, events: Range<u64>, rows: usize, wanted: &[bool]) -> Vec<Option<ArrayRef>> {
        let mut auction = Ints::new(wanted[0], rows);
        let mut bidder = Ints::new(wanted[1], rows);
        let mut price = Ints::new(wanted[2], rows);
        let mut channel = Strings::new(wanted[3], rows, 12);
        let mut url = Strings::new(wanted[4], rows, 60);
        let mut date_time = Ints::new(wanted[5], rows);
        let mut extra = Strings::new(wanted[6], rows, 68);
        let config = &self.config;
        let table = channels();
        for n in Self::numbers(EventKind::Bid, events) {
            let mut rng = self.rng(n);
            let base0_auction = if rng.below_u64(config.hot_auction_ratio) > 0 {
                auction_last_id(n) / HOT_AUCTION_BATCH * HOT_AUCTION_BATCH
            } else {
                self.next_auction_id(n, &mut rng)
            };
            auction.push((base0_auction + FIRST_AUCTION_ID) as i64);
            let base0_bidder = if rng.below_u64(config.hot_bidder_ratio) > 0 {
                person_last_id(n) / HOT_BIDDER_BATCH * HOT_BIDDER_BATCH + 1
            } else {
                self.next_person_id(n, &mut rng)
            };
            bidder.push((base0_bidder + FIRST_PERSON_ID) as i64);
            price.push(rng.price() as i64);
            if rng.below_u64(config.hot_channel_ratio) > 0 {
                let hot = rng.below_u64(HOT_CHANNELS.len() as u64) as usize;
                channel.push_parts(&[HOT_CHANNELS[hot].as_bytes()]);
                url.push_parts(&[table.hot_urls[hot].as_bytes()]);
            } else {
                let i = rng.index(CHANNELS);
                channel.push_parts(&[table.names[i].as_bytes()]);
                url.push_parts(&[table.urls[i].as_bytes()]);
            }
            date_time.push(self.timestamp(n));
            if extra.on {
                let len = rng.extra_len(8 + 8 + 8 + 8, config.avg_bid_byte_size);
                extra.push_random(&mut rng, len);
                extra.finish_value();
            }
        }
        vec![
            auction.finish(),
            bidder.finish(),
            price.finish(),
            channel.finish(),
            url.finish(),
            date_time.finish_timestamps(),
            extra.finish(),
        ]
    }

    /// A Sabot source of this generator's `kind` events.
    pub fn source(self: &Arc<Self>, kind: EventKind) -> Arc<dyn Source> {
        Arc::new(NexmarkSource { generator: self.clone(), kind })
    }
}

/// An `Int64` (or timestamp) column being filled, or a disabled one.
struct Ints {
    on: bool,
    values: Vec<i64>,
}

impl Ints {
    fn new(on: bool, rows: usize) -> Ints {
        Ints { on, values: Vec::with_capacity(if on { rows } else { 0 }) }
    }

    #[inline]
    fn push(&mut self, v: i64) {
        if self.on {
            self.values.push(v);
        }
    }

    fn finish(self) -> Option<ArrayRef> {
        self.on.then(|| Arc::new(Int64Array::from(self.values)) as ArrayRef)
    }

    fn finish_timestamps(self) -> Option<ArrayRef> {
        self.on.then(|| Arc::new(TimestampMillisecondArray::from(self.values)) as ArrayRef)
    }
}

/// A `Utf8` column written in place (offsets and bytes), or a disabled one that still draws
/// the random numbers its values would have used.
struct Strings {
    on: bool,
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Strings {
    fn new(on: bool, rows: usize, average: usize) -> Strings {
        let (offsets, bytes) = if on { (rows + 1, rows * average) } else { (1, 0) };
        let mut offsets = Vec::with_capacity(offsets);
        offsets.push(0);
        Strings { on, offsets, bytes: Vec::with_capacity(bytes) }
    }

    /// Appends bytes to the current value.
    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        if self.on {
            self.bytes.extend_from_slice(bytes);
        }
    }

    /// Appends `len` random lowercase letters to the current value (drawn even when off).
    #[inline]
    fn push_random(&mut self, rng: &mut SmallRng, len: usize) {
        if self.on {
            self.bytes.reserve(len);
            for _ in 0..len {
                self.bytes.push(rng.lowercase());
            }
        } else {
            for _ in 0..len {
                rng.lowercase();
            }
        }
    }

    /// Ends the current value.
    #[inline]
    fn finish_value(&mut self) {
        if self.on {
            self.offsets.push(self.bytes.len() as i32);
        }
    }

    /// Appends one whole value made of `parts`.
    #[inline]
    fn push_parts(&mut self, parts: &[&[u8]]) {
        if self.on {
            for part in parts {
                self.bytes.extend_from_slice(part);
            }
            self.offsets.push(self.bytes.len() as i32);
        }
    }

    fn finish(self) -> Option<ArrayRef> {
        if !self.on {
            return None;
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        // Every value is ASCII, so the UTF-8 check cannot fail.
        let array = StringArray::try_new(offsets, Buffer::from_vec(self.bytes), None).expect("ASCII strings");
        Some(Arc::new(array))
    }
}

// ---------------------------------------------------------------------------------------------
// The Sabot source.

/// One Nexmark stream as a Sabot [`Source`]: the `kind` events among event numbers
/// `0..events`, cut into morsels of `events_per_morsel` event numbers that worker threads
/// generate in parallel. Only the projected columns are built.
#[derive(Clone)]
pub struct NexmarkSource {
    generator: Arc<NexmarkGenerator>,
    kind: EventKind,
}

impl fmt::Debug for NexmarkSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NexmarkSource").field("kind", &self.kind).field("config", self.generator.config()).finish()
    }
}

impl Source for NexmarkSource {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn describe(&self) -> String {
        let config = self.generator.config();
        format!(
            "nexmark {}: events 0..{} (seed {}, {} morsels)",
            self.kind,
            config.events,
            config.seed,
            self.generator.morsel_count()
        )
    }

    fn num_rows(&self) -> Option<usize> {
        Some(self.kind.count_in(self.generator.config().events) as usize)
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let full = self.kind.schema();
        let projection = request.projection.clone().unwrap_or_else(|| (0..full.fields().len()).collect());
        if let Some(bad) = projection.iter().find(|&&i| i >= full.fields().len()) {
            return Err(SabotError::plan(format!(
                "projection index {bad} is out of range for the {} schema",
                self.kind
            )));
        }
        let schema = Arc::new(full.project(&projection)?);
        // Whole epochs per batch: `batch_size` rows of this kind at most.
        let epochs = (request.batch_size as u64 / self.kind.proportion()).max(1);
        Ok(Arc::new(NexmarkScan {
            source: self.clone(),
            schema,
            projection: projection.into(),
            events_per_batch: epochs * PROPORTION_DENOMINATOR,
        }))
    }
}

struct NexmarkScan {
    source: NexmarkSource,
    schema: SchemaRef,
    projection: Arc<[usize]>,
    events_per_batch: u64,
}

impl Scan for NexmarkScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn morsel_count(&self) -> usize {
        self.source.generator.morsel_count()
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let generator = self.source.generator.clone();
        if index >= generator.morsel_count() {
            return Err(SabotError::Execution(format!(
                "morsel {index} out of range (the scan has {} morsels)",
                generator.morsel_count()
            )));
        }
        let events = generator.morsel_events(index);
        let (kind, projection, step) = (self.source.kind, self.projection.clone(), self.events_per_batch);
        let starts = (events.start..events.end).step_by(step as usize);
        Ok(Box::new(
            starts
                .map(move |start| generator.projected_batch(kind, start..(start + step).min(events.end), &projection)),
        ))
    }
}
