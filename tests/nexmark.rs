//! The Nexmark generator and queries (`benches/nexmark/`): the generator reproduces the
//! reference (RisingWave's `nexmark` crate, a port of Beam's generator) exactly and keeps its
//! proportions; every query's output equals the same computation written as plain loops
//! over the generated events.

#[allow(dead_code)]
#[path = "../benches/nexmark/generator.rs"]
mod generator;
#[allow(dead_code)]
#[path = "../benches/nexmark/queries.rs"]
mod queries;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use generator::{EventKind, NexmarkConfig, NexmarkGenerator};
use queries::Nexmark;
use sabot::deps::arrow;
use sabot::prelude::*;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};

/// A person event, read back from the generated columns.
#[derive(Debug, Clone, PartialEq)]
struct Person {
    id: i64,
    name: String,
    email_address: String,
    credit_card: String,
    city: String,
    state: String,
    date_time: i64,
    extra: String,
}

/// An auction event.
#[derive(Debug, Clone, PartialEq)]
struct Auction {
    id: i64,
    item_name: String,
    description: String,
    initial_bid: i64,
    reserve: i64,
    date_time: i64,
    expires: i64,
    seller: i64,
    category: i64,
    extra: String,
}

/// A bid event.
#[derive(Debug, Clone, PartialEq)]
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: String,
    url: String,
    date_time: i64,
    extra: String,
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().values().to_vec(),
        _ => column.as_primitive::<TimestampMillisecondType>().values().to_vec(),
    }
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    column.as_string::<i32>().iter().map(|s| s.expect("no nulls").to_string()).collect()
}

fn persons_of(batch: &RecordBatch) -> Vec<Person> {
    let (id, name, email, card) =
        (ints(batch, "id"), strings(batch, "name"), strings(batch, "email_address"), strings(batch, "credit_card"));
    let (city, state, time, extra) =
        (strings(batch, "city"), strings(batch, "state"), ints(batch, "date_time"), strings(batch, "extra"));
    (0..batch.num_rows())
        .map(|i| Person {
            id: id[i],
            name: name[i].clone(),
            email_address: email[i].clone(),
            credit_card: card[i].clone(),
            city: city[i].clone(),
            state: state[i].clone(),
            date_time: time[i],
            extra: extra[i].clone(),
        })
        .collect()
}

fn auctions_of(batch: &RecordBatch) -> Vec<Auction> {
    let (id, item, description, initial) =
        (ints(batch, "id"), strings(batch, "item_name"), strings(batch, "description"), ints(batch, "initial_bid"));
    let (reserve, time, expires, seller) =
        (ints(batch, "reserve"), ints(batch, "date_time"), ints(batch, "expires"), ints(batch, "seller"));
    let (category, extra) = (ints(batch, "category"), strings(batch, "extra"));
    (0..batch.num_rows())
        .map(|i| Auction {
            id: id[i],
            item_name: item[i].clone(),
            description: description[i].clone(),
            initial_bid: initial[i],
            reserve: reserve[i],
            date_time: time[i],
            expires: expires[i],
            seller: seller[i],
            category: category[i],
            extra: extra[i].clone(),
        })
        .collect()
}

fn bids_of(batch: &RecordBatch) -> Vec<Bid> {
    let (auction, bidder, price, channel) =
        (ints(batch, "auction"), ints(batch, "bidder"), ints(batch, "price"), strings(batch, "channel"));
    let (url, time, extra) = (strings(batch, "url"), ints(batch, "date_time"), strings(batch, "extra"));
    (0..batch.num_rows())
        .map(|i| Bid {
            auction: auction[i],
            bidder: bidder[i],
            price: price[i],
            channel: channel[i].clone(),
            url: url[i].clone(),
            date_time: time[i],
            extra: extra[i].clone(),
        })
        .collect()
}

/// The reference's canonical text of one event (the format the golden digests were taken in).
fn person_line(p: &Person) -> String {
    let (id, name, email, card, city, state, time, extra) =
        (p.id, &p.name, &p.email_address, &p.credit_card, &p.city, &p.state, p.date_time, &p.extra);
    format!("P|{id}|{name}|{email}|{card}|{city}|{state}|{time}|{extra}\n")
}

