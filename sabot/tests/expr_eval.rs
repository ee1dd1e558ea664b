//! Expression evaluation: SQL null semantics, coercion, errors and built-in functions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use sabot::SabotError;
use sabot::expr::{coalesce, col, concat, lit, when};

fn batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("i", Arc::new(Int64Array::from(vec![Some(1), None, Some(-3), Some(i64::MAX)])) as ArrayRef),
        ("f", Arc::new(Float64Array::from(vec![Some(1.5), Some(-2.25), None, Some(0.0)])) as ArrayRef),
        ("s", Arc::new(StringArray::from(vec![Some(" Hé "), Some("abc"), None, Some("")])) as ArrayRef),
        ("b", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), None])) as ArrayRef),
        ("n", Arc::new(Int32Array::from(vec![Some(7), Some(0), Some(2), None])) as ArrayRef),
    ])
    .unwrap()
}

fn bools(e: sabot::expr::Expr) -> Vec<Option<bool>> {
    e.evaluate(&batch()).unwrap().as_boolean().iter().collect()
}

#[test]
fn three_valued_logic() {
    assert_eq!(bools(col("b").and(lit(false))), [Some(false), Some(false), Some(false), Some(false)]);
    assert_eq!(bools(col("b").and(lit(true))), [Some(true), None, Some(false), None]);
    assert_eq!(bools(col("b").or(lit(true))), [Some(true), Some(true), Some(true), Some(true)]);
    assert_eq!(bools(!col("b")), [Some(false), None, Some(true), None]);
    assert_eq!(bools(col("i").gt(lit(0))), [Some(true), None, Some(false), Some(true)]);
    assert_eq!(bools(col("i").is_null()), [Some(false), Some(true), Some(false), Some(false)]);
    assert_eq!(bools(col("s").is_not_null()), [Some(true), Some(true), Some(false), Some(true)]);
    // A filter keeps only rows where the predicate is true: null counts as false.
    let mask = col("i").gt(lit(0)).evaluate_predicate(&batch()).unwrap();
    assert_eq!(mask.iter().collect::<Vec<_>>(), [Some(true), Some(false), Some(false), Some(true)]);
}

#[test]
fn arithmetic_coerces_and_propagates_nulls() {
    let e = (col("i") + lit(0.5)).evaluate(&batch()).unwrap();
    assert_eq!(e.data_type(), &DataType::Float64);
    assert_eq!(e.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()[..3], [Some(1.5), None, Some(-2.5)]);
    // Int32 column with an integer literal stays Int32; with an Int64 column it widens.
    let narrow = (col("n") * lit(2)).evaluate(&batch()).unwrap();
    assert_eq!(narrow.as_primitive::<Int32Type>().iter().collect::<Vec<_>>(), [Some(14), Some(0), Some(4), None]);
    let wide = (col("n") + col("i")).slice_rows(0, 3);
    assert_eq!(wide.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(8), None, Some(-1)]);
    // Integer division truncates, like SQL.
    let div = (col("i") / lit(2i64)).evaluate(&batch()).unwrap();
    assert_eq!(div.as_primitive::<Int64Type>().value(2), -1);
    let neg = (-col("f")).evaluate(&batch()).unwrap();
    assert_eq!(neg.as_primitive::<Float64Type>().value(1), 2.25);
}

trait SliceRows {
    fn slice_rows(self, offset: usize, len: usize) -> ArrayRef;
}
impl SliceRows for sabot::expr::Expr {
    fn slice_rows(self, offset: usize, len: usize) -> ArrayRef {
        self.evaluate(&batch().slice(offset, len)).unwrap()
    }
}

#[test]
fn overflow_and_division_by_zero_are_errors_naming_the_expression() {
    let err = (col("i") + lit(1i64)).evaluate(&batch()).unwrap_err();
    assert!(matches!(err, SabotError::Eval { .. }), "{err:?}");
    assert!(err.to_string().starts_with("failed to evaluate i + 1: "), "{err}");
    let err = (col("n") / lit(0)).evaluate(&batch()).unwrap_err();
    assert!(err.to_string().contains("Divide by zero"), "{err}");
    // Floats follow IEEE 754.
    let inf = (col("f") / lit(0.0)).evaluate(&batch()).unwrap();
    assert_eq!(inf.as_primitive::<Float64Type>().value(0), f64::INFINITY);
}

