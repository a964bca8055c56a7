//! The collector's path: visited samples as `prometheus_client` `Sample`s.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::family::FamilyDesc;
use crate::visit::SampleVisitor;

/// Turns visited samples into `prometheus_client` `Sample` tuples.
pub(super) struct SampleBuilder<'py> {
    py: Python<'py>,
    sample_type: Bound<'py, PyAny>,
    families: Bound<'py, PyList>,
    samples: Bound<'py, PyList>,
    /// Interned full sample names of the current family, by suffix.
    sample_names: Vec<(&'static str, Bound<'py, PyString>)>,
    label_names: Vec<Bound<'py, PyString>>,
    /// The label values of the series being visited, converted once for all its samples.
    last_labels: Option<(usize, Vec<Bound<'py, PyString>>)>,
    error: Option<PyErr>,
}

impl<'py> SampleBuilder<'py> {
    /// A builder of `sample_type` (`prometheus_client.samples.Sample`) tuples.
    pub(super) fn new(sample_type: &Bound<'py, PyAny>) -> Self {
        let py = sample_type.py();
        SampleBuilder {
            py,
            sample_type: sample_type.clone(),
            families: PyList::empty(py),
            samples: PyList::empty(py),
            sample_names: Vec::new(),
            label_names: Vec::new(),
            last_labels: None,
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

    fn sample_name(&mut self, desc: &FamilyDesc, suffix: &'static str) -> Bound<'py, PyString> {
        if let Some((_, name)) = self.sample_names.iter().find(|(known, _)| *known == suffix) {
            return name.clone();
        }
        let name = PyString::new(self.py, &format!("{}{suffix}", desc.name));
        self.sample_names.push((suffix, name.clone()));
        name
    }

    fn build(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) -> PyResult<()> {
        let name = self.sample_name(desc, suffix);
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
        let sample = self.sample_type.call1((name, dict, value))?;
        self.samples.append(sample)
    }
}

impl SampleVisitor for SampleBuilder<'_> {
    fn family(&mut self, desc: &FamilyDesc) {
        self.samples = PyList::empty(self.py);
        self.sample_names.clear();
        self.last_labels = None;
        self.label_names = desc
            .label_names
            .iter()
            .map(|name| PyString::intern(self.py, name))
            .collect();
    }

    fn sample(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if self.error.is_none() {
            if let Err(error) = self.build(desc, suffix, le, series, labels, value) {
                self.error = Some(error);
            }
        }
    }

    fn end_family(&mut self, desc: &FamilyDesc) {
        let family = (
            desc.name,
            desc.help,
            desc.kind.type_name(),
            self.samples.clone(),
        );
        if let Err(error) = self.families.append(family) {
            self.error.get_or_insert(error);
        }
    }
}
