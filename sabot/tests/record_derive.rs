//! `#[derive(Record)]`: schemas, round trips, views, read errors and typed expressions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use sabot::expr::Expr;
use sabot::record::{Col, RecordField, Timestamp, TypedExpr};
use sabot::{Record, SabotError};

#[derive(Record, Debug, Clone, PartialEq)]
struct Quote {
    bid: f64,
    ask: Option<f64>,
}

#[derive(Record, Debug, Clone, PartialEq)]
struct AllTypes {
    a_i8: i8,
    a_i16: i16,
    a_i32: i32,
    a_i64: i64,
    a_u8: u8,
    a_u16: u16,
    a_u32: u32,
    a_u64: u64,
    a_f32: f32,
    a_f64: f64,
    flag: bool,
    name: String,
    bytes: Vec<u8>,
    #[record(event_time)]
    ts: Timestamp,
    maybe: Option<i64>,
    maybe_name: Option<String>,
    #[record(rename = "px")]
    price: f64,
    quote: Quote,
    maybe_quote: Option<Quote>,
    #[record(skip)]
    cache: Vec<String>,
    r#type: u8,
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

fn quote_fields() -> Fields {
    Fields::from(vec![field("bid", DataType::Float64, false), field("ask", DataType::Float64, true)])
}

#[test]
fn schema_of_all_supported_types() {
    let expected = Schema::new(vec![
        field("a_i8", DataType::Int8, false),
        field("a_i16", DataType::Int16, false),
        field("a_i32", DataType::Int32, false),
        field("a_i64", DataType::Int64, false),
        field("a_u8", DataType::UInt8, false),
        field("a_u16", DataType::UInt16, false),
        field("a_u32", DataType::UInt32, false),
        field("a_u64", DataType::UInt64, false),
        field("a_f32", DataType::Float32, false),
        field("a_f64", DataType::Float64, false),
        field("flag", DataType::Boolean, false),
        field("name", DataType::Utf8, false),
        field("bytes", DataType::Binary, false),
        field("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        field("maybe", DataType::Int64, true),
        field("maybe_name", DataType::Utf8, true),
        field("px", DataType::Float64, false),
        field("quote", DataType::Struct(quote_fields()), false),
        field("maybe_quote", DataType::Struct(quote_fields()), true),
        field("type", DataType::UInt8, false),
    ]);
    assert_eq!(*AllTypes::schema(), expected);
    assert_eq!(AllTypes::event_time_column(), Some("ts"));
    assert_eq!(Quote::event_time_column(), None);
    assert_eq!(<Quote as RecordField>::data_type(), DataType::Struct(quote_fields()));
    assert!(<Option<Quote> as RecordField>::nullable());
}

fn row(i: i64) -> AllTypes {
    AllTypes {
        a_i8: (i * 37 % 128) as i8,
        a_i16: (i * -1234) as i16,
        a_i32: (i * 1_000_003) as i32,
        a_i64: i * 9_876_543_210,
        a_u8: (i * 7) as u8,
        a_u16: (i * 301) as u16,
        a_u32: (i * 4_000_037) as u32,
        a_u64: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        a_f32: i as f32 / 3.0,
        a_f64: (i as f64).sqrt() - 2.5,
        flag: i % 3 == 0,
        name: "n".repeat((i % 5) as usize),
        bytes: (0..(i % 4) as u8).collect(),
        ts: Timestamp::from_millis(1_700_000_000_000 + i * 1_001),
        maybe: (i % 2 == 0).then_some(i),
        maybe_name: (i % 3 != 1).then(|| format!("#{i}")),
        price: 100.0 + i as f64 / 8.0,
        quote: Quote { bid: i as f64, ask: (i % 4 != 0).then_some(i as f64 + 0.5) },
        maybe_quote: (i % 5 != 2).then(|| Quote { bid: -(i as f64), ask: None }),
        cache: Vec::new(),
        r#type: (i % 256) as u8,
    }
}

fn edge_row() -> AllTypes {
    AllTypes {
        a_i8: i8::MIN,
        a_i16: i16::MAX,
        a_i32: i32::MIN,
        a_i64: i64::MIN,
        a_u8: u8::MAX,
        a_u16: 0,
        a_u32: u32::MAX,
        a_u64: u64::MAX,
        a_f32: f32::NEG_INFINITY,
        a_f64: f64::MAX,
        flag: false,
        name: String::new(),
        bytes: Vec::new(),
        ts: Timestamp::from_millis(i64::MIN),
        maybe: Some(i64::MAX),
        maybe_name: Some("日本語 ✓ 🦀 'quoted'".to_string()),
        price: -0.0,
        quote: Quote { bid: f64::MIN_POSITIVE, ask: None },
        maybe_quote: None,
        cache: Vec::new(),
        r#type: 0,
    }
}

#[test]
fn round_trip_values() {
    let mut rows: Vec<AllTypes> = (0..257).map(row).collect();
    rows.push(edge_row());
    let batch = AllTypes::to_batch(&rows);
    assert_eq!(batch.num_rows(), 258);
    assert_eq!(batch.num_columns(), 20);
    assert_eq!(batch.schema(), AllTypes::schema());
    assert_eq!(AllTypes::from_batch(&batch).unwrap(), rows);

    // Nulls land where the `None`s are, and only there.
    assert_eq!(batch.column_by_name("maybe").unwrap().null_count(), 128);
    assert_eq!(batch.column_by_name("a_i64").unwrap().null_count(), 0);
    let maybe_quote = batch.column_by_name("maybe_quote").unwrap();
    assert_eq!(maybe_quote.null_count(), rows.iter().filter(|r| r.maybe_quote.is_none()).count());
}

#[test]
fn round_trip_empty_slice() {
    let batch = AllTypes::to_batch(&[]);
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema(), AllTypes::schema());
    assert_eq!(AllTypes::from_batch(&batch).unwrap(), Vec::<AllTypes>::new());
}

#[test]
fn skip_fields_are_defaulted() {
    let mut r = row(3);
    r.cache = vec!["not stored".to_string()];
    let back = AllTypes::from_batch(&AllTypes::to_batch(std::slice::from_ref(&r))).unwrap();
    assert_eq!(back[0].cache, Vec::<String>::new());
    assert_eq!(back[0].name, r.name);
}

#[derive(Record, Debug, PartialEq)]
struct Floats {
    x: f64,
    y: Option<f32>,
}

#[test]
fn nan_round_trips() {
    let rows = [Floats { x: f64::NAN, y: Some(f32::NAN) }, Floats { x: f64::INFINITY, y: None }];
    let back = Floats::from_batch(&Floats::to_batch(&rows)).unwrap();
    assert!(back[0].x.is_nan());
    assert!(back[0].y.unwrap().is_nan());
    assert_eq!(back[1], Floats { x: f64::INFINITY, y: None });
}

#[test]
fn views_equal_owned_values() {
    let mut rows: Vec<AllTypes> = (0..40).map(row).collect();
    rows.push(edge_row());
    let batch = AllTypes::to_batch(&rows);
    let arrays = AllTypes::arrays(&batch).unwrap();
    for (i, r) in rows.iter().enumerate() {
        let v = AllTypes::view(&arrays, i);
        assert_eq!(v.a_i8, r.a_i8);
        assert_eq!(v.a_i64, r.a_i64);
        assert_eq!(v.a_u64, r.a_u64);
        assert_eq!(v.a_f32, r.a_f32);
        assert_eq!(v.a_f64, r.a_f64);
        assert_eq!(v.flag, r.flag);
        assert_eq!(v.name, r.name.as_str());
        assert_eq!(v.bytes, r.bytes.as_slice());
        assert_eq!(v.ts, r.ts);
        assert_eq!(v.maybe, r.maybe);
        assert_eq!(v.maybe_name, r.maybe_name.as_deref());
        assert_eq!(v.price, r.price);
        assert_eq!(v.quote, QuoteView { bid: r.quote.bid, ask: r.quote.ask });
        assert_eq!(v.maybe_quote, r.maybe_quote.as_ref().map(|q| QuoteView { bid: q.bid, ask: q.ask }));
        assert_eq!(v.r#type, r.r#type);
    }
}

#[test]
fn views_borrow_from_the_batch() {
    let rows = vec![Named { name: "zero-copy".to_string() }];
    let batch = Named::to_batch(&rows);
    let arrays = Named::arrays(&batch).unwrap();
    let s: &str = Named::view(&arrays, 0).name;
    let values = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap().values();
    assert!(values.as_ptr_range().contains(&s.as_ptr()));
}

#[derive(Record, Debug, PartialEq)]
struct Named {
    name: String,
}

#[test]
fn reads_other_string_encodings_and_ignores_extra_columns() {
    let schema =
        Arc::new(Schema::new(vec![field("extra", DataType::Int32, false), field("name", DataType::LargeUtf8, false)]));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(Int32Array::from(vec![1, 2])), Arc::new(LargeStringArray::from(vec!["a", "ü"]))];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    assert_eq!(Named::from_batch(&batch).unwrap(), vec![Named { name: "a".into() }, Named { name: "ü".into() }]);

    let schema = Arc::new(Schema::new(vec![field("name", DataType::Utf8View, false)]));
    let view: ArrayRef = Arc::new(StringViewArray::from(vec!["a rather long string, not inlined", "x"]));
    let batch = RecordBatch::try_new(schema, vec![view]).unwrap();
    let back = Named::from_batch(&batch).unwrap();
    assert_eq!(back[0].name, "a rather long string, not inlined");
    assert_eq!(back[1].name, "x");
}

#[test]
fn missing_column_is_column_not_found() {
    let schema = Arc::new(Schema::new(vec![field("bid", DataType::Float64, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0]))]).unwrap();
    match Quote::from_batch(&batch) {
        Err(SabotError::ColumnNotFound { column, available }) => {
            assert_eq!(column, "ask");
            assert_eq!(available, vec!["bid".to_string()]);
        }
        other => panic!("expected ColumnNotFound, got {other:?}"),
    }
    let err = Quote::arrays(&batch).err().unwrap();
    assert_eq!(err.to_string(), "column 'ask' not found; available columns: [bid]");
}

