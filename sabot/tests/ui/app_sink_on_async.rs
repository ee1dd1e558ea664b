use sabot::app::AgentStream;

#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod printer {
    use super::*;

    #[agent("lines", sink = "printed")]
    async fn print(mut lines: AgentStream<Line>) {
        while let Some(line) = lines.next().await {
            println!("{}", line.text);
        }
    }
}
