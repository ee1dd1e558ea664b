use sabot::Stream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod echo {
    use super::*;

    #[agent(sink = "echoed")]
    fn no_topic(lines: Stream<Line>) -> Stream<Line> {
        lines
    }

    #[agent("lines", sinks = "echoed")]
    fn unknown_key(lines: Stream<Line>) -> Stream<Line> {
        lines
    }

    #[agent("lines", group = "a", group = "b")]
    fn duplicate_key(lines: Stream<Line>) -> Stream<Line> {
        lines
    }

    #[agent]
    fn bare(lines: Stream<Line>) -> Stream<Line> {
        lines
    }
}
