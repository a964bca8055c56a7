//! A histogram's buckets: their bounds, their `le` labels as
//! `prometheus_client` prints them, and the search for a value's bucket, which
//! every histogram observation makes (SSE2 on x86_64, compared with its scalar
//! twin in the tests, which is what other processors run).

use crate::schema::float_text::write_value;

/// A histogram's bucket bounds and their `le` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: Vec<f64>,
    /// The bounds padded with infinities to a fixed length, when they fit:
    /// what [`Buckets::index`] compares against.
    padded: Option<[f64; PADDED_BOUNDS]>,
    /// One per bound, then `+Inf`.
    labels: Vec<String>,
}

/// Bounds compared all at once by [`Buckets::index`]: sixteen covers the
/// default buckets and Prometheus's usual lists.
const PADDED_BOUNDS: usize = 16;

impl Buckets {
    /// Buckets with these upper bounds (and `+Inf`): finite, above zero and
    /// strictly increasing, or the reason they are not.
    pub fn new(bounds: &[f64]) -> Result<Self, String> {
        if bounds.is_empty() {
            return Err("must hold at least one bound".to_owned());
        }
        if let Some(bad) = bounds
            .iter()
            .find(|bound| !bound.is_finite() || **bound <= 0.0)
        {
            return Err(format!("must be finite and above zero, got {bad}"));
        }
        if let Some((low, high)) = bounds.windows(2).find_map(|pair| match pair {
            [low, high] if low >= high => Some((low, high)),
            _ => None,
        }) {
            return Err(format!("must increase strictly, got {low} then {high}"));
        }
        let mut labels: Vec<String> = bounds
            .iter()
            .map(|bound| {
                let mut label = String::new();
                write_value(&mut label, *bound);
                label
            })
            .collect();
        labels.push("+Inf".to_owned());
        let padded = (bounds.len() <= PADDED_BOUNDS).then(|| {
            let mut padded = [f64::INFINITY; PADDED_BOUNDS];
            padded[..bounds.len()].copy_from_slice(bounds);
            padded
        });
        Ok(Buckets {
            bounds: bounds.to_vec(),
            padded,
            labels,
        })
    }

    /// The upper bounds, without `+Inf`.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// The `le` label of each bucket, `+Inf` last, formatted as
    /// `prometheus_client` formats bounds (`floatToGoString`).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The number of buckets, `+Inf` included.
    pub fn count(&self) -> usize {
        self.labels.len()
    }

    /// The bucket of `value`: the first whose bound is `>= value` (`+Inf` when none is).
    ///
    /// Up to sixteen bounds are all compared at once (no value exceeds the
    /// padding) with a few vector comparisons: no
    /// data-dependent branch, so a stream of varied latencies costs no branch
    /// misprediction, and no chain of dependent loads as a binary search has.
    /// Longer lists take the standard library's binary search.
    #[inline]
    pub fn index(&self, value: f64) -> usize {
        match &self.padded {
            Some(padded) => bounds_below(padded, value),
            None => self.bounds.partition_point(|bound| value > *bound),
        }
    }
}

/// How many of the increasing `padded` bounds `value` exceeds. They are the
/// first ones, so the count is the place of the first clear bit of the
/// comparisons' mask: eight two-lane comparisons packed into one mask and
/// one bit scan, where counting the set bits costs a dozen more instructions
/// without a population-count instruction (not in the x86-64 baseline).
#[cfg(target_arch = "x86_64")]
#[inline]
fn bounds_below(padded: &[f64; PADDED_BOUNDS], value: f64) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_castpd_si128, _mm_cmplt_pd, _mm_loadu_pd, _mm_movemask_epi8, _mm_packs_epi16,
        _mm_packs_epi32, _mm_set1_pd,
    };
    // SAFETY: SSE2 is part of every x86_64 processor; each load reads two of
    // the sixteen bounds (at 0, 2, ..., 14), unaligned.
    let mask = unsafe {
        let value = _mm_set1_pd(value);
        let below = |at: usize| -> __m128i {
            _mm_castpd_si128(_mm_cmplt_pd(_mm_loadu_pd(padded.as_ptr().add(at)), value))
        };
        // Each packing halves the lanes, keeping each all-ones or zero.
        let quarter = |at: usize| _mm_packs_epi32(below(at), below(at + 2));
        let low = _mm_packs_epi32(quarter(0), quarter(4));
        let high = _mm_packs_epi32(quarter(8), quarter(12));
        _mm_movemask_epi8(_mm_packs_epi16(low, high)) as u32
    };
    (!mask).trailing_zeros() as usize
}