fn auction_line(a: &Auction) -> String {
    let (id, item, description, initial, reserve) = (a.id, &a.item_name, &a.description, a.initial_bid, a.reserve);
    let (time, expires, seller, category, extra) = (a.date_time, a.expires, a.seller, a.category, &a.extra);
    format!("A|{id}|{item}|{description}|{initial}|{reserve}|{time}|{expires}|{seller}|{category}|{extra}\n")
}

fn bid_line(b: &Bid) -> String {
    let (auction, bidder, price, channel, url, time, extra) =
        (b.auction, b.bidder, b.price, &b.channel, &b.url, b.date_time, &b.extra);
    format!("B|{auction}|{bidder}|{price}|{channel}|{url}|{time}|{extra}\n")
}

/// FNV-1a, 64 bits.
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Digests of the canonical lines of persons, auctions and bids among `events`.
fn digests(generator: &NexmarkGenerator, events: std::ops::Range<u64>) -> [u64; 3] {
    let mut hashes = [0xcbf2_9ce4_8422_2325_u64; 3];
    for p in persons_of(&generator.batch(EventKind::Person, events.clone()).unwrap()) {
        fnv1a(&mut hashes[0], person_line(&p).as_bytes());
    }
    for a in auctions_of(&generator.batch(EventKind::Auction, events.clone()).unwrap()) {
        fnv1a(&mut hashes[1], auction_line(&a).as_bytes());
    }
    for b in bids_of(&generator.batch(EventKind::Bid, events).unwrap()) {
        fnv1a(&mut hashes[2], bid_line(&b).as_bytes());
    }
    hashes
}

/// The generator with the reference's settings (seed 0) and a fixed base time.
fn reference_generator(events: u64) -> NexmarkGenerator {
    NexmarkGenerator::new(NexmarkConfig { events, ..NexmarkConfig::default() })
}

#[test]
fn first_person_is_the_reference_crates_documented_event() {
    // The `nexmark` crate's own unit test (`event::tests::test_event`): event 0.
    let generator = reference_generator(50);
    let persons = persons_of(&generator.batch(EventKind::Person, 0..1).unwrap());
    assert_eq!(
        persons,
        vec![Person {
            id: 1000,
            name: "vicky noris".into(),
            email_address: "yplkvgz@qbxfg.com".into(),
            credit_card: "7878 5821 1864 2539".into(),
            city: "cheyenne".into(),
            state: "az".into(),
            date_time: NexmarkConfig::default().base_time,
            extra: "lwaiyhjhrkaruidlsjilvqccyedttedeynpqmackqbwvklwuyypztnkengzgtwtjivjgrxurskpcldfohdzuwnefqymyncrksxyfaecwsbswjumzxudgoznyhakxrudomnxtmqtgshecfjgspxzpludz".into(),
        }]
    );
}

