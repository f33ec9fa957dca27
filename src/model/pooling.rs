//! Mean pooling over each sequence's own residue positions: never <cls>, <eos> or padding.

use ndarray::{Array2, ArrayView3};

/// Mean of `hidden[i, 1..=len-2, :]` for each row `i`, where `lengths[i]` counts <cls> and <eos>.
/// Depends only on the row itself, so a sequence's embedding does not change with its batch-mates.
pub fn mean_pool_residues(hidden: ArrayView3<'_, f32>, lengths: &[usize]) -> Array2<f32> {
    let (rows, _, width) = hidden.dim();
    let mut pooled = Array2::<f32>::zeros((rows, width));
    let mut sum = vec![0f64; width];
    for (i, &tokens) in lengths.iter().enumerate().take(rows) {
        let residues = tokens.saturating_sub(2);
        if residues == 0 {
            continue;
        }
        sum.fill(0.0);
        for position in 1..=residues {
            for (acc, &v) in sum
                .iter_mut()
                .zip(hidden.slice(ndarray::s![i, position, ..]))
            {
                *acc += f64::from(v);
            }
        }
        for (out, acc) in pooled.row_mut(i).iter_mut().zip(&sum) {
            *out = (acc / residues as f64) as f32;
        }
    }
    pooled
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn cls_eos_and_padding_are_left_out() {
        // Row 0: <cls> r r <eos> ; row 1: <cls> r <eos> <pad>
        let mut h = Array3::<f32>::zeros((2, 4, 1));
        let values = [[100.0, 1.0, 3.0, 100.0], [100.0, 5.0, 100.0, 100.0]];
        for i in 0..2 {
            for t in 0..4 {
                h[[i, t, 0]] = values[i][t];
            }
        }
        let pooled = mean_pool_residues(h.view(), &[4, 3]);
        assert_eq!(pooled[[0, 0]], 2.0);
        assert_eq!(pooled[[1, 0]], 5.0);
    }

    #[test]
    fn a_row_pools_the_same_alone_or_padded_in_a_batch() {
        let alone = Array3::from_shape_fn((1, 5, 3), |(_, t, k)| (t * 3 + k) as f32 * 0.1);
        let mut padded = Array3::<f32>::from_elem((2, 9, 3), 42.0);
        padded
            .slice_mut(ndarray::s![1, ..5, ..])
            .assign(&alone.slice(ndarray::s![0, .., ..]));
        let a = mean_pool_residues(alone.view(), &[5]);
        let b = mean_pool_residues(padded.view(), &[9, 5]);
        assert_eq!(a.row(0), b.row(1));
    }
}
