//! Expressions as text: precedence, literals, functions, casts, errors with positions, and
//! parsed filters running in a pipeline.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, TimeUnit};
use sabot::expr::{Expr, ScalarFunction, ScalarValue, col, lit, parse_expr, when};

fn p(text: &str) -> Expr {
    parse_expr(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn the_issue_example() {
    assert_eq!(
        p("amount > 500 and country != 'US'"),
        col("amount").gt(lit(500i64)).and(col("country").not_eq(lit("US")))
    );
}

#[test]
fn precedence_and_associativity() {
    assert_eq!(p("a + b * c"), col("a") + col("b") * col("c"));
    assert_eq!(p("(a + b) * c"), (col("a") + col("b")) * col("c"));
    assert_eq!(p("a - b - c"), (col("a") - col("b")) - col("c"));
    assert_eq!(p("a / b % c"), (col("a") / col("b")) % col("c"));
    assert_eq!(p("a or b and c"), col("a").or(col("b").and(col("c"))));
    assert_eq!(p("not a = 1 or b"), (!col("a").eq(lit(1i64))).or(col("b")));
    assert_eq!(
        p("a + 1 > b * 2 AND c <= 3"),
        (col("a") + lit(1i64)).gt(col("b") * lit(2i64)).and(col("c").lt_eq(lit(3i64)))
    );
    assert_eq!(p("-a * b"), (-col("a")) * col("b"));
    assert_eq!(p("a <> b"), col("a").not_eq(col("b")));
    assert_eq!(p("a == b"), col("a").eq(col("b")));
}

#[test]
fn literals() {
    assert_eq!(p("42"), lit(42i64));
    assert_eq!(p("-42"), lit(-42i64));
    assert_eq!(p("-9223372036854775808"), lit(i64::MIN));
    assert_eq!(p("2.5"), lit(2.5));
    assert_eq!(p("-2.5e3"), lit(-2500.0));
    assert_eq!(p("1e-2"), lit(0.01));
    assert_eq!(p(".5"), lit(0.5));
    assert_eq!(p("'it''s'"), lit("it's"));
    assert_eq!(p("''"), lit(""));
    assert_eq!(p("TRUE"), lit(true));
    assert_eq!(p("false"), lit(false));
    assert_eq!(p("null"), Expr::Literal(ScalarValue::Null));
    assert_eq!(p("\"order id\" > 3"), col("order id").gt(lit(3i64)));
    assert_eq!(p("'héllo'"), lit("héllo"));
}

#[test]
fn is_null_between_case_cast_and_functions() {
    assert_eq!(p("x IS NULL"), col("x").is_null());
    assert_eq!(p("x is not null"), col("x").is_not_null());
    assert_eq!(p("x between 1 and 5"), col("x").between(lit(1i64), lit(5i64)));
    assert_eq!(p("x not between 1 and 5"), !col("x").between(lit(1i64), lit(5i64)));
    assert_eq!(p("CAST(x AS double)"), col("x").cast(DataType::Float64));
    assert_eq!(p("cast(x as int)"), col("x").cast(DataType::Int32));
    assert_eq!(p("cast(ts as timestamp)"), col("ts").cast(DataType::Timestamp(TimeUnit::Millisecond, None)));
    assert_eq!(p("sqrt(x) + abs(y)"), col("x").sqrt() + col("y").abs());
    assert_eq!(p("round(x, 2)"), Expr::Function { func: ScalarFunction::Round, args: vec![col("x"), lit(2i64)] });
    assert_eq!(p("pow(x, 2)"), col("x").pow(lit(2i64)));
    assert_eq!(p("upper(name) = 'A'"), col("name").upper().eq(lit("A")));
    assert_eq!(p("coalesce(a, b, 0)"), sabot::expr::coalesce([col("a"), col("b"), lit(0i64)]));
    assert_eq!(
        p("case when x > 0 then 'pos' when x < 0 then 'neg' else 'zero' end"),
        when(col("x").gt(lit(0i64)), lit("pos")).when(col("x").lt(lit(0i64)), lit("neg")).otherwise(lit("zero"))
    );
    assert_eq!(p("case when x then 1 end"), when(col("x"), lit(1i64)).end());
}

#[test]
fn display_round_trips() {
    for text in [
        "a + b * c > 3 AND NOT (d = 'x''y') OR e IS NULL",
        "(a - b) / ((a + b) / 2) * 10000.0",
        "CASE WHEN a > 1 THEN 2 ELSE 3 END",
        "abs(a - b) >= 0.5",
    ] {
        let e = p(text);
        assert_eq!(p(&e.to_string()), e, "{text} -> {e}");
    }
}

#[test]
fn errors_name_the_position() {
    let cases = [
        ("amount >", 8, "expected an expression"),
        ("a + * b", 4, "expected an expression"),
        ("(a + b", 6, "expected ')'"),
        ("'open", 0, "unterminated quote"),
        ("a # b", 2, "unexpected character '#'"),
        ("frobnicate(a)", 0, "unknown function 'frobnicate'"),
        ("cast(a as widget)", 10, "unknown type 'widget'"),
        ("a b", 2, "unexpected 'b'"),
        ("x is 3", 5, "expected 'NULL'"),
        ("99999999999999999999", 0, "too large"),
        ("case x end", 5, "expected 'WHEN'"),
    ];
    for (text, position, message) in cases {
        let err = parse_expr(text).expect_err(text).to_string();
        assert!(err.contains(&format!("position {position}")), "{text}: {err}");
        assert!(err.contains(message), "{text}: {err}");
    }
}

#[test]
fn parsed_expressions_run_in_a_pipeline() {
    let batch = RecordBatch::try_from_iter([
        ("amount", Arc::new(Int64Array::from(vec![100, 700, 900, 600])) as _),
        ("country", Arc::new(StringArray::from(vec!["US", "US", "FR", "DE"])) as _),
        ("price", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as _),
    ])
    .unwrap();
    let stream = sabot::Stream::from_batches(vec![batch])
        .unwrap()
        .filter(p("amount > 500 and country != 'US'"))
        .unwrap()
        .with_column("total", p("amount * price + 0.5"))
        .unwrap();
    let out =
        arrow::compute::concat_batches(&stream.collect().unwrap()[0].schema(), &stream.collect().unwrap()).unwrap();
    assert_eq!(out.num_rows(), 2);
    let total = out.column_by_name("total").unwrap();
    assert_eq!(total.as_ref(), &Float64Array::from(vec![2700.5, 2400.5]) as &dyn arrow::array::Array);
}
