//! The recording methods of `MetricsStore` once their arguments are parsed:
//! each validates every argument before it records anything, then records
//! into the store through the label resolver's cached series.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use smallvec::SmallVec;

use super::arguments::{
    checked_parts, error_type, exemplar_labels, extra_label_values, label, latency_seconds,
    token_count, tool_call_names, ToolName, ToolNames,
};
use super::label_resolver::Resolved;
use super::metrics_store::{keeps_semconv_histograms, PyMetricsStore};
use super::request_arguments::RequestArguments;
use crate::schema::request::{
    RequestValues, ERROR_TYPE_FIELD, INPUT, OUTPUT, REFERENCE_TOKEN_TYPES, REQUEST_FIELDS,
    SECONDS_FIELDS, SECONDS_POSITIONS, TOKEN_FIELDS, TOKEN_TYPE_COUNT,
};
use crate::store::series::unix_now;
use crate::store::{CacheOutcome, RequestEntry, RequestLabels};

impl PyMetricsStore {
    /// Adds one to the series of each (validated) tool call.
    pub(super) fn record_tool_calls(
        &self,
        py: Python<'_>,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<()> {
        let store = self.store();
        for name in tool_names {
            if let ToolName::Unreadable(item) = name {
                self.report_unreadable_tool_call(py, item);
            }
            store.count(self.labels.tool_call_series(store, py, name)?);
        }
        Ok(())
    }

    /// Adds one cache hit or miss of `cache_type` (`"exact"` or `"semantic"`).
    pub(super) fn record_cache(
        &self,
        outcome: CacheOutcome,
        cache_type: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = cache_type.py();
        self.follow_fork(py)?;
        let store = self.store();
        store.count(self.labels.cache_series(store, outcome, cache_type)?);
        self.report_overflows_of(py, store);
        Ok(())
    }

