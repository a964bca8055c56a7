//! What the binding tells through Python's `logging` (the `gateway_metrics`
//! logger): families that reached `max_series`, models without a price, and a
//! tool call without a name, each once.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;

use super::metrics_store::PyMetricsStore;
use crate::store::{Store, NAMED_UNPRICED_MODELS};

impl PyMetricsStore {
    /// Logs, the first time only, a tool call whose name cannot be read.
    #[cold]
    #[inline(never)]
    pub(super) fn report_unreadable_tool_call(&self, py: Python<'_>, item: &Bound<'_, PyAny>) {
        if self
            .unreadable_tool_call_reported
            .swap(true, Ordering::Relaxed)
        {
            return;
        }
        let kind = item
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |name| name.to_string());
        log_warnings(
            py,
            [format!(
                "a tool call of type {kind} has no name (no .name, .function.name, \
                 .custom.name or such keys, and is not a str): recorded as \
                 tool_name=\"unknown\" (reported once)"
            )],
        );
    }

    /// Logs, once per family, that a family reached `max_series` label sets,
    /// and once per label set, a model without a price. One relaxed load when
    /// there is nothing to report.
    #[inline]
    pub(super) fn report_overflows(&self, py: Python<'_>) {
        self.report_overflows_of(py, self.store());
    }

    /// [`Self::report_overflows`] with the store already at hand (a call
    /// that has recorded into it need not load the pointer again).
    #[inline]
    pub(super) fn report_overflows_of(&self, py: Python<'_>, store: &Store) {
        if store.has_notices() {
            self.log_overflows(py);
        }
    }

    #[cold]
    fn log_overflows(&self, py: Python<'_>) {
        let families = self.store().take_overflowed_families();
        let (unpriced, past_named) = self.store().take_unpriced_models();
        let unpriced = unpriced.into_iter().map(|(provider, model)| {
            format!(
                "no price for model {model:?} of provider {provider:?}: its cost is not \
                 counted; give it a price with price_table= or prices=\"genai-prices\""
            )
        });
        let past_named = past_named.then(|| {
            format!(
                "more than {NAMED_UNPRICED_MODELS} models have no price: further ones are \
                 not named (with prices=\"genai-prices\", \
                 ractogateway_unpriced_requests_total counts their requests)"
            )
        });
        let overflowed = families.into_iter().map(|family| {
            format!(
                "{family} reached max_series label sets: new ones are recorded into its \
                 __overflow__ series (see ractogateway_overflow_requests_total)"
            )
        });
        log_warnings(py, unpriced.chain(past_named).chain(overflowed));
    }
}

/// Logs each of `messages` as a warning on the `gateway_metrics` logger. A
/// logging failure is reported as unraisable: it must not fail a call that
/// has recorded.
#[cold]
fn log_warnings(py: Python<'_>, messages: impl IntoIterator<Item = String>) {
    let logged = py.import("logging").and_then(|logging| {
        let logger = logging.call_method1("getLogger", ("gateway_metrics",))?;
        for message in messages {
            logger.call_method1("warning", (message,))?;
        }
        Ok(())
    });
    if let Err(error) = logged {
        error.write_unraisable(py, None);
    }
}
