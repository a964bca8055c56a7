//! Exemplars: the labels of one observation (a trace id and span id, say),
//! its value and when it was made, kept per histogram bucket (the last one
//! that fell in each), so an operator can go from a slow bucket to the trace
//! of a request in it.
//!
//! A series keeps no exemplar storage until its first exemplar; then one slot
//! per bucket, each replaced whole under its own short lock.

use std::sync::{Arc, Mutex, OnceLock};

/// The most characters (Unicode code points) an exemplar's label names and
/// values may have together, as `OpenMetrics` requires.
pub const MAX_LABEL_CHARS: usize = 128;

/// One exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// The observed value.
    pub value: f64,
    /// Unix time in seconds.
    pub timestamp: f64,
}

impl Exemplar {
    /// Checks labels an exemplar may carry: valid label names, at most
    /// [`MAX_LABEL_CHARS`] characters in all, or why not.
    pub fn check_labels(labels: &[(String, String)]) -> Result<(), String> {
        let mut chars = 0;
        for (name, value) in labels {
            let mut name_chars = name.chars();
            let valid = name_chars
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && name_chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("{name:?} is not a label name"));
            }
            chars += name.chars().count() + value.chars().count();
        }
        if chars > MAX_LABEL_CHARS {
            return Err(format!(
                "its label names and values have {chars} characters, more than the \
                 {MAX_LABEL_CHARS} OpenMetrics allows"
            ));
        }
        Ok(())
    }
}

/// One bucket's exemplar, replaced whole.
type Slot = Mutex<Option<Arc<Exemplar>>>;

/// The last exemplar of each bucket of one histogram series.
#[derive(Debug, Default)]
pub struct ExemplarSlots {
    slots: OnceLock<Box<[Slot]>>,
}

impl ExemplarSlots {
    /// Keeps `exemplar` as the one of bucket `bucket` (of `buckets` buckets).
    pub fn record(&self, bucket: usize, buckets: usize, exemplar: Exemplar) {
        let slots = self
            .slots
            .get_or_init(|| (0..buckets).map(|_| Mutex::new(None)).collect());
        if let Some(slot) = slots.get(bucket) {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(exemplar));
        }
    }

    /// Each bucket's exemplar; empty when the series has none.
    pub fn read(&self) -> Vec<Option<Arc<Exemplar>>> {
        self.slots.get().map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .map(|slot| {
                    slot.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                })
                .collect()
        })
    }

    /// Each bucket's exemplar, leaving none (a snapshot that resets).
    pub fn take(&self) -> Vec<Option<Arc<Exemplar>>> {
        self.slots.get().map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .map(|slot| {
                    slot.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn labels_are_limited_to_128_characters_and_valid_names() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(Exemplar::check_labels(&labels(&[("trace_id", trace)])).is_ok());
        let long = "x".repeat(121);
        let error = Exemplar::check_labels(&labels(&[("trace_id", &long)])).unwrap_err();
        assert!(error.contains("129 characters"), "{error}");
        assert!(Exemplar::check_labels(&labels(&[("0trace", "a")])).is_err());
        // Characters, not bytes: 60 two-byte characters are 60.
        let accented = "é".repeat(60);
        assert!(Exemplar::check_labels(&labels(&[("span", &accented)])).is_ok());
    }

    #[test]
    fn each_bucket_keeps_its_last_exemplar() {
        let slots = ExemplarSlots::default();
        assert!(slots.read().is_empty());
        let make = |value| Exemplar {
            labels: labels(&[("trace_id", "a")]),
            value,
            timestamp: 1.0,
        };
        slots.record(2, 4, make(0.3));
        slots.record(2, 4, make(0.4));
        slots.record(3, 4, make(9.0));
        let read: Vec<Option<f64>> = slots
            .read()
            .iter()
            .map(|e| e.as_ref().map(|e| e.value))
            .collect();
        assert_eq!(read, [None, None, Some(0.4), Some(9.0)]);
        assert_eq!(slots.take().iter().flatten().count(), 2);
        assert_eq!(slots.read().iter().flatten().count(), 0);
    }
}
