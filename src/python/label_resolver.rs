//! A call's label objects to the series they name: a request's labels to its
//! requests entry, a tool name and a cache type to their counters. Each is
//! looked up by the identity of the call's `str` objects first (see
//! [`IdentityCache`]), and only on a miss by their validated text in the store,
//! after which the objects key the cache.
//!
//! The caches hold references into the store they were filled from: the
//! `MetricsStore` that owns a resolver never frees a store while the resolver
//! lives (a store replaced after a fork is leaked), and clears the resolver
//! when it replaces the store.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use smallvec::SmallVec;

use super::arguments::{extra_label_values, label, ColumnArgument, ToolName};
use super::identity_cache::IdentityCache;
use crate::store::series::CounterSeries;
use crate::store::{CacheOutcome, RequestEntry, RequestLabels, Store};

/// Objects in the key of a call with a `labels` mapping: the four request
/// labels and up to four extra ones.
const LABELLED_KEY: usize = 8;

/// Request labels resolved by identity, or validated label objects (provider,
/// model, operation, status) still to be looked up.
pub(super) enum Resolved<'s, 'py> {
    Cached(&'s RequestEntry),
    Labels {
        texts: [Bound<'py, PyString>; 4],
        /// The extra labels' values, in the schema's order; empty without a `labels` mapping.
        extra: SmallVec<[Bound<'py, PyString>; 4]>,
        /// Whether the call's objects may key the identity cache: `str`s themselves.
        cacheable: bool,
    },
}

/// The identity caches of one `MetricsStore`, and what resolving needs.
pub(super) struct LabelResolver {
    /// Request label objects (provider, model, operation, status) to their entry.
    request_entries: IdentityCache<RequestEntry, 4>,
    /// The same with the values of a `labels` mapping, in the order of the
    /// extra labels (the empty string standing for a missing one).
    labelled_entries: IdentityCache<RequestEntry, LABELLED_KEY>,
    /// Cache types to their hit and miss counters.
    cache_hits: IdentityCache<CounterSeries, 1>,
    cache_misses: IdentityCache<CounterSeries, 1>,
    /// Tool names to their counters.
    tool_calls: IdentityCache<CounterSeries, 1>,
    /// The extra label names, in the schema's order.
    extra_labels: Vec<String>,
    /// The same, interned, for looking them up in `labels` mappings.
    extra_names: Vec<Py<PyString>>,
    /// The interned empty string: a missing extra label's value.
    empty: Py<PyString>,
}

impl LabelResolver {
    /// Empty caches for a store whose requests carry `extra_names` besides the four.
    pub(super) fn new(py: Python<'_>, extra_names: &[String]) -> Self {
        LabelResolver {
            request_entries: IdentityCache::new(),
            labelled_entries: IdentityCache::new(),
            cache_hits: IdentityCache::new(),
            cache_misses: IdentityCache::new(),
            tool_calls: IdentityCache::new(),
            extra_labels: extra_names.to_vec(),
            extra_names: extra_names
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect(),
            empty: PyString::intern(py, "").unbind(),
        }
    }

    /// Forgets every cached series: the store they were in is being replaced.
    pub(super) fn clear(&self, py: Python<'_>) {
        self.request_entries.clear(py);
        self.labelled_entries.clear(py);
        self.cache_hits.clear(py);
        self.cache_misses.clear(py);
        self.tool_calls.clear(py);
    }

    /// The tool names' cache, which validating a call's tool calls reads.
    pub(super) fn tool_calls(&self) -> &IdentityCache<CounterSeries, 1> {
        &self.tool_calls
    }

    /// The cached entry of these label objects, or their validated text (to look
    /// up once the whole call is known to be valid). `row` names a batch row in errors.
    ///
    /// `extra` is the call's `labels` mapping of extra label values, if any.
    pub(super) fn resolve<'s, 'py>(
        &'s self,
        py: Python<'py>,
        objects: [&Bound<'py, PyAny>; 4],
        extra: Option<&Bound<'py, PyAny>>,
        row: Option<usize>,
    ) -> PyResult<Resolved<'s, 'py>> {
        let extra = extra.filter(|mapping| !mapping.is_none());
        let cached = match extra {
            None => self.request_entries.get(py, objects),
            Some(mapping) => self.labelled_values(py, mapping).and_then(|values| {
                let key: [&Bound<'py, PyAny>; LABELLED_KEY] = std::array::from_fn(|index| {
                    objects
                        .get(index)
                        .copied()
                        .unwrap_or_else(|| &values[index - 4])
                });
                self.labelled_entries.get(py, key)
            }),
        };
        if let Some(entry) = cached {
            return Ok(Resolved::Cached(entry));
        }
        let [provider, model, operation, status] = objects;
        let argument = |name| ColumnArgument { name, row };
        let texts = [
            label(provider, argument("provider"))?,
            label(model, argument("model"))?,
            label(operation, argument("operation"))?,
            label(status, argument("status"))?,
        ];
        let mut cacheable = objects
            .iter()
            .all(|object| object.is_exact_instance_of::<PyString>());
        let extra = match extra {
            None => SmallVec::new(),
            Some(mapping) => {
                let names = &self.extra_labels;
                let values = extra_label_values(mapping, names, self.empty.bind(py), row)?;
                // A value `str()` made of a subclass is a new object every call.
                cacheable &= names.len() <= LABELLED_KEY - 4
                    && mapping.cast::<PyDict>().is_ok_and(|dict| {
                        dict.values().iter().all(|value| {
                            value.is_none() || value.is_exact_instance_of::<PyString>()
                        })
                    });
                values
            }
        };
        Ok(Resolved::Labels {
            texts,
            extra,
            cacheable,
        })
    }

    /// The extra half of the identity-cache key of a call with a `labels`
    /// mapping: each extra label's value object (the interned empty string for
    /// a missing one); None when the mapping names anything else, or the extra
    /// labels are too many for the key.
    fn labelled_values<'py>(
        &self,
        py: Python<'py>,
        mapping: &Bound<'py, PyAny>,
    ) -> Option<[Bound<'py, PyAny>; LABELLED_KEY - 4]> {
        let dict = mapping.cast_exact::<PyDict>().ok()?;
        if self.extra_names.len() > LABELLED_KEY - 4 {
            return None;
        }
        let empty = self.empty.bind(py).as_any();
        let mut values: [Bound<'py, PyAny>; LABELLED_KEY - 4] =
            std::array::from_fn(|_| empty.clone());
        let mut present = 0;
        for (target, name) in values.iter_mut().zip(&self.extra_names) {
            if let Ok(Some(value)) = dict.get_item(name.bind(py)) {
                present += 1;
                if !value.is_none() {
                    *target = value;
                }
            }
        }
        (present == dict.len()).then_some(values)
    }

    /// The entry of resolved labels in `store`, created on first use, and
    /// cached when the call's label objects are `str`s themselves.
    pub(super) fn entry<'s>(
        &'s self,
        store: &'s Store,
        py: Python<'_>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
    ) -> PyResult<&'s RequestEntry> {
        let ([provider, model, operation, status], extra, cacheable) = match resolved {
            Resolved::Cached(entry) => return Ok(entry),
            Resolved::Labels {
                texts,
                extra,
                cacheable,
            } => (texts, extra, cacheable),
        };
        let extra_texts = extra
            .iter()
            .map(|text| text.to_str())
            .collect::<PyResult<SmallVec<[&str; 4]>>>()?;
        let labels = RequestLabels {
            provider: provider.to_str()?,
            model: model.to_str()?,
            operation: operation.to_str()?,
            status: status.to_str()?,
            extra: &extra_texts,
        };
        let (entry, folded) = store.request_entry_capped(&labels);
        if folded {
            // The overflow entry must not stand for these labels in the caches.
        } else if cacheable && !labelled {
            // SAFETY: entries live as long as the store, which outlives the
            // cache's use of them (see the module's documentation).
            unsafe {
                self.request_entries
                    .insert(py, [&provider, &model, &operation, &status], entry);
            };
        } else if cacheable {
            let empty = self.empty.bind(py);
            let key: [&Bound<'_, PyString>; LABELLED_KEY] = std::array::from_fn(|index| {
                [&provider, &model, &operation, &status]
                    .get(index)
                    .copied()
                    .or_else(|| extra.get(index - 4))
                    .unwrap_or(empty)
            });
            // SAFETY: as above.
            unsafe { self.labelled_entries.insert(py, key, entry) };
        }
        Ok(entry)
    }

