//! Parts that must fit their whole: cache reads and writes within the input
//! tokens, the time to first token, the queue and the upstream call within the
//! latency. The groups are derived from [`REQUEST_FIELDS`]' `part_of` column;
//! a call whose parts pass their whole is refused, naming them, with a
//! rounding allowance for sums of seconds.

use smallvec::SmallVec;

use crate::schema::request::{Feeds, PartOf, RequestValues, FIELD_COUNT, REQUEST_FIELDS};

/// How far, relative to the whole, a sum of seconds may pass it by rounding:
/// each of at most [`MAX_GROUP_PARTS`] additions rounds by half a unit in the
/// last place, so eight machine epsilons leave room to spare.
const ROUNDING_ALLOWANCE: f64 = 8.0 * f64::EPSILON;

/// The most parts one group may have.
const MAX_GROUP_PARTS: usize = 4;

/// Fields that together fit in a whole, by position in [`REQUEST_FIELDS`].
#[derive(Debug, Clone, Copy)]
pub struct PartGroup {
    /// The whole.
    pub whole: usize,
    /// The parts, the first `count` of them.
    pub parts: [usize; MAX_GROUP_PARTS],
    /// How many parts.
    pub count: usize,
}

/// How many groups of parts the table has.
const PART_GROUP_COUNT: usize = {
    let mut seen: [Option<PartOf>; FIELD_COUNT] = [None; FIELD_COUNT];
    let mut count = 0;
    let mut index = 0;
    while index < FIELD_COUNT {
        if let Some(part_of) = REQUEST_FIELDS[index].part_of {
            let mut known = false;
            let mut at = 0;
            while at < count {
                if let Some(other) = seen[at] {
                    known |= other.whole == part_of.whole && other.group == part_of.group;
                }
                at += 1;
            }
            if !known {
                seen[count] = Some(part_of);
                count += 1;
            }
        }
        index += 1;
    }
    count
};

/// The groups of parts of the request table, in the order their first part
/// appears in it: derived from the rows once, so a check reads only these.
pub const PART_GROUPS: [PartGroup; PART_GROUP_COUNT] = {
    let mut groups = [PartGroup {
        whole: 0,
        parts: [0; MAX_GROUP_PARTS],
        count: 0,
    }; PART_GROUP_COUNT];
    let mut keys: [(usize, u8); PART_GROUP_COUNT] = [(0, 0); PART_GROUP_COUNT];
    let mut made = 0;
    let mut index = 0;
    while index < FIELD_COUNT {
        if let Some(part_of) = REQUEST_FIELDS[index].part_of {
            let mut at = 0;
            while at < made && !(keys[at].0 == part_of.whole && keys[at].1 == part_of.group) {
                at += 1;
            }
            if at == made {
                keys[made] = (part_of.whole, part_of.group);
                groups[made].whole = part_of.whole;
                made += 1;
            }
            let group = &mut groups[at];
            assert!(group.count < MAX_GROUP_PARTS, "a group has too many parts");
            group.parts[group.count] = index;
            group.count += 1;
        }
        index += 1;
    }
    groups
};

/// A count or a duration, as the parts check adds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A token count (added without overflow).
    Count(u64),
    /// Seconds.
    Seconds(f64),
}

impl Number {
    fn zero_like(other: Number) -> Number {
        match other {
            Number::Count(_) => Number::Count(0),
            Number::Seconds(_) => Number::Seconds(0.0),
        }
    }

    #[allow(clippy::needless_pass_by_value)] // A fold's step, `Copy` anyway.
    fn plus(self, other: Number) -> Number {
        match (self, other) {
            (Number::Count(a), Number::Count(b)) => Number::Count(a.saturating_add(b)),
            (a, b) => Number::Seconds(a.as_f64() + b.as_f64()),
        }
    }

    /// Whether a sum of parts exceeds its whole. Counts add exactly; a sum of
    /// seconds is rounded once per addition (0.2 + 0.1 is 0.30000000000000004),
    /// so it may pass its whole by a few units in the last place, never more.
    fn exceeds(self, whole: Number) -> bool {
        match (self, whole) {
            (Number::Count(a), Number::Count(b)) => a > b,
            (a, b) => {
                let (sum, whole) = (a.as_f64(), b.as_f64());
                sum > whole + whole.abs() * ROUNDING_ALLOWANCE
            }
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Count(count) => count as f64,
            Number::Seconds(seconds) => seconds,
        }
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Count(count) => write!(f, "{count}"),
            Number::Seconds(seconds) => write!(f, "{seconds:?}"),
        }
    }
}