#[test]
fn events_equal_the_reference_crate_field_for_field() {
    // Digests of `nexmark` 0.2.0's events (`EventGenerator::new(config).with_offset(start)`,
    // `base_time` 1436918400000, other settings default), each event printed in the format of
    // `person_line` / `auction_line` / `bid_line`, hashed per kind with FNV-1a.
    let generator = reference_generator(200_000_000);
    let expected: [(std::ops::Range<u64>, [u64; 3]); 3] = [
        (0..100_000, [0xe112e239d898fc7d, 0xf9ada70dbfc6940a, 0xca0e03990fc1d6f8]),
        (10_000_000..10_005_000, [0xa121f2fdf293aa21, 0x1b165707c6d0223d, 0x6368e515f5c019d8]),
        (123_456_789..123_461_789, [0x2436e6f8e37f2711, 0x7344bce5e19f1050, 0x262054105be2eeb3]),
    ];
    for (events, digest) in expected {
        assert_eq!(digests(&generator, events.clone()), digest, "events {events:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Proportions, ids, times, determinism.

/// The three streams of `events`, generated in one batch each.
fn all_events(generator: &NexmarkGenerator) -> (Vec<Person>, Vec<Auction>, Vec<Bid>) {
    let events = 0..generator.config().events;
    (
        persons_of(&generator.batch(EventKind::Person, events.clone()).unwrap()),
        auctions_of(&generator.batch(EventKind::Auction, events.clone()).unwrap()),
        bids_of(&generator.batch(EventKind::Bid, events).unwrap()),
    )
}

#[test]
fn proportions_ids_and_times_follow_the_spec() {
    for events in [20_000u64, 20_017] {
        let generator = reference_generator(events);
        let (persons, auctions, bids) = all_events(&generator);
        // 1 : 3 : 46 per 50 events; 20,017 = 400 epochs + 17 events (1 person, 3 auctions, 13 bids).
        let epochs = events / 50;
        let rest = events % 50;
        assert_eq!(persons.len() as u64, epochs + rest.min(1));
        assert_eq!(auctions.len() as u64, epochs * 3 + rest.saturating_sub(1).min(3));
        assert_eq!(bids.len() as u64, epochs * 46 + rest.saturating_sub(4));
        for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
            let counted = (0..events).filter(|&n| EventKind::of(n) == kind).count() as u64;
            assert_eq!(kind.count_in(events), counted, "{kind}");
        }
        // Person and auction ids are consecutive from 1000, in event order.
        assert!(persons.iter().enumerate().all(|(i, p)| p.id == 1000 + i as i64));
        assert!(auctions.iter().enumerate().all(|(i, a)| a.id == 1000 + i as i64));
        // Event times advance by the inter-event delay: 10,000 events/s is 0.1 ms per event.
        let base = NexmarkConfig::default().base_time;
        let numbers = |kind: EventKind| (0..events).filter(move |&n| EventKind::of(n) == kind);
        assert!(numbers(EventKind::Person).zip(&persons).all(|(n, p)| p.date_time == base + (n as i64 + 5) / 10));
        assert!(numbers(EventKind::Auction).zip(&auctions).all(|(n, a)| a.date_time == base + (n as i64 + 5) / 10));
        assert!(numbers(EventKind::Bid).zip(&bids).all(|(n, b)| b.date_time == base + (n as i64 + 5) / 10));
        // References point at entities that exist or are about to (the id leads are 10).
        let last_person = |n: u64| 1000 + generator::person_last_id(n) as i64;
        let last_auction = |n: u64| 1000 + generator::auction_last_id(n) as i64;
        for (n, b) in numbers(EventKind::Bid).zip(&bids) {
            assert!((1000..=last_auction(n) + 10).contains(&b.auction), "bid {n} on auction {}", b.auction);
            assert!((1000..=last_person(n) + 10).contains(&b.bidder), "bid {n} by bidder {}", b.bidder);
            assert!((100..=100_000_000).contains(&b.price), "price {} outside $1..$1M", b.price);
        }
        for (n, a) in numbers(EventKind::Auction).zip(&auctions) {
            assert!((1000..=last_person(n) + 10).contains(&a.seller));
            assert!((10..15).contains(&a.category));
            assert!(a.expires > a.date_time && a.reserve >= a.initial_bid);
            assert_eq!((a.item_name.len(), a.description.len()), (20, 100));
        }
        // Hot entities: half the bids go to the hot auction, 3/4 come from the hot bidder,
        // 3/4 of the auctions from the hot seller (plus the share of random picks that hit them).
        let share = |hits: usize, of: usize| hits as f64 / of as f64;
        let hot_auction =
            numbers(EventKind::Bid).zip(&bids).filter(|(n, b)| b.auction == last_auction(*n) / 100 * 100).count();
        let hot_bidder = numbers(EventKind::Bid)
            .zip(&bids)
            .filter(|(n, b)| b.bidder == (last_person(*n) - 1000) / 100 * 100 + 1001)
            .count();
        let hot_seller = numbers(EventKind::Auction)
            .zip(&auctions)
            .filter(|(n, a)| a.seller == (last_person(*n) - 1000) / 100 * 100 + 1000)
            .count();
        assert!(
            (0.48..0.56).contains(&share(hot_auction, bids.len())),
            "hot auction share {}",
            share(hot_auction, bids.len())
        );
        assert!(
            (0.73..0.78).contains(&share(hot_bidder, bids.len())),
            "hot bidder share {}",
            share(hot_bidder, bids.len())
        );
        assert!(
            (0.72..0.80).contains(&share(hot_seller, auctions.len())),
            "hot seller share {}",
            share(hot_seller, auctions.len())
        );
        let hot_channels =
            bids.iter().filter(|b| ["Google", "Facebook", "Baidu", "Apple"].contains(&b.channel.as_str())).count();
        assert!((0.48..0.52).contains(&share(hot_channels, bids.len())));
        // `extra` pads each kind to its average size (±20%).
        let average = |sizes: Vec<usize>| sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        let bid_size = average(bids.iter().map(|b| 32 + b.extra.len()).collect());
        assert!((95.0..105.0).contains(&bid_size), "bid size {bid_size}");
    }
}

#[test]
fn generation_is_deterministic_and_independent_of_morsels_projection_and_parallelism() {
    let config = NexmarkConfig { events: 20_000, seed: 42, events_per_morsel: 1_000, ..NexmarkConfig::default() };
    let a = NexmarkGenerator::new(config.clone());
    let b = NexmarkGenerator::new(config.clone());
    for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
        assert_eq!(a.batch(kind, 0..20_000).unwrap(), b.batch(kind, 0..20_000).unwrap(), "{kind}: same seed");
        // Any split of the event range gives the same rows.
        let whole = a.batch(kind, 0..20_000).unwrap();
        let parts = [0..7, 7..5_003, 5_003..20_000].map(|r| a.batch(kind, r).unwrap());
        assert_eq!(arrow::compute::concat_batches(&kind.schema(), &parts).unwrap(), whole, "{kind}: split");
        // A projection builds only its columns, with the same values.
        let projection = [kind.schema().fields().len() - 1, 0];
        assert_eq!(a.projected_batch(kind, 0..20_000, &projection).unwrap(), whole.project(&projection).unwrap());
        // Read through Sabot with 3 partitions: the same rows, in order.
        let generator = Arc::new(a.clone());
        let read = Stream::from_source(generator.source(kind)).with_parallelism(3).collect_batch().unwrap();
        assert_eq!(read, whole, "{kind}: through Sabot");
    }
    // Another seed: other values, the same ids and times.
    let other = NexmarkGenerator::new(NexmarkConfig { seed: 43, ..config });
    let (p1, a1, b1) = all_events(&a);
    let (p2, a2, b2) = all_events(&other);
    assert_ne!(b1, b2);
    assert_eq!(
        p1.iter().map(|p| (p.id, p.date_time)).collect::<Vec<_>>(),
        p2.iter().map(|p| (p.id, p.date_time)).collect::<Vec<_>>()
    );
    assert_eq!(
        a1.iter().map(|a| (a.id, a.date_time)).collect::<Vec<_>>(),
        a2.iter().map(|a| (a.id, a.date_time)).collect::<Vec<_>>()
    );
    assert_eq!(b1.iter().map(|b| b.date_time).collect::<Vec<_>>(), b2.iter().map(|b| b.date_time).collect::<Vec<_>>());
    assert_ne!(p1.iter().map(|p| &p.name).collect::<Vec<_>>(), p2.iter().map(|p| &p.name).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Queries against plain loops.

/// The data sets the queries are checked on: 20,000 events over 40 s of event time (rate
/// 500/s, so that there are several 10 s windows), an odd-sized one with another seed and
/// rate, and a slow one (200 s: 20 tumbling windows, 100 sliding ones).
fn data_sets() -> Vec<Arc<NexmarkGenerator>> {
    [(20_000, 0, 500), (30_011, 7, 2_000), (20_000, 3, 100)]
        .into_iter()
        .map(|(events, seed, events_per_second)| {
            Arc::new(NexmarkGenerator::new(NexmarkConfig {
                events,
                seed,
                events_per_second,
                events_per_morsel: 1_000,
                ..NexmarkConfig::default()
            }))
        })
        .collect()
}

/// The generated events of one data set, as plain structs.
struct Events {
    persons: Vec<Person>,
    auctions: Vec<Auction>,
    bids: Vec<Bid>,
}

/// Runs query `name` on every data set with 1 and 3 partitions and checks it against
/// `expected(events)`; `rows` turns the query's output into comparable rows.
fn check<R: Ord + std::fmt::Debug>(
    name: &str,
    rows: impl Fn(&RecordBatch) -> Vec<R>,
    expected: impl Fn(&Events) -> Vec<R>,
) {
    for generator in data_sets() {
        let (persons, auctions, bids) = all_events(&generator);
        let mut want = expected(&Events { persons, auctions, bids });
        want.sort();
        assert!(!want.is_empty(), "{name}: the reference result is empty");
        for parallelism in [1, 3] {
            let stream = Nexmark::new(generator.clone(), parallelism).query(name).unwrap();
            let mut got: Vec<R> = stream.collect().unwrap().iter().flat_map(&rows).collect();
            got.sort();
            assert_eq!(got.len(), want.len(), "{name}, parallelism {parallelism}, {:?}", generator.config());
            assert_eq!(got, want, "{name}, parallelism {parallelism}, {:?}", generator.config());
        }
    }
}

/// `(auction, bidder, price, date_time, extra)` rows of a q0 or q7 result.
fn bid_rows(batch: &RecordBatch) -> Vec<(i64, i64, i64, i64, String)> {
    let (auction, bidder, price) = (ints(batch, "auction"), ints(batch, "bidder"), ints(batch, "price"));
    let (time, extra) = (ints(batch, "date_time"), strings(batch, "extra"));
    (0..batch.num_rows()).map(|i| (auction[i], bidder[i], price[i], time[i], extra[i].clone())).collect()
}

fn bid_row(b: &Bid) -> (i64, i64, i64, i64, String) {
    (b.auction, b.bidder, b.price, b.date_time, b.extra.clone())
}

#[test]
fn q0_passes_bids_through() {
    check("q0", bid_rows, |e| e.bids.iter().map(bid_row).collect());
}

#[test]
fn q1_converts_prices() {
    let rows = |batch: &RecordBatch| {
        let price = batch.column_by_name("price").unwrap().as_primitive::<Float64Type>().values().to_vec();
        let (auction, bidder, time, extra) =
            (ints(batch, "auction"), ints(batch, "bidder"), ints(batch, "date_time"), strings(batch, "extra"));
        (0..batch.num_rows())
            .map(|i| (auction[i], bidder[i], price[i].to_bits(), time[i], extra[i].clone()))
            .collect::<Vec<_>>()
    };
    check("q1", rows, |e| {
        e.bids
            .iter()
            .map(|b| (b.auction, b.bidder, (b.price as f64 * 0.908).to_bits(), b.date_time, b.extra.clone()))
            .collect()
    });
}

#[test]
fn q2_selects_auctions_by_id() {
    let rows = |batch: &RecordBatch| {
        let (auction, price) = (ints(batch, "auction"), ints(batch, "price"));
        auction.into_iter().zip(price).collect::<Vec<_>>()
    };
    check("q2", rows, |e| e.bids.iter().filter(|b| b.auction % 123 == 0).map(|b| (b.auction, b.price)).collect());
}

/// `(window_start, window_end, key, count)` rows of a windowed count keyed by `key`.
fn window_counts(key: &'static str, count: &'static str) -> impl Fn(&RecordBatch) -> Vec<(i64, i64, i64, i64)> {
    move |batch| {
        let (start, end, key, count) =
            (ints(batch, "window_start"), ints(batch, "window_end"), ints(batch, key), ints(batch, count));
        (0..batch.num_rows()).map(|i| (start[i], end[i], key[i], count[i])).collect()
    }
}

#[test]
fn q5_finds_the_hot_items_of_each_sliding_window() {
    check("q5", window_counts("auction", "num"), |e| {
        let (size, slide) = (10_000, 2_000);
        let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for b in &e.bids {
            // Every window [s, s + 10 s) with s a multiple of 2 s that contains the bid.
            let mut start = b.date_time.div_euclid(slide) * slide;
            while start > b.date_time - size {
                *counts.entry((start, b.auction)).or_default() += 1;
                start -= slide;
            }
        }
        let mut max: HashMap<i64, i64> = HashMap::new();
        for (&(start, _), &n) in &counts {
            let m = max.entry(start).or_default();
            *m = (*m).max(n);
        }
        counts
            .iter()
            .filter(|&(&(start, _), &n)| n == max[&start])
            .map(|(&(start, auction), &n)| (start, start + size, auction, n))
            .collect()
    });
}

#[test]
fn q7_keeps_the_highest_bids_of_each_window() {
    check("q7", bid_rows, |e| {
        let bids = &e.bids;
        let window = |b: &Bid| b.date_time.div_euclid(10_000);
        let mut max: HashMap<i64, i64> = HashMap::new();
        for b in bids {
            let m = max.entry(window(b)).or_insert(i64::MIN);
            *m = (*m).max(b.price);
        }
        bids.iter().filter(|b| b.price == max[&window(b)]).map(bid_row).collect()
    });
}

#[test]
fn q11_counts_bids_per_session() {
    check("q11", window_counts("bidder", "bid_count"), |e| {
        let gap = 10_000;
        let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for b in &e.bids {
            times.entry(b.bidder).or_default().push(b.date_time);
        }
        let mut sessions = vec![];
        for (bidder, mut times) in times {
            times.sort_unstable();
            let (mut start, mut last, mut count) = (times[0], times[0], 0);
            for t in times {
                if t >= last + gap {
                    sessions.push((start, last + gap, bidder, count));
                    (start, count) = (t, 0);
                }
                last = t;
                count += 1;
            }
            sessions.push((start, last + gap, bidder, count));
        }
        sessions
    });
}

#[test]
fn q12_counts_bids_per_bidder_per_tumbling_window() {
    check("q12", window_counts("bidder", "bid_count"), |e| {
        let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for b in &e.bids {
            *counts.entry((b.date_time.div_euclid(10_000) * 10_000, b.bidder)).or_default() += 1;
        }
        counts.into_iter().map(|((start, bidder), n)| (start, start + 10_000, bidder, n)).collect()
    });
}

#[test]
fn q3_joins_category_10_auctions_with_their_sellers_in_or_id_ca() {
    let rows = |batch: &RecordBatch| {
        let (name, city, state, id) =
            (strings(batch, "name"), strings(batch, "city"), strings(batch, "state"), ints(batch, "id"));
        (0..batch.num_rows()).map(|i| (name[i].clone(), city[i].clone(), state[i].clone(), id[i])).collect::<Vec<_>>()
    };
    check("q3", rows, |e| {
        let sellers: HashMap<i64, &Person> =
            e.persons.iter().filter(|p| ["or", "id", "ca"].contains(&p.state.as_str())).map(|p| (p.id, p)).collect();
        e.auctions
            .iter()
            .filter(|a| a.category == 10)
            .filter_map(|a| sellers.get(&a.seller).map(|p| (p.name.clone(), p.city.clone(), p.state.clone(), a.id)))
            .collect()
    });
}

#[test]
fn q8_finds_people_who_sell_in_the_window_they_registered_in() {
    let rows = |batch: &RecordBatch| {
        let (id, name, start) = (ints(batch, "id"), strings(batch, "name"), ints(batch, "window_start"));
        (0..batch.num_rows()).map(|i| (id[i], name[i].clone(), start[i])).collect::<Vec<_>>()
    };
    check("q8", rows, |e| {
        let window = |t: i64| t.div_euclid(10_000) * 10_000;
        let sellers: std::collections::HashSet<(i64, i64)> =
            e.auctions.iter().map(|a| (a.seller, window(a.date_time))).collect();
        e.persons
            .iter()
            .filter(|p| sellers.contains(&(p.id, window(p.date_time))))
            .map(|p| (p.id, p.name.clone(), window(p.date_time)))
            .collect()
    });
}