/// How many of the increasing `padded` bounds `value` exceeds, one bound at
/// a time: what processors other than x86_64 run, compiled on every target
/// so that the tests hold the SSE2 search to it.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
#[inline]
fn bounds_below_scalar(padded: &[f64; PADDED_BOUNDS], value: f64) -> usize {
    padded.iter().map(|bound| usize::from(value > *bound)).sum()
}

#[cfg(not(target_arch = "x86_64"))]
use bounds_below_scalar as bounds_below;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::family::Schema;

    #[test]
    fn bucket_labels_are_formatted_as_prometheus_client_formats_bounds() {
        let buckets = Buckets::new(&[0.001, 0.05, 1.0, 7.5, 60.0, 1e6]).unwrap();
        assert_eq!(
            buckets.labels(),
            ["0.001", "0.05", "1.0", "7.5", "60.0", "1e+06", "+Inf"]
        );
        assert_eq!(
            Schema::default().latency_buckets().labels(),
            ["0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "+Inf"]
        );
    }

    #[test]
    fn values_on_a_bound_fall_in_that_bucket() {
        let buckets = Schema::default().latency_buckets().clone();
        assert_eq!(buckets.index(0.0), 0);
        assert_eq!(buckets.index(0.05), 0);
        assert_eq!(buckets.index(0.050_000_000_000_001), 1);
        assert_eq!(buckets.index(60.0), 9);
        assert_eq!(buckets.index(60.1), 10);
    }

    #[test]
    fn a_value_falls_below_as_many_bounds_as_it_exceeds() {
        // Every bound, its neighbours on both sides, and values between, for
        // bound lists of every length from one to forty.
        for length in 1..=40 {
            let bounds: Vec<f64> = (1..=length).map(|bound| f64::from(bound) * 0.5).collect();
            let buckets = Buckets::new(&bounds).unwrap();
            for bound in &bounds {
                for value in [
                    bound.next_down(),
                    *bound,
                    bound.next_up(),
                    bound + 0.25,
                    0.0,
                ] {
                    let exceeded = bounds.iter().filter(|bound| value > **bound).count();
                    assert_eq!(buckets.index(value), exceeded, "{value} in {bounds:?}");
                }
            }
            assert_eq!(buckets.index(f64::NAN), 0);
        }
    }

    #[test]
    fn bad_bounds_are_refused_with_the_reason() {
        assert!(Buckets::new(&[]).is_err());
        assert!(Buckets::new(&[1.0, f64::INFINITY])
            .unwrap_err()
            .contains("finite"));
        assert!(Buckets::new(&[0.0, 1.0])
            .unwrap_err()
            .contains("above zero"));
        assert!(Buckets::new(&[1.0, 1.0]).unwrap_err().contains("increase"));
    }

    #[test]
    fn the_sse2_search_agrees_with_its_scalar_twin() {
        // Bound lists of every length, padded as `Buckets` pads them, against
        // their bounds, their neighbours, zeros, infinities, NaN and values
        // from a fixed-seed generator spanning many orders of magnitude.
        let mut next = crate::test_random::xorshift(0x9e37_79b9_7f4a_7c15);
        for length in 1..=PADDED_BOUNDS {
            let bounds: Vec<f64> = (1..=length)
                .map(|bound| 1e-4 * 3.0_f64.powi(bound as i32))
                .collect();
            let buckets = Buckets::new(&bounds).unwrap();
            let padded = buckets.padded.unwrap();
            let mut values = vec![0.0, -0.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
            for bound in &bounds {
                values.extend([bound.next_down(), *bound, bound.next_up()]);
            }
            for _ in 0..2_000 {
                let bits = next();
                values.push(f64::from_bits(bits));
                values.push(
                    (bits >> 11) as f64 / (1_u64 << 53) as f64
                        * 10.0_f64.powi((bits % 12) as i32 - 4),
                );
            }
            for value in values {
                assert_eq!(
                    bounds_below(&padded, value),
                    bounds_below_scalar(&padded, value),
                    "{value} in {bounds:?}"
                );
            }
        }
    }
}
