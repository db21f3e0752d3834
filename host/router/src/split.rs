//! Traffic distribution as a value: which version serves each request, exactly in proportion.
//!
//! Azure ML's rule: every version claims a percentage; what nobody claims goes to the default
//! version. The split is a table of 100 slots laid out by smooth weighted round robin and walked by
//! an atomic counter, so every run of 100 consecutive requests matches the percentages exactly,
//! without locks and without the bias of hashing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Effective percentages: each version's claim, the default topped up with what is unclaimed.
pub fn effective(claims: &[u32], default: usize) -> Result<Vec<u32>, String> {
    let total: u32 = claims.iter().sum();
    if total > 100 {
        return Err(format!("traffic percentages add up to {total}, more than 100"));
    }
    if default >= claims.len() {
        return Err("there is no default version".into());
    }
    let mut out = claims.to_vec();
    out[default] = 100 - (total - claims[default]);
    Ok(out)
}

/// 100 slots, each naming the version index that serves it.
fn table(weights: &[u32]) -> Box<[u16]> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut slots = Vec::with_capacity(100);
    for _ in 0..100 {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += w as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        current[best] -= total;
        slots.push(best as u16);
    }
    slots.into_boxed_slice()
}

/// Whether slot `s` of 100 carries a mirror copy, for a mirror of `percent`%, spread evenly.
fn mirrored(s: u64, percent: u32) -> bool {
    let p = percent.min(100) as u64;
    (s + 1) * p / 100 > s * p / 100
}

#[derive(Debug)]
pub struct Split {
    slots: Box<[u16]>,
    /// (version index, percent) of versions that get a copy of traffic.
    mirrors: Vec<(usize, u32)>,
    counter: AtomicU64,
    /// Every slot names the same version and nothing is mirrored.
    single: bool,
}

impl Split {
    /// `weights` are effective percentages (summing to 100); `mirrors` are (index, percent).
    pub fn new(weights: &[u32], mirrors: Vec<(usize, u32)>) -> Self {
        let slots = table(weights);
        Split {
            single: mirrors.is_empty() && slots.iter().all(|&v| v == slots[0]),
            slots,
            mirrors,
            counter: AtomicU64::new(0),
        }
    }

    /// The version for the next request, and the versions that get a copy of it.
    pub fn next(&self) -> (usize, impl Iterator<Item = usize> + '_) {
        // One version and no mirror (the common case): nothing to count.
        let s = if self.single {
            0
        } else {
            self.counter.fetch_add(1, Ordering::Relaxed) % 100
        };
        let serving = self.slots[s as usize] as usize;
        let copies = self
            .mirrors
            .iter()
            .filter(move |(i, p)| *i != serving && mirrored(s, *p))
            .map(|(i, _)| *i);
        (serving, copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], n: usize) -> Vec<usize> {
        let split = Split::new(weights, Vec::new());
        let mut c = vec![0; weights.len()];
        for _ in 0..n {
            c[split.next().0] += 1;
        }
        c
    }

    #[test]
    fn azure_worked_examples() {
        // A first version at 20% gets 100%.
        assert_eq!(effective(&[20], 0).unwrap(), vec![100]);
        // Add one at 10%: 90/10.
        assert_eq!(effective(&[20, 10], 0).unwrap(), vec![90, 10]);
        // Raise the second to 40% and make it default: the first keeps 20%, the second gets 80%.
        assert_eq!(effective(&[20, 40], 1).unwrap(), vec![20, 80]);
        assert!(effective(&[60, 50], 0).unwrap_err().contains("add up to 110"));
    }

    #[test]
    fn every_hundred_requests_match_exactly() {
        assert_eq!(counts(&[90, 10], 100), vec![90, 10]);
        assert_eq!(counts(&[20, 80], 2000), vec![400, 1600]);
        assert_eq!(counts(&[33, 33, 34], 300), vec![99, 99, 102]);
        assert_eq!(counts(&[100, 0], 50), vec![50, 0]);
    }

    #[test]
    fn mirrors_get_their_share_and_never_the_serving_version() {
        let split = Split::new(&[100, 0], vec![(1, 25)]);
        let copies: usize = (0..400).map(|_| split.next().1.count()).sum();
        assert_eq!(copies, 100);
        let split = Split::new(&[0, 100], vec![(1, 50)]);
        assert_eq!((0..100).map(|_| split.next().1.count()).sum::<usize>(), 0);
    }
}
