//! Procedural macros for Sabot. Use them through the `sabot` crate (`sabot::Record`), which
//! re-exports them; the generated code refers to `::sabot`.

mod ast;
mod expand;
mod udf_attr;
mod validate;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `sabot::Record` (and `sabot::record::RecordField`, so the struct can be nested
/// in other records) for a struct with named fields.
///
/// It also generates, next to the struct `T` and with its visibility:
/// - `TView<'a>`: a borrowed view of one row, with one public field per column;
/// - `TArrays<'a>`: the batch's columns downcast once (used by `Record::view`);
/// - `TColumns`: one typed column handle `sabot::record::Col<FieldType>` per column.
///
/// Field attributes:
/// - `#[record(rename = "name")]`: the column's name (default: the field's name);
/// - `#[record(event_time)]`: the event-time column (`sabot::record::Timestamp` or `i64`, at most one);
/// - `#[record(skip)]`: not a column; filled with `Default::default()` when reading.
///
/// Field types must implement `sabot::record::RecordField`: integers, `f32`, `f64`, `bool`,
/// `String`, `Vec<u8>`, `sabot::record::Timestamp`, `Option<T>` of these, and other
/// `#[derive(Record)]` structs. Generic structs are not supported.
///
/// ```ignore
/// #[derive(sabot::Record)]
/// struct Trade {
///     symbol: String,
///     #[record(rename = "px")]
///     price: f64,
///     #[record(event_time)]
///     ts: sabot::record::Timestamp,
///     #[record(skip)]
///     cache: Vec<String>,
/// }
/// ```
#[proc_macro_derive(Record, attributes(record))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Makes a plain Rust scalar function usable in expressions, JIT-compiled with the expressions
/// around it.
///
/// Next to the function `f` (unchanged) it generates a module `f` with `f::call(args...)`
/// building an `Expr` that calls it, `f::udf()` (a `sabot::expr::ScalarUdf`) and `f::checked`
/// (the body with the engine's checked arithmetic, what the interpreter runs). Parameters and
/// the result are `f64`, `f32`, integers or `bool`; a null argument makes the result null.
///
/// The body must use the subset the JIT compiles — `let`/`let mut`, assignments and `+=`-style
/// updates, arithmetic, comparisons, `&&`/`||`/`!`, `if`/`else` expressions, `as` casts between
/// numbers, `for i in a..b` loops, and the methods `sqrt`, `abs`, `floor`, `ceil`, `trunc`,
/// `round` — or compilation fails at the offending span. `#[udf(fallback)]` accepts any body
/// and runs it interpreted only (plain Rust semantics).
///
/// ```ignore
/// #[sabot::udf]
/// fn spread_bps(bid: f64, ask: f64) -> f64 {
///     (ask - bid) / ((ask + bid) / 2.0) * 1e4
/// }
/// let bps = spread_bps::call(col("bid"), col("ask"));
/// ```
#[proc_macro_attribute]
pub fn udf(attr: TokenStream, item: TokenStream) -> TokenStream {
    udf_attr::udf(attr.into(), item.into()).into()
}
