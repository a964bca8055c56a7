//! The collector's path: visited samples as `prometheus_client` `Sample`s.
//!
//! `Sample` is a named tuple, whose constructor is Python code; each sample
//! is made by `tuple.__new__` instead, C code that runs no bytecode. Besides
//! being faster, this keeps the path from dropping the GIL inside Rust
//! frames, which at interpreter exit would let CPython end the thread there
//! (see `exit_gate`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::schema::family::FamilyDesc;
use crate::schema::semconv::{Charset, Convention};
use crate::store::visit::SampleVisitor;

/// Turns visited samples into `prometheus_client` `Sample` tuples.
pub(super) struct SampleBuilder<'py> {
    py: Python<'py>,
    sample_type: Bound<'py, PyAny>,
    /// `tuple.__new__` and the defaults of the fields after `value`, when
    /// `sample_type` is a named tuple; otherwise it is called.
    tuple_new: Option<(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>)>,
    families: Bound<'py, PyList>,
    samples: Bound<'py, PyList>,
    /// Whose names, in which characters.
    convention: Convention,
    charset: Charset,
    /// The current family's name.
    name: String,
    /// Interned full sample names of the current family, by suffix.
    sample_names: Vec<(&'static str, Bound<'py, PyString>)>,
    label_names: Vec<Bound<'py, PyString>>,
    /// The label values of the series being visited, converted once for all its samples.
    last_labels: Option<(usize, Vec<Bound<'py, PyString>>)>,
    /// `prometheus_client.samples.Exemplar`, imported at the first exemplar.
    exemplar_type: Option<Bound<'py, PyAny>>,
    error: Option<PyErr>,
}

impl<'py> SampleBuilder<'py> {
    /// A builder of `sample_type` (`prometheus_client.samples.Sample`) tuples,
    /// naming families as `convention` does in `charset`.
    pub(super) fn new(
        sample_type: &Bound<'py, PyAny>,
        convention: Convention,
        charset: Charset,
    ) -> Self {
        let py = sample_type.py();
        SampleBuilder {
            py,
            sample_type: sample_type.clone(),
            tuple_new: named_tuple_defaults(sample_type).and_then(|defaults| {
                let tuple_new = py.get_type::<PyTuple>().getattr("__new__").ok()?;
                Some((tuple_new, defaults))
            }),
            families: PyList::empty(py),
            samples: PyList::empty(py),
            convention,
            charset,
            name: String::new(),
            sample_names: Vec::new(),
            label_names: Vec::new(),
            last_labels: None,
            exemplar_type: None,
            error: None,
        }
    }

    /// Every family visited, as `(name, help, type, samples)`, or the first error.
    pub(super) fn finish(self) -> PyResult<Bound<'py, PyList>> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.families),
        }
    }

    fn sample_name(&mut self, suffix: &'static str) -> Bound<'py, PyString> {
        if let Some((_, name)) = self.sample_names.iter().find(|(known, _)| *known == suffix) {
            return name.clone();
        }
        let name = PyString::new(self.py, &format!("{}{suffix}", self.name));
        self.sample_names.push((suffix, name.clone()));
        name
    }

    fn build(
        &mut self,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) -> PyResult<()> {
        let name = self.sample_name(suffix);
        let reuse = matches!(&self.last_labels, Some((known, _)) if *known == series);
        if !reuse {
            let values = labels.iter().map(|v| PyString::new(self.py, v)).collect();
            self.last_labels = Some((series, values));
        }
        let dict = PyDict::new(self.py);
        if let Some(le) = le {
            dict.set_item(intern!(self.py, "le"), le)?;
        }
        if let Some((_, values)) = &self.last_labels {
            for (key, value) in self.label_names.iter().zip(values) {
                dict.set_item(key, value)?;
            }
        }
        let sample = match &self.tuple_new {
            Some((tuple_new, defaults)) => {
                let mut fields: SmallVec<[Bound<'py, PyAny>; 6]> = SmallVec::new();
                fields.push(name.into_any());
                fields.push(dict.into_any());
                fields.push(PyFloat::new(self.py, value).into_any());
                fields.extend(defaults.iter().cloned());
                tuple_new.call1((&self.sample_type, PyTuple::new(self.py, fields)?))?
            }
            None => self.sample_type.call1((name, dict, value))?,
        };
        self.samples.append(sample)
    }

    /// Gives the sample built last (a bucket's) `exemplar`, as
    /// `prometheus_client` keeps one: its `exemplar` field.
    fn attach(&mut self, exemplar: &Exemplar) -> PyResult<()> {
        let py = self.py;
        let last = self.samples.len().checked_sub(1);
        let Some(last) = last.filter(|_| self.tuple_new.is_some()) else {
            return Ok(());
        };
        if self.exemplar_type.is_none() {
            let module = py.import(intern!(py, "prometheus_client.samples"))?;
            self.exemplar_type = Some(module.getattr(intern!(py, "Exemplar"))?);
        }
        let Some(exemplar_type) = &self.exemplar_type else {
            return Ok(());
        };
        let labels = PyDict::new(py);
        for (name, value) in &exemplar.labels {
            labels.set_item(name, value)?;
        }
        let made = exemplar_type.call1((labels, exemplar.value, exemplar.timestamp))?;
        let replaced = PyDict::new(py);
        replaced.set_item(intern!(py, "exemplar"), made)?;
        let sample = self.samples.get_item(last)?.call_method(
            intern!(py, "_replace"),
            (),
            Some(&replaced),
        )?;
        self.samples.set_item(last, sample)
    }
}

/// The defaults of the fields after `(name, labels, value)` of a named tuple
/// type, or None when `sample_type` is not one or lacks a default.
fn named_tuple_defaults<'py>(sample_type: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    let fields = sample_type.getattr("_fields").ok()?;
    let defaults = sample_type.getattr("_field_defaults").ok()?;
    let names: Vec<String> = fields.extract().ok()?;
    if names.get(..3)? != ["name", "labels", "value"] {
        return None;
    }
    names[3..]
        .iter()
        .map(|field| defaults.get_item(field).ok())
        .collect()
}

impl SampleVisitor for SampleBuilder<'_> {
    fn family(&mut self, desc: &FamilyDesc) {
        self.samples = PyList::empty(self.py);
        self.sample_names.clear();
        self.last_labels = None;
        let names = self.convention.prometheus(desc, self.charset);
        self.name = names.name;
        self.label_names = names
            .labels
            .iter()
            .map(|name| PyString::intern(self.py, name))
            .collect();
    }

    fn sample(
        &mut self,
        _desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if self.error.is_none() {
            if let Err(error) = self.build(suffix, le, series, labels, value) {
                self.error = Some(error);
            }
        }
    }

    fn exemplar(&mut self, _desc: &FamilyDesc, exemplar: &Exemplar) {
        if self.error.is_none() {
            if let Err(error) = self.attach(exemplar) {
                self.error = Some(error);
            }
        }
    }

    fn end_family(&mut self, desc: &FamilyDesc) {
        let family = (
            self.name.as_str(),
            desc.help,
            desc.kind.type_name(),
            self.samples.clone(),
        );
        if let Err(error) = self.families.append(family) {
            self.error.get_or_insert(error);
        }
    }
}
