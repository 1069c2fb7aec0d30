//! Arrow arrays written straight into their buffers, for the columns built a cell at a
//! time (the fold's table batch, answers' text columns).

use arrow::array::StringArray;
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};

/// A Utf8 array of `cells`, each written by `text` (false: NULL), the texts about
/// `size` bytes each; the bytes go straight into the array's buffers.
pub fn utf8<T>(
    cells: &[T],
    size: usize,
    mut text: impl FnMut(&T, &mut Vec<u8>) -> bool,
) -> StringArray {
    let mut offsets = Vec::with_capacity(cells.len() + 1);
    let mut values = Vec::with_capacity(cells.len() * size);
    let mut valid = Vec::new();
    offsets.push(0i32);
    for (i, cell) in cells.iter().enumerate() {
        if !text(cell, &mut values) {
            if valid.is_empty() {
                valid = vec![true; cells.len()];
            }
            valid[i] = false;
        }
        offsets.push(i32::try_from(values.len()).expect("a Utf8 array holds under 2 GB"));
    }
    let nulls = (!valid.is_empty()).then(|| NullBuffer::from(valid));
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    StringArray::new(offsets, values.into(), nulls)
}