    /// Adds one cache hit of `cache_type` and what it saved (`saving`: the
    /// provider, model, input and output tokens, absent when None): the
    /// tokens and their cost a call of that model would have spent. Every
    /// argument is validated before anything is recorded.
    pub(super) fn record_cache_hit_saving(
        &self,
        cache_type: &Bound<'_, PyAny>,
        saving: [Option<Bound<'_, PyAny>>; 4],
    ) -> PyResult<()> {
        let py = cache_type.py();
        let [provider, model, input_tokens, output_tokens] = saving;
        let input_tokens = token_count(input_tokens.as_ref(), "input_tokens")?;
        let output_tokens = token_count(output_tokens.as_ref(), "output_tokens")?;
        let labels = match (provider, model) {
            (Some(provider), Some(model)) => {
                Some((label(&provider, "provider")?, label(&model, "model")?))
            }
            (None, None) => None,
            (provider, _) => {
                let missing = if provider.is_some() {
                    "model"
                } else {
                    "provider"
                };
                return Err(PyTypeError::new_err(format!(
                    "record_cache_hit() needs provider and model together: {missing} is \
                     missing (the saving is counted and priced by model)"
                )));
            }
        };
        if labels.is_none() && input_tokens | output_tokens != 0 {
            return Err(PyValueError::new_err(
                "record_cache_hit(): input_tokens and output_tokens need provider and model \
                 (the saving is counted and priced by model)",
            ));
        }
        self.follow_fork(py)?;
        let store = self.store();
        let hits = self
            .labels
            .cache_series(store, CacheOutcome::Hit, cache_type)?;
        store.count(hits);
        if let Some((provider, model)) = labels {
            store.record_cache_savings(
                provider.to_str()?,
                model.to_str()?,
                input_tokens,
                output_tokens,
            );
        }
        self.report_overflows_of(py, store);
        Ok(())
    }

    /// Whether every request's token counts are observed, as its store's
    /// schema says (read here, beside the other fields a call reads).
    #[inline]
    pub(super) fn keeps_semconv_histograms(&self) -> bool {
        keeps_semconv_histograms(self.convention)
    }

    /// Validates a call's labels, then adds `delta` to its requests in flight.
    pub(super) fn add_in_flight(
        &self,
        objects: [&Bound<'_, PyAny>; 3],
        extra: Option<&Bound<'_, PyAny>>,
        delta: i64,
    ) -> PyResult<()> {
        let py = objects[0].py();
        self.follow_fork(py)?;
        let [provider, model, operation] = [
            label(objects[0], "provider")?,
            label(objects[1], "model")?,
            label(objects[2], "operation")?,
        ];
        let store = self.store();
        let empty = PyString::new(py, "");
        let extra = match extra.filter(|mapping| !mapping.is_none()) {
            Some(mapping) => {
                extra_label_values(mapping, store.schema().extra_labels(), &empty, None)?
            }
            None => SmallVec::new(),
        };
        let extra_text: SmallVec<[&str; 4]> = extra
            .iter()
            .map(|value| value.to_str())
            .collect::<PyResult<_>>()?;
        let labels = RequestLabels {
            provider: provider.to_str()?,
            model: model.to_str()?,
            operation: operation.to_str()?,
            status: "",
            extra: &extra_text,
        };
        store.add_in_flight(&labels, delta);
        self.report_overflows_of(py, store);
        Ok(())
    }

    /// Validates every argument of `record_request`, then records it.
    pub(super) fn record_request(&self, arguments: &RequestArguments<'_, '_>) -> PyResult<()> {
        let label_objects = arguments.labels;
        let py = label_objects[0].py();
        self.follow_fork(py)?;
        let resolved = self
            .labels
            .resolve(py, label_objects, arguments.extra_labels(), None)?;
        let latency_s = latency_seconds(arguments.latency_s, "latency_s")?;
        let count = |token_type: usize| {
            let name = REQUEST_FIELDS[TOKEN_FIELDS[token_type]].name;
            token_count(arguments.tokens(token_type), name)
        };
        let mut values = RequestValues::new(latency_s, count(INPUT)?, count(OUTPUT)?);
        // The reference's arguments alone need none of the rest.
        if arguments.more {
            for token_type in REFERENCE_TOKEN_TYPES..TOKEN_TYPE_COUNT {
                values.tokens[token_type] = count(token_type)?;
            }
            for field in 0..SECONDS_FIELDS {
                if let Some(value) = arguments.seconds(field).filter(|value| !value.is_none()) {
                    let name = REQUEST_FIELDS[SECONDS_POSITIONS[field]].name;
                    values.seconds[field] = Some(latency_seconds(value, name)?);
                }
            }
            checked_parts(&values, None)?;
            if let Some(value) = arguments.error_type() {
                let name = REQUEST_FIELDS[ERROR_TYPE_FIELD].name;
                values.error = error_type(value, label_objects[3], name)?;
            }
        }
        let tool_names = tool_call_names(arguments.tool_calls(), None, self.labels.tool_calls())?;
        let labelled = arguments
            .extra_labels()
            .is_some_and(|mapping| !mapping.is_none());
        if let Some(exemplar) = arguments.exemplar().filter(|value| !value.is_none()) {
            return self.record_with_exemplar(
                py,
                exemplar,
                resolved,
                labelled,
                &values,
                &tool_names,
            );
        }
        // Everything is valid: from here on the call records.
        // Both are plain reads: `|` rather than `||` spares the hot path a branch.
        let more = arguments.more | self.keeps_semconv_histograms();
        self.record_valid(py, resolved, labelled, &values, more, &tool_names)
            .map(|_| ())
    }

    /// Records a call whose every argument is valid (`more`: whether any
    /// beyond the reference's was passed); returns its entry.
    #[inline]
    pub(super) fn record_valid<'s>(
        &'s self,
        py: Python<'_>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
        values: &RequestValues,
        more: bool,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<&'s RequestEntry> {
        let store = self.store();
        let entry = self.labels.entry(store, py, resolved, labelled)?;
        store.record_known_request_on(entry, values, more);
        self.record_tool_calls(py, tool_names)?;
        self.report_overflows_of(py, store);
        Ok(entry)
    }

    /// Validates a call's exemplar, records the call, and keeps the exemplar
    /// on the buckets it observed (out of line: most calls have none).
    #[cold]
    #[inline(never)]
    fn record_with_exemplar<'s>(
        &'s self,
        py: Python<'_>,
        exemplar: &Bound<'_, PyAny>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
        values: &RequestValues,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<()> {
        let labels = exemplar_labels(exemplar, "exemplar")?;
        let more = self.store().runs_more_rules(values);
        let entry = self.record_valid(py, resolved, labelled, values, more, tool_names)?;
        self.store()
            .attach_exemplar(entry, values, &labels, unix_now());
        Ok(())
    }
}
