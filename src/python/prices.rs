//! Prices given by Python: the tuples a price resolver returns, the resolver
//! the core calls, and `request_cost` and `price_names` for `compute_cost`.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::schema::request::{TOKEN_TYPES, TOKEN_TYPE_COUNT};
use crate::store::pricing::{self, Price, PriceTier};
use crate::store::PriceResolver;

/// A price as Python gives it: `(input, output, cache read, cache write, tiers,
/// per request)` in USD per million tokens (the last in USD per request), where
/// `tiers` lists `(above input tokens, input, output, cache read, cache write)`.
pub(super) type PythonPrice = (f64, f64, f64, f64, Vec<(u64, f64, f64, f64, f64)>, f64);

/// The [`Price`] of a Python price tuple.
pub(super) fn price_of(price: PythonPrice) -> Price {
    let (input, output, read, write, tiers, per_request) = price;
    Price {
        input_per_million: input,
        output_per_million: output,
        cache_read_per_million: read,
        cache_write_per_million: write,
        tiers: tiers
            .into_iter()
            .map(|(above, input, output, read, write)| PriceTier {
                above_input_tokens: above,
                rates: [input, output, read, write],
            })
            .collect(),
        per_request,
    }
}

/// A price resolver that calls `resolver(provider, model)`, a Python callable
/// returning None or a [`PythonPrice`]. It runs when a label set is first
/// seen, with the GIL held by the recording call; an error counts the model as
/// unpriced and is reported as unraisable.
pub(super) fn python_price_resolver(resolver: Py<PyAny>) -> PriceResolver {
    Box::new(move |provider, model| {
        Python::attach(|py| {
            let resolved = resolver
                .call1(py, (provider, model))
                .and_then(|price| price.extract::<Option<PythonPrice>>(py));
            match resolved {
                Ok(price) => price.map(price_of),
                Err(error) => {
                    error.write_unraisable(py, None);
                    None
                }
            }
        })
    })
}

/// The USD cost of a request of `tokens` (token type name to count; absent
/// ones are 0) at `price`, computed as the middleware computes it.
#[pyfunction]
pub(super) fn request_cost(price: PythonPrice, tokens: HashMap<String, u64>) -> PyResult<f64> {
    let mut counts = [0; TOKEN_TYPE_COUNT];
    for (name, count) in tokens {
        let token_type = TOKEN_TYPES
            .iter()
            .position(|desc| desc.name == name)
            .ok_or_else(|| PyValueError::new_err(format!("{name:?} is not a token type")))?;
        counts[token_type] = count;
    }
    Ok(price_of(price).cost(&counts))
}

/// The names a model's price is looked up under, in order (the core's rule).
#[pyfunction]
pub(super) fn price_names(model: &str) -> Vec<String> {
    pricing::price_names(model).map(str::to_owned).collect()
}
