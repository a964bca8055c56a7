//! The readers against arrays made by [`super::build`]: values, nulls and
//! slices of each type, dictionaries, tables, and the damage they refuse.

use super::array::ArrayView;
use super::build::Built;
use super::labels::{LabelCodes, NULL_CODE};
use crate::formats::columns::Number;

fn numbers(built: Built) -> Result<Vec<Option<Number>>, String> {
    let (schema, array) = built.export();
    let view = ArrayView::new(&schema, &array).map_err(|e| e.message().to_owned())?;
    let mut values = Vec::new();
    view.numbers(|row, value| {
        assert_eq!(row, values.len());
        values.push(value);
    })
    .map_err(|e| e.message().to_owned())?;
    Ok(values)
}

fn texts(built: Built) -> Result<Vec<Option<String>>, String> {
    let (schema, array) = built.export();
    let view = ArrayView::new(&schema, &array).map_err(|e| e.message().to_owned())?;
    let mut values = Vec::new();
    view.texts(|_, text| values.push(text.map(|t| String::from_utf8(t.to_vec()).unwrap())))
        .map_err(|e| e.message().to_owned())?;
    Ok(values)
}

/// Codes of `built`, as the texts they stand for (None for null rows).
fn coded(built: Built) -> Result<Vec<Option<String>>, String> {
    let (schema, array) = built.export();
    let view = ArrayView::new(&schema, &array).map_err(|e| e.message().to_owned())?;
    let mut codes = LabelCodes::default();
    codes.add(&view, 0).map_err(|e| e.message().to_owned())?;
    Ok(codes
        .codes
        .iter()
        .map(|code| {
            (*code != NULL_CODE)
                .then(|| String::from_utf8(codes.distinct[*code as usize].to_vec()).unwrap())
        })
        .collect())
}

#[test]
fn numbers_of_each_width_with_nulls_and_offsets() {
    let values = [Some(3), None, Some(-7), Some(i64::MAX)];
    let read = numbers(Built::int64(&values)).unwrap();
    assert_eq!(
        read,
        vec![
            Some(Number::Signed(3)),
            None,
            Some(Number::Signed(-7)),
            Some(Number::Signed(i64::MAX))
        ]
    );
    let (schema, array) = Built::int64(&[Some(5), Some(-1), Some(2)])
        .sliced(1, 2)
        .export();
    let view = ArrayView::new(&schema, &array).unwrap();
    assert_eq!(
        view.u64_bits(),
        Some((&[u64::MAX, 2][..], true)),
        "in place"
    );
    assert_eq!(view.f64_values(), None);
    let (schema, array) = Built::int64(&values).export();
    assert_eq!(
        ArrayView::new(&schema, &array).unwrap().u64_bits(),
        None,
        "nulls"
    );
    let (schema, array) = Built::float64(&[Some(0.5), Some(2.0)]).export();
    assert_eq!(
        ArrayView::new(&schema, &array).unwrap().f64_values(),
        Some(&[0.5, 2.0][..])
    );
    let sliced = numbers(Built::int64(&values).sliced(1, 2)).unwrap();
    assert_eq!(sliced, vec![None, Some(Number::Signed(-7))]);
    let small = Built::primitive("C", &[Some(200_u8), Some(1)], |v| vec![v]);
    assert_eq!(
        numbers(small).unwrap(),
        vec![Some(Number::Unsigned(200)), Some(Number::Unsigned(1))]
    );
    let signed16 = Built::primitive("s", &[Some(-2_i16)], |v| v.to_le_bytes().to_vec());
    assert_eq!(numbers(signed16).unwrap(), vec![Some(Number::Signed(-2))]);
    let float32 = Built::primitive("f", &[Some(0.25_f32), None], |v| v.to_le_bytes().to_vec());
    assert_eq!(
        numbers(float32).unwrap(),
        vec![Some(Number::Float(0.25)), None]
    );
    let floats = numbers(Built::float64(&[Some(1.5), Some(f64::NAN)]).sliced(1, 1)).unwrap();
    assert!(matches!(floats[..], [Some(Number::Float(nan))] if nan.is_nan()));
    let nulls = Built {
        format: "n".to_owned(),
        length: 3,
        null_count: 3,
        ..Built::default()
    };
    assert_eq!(numbers(nulls).unwrap(), vec![None, None, None]);
}

#[test]
fn texts_of_each_layout_with_nulls_and_offsets() {
    let values = [
        Some("gpt-4o"),
        None,
        Some(""),
        Some("a model name past twelve bytes"),
    ];
    let expected: Vec<Option<String>> = values.iter().map(|v| v.map(str::to_owned)).collect();
    for built in [
        Built::strings(&values, false),
        Built::strings(&values, true),
        Built::string_views(&values),
    ] {
        assert_eq!(texts(built.clone()).unwrap(), expected, "{}", built.format);
        assert_eq!(texts(built.sliced(2, 2)).unwrap(), expected[2..], "sliced");
    }
    assert!(texts(Built::int64(&[Some(1)]))
        .unwrap_err()
        .contains("not a string type"));
    assert!(numbers(Built::strings(&values, false))
        .unwrap_err()
        .contains("not a number type"));
}

