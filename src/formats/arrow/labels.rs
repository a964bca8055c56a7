//! A label column's rows as codes of its distinct values: each distinct text
//! is kept once (with the first row it appears in), and a dictionary-encoded
//! column's values are looked up once per dictionary entry, not once per row.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::array::{ArrayView, ArrowError};
use crate::formats::columns::Number;

/// The code of a null row.
pub const NULL_CODE: u32 = u32::MAX;

/// Up to this many distinct values, a row's value is found by comparing it
/// with each; past it, by hashing.
const SCANNED: usize = 8;

/// The rows of one label column (over all its chunks), as codes of distinct values.
#[derive(Debug, Default)]
pub struct LabelCodes<'a> {
    /// Each row's code: an index into `distinct`, or [`NULL_CODE`].
    pub codes: Vec<u32>,
    /// The distinct values, in order of first appearance, and the row each first appears in.
    pub distinct: Vec<(&'a [u8], usize)>,
    known: HashMap<&'a [u8], u32, RandomState>,
}

impl<'a> LabelCodes<'a> {
    /// The code of `text`, first seen at row `row` if new.
    #[inline]
    fn code(&mut self, text: &'a [u8], row: usize) -> Result<u32, ArrowError> {
        if self.distinct.len() <= SCANNED {
            if let Some(code) = self.distinct.iter().position(|(known, _)| *known == text) {
                return Ok(code as u32);
            }
        } else if let Some(code) = self.known.get(text) {
            return Ok(*code);
        }
        let code = u32::try_from(self.distinct.len())
            .ok()
            .filter(|code| *code != NULL_CODE)
            .ok_or_else(|| ArrowError::Broken("too many distinct label values".to_owned()))?;
        self.distinct.push((text, row));
        if self.distinct.len() == SCANNED + 1 {
            self.known = self
                .distinct
                .iter()
                .enumerate()
                .map(|(code, (text, _))| (*text, code as u32))
                .collect();
        } else if self.distinct.len() > SCANNED + 1 {
            self.known.insert(text, code);
        }
        Ok(code)
    }

    /// Appends the rows of `column` (a text column or a dictionary of text),
    /// the first of which is row `first_row` of the whole column.
    pub fn add(&mut self, column: &ArrayView<'a>, first_row: usize) -> Result<(), ArrowError> {
        self.codes.reserve(column.len());
        let mut failed = None;
        if let Some(values) = column.dictionary() {
            // Each dictionary entry's code, found once; row numbers are the
            // first row that uses it, which is only known below.
            let mut entries: Vec<Option<&'a [u8]>> = Vec::with_capacity(values.len());
            values.texts(|_, text| entries.push(text))?;
            let mut entry_codes = vec![None; entries.len()];
            let entry_count = entries.len() as u64;
            column.numbers(|row, key| {
                if failed.is_some() {
                    return;
                }
                let key = match key {
                    None => {
                        self.codes.push(NULL_CODE);
                        return;
                    }
                    Some(Number::Signed(key)) => u64::try_from(key).unwrap_or(u64::MAX),
                    Some(Number::Unsigned(key)) => key,
                    Some(Number::Float(_)) => u64::MAX,
                };
                if key >= entry_count {
                    failed = Some(ArrowError::Broken(format!(
                        "row {}'s dictionary key {key} is past the dictionary's {entry_count} values",
                        first_row + row
                    )));
                    return;
                }
                let entry = key as usize;
                let code = if let Some(code) = entry_codes[entry] {
                    code
                } else {
                    let code = match entries[entry] {
                        Some(text) => match self.code(text, first_row + row) {
                            Ok(code) => code,
                            Err(problem) => {
                                failed = Some(problem);
                                return;
                            }
                        },
                        None => NULL_CODE,
                    };
                    entry_codes[entry] = Some(code);
                    code
                };
                self.codes.push(code);
            })?;
        } else {
            let mut last: Option<(&'a [u8], u32)> = None;
            column.texts(|row, text| {
                if failed.is_some() {
                    return;
                }
                let Some(text) = text else {
                    self.codes.push(NULL_CODE);
                    return;
                };
                // Runs of one value (a sorted or single-model batch) skip the search.
                let code = match last {
                    Some((previous, code)) if previous == text => code,
                    _ => match self.code(text, first_row + row) {
                        Ok(code) => code,
                        Err(problem) => {
                            failed = Some(problem);
                            return;
                        }
                    },
                };
                last = Some((text, code));
                self.codes.push(code);
            })?;
        }
        failed.map_or(Ok(()), Err)
    }
}
