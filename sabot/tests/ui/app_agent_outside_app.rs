use sabot::Stream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::agent("lines", sink = "echoed")]
fn echo(lines: Stream<Line>) -> Stream<Line> {
    lines
}

fn main() {}
