//! Procedural macros for Sabot. Use them through the `sabot` crate (`sabot::Record`), which
//! re-exports them; the generated code refers to `::sabot`.

mod app_ast;
mod app_attr;
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

/// Declares a Faust-style app: an inline module whose `#[agent(...)]` functions consume Kafka
/// topics.
///
/// Arguments: `name = "..."` (default: the module's name with `_` replaced by `-`) and
/// `main = false` (do not generate `fn main`).
///
/// Each agent is a function marked `#[agent("topic", sink = "...", group = "...",
/// dead_letter = "...", key = "...")]`: the input topic comes first, the keys are optional;
/// `key` names the column the topic's messages are keyed by, so a `key_by` on that column
/// needs no repartition topic.
/// - A sync `fn(stream: Stream<I>) -> Stream<O>` (or `sabot::Result<Stream<O>>`) builds a
///   pipeline over the topic's records; `sink` names the topic its output goes to.
/// - An `async fn(stream: AgentStream<I>)` returning `()` or `sabot::Result<()>` consumes the
///   records one by one; it takes no `sink`.
///
/// `I` and `O` are `#[derive(Record)]` types. Agents cannot be generic or take `self`. The
/// `#[agent]` attributes are removed and every item of the module is kept as written; the
/// macro adds to the module `pub fn app() -> sabot::app::App` registering the agents (named
/// after their functions), and next to the module `fn main() -> ExitCode { module::app().main() }`,
/// which runs the app's command line (`worker`, `agents`, `explain`).
///
/// ```ignore
/// #[sabot::app(name = "fraud-detection")]
/// mod fraud {
///     use super::*;
///
///     #[agent("transactions", sink = "alerts")]
///     fn detect(stream: Stream<Transaction>) -> sabot::Result<Stream<Alert>> {
///         Ok(stream.filter_rows(|t| t.amount > 10_000.0).map(|t| Alert { account: t.account.to_string() }))
///     }
///
///     #[agent("transactions", group = "auditors")]
///     async fn audit(mut stream: AgentStream<Transaction>) -> sabot::Result<()> {
///         while let Some(tx) = stream.next().await {
///             println!("{tx:?}");
///         }
///         Ok(())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn app(attr: TokenStream, item: TokenStream) -> TokenStream {
    app_attr::app(attr.into(), item.into()).into()
}

/// Marks an agent function inside a [`macro@app`] module: `#[agent("topic", sink = "...",
/// group = "...", dead_letter = "...")]`.
///
/// `#[sabot::app]` reads and removes these attributes itself, so this macro only runs on an
/// `#[agent]` outside such a module, and reports it as an error.
///
/// ```ignore
/// #[sabot::app]
/// mod alerts {
///     use super::*;
///
///     #[agent("readings", sink = "alerts", dead_letter = "readings-dlq")]
///     fn too_hot(stream: Stream<Reading>) -> Stream<Reading> {
///         stream.filter_rows(|r| r.celsius > 40.0)
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn agent(attr: TokenStream, item: TokenStream) -> TokenStream {
    app_attr::agent(attr.into(), item.into()).into()
}