#[test]
fn wrong_type_is_type_mismatch() {
    let schema =
        Arc::new(Schema::new(vec![field("bid", DataType::Utf8, false), field("ask", DataType::Float64, true)]));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from(vec!["1.0"])), Arc::new(Float64Array::from(vec![Some(1.0)]))];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    match Quote::from_batch(&batch) {
        Err(SabotError::TypeMismatch { column, expected, found }) => {
            assert_eq!(column, "bid");
            assert_eq!(expected, DataType::Float64);
            assert_eq!(found, DataType::Utf8);
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    let err = Quote::from_batch(&batch).unwrap_err();
    assert_eq!(err.to_string(), "column 'bid' has type Utf8, expected Float64");
}

#[test]
fn null_in_required_field_is_unexpected_null() {
    let schema =
        Arc::new(Schema::new(vec![field("bid", DataType::Float64, true), field("ask", DataType::Float64, true)]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), None])),
        Arc::new(Float64Array::from(vec![None, None, None])),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    match Quote::from_batch(&batch) {
        Err(SabotError::UnexpectedNull { column, row }) => {
            assert_eq!(column, "bid");
            assert_eq!(row, 2);
        }
        other => panic!("expected UnexpectedNull, got {other:?}"),
    }
    // The first two rows alone are fine: `ask` is optional.
    let ok = Quote::from_batch(&batch.slice(0, 2)).unwrap();
    assert_eq!(ok, vec![Quote { bid: 1.0, ask: None }, Quote { bid: 2.0, ask: None }]);
}

