//! Stratified k-fold assignment for cross-validation: scikit-learn's StratifiedKFold(shuffle=True) allocation,
//! with its own small seeded generator so a seed gives the same folds on every machine and every build.

/// SplitMix64 (Steele, Lea and Flood 2014): a few lines, no dependency, and its output for a seed never changes
/// with a crate upgrade, which is what "deterministic with --seed" needs. Not for anything cryptographic.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0..bound (bound > 0), by Lemire's multiply-shift; its bias (under 2^-40 here) cannot matter.
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Why folds cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldError {
    TooFewFolds,
    /// The smaller class has fewer members than there are folds, so some test fold would lack it.
    ClassTooSmall {
        class: u8,
        members: usize,
    },
}

/// The fold (0..folds) of every sample, in sample order.
///
/// As in scikit-learn's StratifiedKFold: the labels, sorted, are dealt round-robin to the folds, which fixes how
/// many of each class every fold gets (the counts of a class differ by at most one between folds, and so do
/// fold sizes); then, for each class, that list of fold numbers is shuffled and handed to the class's samples
/// in input order. The generator differs from numpy's, so the folds are not sklearn's for the same seed.
pub fn stratified_folds(labels: &[u8], folds: usize, seed: u64) -> Result<Vec<usize>, FoldError> {
    if folds < 2 {
        return Err(FoldError::TooFewFolds);
    }
    let negatives = labels.iter().filter(|&&y| y == 0).count();
    let positives = labels.len() - negatives;
    for (class, members) in [(0u8, negatives), (1u8, positives)] {
        if members < folds {
            return Err(FoldError::ClassTooSmall { class, members });
        }
    }
    // Sorted labels are `negatives` zeros then ones; position p goes to fold p % folds.
    let dealt =
        |start: usize, end: usize, fold: usize| (start..end).filter(|p| p % folds == fold).count();
    let mut rng = SplitMix64(seed);
    let mut assignment = vec![0; labels.len()];
    for (class, start, end) in [(0u8, 0, negatives), (1u8, negatives, labels.len())] {
        let mut fold_of_member: Vec<usize> = (0..folds)
            .flat_map(|fold| std::iter::repeat_n(fold, dealt(start, end, fold)))
            .collect();
        rng.shuffle(&mut fold_of_member);
        let members = labels.iter().enumerate().filter(|(_, &y)| y == class);
        for ((sample, _), fold) in members.zip(fold_of_member) {
            assignment[sample] = fold;
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(labels: &[u8], assignment: &[usize], folds: usize) -> Vec<[usize; 2]> {
        let mut c = vec![[0, 0]; folds];
        for (&y, &f) in labels.iter().zip(assignment) {
            c[f][usize::from(y)] += 1;
        }
        c
    }

    #[test]
    fn every_fold_gets_its_share_of_each_class_and_a_seed_fixes_the_folds() {
        // 58 negatives and 38 positives, interleaved unevenly, like the demo set.
        let labels: Vec<u8> = (0..96)
            .map(|i| u8::from(i % 5 == 1 || i % 5 == 3 || (i % 7 == 0 && i % 5 != 0)))
            .collect();
        let positives = labels.iter().filter(|&&y| y == 1).count();
        let negatives = labels.len() - positives;
        for folds in [2, 3, 5, 10] {
            let a = stratified_folds(&labels, folds, 7).unwrap();
            assert_eq!(a.len(), labels.len());
            let c = counts(&labels, &a, folds);
            for (class, total) in [(0, negatives), (1, positives)] {
                for fold in &c {
                    // floor or ceil of the class's share: "in proportion", and never zero.
                    assert!(
                        fold[class] == total / folds || fold[class] == total.div_ceil(folds),
                        "{folds} folds: {c:?}"
                    );
                    assert!(fold[class] > 0);
                }
                assert_eq!(c.iter().map(|f| f[class]).sum::<usize>(), total);
            }
            let sizes: Vec<usize> = c.iter().map(|f| f[0] + f[1]).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            assert_eq!(
                stratified_folds(&labels, folds, 7).unwrap(),
                a,
                "same seed, same folds"
            );
        }
        assert_ne!(
            stratified_folds(&labels, 10, 7).unwrap(),
            stratified_folds(&labels, 10, 8).unwrap()
        );
    }

    #[test]
    fn the_folds_of_a_seed_are_pinned() {
        // Pinned so that a change to the generator or the allocation, which would silently change every
        // reported CV number for a given seed, fails here instead.
        let labels = [0, 1, 0, 1, 0, 1, 0, 0, 1, 0];
        assert_eq!(
            stratified_folds(&labels, 2, 0).unwrap(),
            PINNED_SEED0_2FOLDS
        );
    }

    const PINNED_SEED0_2FOLDS: [usize; 10] = [0, 1, 1, 1, 1, 0, 0, 0, 0, 1];

    #[test]
    fn too_few_members_or_folds_is_an_error_not_a_panic() {
        assert_eq!(
            stratified_folds(&[0, 1, 0, 1], 1, 0),
            Err(FoldError::TooFewFolds)
        );
        assert_eq!(
            stratified_folds(&[0, 0, 0, 1, 1], 3, 0),
            Err(FoldError::ClassTooSmall {
                class: 1,
                members: 2
            })
        );
        assert_eq!(
            stratified_folds(&[0, 0, 0], 2, 0),
            Err(FoldError::ClassTooSmall {
                class: 1,
                members: 0
            })
        );
    }
}
