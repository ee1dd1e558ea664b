//! Lists of rows with their event times in one stored value: what operators that keep rows
//! in the keyed state backend (join buffers, session windows) append to and read back. Each
//! row is its event time (i64), its length (u32), both little-endian, then the row in
//! Arrow's row format.

use crate::{Result, SabotError};

/// Bytes in front of each row: its event time and its length.
const ROW_HEADER: usize = 12;

/// Appends a row (event time `time`, row-encoded `row`) to a list.
pub(crate) fn append_row(list: &mut Vec<u8>, time: i64, row: &[u8]) {
    list.extend_from_slice(&time.to_le_bytes());
    list.extend_from_slice(&(row.len() as u32).to_le_bytes());
    list.extend_from_slice(row);
}

/// Calls `f` with the event time and encoding of every row of `list`, in order; a truncated
/// list is an error of state `state`.
pub(crate) fn for_each_row(list: &[u8], state: &str, mut f: impl FnMut(i64, &[u8])) -> Result<()> {
    let mut rest = list;
    while !rest.is_empty() {
        let truncated =
            || SabotError::State { state: state.to_string(), message: "a stored list of rows is truncated".into() };
        let header = rest.get(..ROW_HEADER).ok_or_else(truncated)?;
        let time = i64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        let row = rest.get(ROW_HEADER..ROW_HEADER + len).ok_or_else(truncated)?;
        f(time, row);
        rest = &rest[ROW_HEADER + len..];
    }
    Ok(())
}

/// Rows delimited by `ends` in `arena` (as collected from lists), for decoding.
pub(crate) fn arena_rows<'a>(arena: &'a [u8], ends: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    ends.iter().scan(0, |start, &end| {
        let row = &arena[*start..end];
        *start = end;
        Some(row)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_in_order_and_truncation_is_an_error() {
        let mut list = vec![];
        append_row(&mut list, -5, b"abc");
        append_row(&mut list, 7, b"");
        let mut seen = vec![];
        for_each_row(&list, "s", |t, row| seen.push((t, row.to_vec()))).unwrap();
        assert_eq!(seen, vec![(-5, b"abc".to_vec()), (7, vec![])]);
        let err = for_each_row(&list[..list.len() - 1], "s", |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