#[test]
fn labels_are_coded_once_per_distinct_value_and_dictionary_entry() {
    let models: Vec<String> = (0..20).map(|i| format!("model-{}", i % 11)).collect();
    let rows: Vec<Option<&str>> = models
        .iter()
        .map(|m| Some(m.as_str()))
        .chain([None])
        .collect();
    let expected: Vec<Option<String>> = rows.iter().map(|v| v.map(str::to_owned)).collect();
    assert_eq!(coded(Built::strings(&rows, false)).unwrap(), expected);
    assert_eq!(coded(Built::string_views(&rows)).unwrap(), expected);

    let (schema, array) = Built::strings(&rows, false).export();
    let view = ArrayView::new(&schema, &array).unwrap();
    let mut codes = LabelCodes::default();
    codes.add(&view, 0).unwrap();
    assert_eq!(codes.distinct.len(), 11);
    assert_eq!(codes.distinct[3], &b"model-3"[..]);
    assert_eq!(codes.first_row(3), Some(3));

    // Dictionary entries twice over, one unused, one null; keys sliced.
    let values = Built::strings(
        &[Some("b"), Some("a"), Some("b"), Some("unused"), None],
        false,
    );
    let keys = [Some(0), Some(1), Some(2), None, Some(4), Some(0)];
    let dictionary = Built::dictionary(&keys, values);
    assert_eq!(
        coded(dictionary.clone()).unwrap(),
        [Some("b"), Some("a"), Some("b"), None, None, Some("b")]
            .map(|v| v.map(str::to_owned))
            .to_vec()
    );
    let (schema, array) = dictionary.clone().sliced(1, 5).export();
    let view = ArrayView::new(&schema, &array).unwrap();
    assert_eq!(view.type_name(), "dictionary<int32, string>");
    let mut codes = LabelCodes::default();
    codes.add(&view, 10).unwrap();
    // A dictionary's entries are coded in its order, the unused one too.
    assert_eq!(codes.distinct, vec![&b"b"[..], b"a", b"unused"]);
    assert_eq!(codes.codes, vec![1, 0, NULL_CODE, NULL_CODE, 0]);
    let past = Built::dictionary(&[Some(0), Some(5)], Built::strings(&[Some("a")], false));
    assert!(coded(past)
        .unwrap_err()
        .contains("row 1's dictionary key 5 is not one"));
}

#[test]
fn tables_give_their_columns_from_the_parent_offset() {
    let table = Built::table(vec![
        (
            "model",
            Built::strings(&[Some("a"), Some("b"), Some("c")], false),
        ),
        (
            "latency_s",
            Built::float64(&[Some(1.0), Some(2.0), Some(3.0)]),
        ),
    ])
    .sliced(1, 2);
    let (schema, array) = table.export();
    let view = ArrayView::new(&schema, &array).unwrap();
    assert_eq!(schema.child_names(), vec![&b"model"[..], b"latency_s"]);
    let mut models = Vec::new();
    view.child(0)
        .unwrap()
        .texts(|_, text| models.push(text.unwrap().to_vec()))
        .unwrap();
    assert_eq!(models, vec![b"b".to_vec(), b"c".to_vec()]);
    let mut latencies = Vec::new();
    view.child(1)
        .unwrap()
        .numbers(|_, v| latencies.push(v))
        .unwrap();
    assert_eq!(
        latencies,
        vec![Some(Number::Float(2.0)), Some(Number::Float(3.0))]
    );
    assert!(view.child(2).is_err());
}

#[test]
fn broken_arrays_are_refused_before_a_byte_is_read() {
    let refused = |built: Built| {
        let (schema, array) = built.export();
        ArrayView::new(&schema, &array)
            .map(|_| ())
            .unwrap_err()
            .message()
            .to_owned()
    };
    let mut few = Built::int64(&[Some(1)]);
    few.buffers.pop();
    assert!(refused(few).contains("has 1 buffers"));
    let mut negative = Built::int64(&[Some(1)]);
    negative.length = -1;
    assert!(refused(negative).contains("length is -1"));
    let mut missing = Built::int64(&[Some(1)]);
    missing.buffers[1] = None;
    assert!(refused(missing).contains("missing"));
    let mut uncounted = Built::int64(&[Some(1), Some(2)]);
    uncounted.null_count = 1;
    assert!(refused(uncounted).contains("no validity bitmap"));
    let mut overflow = Built::int64(&[Some(1)]);
    overflow.offset = i64::MAX;
    assert!(refused(overflow).contains("overflows"));
    let half = Built::primitive("e", &[Some(1_u16)], |v| v.to_le_bytes().to_vec());
    assert!(refused(half).contains("float16 is not read"));
    let long_table = Built::table(vec![("a", Built::int64(&[Some(1)]))]).sliced(0, 2);
    let (schema, array) = long_table.export();
    let view = ArrayView::new(&schema, &array).unwrap();
    assert!(view
        .child(0)
        .unwrap_err()
        .message()
        .contains("rows 0..2 of an array of 1"));

    // Offsets out of order, and views past their buffer.
    let mut backwards = Built::strings(&[Some("ab"), Some("c")], false);
    backwards.buffers[1] = Some([0_i32, 2, 1].iter().flat_map(|o| o.to_le_bytes()).collect());
    assert!(texts(backwards)
        .unwrap_err()
        .contains("row 1's text offsets are 2..1"));
    let mut past = Built::string_views(&[Some("a string of twenty b")]);
    past.buffers[3] = Some(10_i64.to_le_bytes().to_vec());
    assert!(texts(past).unwrap_err().contains("points past its buffers"));
    let mut no_buffer = Built::string_views(&[Some("a string of twenty b")]);
    if let Some(Some(view)) = no_buffer.buffers.get_mut(1) {
        view[8..12].copy_from_slice(&3_i32.to_le_bytes());
    }
    assert!(texts(no_buffer).unwrap_err().contains("buffer 3"));
}