#[test]
fn case_when_treats_null_conditions_as_false() {
    let e = when(col("b"), lit("yes")).when(col("i").lt(lit(0)), lit("negative")).otherwise(lit("other"));
    let out = e.evaluate(&batch()).unwrap();
    let out: Vec<_> = out.as_string::<i32>().iter().collect();
    assert_eq!(out, [Some("yes"), Some("other"), Some("negative"), Some("other")]);
    let no_else = when(col("b"), lit(1)).end().evaluate(&batch()).unwrap();
    assert_eq!(no_else.null_count(), 3);
}

#[test]
fn casts_fail_loudly() {
    let ok = col("i").cast(DataType::Utf8).evaluate(&batch()).unwrap();
    assert_eq!(ok.as_string::<i32>().value(0), "1");
    let err = col("s").cast(DataType::Int64).evaluate(&batch()).unwrap_err();
    assert!(err.to_string().contains("CAST(s AS Int64)"), "{err}");
}

#[test]
fn string_and_math_functions() {
    let b = batch();
    let strings = |e: sabot::expr::Expr| -> Vec<Option<String>> {
        e.evaluate(&b).unwrap().as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect()
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(strings(col("s").upper()), [s(" HÉ "), s("ABC"), None, s("")]);
    assert_eq!(strings(col("s").trim()), [s("Hé"), s("abc"), None, s("")]);
    assert_eq!(strings(col("s").substring(2, 2)), [s("Hé"), s("bc"), None, s("")]);
    assert_eq!(strings(concat([col("s"), lit("!")])), [s(" Hé !"), s("abc!"), None, s("!")]);
    let lengths = col("s").length().evaluate(&b).unwrap();
    assert_eq!(lengths.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(4), Some(3), None, Some(0)]);
    assert_eq!(bools(col("s").starts_with(lit("ab"))), [Some(false), Some(true), None, Some(false)]);
    assert_eq!(bools(col("s").contains(lit("é"))), [Some(true), Some(false), None, Some(false)]);
    let filled = coalesce([col("i"), lit(0i64)]).evaluate(&b).unwrap();
    assert_eq!(filled.as_primitive::<Int64Type>().value(1), 0);
    let rounded = (col("f") * lit(1.0 / 3.0)).round(2).evaluate(&b).unwrap();
    assert_eq!(rounded.as_primitive::<Float64Type>().value(0), 0.5);
    let roots = col("f").abs().sqrt().evaluate(&b).unwrap();
    assert_eq!(roots.as_primitive::<Float64Type>().value(1), 1.5);
    let abs = col("i").abs().evaluate(&b.slice(0, 3)).unwrap();
    assert_eq!(abs.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(1), None, Some(3)]);
}

#[test]
fn dictionary_columns_compare_with_plain_literals() {
    let dict: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
    let b = RecordBatch::try_from_iter([("d", Arc::new(dict) as ArrayRef)]).unwrap();
    let out = col("d").eq(lit("x")).evaluate(&b).unwrap();
    assert_eq!(out.as_boolean().iter().collect::<Vec<_>>(), [Some(true), Some(false), Some(true)]);
}

#[test]
fn literal_only_expressions_fill_the_batch() {
    let out = (lit(2) + lit(3)).evaluate(&batch()).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out.as_primitive::<Int32Type>().values().to_vec(), [5, 5, 5, 5]);
}

#[test]
fn type_errors_are_reported_while_planning() {
    let schema = batch().schema();
    let err = (col("s") + lit(1)).data_type(&schema).unwrap_err();
    assert!(err.to_string().contains("cannot apply '+' to Utf8"), "{err}");
    let err = col("s").sqrt().data_type(&schema).unwrap_err();
    assert_eq!(err.to_string(), "plan error: sqrt needs a number, found Utf8");
}