/// A group of parts that exceeds its whole: each part's field position and
/// value, and the whole's.
#[derive(Debug, Clone, PartialEq)]
pub struct PartsError {
    /// The parts given, by field position in [`REQUEST_FIELDS`].
    pub parts: SmallVec<[(usize, Number); 4]>,
    /// The whole.
    pub whole: (usize, Number),
}

impl PartsError {
    /// `a + b must not exceed w, got 1 + 2 > 2`, each field named by `name`.
    pub fn message(&self, name: impl Fn(&'static str) -> String) -> String {
        let names: Vec<String> = self
            .parts
            .iter()
            .map(|(at, _)| name(REQUEST_FIELDS[*at].name))
            .collect();
        let values: Vec<String> = self.parts.iter().map(|(_, v)| v.to_string()).collect();
        format!(
            "{} must not exceed {}, got {} > {}",
            names.join(" + "),
            name(REQUEST_FIELDS[self.whole.0].name),
            values.join(" + "),
            self.whole.1
        )
    }
}

impl RequestValues {
    /// The value of the numeric field at `position` in [`REQUEST_FIELDS`], as
    /// the parts check adds it up (None for other fields and absent durations).
    fn numeric(&self, position: usize) -> Option<Number> {
        match REQUEST_FIELDS[position].feeds {
            Feeds::Latency => Some(Number::Seconds(self.latency_s)),
            Feeds::Seconds(field) => self.seconds[field].map(Number::Seconds),
            Feeds::Tokens(token_type) => Some(Number::Count(self.tokens[token_type])),
            Feeds::Label(_)
            | Feeds::ToolCalls
            | Feeds::ExtraLabels
            | Feeds::Exemplar
            | Feeds::ErrorType => None,
        }
    }

    /// Checks that every group of parts fits its whole (cache reads and writes
    /// in the input tokens, the time to first token in the latency, ...), in
    /// the order of [`PART_GROUPS`].
    pub fn check_parts(&self) -> Result<(), Box<PartsError>> {
        if !self.has_more() {
            return Ok(());
        }
        for group in &PART_GROUPS {
            let Some(whole) = self.numeric(group.whole) else {
                continue;
            };
            let parts = &group.parts[..group.count];
            let sum = parts
                .iter()
                .filter_map(|at| self.numeric(*at))
                .fold(Number::zero_like(whole), Number::plus);
            if sum.exceeds(whole) {
                return Err(Box::new(PartsError {
                    parts: parts
                        .iter()
                        .filter_map(|at| self.numeric(*at).map(|value| (*at, value)))
                        .collect(),
                    whole: (group.whole, whole),
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::request::{QUEUE, TIME_TO_FIRST_TOKEN, UPSTREAM_LATENCY};

    #[test]
    fn parts_must_fit_their_whole_by_group() {
        let mut values = RequestValues::new(1.0, 10, 5);
        values.tokens[2] = 6;
        values.tokens[3] = 4;
        assert_eq!(values.check_parts(), Ok(()));
        values.tokens[3] = 5;
        let error = values.check_parts().unwrap_err();
        assert_eq!(
            error.message(str::to_owned),
            "cache_read_tokens + cache_write_tokens must not exceed input_tokens, got 6 + 5 > 10"
        );
        let mut values = RequestValues::new(0.25, 0, 0);
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(0.5);
        assert_eq!(
            values
                .check_parts()
                .unwrap_err()
                .message(|n| format!("{n}[3]")),
            "time_to_first_token_s[3] must not exceed latency_s[3], got 0.5 > 0.25"
        );
    }

    /// Parts of seconds that add up to their whole in decimal fit, though
    /// their float sum passes it by rounding (0.2 + 0.1 > 0.3), for every
    /// millisecond triple; a part one millisecond too long does not.
    #[test]
    fn seconds_that_add_up_fit_despite_rounding() {
        for whole_ms in 0..=300_u32 {
            for queue_ms in 0..=whole_ms {
                let upstream_ms = whole_ms - queue_ms;
                let mut values = RequestValues::new(f64::from(whole_ms) / 1000.0, 0, 0);
                values.seconds[QUEUE] = Some(f64::from(queue_ms) / 1000.0);
                values.seconds[UPSTREAM_LATENCY] = Some(f64::from(upstream_ms) / 1000.0);
                assert_eq!(
                    values.check_parts(),
                    Ok(()),
                    "{whole_ms} = {queue_ms} + {upstream_ms}"
                );
                values.seconds[UPSTREAM_LATENCY] = Some(f64::from(upstream_ms + 1) / 1000.0);
                assert!(
                    values.check_parts().is_err(),
                    "{whole_ms} < {queue_ms} + {upstream_ms} + 1"
                );
            }
        }
    }
}
