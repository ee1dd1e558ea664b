use sabot::Stream;
use sabot::app::AgentStream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod lengths {
    use super::*;

    #[agent("lines", sink = "lengths")]
    fn lengths(lines: Stream<Line>) -> Vec<usize> {
        lines.collect_records().unwrap().iter().map(|l| l.text.len()).collect()
    }

    #[agent("lines")]
    async fn count(mut lines: AgentStream<Line>) -> u64 {
        let mut n = 0;
        while lines.next().await.is_some() {
            n += 1;
        }
        n
    }
}
