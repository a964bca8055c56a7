//! Which native-histogram bucket holds a value, with the bounds Prometheus uses.
//!
//! A bucket of index `i` at schema `s` holds the observations in
//! `(2^((i-1)/2^s), 2^(i/2^s)]`. At a positive schema the bounds of one power
//! of two are not computed per observation but looked up, and they are not
//! the correctly rounded powers: they are the table `client_golang` (and so
//! the Prometheus server) uses, so that an observation on a bound lands in
//! the same bucket as there. That table starts each schema's fractions at 0.5
//! and multiplies by `2^(2^-s)` for each new bound, reusing the coarser
//! schema's bound for every second one; its factor for schema 1 is
//! 1.414213562373095 (Go's `math.Exp2(0.5)`), one unit in the last place below
//! the rounded square root of 2, so 341 of its 511 fractions are below the
//! rounded `2^(k/2^s - 1)` (and 2 above). `tests/test_golang_native.py`
//! compares every bound and its neighbours with `client_golang` itself.

/// The coarsest schema.
pub const MIN_SCHEMA: i8 = -4;
/// The finest schema.
pub const MAX_SCHEMA: i8 = 8;

/// The factor between neighbouring bounds at schemas 1 to 8, `2^(2^-s)` as
/// `client_golang` computed its table (see the module's documentation).
const FACTORS: [f64; 8] = [
    // One unit in the last place below the rounded square root of 2.
    f64::from_bits(std::f64::consts::SQRT_2.to_bits() - 1),
    1.189_207_115_002_721,
    1.090_507_732_665_257_7,
    1.044_273_782_427_413_8,
    1.021_897_148_654_116_6,
    1.010_889_286_051_700_5,
    1.005_429_901_112_802_7,
    1.002_711_275_050_202_5,
];

/// The bounds of one power of two at each schema from 0 to 8, as fractions in
/// [0.5, 1): schema `s`'s `2^s` fractions start at `2^s - 1`.
static FRACTIONS: [f64; 511] = fractions();

const fn fractions() -> [f64; 511] {
    let mut table = [0.5; 511];
    let mut schema = 1;
    while schema <= 8 {
        let start = (1 << schema) - 1;
        let coarser = (1 << (schema - 1)) - 1;
        let mut k = 1;
        while k < 1 << schema {
            table[start + k] = if k % 2 == 0 {
                table[coarser + k / 2]
            } else {
                table[start + k - 1] * FACTORS[schema - 1]
            };
            k += 1;
        }
        schema += 1;
    }
    table
}

/// The fractions of one power of two at positive `schema`.
fn schema_fractions(schema: i8) -> &'static [f64] {
    let count = 1_usize << schema;
    &FRACTIONS[count - 1..2 * count - 1]
}

/// The index of the bucket holding `value` (above zero, finite) at `schema`.
pub fn bucket_index(value: f64, schema: i8) -> i32 {
    let (fraction, exponent) = frexp(value);
    if schema > 0 {
        let fractions = schema_fractions(schema);
        // The first bound at least `fraction`; the count of bounds in one
        // power of two (256 at most) fits an i32.
        let position = fractions.partition_point(|bound| *bound < fraction) as i32;
        position + (exponent - 1) * fractions.len() as i32
    } else {
        // Exactly a power of two belongs to the bucket it bounds.
        let index = if fraction == 0.5 {
            exponent - 1
        } else {
            exponent
        };
        let shift = -i32::from(schema);
        (index + (1 << shift) - 1) >> shift
    }
}

/// The upper bound of bucket `index` at `schema` (+Inf past the largest float).
pub fn upper_bound(index: i32, schema: i8) -> f64 {
    if schema > 0 {
        let fractions = schema_fractions(schema);
        let mask = fractions.len() as i32 - 1;
        let fraction = fractions[(index & mask) as usize];
        ldexp(fraction, (index >> schema) + 1)
    } else {
        ldexp(1.0, index << -i32::from(schema))
    }
}

/// `fraction * 2^exponent`, in two exact steps for exponents past one `f64`'s range.
fn ldexp(fraction: f64, exponent: i32) -> f64 {
    let exponent = exponent.clamp(-2200, 2200);
    let half = exponent / 2;
    fraction * 2f64.powi(half) * 2f64.powi(exponent - half)
}

