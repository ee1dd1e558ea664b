use sabot::Stream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod join {
    use super::*;

    #[agent("left", sink = "joined")]
    fn both(left: Stream<Line>, right: Stream<Line>) -> Stream<Line> {
        left.union(&right).unwrap()
    }
}
