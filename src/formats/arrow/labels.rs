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
    /// The distinct values, in order of first appearance (of a dictionary's
    /// entries: in the dictionary's order).
    pub distinct: Vec<&'a [u8]>,
    known: HashMap<&'a [u8], u32, RandomState>,
}

impl<'a> LabelCodes<'a> {
    /// The code of `text`.
    #[inline]
    fn code(&mut self, text: &'a [u8]) -> Result<u32, ArrowError> {
        if self.distinct.len() <= SCANNED {
            if let Some(code) = self.distinct.iter().position(|known| *known == text) {
                return Ok(code as u32);
            }
        } else if let Some(code) = self.known.get(text) {
            return Ok(*code);
        }
        let code = u32::try_from(self.distinct.len())
            .ok()
            .filter(|code| *code != NULL_CODE)
            .ok_or_else(|| ArrowError::Broken("too many distinct label values".to_owned()))?;
        self.distinct.push(text);
        if self.distinct.len() == SCANNED + 1 {
            self.known = self
                .distinct
                .iter()
                .enumerate()
                .map(|(code, text)| (*text, code as u32))
                .collect();
        } else if self.distinct.len() > SCANNED + 1 {
            self.known.insert(text, code);
        }
        Ok(code)
    }

    /// The first row with code `code`, if any.
    pub fn first_row(&self, code: u32) -> Option<usize> {
        self.codes.iter().position(|row_code| *row_code == code)
    }

    /// Appends the rows of `column` (a text column or a dictionary of text),
    /// the first of which is row `first_row` of the whole column.
    pub fn add(&mut self, column: &ArrayView<'a>, first_row: usize) -> Result<(), ArrowError> {
        self.codes.reserve(column.len());
        if let Some(values) = column.dictionary() {
            return self.add_keys(column, values, first_row);
        }
        let mut failed = None;
        let mut last: Option<(&'a [u8], u32)> = None;
        column.texts(|_, text| {
            let Some(text) = text else {
                self.codes.push(NULL_CODE);
                return;
            };
            // Runs of one value (a sorted or single-model batch) skip the search.
            let code = match last {
                Some((previous, code)) if previous == text => code,
                _ => match self.code(text) {
                    Ok(code) => code,
                    Err(problem) => {
                        failed.get_or_insert(problem);
                        NULL_CODE
                    }
                },
            };
            last = Some((text, code));
            self.codes.push(code);
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Appends the rows of a dictionary-encoded column: each key checked
    /// against the dictionary's length in one pass, then each entry coded once;
    /// when the entries are the codes already (a first chunk of distinct,
    /// non-null entries), the keys are.
    fn add_keys(
        &mut self,
        column: &ArrayView<'a>,
        values: &ArrayView<'a>,
        first_row: usize,
    ) -> Result<(), ArrowError> {
        let mut entries: Vec<Option<&'a [u8]>> = Vec::with_capacity(values.len());
        values.texts(|_, text| entries.push(text))?;
        let count = entries.len() as u64;
        if count >= u64::from(NULL_CODE) {
            return Err(ArrowError::Broken("too many dictionary values".to_owned()));
        }
        let start = self.codes.len();
        let mut past: Option<(usize, String)> = None;
        column.numbers(|row, key| {
            let code = match key {
                None => NULL_CODE,
                Some(Number::Unsigned(key)) if key < count => key as u32,
                Some(Number::Signed(key)) if key >= 0 && (key as u64) < count => key as u32,
                Some(key) => {
                    past.get_or_insert_with(|| {
                        let key = match key {
                            Number::Signed(key) => key.to_string(),
                            Number::Unsigned(key) => key.to_string(),
                            Number::Float(key) => key.to_string(),
                        };
                        (row, key)
                    });
                    NULL_CODE
                }
            };
            self.codes.push(code);
        })?;
        if let Some((row, key)) = past {
            return Err(ArrowError::Broken(format!(
                "row {}'s dictionary key {key} is not one of the dictionary's {count} values",
                first_row + row
            )));
        }
        let identity = self.distinct.is_empty();
        let table = entries
            .iter()
            .map(|entry| entry.map_or(Ok(NULL_CODE), |text| self.code(text)))
            .collect::<Result<Vec<u32>, _>>()?;
        let identity = identity
            && table
                .iter()
                .enumerate()
                .all(|(entry, code)| *code as usize == entry);
        if !identity {
            for code in &mut self.codes[start..] {
                if *code != NULL_CODE {
                    *code = table[*code as usize];
                }
            }
        }
        Ok(())
    }
}