#[derive(Record, Debug, PartialEq)]
struct Outer {
    id: i32,
    quote: Quote,
}

#[test]
fn errors_inside_nested_records_name_the_path() {
    let quote_type = DataType::Struct(Fields::from(vec![field("bid", DataType::Float64, true)]));
    let quote = StructArray::from(vec![(
        Arc::new(field("bid", DataType::Float64, true)),
        Arc::new(Float64Array::from(vec![Some(1.0)])) as ArrayRef,
    )]);
    let schema = Arc::new(Schema::new(vec![field("id", DataType::Int32, false), field("quote", quote_type, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1])), Arc::new(quote)]).unwrap();
    match Outer::from_batch(&batch) {
        Err(SabotError::ColumnNotFound { column, available }) => {
            assert_eq!(column, "quote.ask");
            assert_eq!(available, vec!["quote.bid".to_string()]);
        }
        other => panic!("expected ColumnNotFound, got {other:?}"),
    }

    // A null inside a nested required field names the full path and the row.
    let quote = StructArray::from(vec![
        (
            Arc::new(field("bid", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![Some(1.0), None])) as ArrayRef,
        ),
        (Arc::new(field("ask", DataType::Float64, true)), Arc::new(Float64Array::from(vec![None, None])) as ArrayRef),
    ]);
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int32, false),
        field("quote", quote.data_type().clone(), false),
    ]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2])), Arc::new(quote)]).unwrap();
    match Outer::from_batch(&batch) {
        Err(SabotError::UnexpectedNull { column, row }) => {
            assert_eq!(column, "quote.bid");
            assert_eq!(row, 1);
        }
        other => panic!("expected UnexpectedNull, got {other:?}"),
    }

    // A struct column of the wrong type.
    let schema =
        Arc::new(Schema::new(vec![field("id", DataType::Int32, false), field("quote", DataType::Boolean, false)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int32Array::from(vec![1])), Arc::new(BooleanArray::from(vec![true]))],
    )
    .unwrap();
    match Outer::from_batch(&batch) {
        Err(SabotError::TypeMismatch { column, expected, found }) => {
            assert_eq!(column, "quote");
            assert_eq!(expected, DataType::Struct(quote_fields()));
            assert_eq!(found, DataType::Boolean);
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
}

#[test]
fn timestamps_accept_a_time_zone() {
    #[derive(Record, Debug, PartialEq)]
    struct Event {
        #[record(event_time)]
        at: Timestamp,
    }
    let array = arrow::array::TimestampMillisecondArray::from(vec![5, -5]).with_timezone("+02:00");
    let schema = Arc::new(Schema::new(vec![field("at", array.data_type().clone(), false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).unwrap();
    assert_eq!(
        Event::from_batch(&batch).unwrap(),
        vec![Event { at: Timestamp::from_millis(5) }, Event { at: Timestamp::from_millis(-5) }]
    );
}

#[test]
fn i64_event_time_and_all_skipped() {
    #[derive(Record, Debug, PartialEq, Default)]
    struct Tick {
        #[record(event_time, rename = "time")]
        t: i64,
    }
    assert_eq!(Tick::event_time_column(), Some("time"));

    #[derive(Record, Debug, PartialEq)]
    struct Nothing {
        #[record(skip)]
        x: i32,
    }
    let batch = Nothing::to_batch(&[Nothing { x: 1 }, Nothing { x: 2 }]);
    assert_eq!((batch.num_rows(), batch.num_columns()), (2, 0));
    assert_eq!(Nothing::from_batch(&batch).unwrap(), vec![Nothing { x: 0 }, Nothing { x: 0 }]);
}

#[test]
fn typed_expressions_display() {
    let c = AllTypes::cols();
    assert_eq!(c.price.name(), "px");
    assert_eq!(c.price.gt(100.0).to_string(), "px > 100.0");
    assert_eq!(c.a_i64.lt_eq(c.maybe).to_string(), "a_i64 <= maybe");
    assert_eq!(c.name.eq("it's").to_string(), "name = 'it''s'");
    assert_eq!(c.maybe_name.not_eq(String::from("x")).to_string(), "maybe_name != 'x'");
    assert_eq!(c.flag.and(c.a_i32.gt_eq(3)).or(c.maybe.is_null()).to_string(), "flag AND a_i32 >= 3 OR maybe IS NULL");
    assert_eq!(c.flag.not().to_string(), "NOT (flag)");
    assert_eq!((!c.a_u8.lt(3u8)).to_string(), "NOT (a_u8 < 3)");
    assert_eq!(((c.a_f64 + c.price) * 2.0).to_string(), "(a_f64 + px) * 2.0");
    assert_eq!((c.a_i64 - 1).to_string(), "a_i64 - 1");
    assert_eq!((c.a_i64 / c.a_i64).gt(c.maybe).to_string(), "a_i64 / a_i64 > maybe");
    assert_eq!((-c.a_f32).to_string(), "-(a_f32)");
    assert_eq!(c.ts.gt(Timestamp::from_millis(1000)).to_string(), "ts > 1000ms");
    assert_eq!(
        c.name.starts_with("ab").and(c.name.contains("c")).to_string(),
        "starts_with(name, 'ab') AND contains(name, 'c')"
    );
    assert_eq!(c.maybe.is_not_null().alias("has").to_string(), "maybe IS NOT NULL AS has");
    assert_eq!(c.maybe_quote.is_null().to_string(), "maybe_quote IS NULL");

    let typed: TypedExpr<bool> = c.price.gt(100.0) & c.flag | c.a_i8.eq(0);
    let untyped: Expr = typed.into();
    assert_eq!(
        untyped,
        sabot::expr::col("px")
            .gt(sabot::expr::lit(100.0))
            .and(sabot::expr::col("flag"))
            .or(sabot::expr::col("a_i8").eq(sabot::expr::lit(0i8)))
    );
    let from_col: Expr = c.price.into();
    assert_eq!(from_col, sabot::expr::col("px"));
    let _: Col<Option<Quote>> = c.maybe_quote;
}
