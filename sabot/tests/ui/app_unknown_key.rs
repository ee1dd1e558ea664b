use sabot::Stream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app(nmae = "echo")]
mod echo {
    use super::*;

    #[agent("lines", sink = "echoed")]
    fn echo(lines: Stream<Line>) -> Stream<Line> {
        lines
    }
}
