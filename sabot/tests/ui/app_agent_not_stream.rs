#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app]
mod count {
    use super::*;

    #[agent("lines")]
    fn count(lines: Vec<Line>) -> usize {
        lines.len()
    }
}
