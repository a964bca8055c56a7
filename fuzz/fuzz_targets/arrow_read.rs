//! Arrow arrays with any contents, as a producer might hand them over: a type
//! (numbers of each width, the three text layouts, a dictionary of text, a
//! table), any length, offset, null count and validity bits, text offsets in
//! any order, string views pointing anywhere, and dictionary keys of any value;
//! every buffer as long as the type's layout says (the interface's promise,
//! which nothing can check). Read as numbers, texts and label codes: each
//! is read or refused, never a panic or an out-of-bounds read (AddressSanitizer).
#![no_main]

use gateway_metrics::formats::arrow::array::ArrayView;
use gateway_metrics::formats::arrow::build::Built;
use gateway_metrics::formats::arrow::labels::LabelCodes;
use libfuzzer_sys::fuzz_target;

/// Bytes taken from the front of the input, zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.byte()).collect()
    }

    fn word(&mut self) -> i32 {
        i32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

const FORMATS: [&str; 13] = [
    "c", "C", "s", "S", "i", "I", "l", "L", "f", "g", "u", "U", "vu",
];

/// An array of a type the input picks, its buffers sized for its rows.
fn array(input: &mut Input<'_>, depth: u8) -> Built {
    let pick = input.byte();
    let length = usize::from(input.byte() % 48);
    let offset = usize::from(input.byte() % 16);
    let rows = length + offset;
    let validity = (!input.byte().is_multiple_of(3)).then(|| input.bytes(rows.div_ceil(8)));
    let null_count = match input.byte() % 3 {
        0 => -1,
        1 => 0,
        _ => i64::from(input.byte()),
    };
    let mut built = Built {
        length: length as i64,
        offset: offset as i64,
        null_count,
        buffers: vec![validity],
        ..Built::default()
    };
    match pick % 16 {
        format @ 0..=9 => {
            built.format = FORMATS[usize::from(format)].to_owned();
            let width = [1, 1, 2, 2, 4, 4, 8, 8, 4, 8][usize::from(format)];
            built.buffers.push(Some(input.bytes(rows * width)));
        }
        10 | 11 => {
            // Offsets anywhere within the data, in any order.
            let large = pick % 16 == 11;
            let size = usize::from(input.byte());
            let data = input.bytes(size);
            let offsets: Vec<i64> = (0..=rows)
                .map(|_| i64::from(input.word()).rem_euclid(data.len() as i64 + 1))
                .collect();
            let mut bytes = Vec::new();
            for offset in offsets {
                if large {
                    bytes.extend_from_slice(&offset.to_le_bytes());
                } else {
                    bytes.extend_from_slice(&(offset as i32).to_le_bytes());
                }
            }
            built.format = if large { "U" } else { "u" }.to_owned();
            built.buffers.push(Some(bytes));
            built.buffers.push(Some(data));
        }
        12 => {
            // Views of any length, buffer and offset; data buffers of declared sizes.
            built.format = "vu".to_owned();
            built.buffers.push(Some(input.bytes(rows * 16)));
            let data_buffers = usize::from(input.byte() % 3);
            let mut sizes = Vec::new();
            for _ in 0..data_buffers {
                let size = usize::from(input.byte());
                let data = input.bytes(size);
                sizes.extend_from_slice(&(data.len() as i64).to_le_bytes());
                built.buffers.push(Some(data));
            }
            built.buffers.push(Some(sizes));
        }
        13 if depth < 2 => {
            // Keys of any value into a dictionary of text.
            let width = [1, 4, 8][["c", "i", "L"]
                .iter()
                .position(|f| *f == built.format)
                .unwrap_or(0)];
            built.buffers.push(Some(input.bytes(rows * width)));
            let mut values = array(input, depth + 1);
            if !values.format.starts_with(['u', 'U', 'v']) {
                values = Built::strings(&[Some("a"), None, Some("b")], false);
            }
            built.dictionary = Some(Box::new(values));
        }
        14 if depth < 2 => {
            // A table of two columns at least as long as its rows.
            built.format = "+s".to_owned();
            built.children = (0..2).map(|_| array(input, depth + 1)).collect();
            for child in &mut built.children {
                if child.length < rows as i64 {
                    *child = Built::int64(&vec![Some(1); rows]);
                }
            }
        }
        _ => {
            built.format = "n".to_owned();
            built.buffers.clear();
        }
    }
    built
}

/// Everything a column is read as.
fn read(view: &ArrayView<'_>) {
    let _ = view.numbers(|_, _| {});
    let _ = view.texts(|_, _| {});
    let mut out = Vec::new();
    let _ = view.collect_numbers(Some, &mut out);
    let _ = (view.f64_values(), view.u64_bits(), view.type_name());
    let mut codes = LabelCodes::default();
    if codes.add(view, 0).is_ok() {
        for code in codes.codes {
            assert!(code == u32::MAX || (code as usize) < codes.distinct.len());
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input(bytes);
    let (schema, array) = array(&mut input, 0).export();
    let Ok(view) = ArrayView::new(&schema, &array) else {
        return;
    };
    read(&view);
    for index in 0..2 {
        if let Ok(child) = view.child(index) {
            read(&child);
        }
    }
});