    /// The counter of a validated tool name in `store` (`"unknown"` for
    /// [`ToolName::Unknown`] and [`ToolName::Unreadable`]), cached by the
    /// name's object when it is the call's own `str`.
    pub(super) fn tool_call_series<'s>(
        &'s self,
        store: &'s Store,
        py: Python<'_>,
        name: &ToolName<'_, 's>,
    ) -> PyResult<&'s CounterSeries> {
        Ok(match name {
            ToolName::Unknown | ToolName::Unreadable(_) => store.tool_call_series("unknown"),
            ToolName::Cached(series) => series,
            ToolName::New { text, cacheable } => {
                let (series, folded) = store.tool_call_series_capped(text.to_str()?);
                if *cacheable && !folded {
                    // SAFETY: series live as long as the store, which outlives
                    // the cache's use of them (see the module's documentation).
                    unsafe { self.tool_calls.insert(py, [text], series) };
                }
                series
            }
        })
    }

    /// The hit or miss counter of `cache_type` in `store`, validated on a miss
    /// of the cache.
    pub(super) fn cache_series<'s>(
        &'s self,
        store: &'s Store,
        outcome: CacheOutcome,
        cache_type: &Bound<'_, PyAny>,
    ) -> PyResult<&'s CounterSeries> {
        let py = cache_type.py();
        let cache = match outcome {
            CacheOutcome::Hit => &self.cache_hits,
            CacheOutcome::Miss => &self.cache_misses,
        };
        if let Some(series) = cache.get(py, [cache_type]) {
            return Ok(series);
        }
        let text = label(cache_type, "cache_type")?;
        let (series, folded) = store.cache_series_capped(outcome, text.to_str()?);
        if cache_type.is_exact_instance_of::<PyString>() && !folded {
            // SAFETY: as above.
            unsafe { cache.insert(py, [&text], series) };
        }
        Ok(series)
    }
}