/// `value = fraction * 2^exponent` with `fraction` in [0.5, 1), for a finite
/// `value` above zero (Go's `math.Frexp`).
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    if biased == 0 {
        // A subnormal: scale it into the normal range first.
        let (fraction, exponent) = frexp(value * 2f64.powi(64));
        return (fraction, exponent - 64);
    }
    let fraction = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (fraction, biased - 1022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_indexes_follow_prometheus() {
        // At schema 0, bucket i is (2^(i-1), 2^i].
        assert_eq!(bucket_index(1.0, 0), 0);
        assert_eq!(bucket_index(1.5, 0), 1);
        assert_eq!(bucket_index(2.0, 0), 1);
        assert_eq!(bucket_index(0.5, 0), -1);
        assert_eq!(bucket_index(0.3, 0), -1);
        // At schema 3, 8 buckets per power of two.
        assert_eq!(bucket_index(2.0, 3), 8);
        assert_eq!(bucket_index(2.0001, 3), 9);
        assert_eq!(bucket_index(1.0, 3), 0);
        // Negative schemas merge powers of two: at -1, (1, 4] is bucket 1.
        assert_eq!(bucket_index(3.0, -1), 1);
        assert_eq!(bucket_index(4.0, -1), 1);
        assert_eq!(bucket_index(4.5, -1), 2);
        for schema in MIN_SCHEMA..=MAX_SCHEMA {
            for value in [1e-300, 1e-9, 0.001, 0.37, 1.0, 2.5, 60.0, 1e9, f64::MAX] {
                let index = bucket_index(value, schema);
                assert!(value <= upper_bound(index, schema), "{value} at {schema}");
                assert!(
                    value > upper_bound(index - 1, schema),
                    "{value} at {schema}"
                );
            }
        }
    }

    #[test]
    fn a_bound_belongs_to_the_bucket_it_closes_and_its_successor_to_the_next() {
        for schema in MIN_SCHEMA..=MAX_SCHEMA {
            for index in -2000..2000 {
                let bound = upper_bound(index, schema);
                if bound == 0.0 || !bound.is_finite() || bound < f64::MIN_POSITIVE {
                    continue;
                }
                assert_eq!(bucket_index(bound, schema), index, "{bound} at {schema}");
                assert_eq!(bucket_index(bound.next_up(), schema), index + 1);
            }
        }
    }

    /// `make golang-native`: every index `tests/golang/native_keys.go` had
    /// `client_golang` give (in the file `GATEWAY_METRICS_GOLANG_KEYS` names) is ours.
    #[test]
    #[ignore = "needs client_golang's answers: make golang-native"]
    fn indexes_equal_client_golangs() {
        let path = std::env::var("GATEWAY_METRICS_GOLANG_KEYS")
            .expect("GATEWAY_METRICS_GOLANG_KEYS names client_golang's answers");
        let answers = std::fs::read_to_string(path).unwrap();
        let mut checked = [0_usize; 13];
        let mut differ = Vec::new();
        for line in answers.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let schema: i8 = fields[0].parse().unwrap();
            let value = f64::from_bits(u64::from_str_radix(fields[1], 16).unwrap());
            let theirs: i32 = fields[2].parse().unwrap();
            checked[(schema - MIN_SCHEMA) as usize] += 1;
            if bucket_index(value, schema) != theirs {
                differ.push((schema, value, theirs, bucket_index(value, schema)));
            }
        }
        assert!(checked.iter().all(|count| *count > 6000), "{checked:?}");
        assert!(
            differ.is_empty(),
            "{} differ: {:?}",
            differ.len(),
            &differ[..differ.len().min(10)]
        );
    }

    #[test]
    fn the_table_is_the_one_prometheus_uses() {
        // Where the table differs from the rounded power: 2^-0.5 rounds to
        // ...476; Prometheus's bound, and so ours, is ...475.
        let below = f64::from_bits(std::f64::consts::FRAC_1_SQRT_2.to_bits() - 1);
        assert_eq!(below.to_string(), "0.7071067811865475");
        assert_eq!(schema_fractions(1), [0.5, below]);
        assert_eq!(bucket_index(std::f64::consts::FRAC_1_SQRT_2, 1), 0);
        assert_eq!(bucket_index(below, 1), -1);
        // Every second bound of a schema is the coarser schema's.
        for schema in 2..=MAX_SCHEMA {
            let (fine, coarse) = (schema_fractions(schema), schema_fractions(schema - 1));
            for (k, bound) in coarse.iter().enumerate() {
                assert_eq!(fine[2 * k], *bound);
            }
            // Rounding in the products drifts a few units in the last place
            // from 2^(k/2^s - 1).
            for (k, bound) in fine.iter().enumerate() {
                let exact = (k as f64 / fine.len() as f64 - 1.0).exp2();
                assert!(
                    (bound - exact).abs() <= 8.0 * f64::EPSILON * exact,
                    "{bound}"
                );
            }
        }
    }
}
