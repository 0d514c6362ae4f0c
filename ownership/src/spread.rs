//! Splitting a number of slots among regions in proportion to their weights.

/// Shares of `total` proportional to `weights` (largest remainder; ties go to the
/// earlier region), summing to exactly `total`. All-zero weights give equal shares.
pub fn spread_by_weight(total: usize, weights: &[u64]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let weights: Vec<u128> = if weights.iter().all(|&w| w == 0) {
        vec![1; weights.len()]
    } else {
        weights.iter().map(|&w| u128::from(w)).collect()
    };
    let sum: u128 = weights.iter().sum();
    let total_wide = total as u128;
    let mut shares: Vec<usize> = weights
        .iter()
        .map(|w| (total_wide * w / sum) as usize)
        .collect();
    let mut remainders: Vec<(u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (total_wide * w % sum, i))
        .collect();
    // Largest remainder first; on equal remainders the earlier region wins.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = total - shares.iter().sum::<usize>();
    for &(_, i) in remainders.iter().take(missing) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::spread_by_weight;
    use proptest::prelude::*;

    #[test]
    fn equal_weights_split_evenly_with_the_rest_up_front() {
        assert_eq!(spread_by_weight(4096, &[1, 1, 1]), vec![1366, 1365, 1365]);
        assert_eq!(spread_by_weight(10, &[3, 1]), vec![8, 2]);
        assert_eq!(spread_by_weight(5, &[0, 2]), vec![0, 5]);
        assert_eq!(spread_by_weight(3, &[0, 0]), vec![2, 1]);
    }

    proptest! {
        #[test]
        fn shares_sum_to_total_and_follow_weights(
            total in 0usize..50_000,
            weights in proptest::collection::vec(0u64..1000, 1..6),
        ) {
            let shares = spread_by_weight(total, &weights);
            prop_assert_eq!(shares.iter().sum::<usize>(), total);
            let sum: u64 = weights.iter().sum();
            if sum > 0 {
                for (share, weight) in shares.iter().zip(&weights) {
                    let exact = total as f64 * *weight as f64 / sum as f64;
                    prop_assert!((*share as f64 - exact).abs() < 1.0);
                }
            }
        }
    }
}
