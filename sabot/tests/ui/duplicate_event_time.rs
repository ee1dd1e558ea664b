use sabot::Record;
use sabot::record::Timestamp;

#[derive(Record)]
struct Trade {
    #[record(event_time)]
    created: Timestamp,
    #[record(event_time)]
    updated: Timestamp,
    #[record(rename = "created")]
    other: i64,
}

fn main() {}
