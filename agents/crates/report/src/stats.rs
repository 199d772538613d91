//! The statistics behind a verdict: a 95% percentile-bootstrap interval of a side's
//! central value, and the two-sided Mann-Whitney U test between two sides.
//!
//! Both are deterministic: the bootstrap's generator is seeded from the values, so the same
//! inputs give the same report (golden tests and re-runs agree to the digit).

/// Resamples per bootstrap interval.
pub const RESAMPLES: usize = 2000;

/// Which central value an interval is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// The median (times, rates of data, sizes).
    Median,
    /// The mean (shares of 0/1 outcomes).
    Mean,
}

/// The 95% percentile-bootstrap interval of `stat` over `values` ([`RESAMPLES`] resamples
/// with replacement), as `(low, high)`; `None` with fewer than two values.
pub fn bootstrap_interval(values: &[f64], stat: Statistic) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mut rng = SplitMix64::seeded(values);
    let mut sample = vec![0.0; n];
    let mut stats = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for s in sample.iter_mut() {
            *s = values[rng.below(n)];
        }
        stats.push(match stat {
            Statistic::Median => median_in_place(&mut sample),
            Statistic::Mean => sample.iter().sum::<f64>() / n as f64,
        });
    }
    stats.sort_by(f64::total_cmp);
    Some((quantile(&stats, 0.025), quantile(&stats, 0.975)))
}

/// The median of `v` (reordered; not empty).
fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, &mut hi, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

/// Linear interpolation between closest ranks (sorted, not empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The two-sided p-value of the Mann-Whitney U test that `a` and `b` come from the same
/// distribution: exact (every arrangement of the ranks counted) for small samples without
/// ties, otherwise the normal approximation with the tie correction and a continuity
/// correction. `None` when a side is empty or every value is the same.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // U of `a`: pairs where a's value is larger, ties counting half (twice, to stay whole).
    let mut u2 = 0u64;
    let mut ties = false;
    for x in a {
        for y in b {
            match x.total_cmp(y) {
                std::cmp::Ordering::Greater => u2 += 2,
                std::cmp::Ordering::Equal => {
                    u2 += 1;
                    ties = true;
                }
                std::cmp::Ordering::Less => {}
            }
        }
    }
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    ties |= all.windows(2).any(|w| w[0] == w[1]);
    if all.first() == all.last() {
        return None;
    }
    let u = u2 as f64 / 2.0;
    if !ties && n1 + n2 <= 40 {
        return Some(exact_p(n1, n2, u2 / 2));
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let mean = n1f * n2f / 2.0;
    // Tie correction: sum of t^3 - t over groups of equal values.
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j] == all[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some((2.0 * normal_upper_tail(z)).min(1.0))
}

/// Exact two-sided p of U = `u` for samples of `n1` and `n2` without ties: counts of
/// arrangements by U, built one value at a time.
fn exact_p(n1: usize, n2: usize, u: u64) -> f64 {
    let max_u = n1 * n2;
    // f[i][j][k]: arrangements of i values of a and j of b with U = k. The largest value
    // is a's (it beats all j of b: shift by j) or b's: f(i, j) = f(i-1, j) >> j + f(i, j-1).
    // With one side empty there is one arrangement, U = 0.
    let mut f: Vec<Vec<Vec<f64>>> = vec![vec![vec![1.0]; n2 + 1]; n1 + 1];
    for i in 1..=n1 {
        for j in 1..=n2 {
            let mut cur = vec![0.0; i * j + 1];
            for (k, c) in f[i - 1][j].iter().enumerate() {
                cur[k + j] += c;
            }
            for (k, c) in f[i][j - 1].iter().enumerate() {
                cur[k] += c;
            }
            f[i][j] = cur;
        }
    }
    let dist = &f[n1][n2];
    let total: f64 = dist.iter().sum();
    let u = (u as usize).min(max_u);
    let lower: f64 = dist[..=u].iter().sum::<f64>() / total;
    let upper: f64 = dist[u..].iter().sum::<f64>() / total;
    (2.0 * lower.min(upper)).min(1.0)
}

/// P(Z > z) for a standard normal Z (Abramowitz and Stegun 7.1.26 on erfc; error < 1.5e-7).
fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

/// A small, fast generator (SplitMix64), seeded from the data it resamples.
struct SplitMix64(u64);

impl SplitMix64 {
    fn seeded(values: &[f64]) -> Self {
        // FNV-1a over the values' bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in values {
            for b in v.to_bits().to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        SplitMix64(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-and-shift (bias below 2^-32 for these n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_p_of_fully_separated_samples() {
        // 3 vs 3 all apart: 2 of the 20 arrangements are as extreme, p = 0.1 (so three
        // runs a side can never pass the rank test at 5%; the intervals can).
        let p = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).expect("p");
        assert!((p - 0.1).abs() < 1e-12, "{p}");
        // 5 vs 5: 2 / 252.
        let p = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).expect("p");
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        // Interleaved: nowhere near.
        let p = mann_whitney(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0]).expect("p");
        assert!(p > 0.5, "{p}");
    }

    #[test]
    fn normal_approximation_with_ties() {
        // 0/1 outcomes (drill successes): 10 of 10 against 2 of 10.
        let a = [1.0; 10];
        let mut b = [0.0; 10];
        b[0] = 1.0;
        b[1] = 1.0;
        let p = mann_whitney(&a, &b).expect("p");
        assert!(p < 0.01, "{p}");
        // The same share on both sides.
        let p = mann_whitney(&b, &b).expect("p");
        assert!(p > 0.9, "{p}");
        // Nothing varies: no test.
        assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0]), None);
        assert!((normal_upper_tail(1.959_964) - 0.025).abs() < 1e-6);
    }

    #[test]
    fn bootstrap_intervals_hold_the_median_and_repeat() {
        let v = [4.0, 7.6, 5.1, 6.3, 4.4, 6.9, 5.5];
        let (lo, hi) = bootstrap_interval(&v, Statistic::Median).expect("interval");
        assert!(
            lo <= 5.5 && 5.5 <= hi && lo >= 4.0 && hi <= 7.6,
            "{lo} {hi}"
        );
        assert!(lo < hi);
        assert_eq!(bootstrap_interval(&v, Statistic::Median), Some((lo, hi)));
        assert_eq!(bootstrap_interval(&[3.0], Statistic::Median), None);
        let (lo, hi) = bootstrap_interval(&[2.0; 5], Statistic::Median).expect("interval");
        assert_eq!((lo, hi), (2.0, 2.0));
        // A share of 0/1 outcomes: 3 of 4.
        let (lo, hi) = bootstrap_interval(&[1.0, 1.0, 0.0, 1.0], Statistic::Mean).expect("ci");
        assert!(lo < 0.75 && hi == 1.0, "{lo} {hi}");
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[5.0], 0.9), 5.0);
    }
}
