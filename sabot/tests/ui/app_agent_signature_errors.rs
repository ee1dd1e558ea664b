use sabot::Stream;
use sabot::app::AgentStream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod echo {
    use super::*;

    #[agent("lines")]
    fn generic<T: sabot::Record>(lines: Stream<T>) -> Stream<T> {
        lines
    }

    #[agent("lines")]
    fn nothing() -> Stream<Line> {
        panic!("a compile-fail case: never runs")
    }

    #[agent("lines")]
    async fn async_with_stream(lines: Stream<Line>) {
        drop(lines);
    }

    #[agent("lines")]
    fn sync_with_agent_stream(lines: AgentStream<Line>) -> Stream<Line> {
        panic!("{lines:?}")
    }

    #[agent("lines")]
    fn with_self(self, lines: Stream<Line>) -> Stream<Line> {
        lines
    }

    pub struct Other;

    impl Other {
        #[agent("lines")]
        pub fn method(&self, lines: Stream<Line>) -> Stream<Line> {
            lines
        }
    }
}
