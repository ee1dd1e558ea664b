#[derive(sabot::Record)]
pub struct Line {
    pub text: String,
}

#[sabot::app(name = "idle")]
mod idle {
    use super::*;

    pub fn helper(line: &Line) -> usize {
        line.text.len()
    }
}
