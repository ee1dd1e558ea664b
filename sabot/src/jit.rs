//! Compiling expressions into fused native kernels with `sabot-jit`.
//!
//! [`JitExprs::try_new`] lowers a filter predicate and/or projection expressions over a schema
//! into one `sabot-jit` program, reproducing the interpreter's typing exactly (literal-to-column
//! coercion, common types, checked casts), so both paths give identical results and errors.
//! When an expression uses something the JIT does not compile (strings, dictionaries,
//! timestamps, functions without a native instruction such as `exp`, a float `%`…) it returns
//! `None` and logs the reason at debug level; the caller then uses the interpreter.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Float64Array, RecordBatch};
//! use sabot::expr::{col, lit};
//! use sabot::jit::JitExprs;
//! let batch = RecordBatch::try_from_iter([
//!     ("a", Arc::new(Float64Array::from(vec![3.0, 1.0])) as _),
//!     ("b", Arc::new(Float64Array::from(vec![1.0, 1.0])) as _),
//! ]).unwrap();
//! let jit = JitExprs::try_new(batch.schema_ref(), None, &[col("a") - col("b")]).unwrap();
//! let out = jit.project(&batch).unwrap();
//! assert_eq!(out[0].as_ref(), &Float64Array::from(vec![2.0, 0.0]));
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, new_empty_array};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use sabot_jit::ir::{BinaryOp as JitOp, Builder, Id, Program, Type, UnaryOp};
use sabot_jit::{Kernel, KernelCache, KernelSpec};

use crate::expr::{
    BinaryOp, ColumnarValue, Expr, LiteralSide, ScalarFunction, ScalarValue, literal_side, operand_type,
};
use crate::{Result, SabotError};

pub use sabot_jit::{CacheStats, ir};

/// The kernel cache's counters (compile times included).
pub fn cache_stats() -> CacheStats {
    KernelCache::global().stats()
}

/// A lowered value: a node, or a null literal that takes the type it meets.
#[derive(Clone, Copy)]
enum Val {
    Node(Id),
    Null,
}

struct Lowering<'a> {
    schema: &'a Schema,
    b: Builder,
    /// Schema index of each program input.
    columns: Vec<usize>,
    by_column: HashMap<usize, u32>,
}

type Reason = String;

impl Lowering<'_> {
    fn typed(&mut self, v: Val, to: Type) -> Id {
        match v {
            Val::Node(id) => self.b.cast(id, to),
            Val::Null => self.b.null(to),
        }
    }

    fn data_type(&self, e: &Expr) -> std::result::Result<DataType, Reason> {
        e.data_type(self.schema).map_err(|err| err.to_string())
    }

    fn ir_type(t: &DataType) -> std::result::Result<Type, Reason> {
        Type::from_arrow(t).ok_or_else(|| format!("type {t} is not compiled"))
    }

    fn boolean(&mut self, e: &Expr) -> std::result::Result<Id, Reason> {
        let v = self.lower(e)?;
        if let Val::Node(id) = v
            && self.b.type_of(id) != Type::Bool
        {
            return Err(format!("{e} is not boolean"));
        }
        Ok(self.typed(v, Type::Bool))
    }

    fn lower(&mut self, e: &Expr) -> std::result::Result<Val, Reason> {
        let err = |e: sabot_jit::ir::IrError| e.to_string();
        if !matches!(e, Expr::Literal(_)) && e.columns().is_empty() {
            // The interpreter evaluates constant parts once per batch, whatever the rows: if
            // one fails, every batch fails, even an empty one. Leave that to the interpreter.
            let one_row = RecordBatch::try_new_with_options(
                Arc::new(Schema::empty()),
                vec![],
                &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1)),
            )
            .map_err(|e| e.to_string())?;
            if let Err(error) = e.evaluate(&one_row) {
                return Err(format!("constant {e} fails: {error}"));
            }
        }
        Ok(match e {
            Expr::Column(name) => {
                let index = self.schema.index_of(name).map_err(|_| format!("column {name} not found"))?;
                let ty = Self::ir_type(self.schema.field(index).data_type())?;
                let input = match self.by_column.get(&index) {
                    Some(&i) => i,
                    None => {
                        let i = self.b.add_input(ty);
                        self.columns.push(index);
                        self.by_column.insert(index, i);
                        i
                    }
                };
                Val::Node(self.b.input(input))
            }
            Expr::Literal(v) => literal(&mut self.b, v)?,
            Expr::Alias(inner, _) => self.lower(inner)?,
            Expr::Binary { left, op, right } => {
                if matches!(op, BinaryOp::And | BinaryOp::Or) {
                    let (l, r) = (self.boolean(left)?, self.boolean(right)?);
                    let jop = if *op == BinaryOp::And { JitOp::And } else { JitOp::Or };
                    return Ok(Val::Node(self.b.binary(jop, l, r).map_err(err)?));
                }
                let (l, r) = (self.lower(left)?, self.lower(right)?);
                let target = self.operand_type((left, l), (right, r))?;
                let ty = Self::ir_type(&target)?;
                let (l, r) = (self.typed(l, ty), self.typed(r, ty));
                let jop = match op {
                    BinaryOp::Plus => JitOp::Add,
                    BinaryOp::Minus => JitOp::Sub,
                    BinaryOp::Multiply => JitOp::Mul,
                    BinaryOp::Divide => JitOp::Div,
                    BinaryOp::Modulo if ty.is_float() => return Err("float % has no native instruction".into()),
                    BinaryOp::Modulo => JitOp::Rem,
                    BinaryOp::Eq => JitOp::Eq,
                    BinaryOp::NotEq => JitOp::Ne,
                    BinaryOp::Lt => JitOp::Lt,
                    BinaryOp::LtEq => JitOp::Le,
                    BinaryOp::Gt => JitOp::Gt,
                    BinaryOp::GtEq => JitOp::Ge,
                    BinaryOp::And | BinaryOp::Or => unreachable!("handled above"),
                };
                if ty == Type::Bool && !jop.is_comparison() {
                    return Err("arithmetic on booleans".into());
                }
                Val::Node(self.b.binary(jop, l, r).map_err(err)?)
            }
            Expr::Not(inner) => {
                let v = self.boolean(inner)?;
                Val::Node(self.b.unary(UnaryOp::Not, v).map_err(err)?)
            }
            Expr::Negative(inner) => match self.lower(inner)? {
                Val::Null => return Err("negation of an untyped null".into()),
                Val::Node(id) => {
                    let t = self.b.type_of(id);
                    if !(t.is_signed_int() || t.is_float()) {
                        return Err(format!("negation of {t}"));
                    }
                    Val::Node(self.b.unary(UnaryOp::Neg, id).map_err(err)?)
                }
            },
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let op = if matches!(e, Expr::IsNull(_)) { UnaryOp::IsNull } else { UnaryOp::IsNotNull };
                match self.lower(inner)? {
                    Val::Null => Val::Node(self.b.bool(op == UnaryOp::IsNull)),
                    Val::Node(id) => Val::Node(self.b.unary(op, id).map_err(err)?),
                }
            }
            Expr::Cast { expr, to } => {
                let to = Self::ir_type(to)?;
                let v = self.lower(expr)?;
                Val::Node(self.typed(v, to))
            }
            Expr::Case { branches, otherwise } => {
                let out = Self::ir_type(&self.data_type(e)?)?;
                let mut acc = match otherwise {
                    Some(o) => {
                        let v = self.lower(o)?;
                        self.typed(v, out)
                    }
                    None => self.b.null(out),
                };
                for (cond, value) in branches.iter().rev() {
                    let c = self.boolean(cond)?;
                    let v = self.lower(value)?;
                    let v = self.typed(v, out);
                    acc = self.b.select(c, v, acc).map_err(err)?;
                }
                Val::Node(acc)
            }
            Expr::Function { func, args } => self.function(*func, args)?,
            Expr::ScalarUdf { udf, args } => {
                let params = udf.arg_types();
                if params.len() != args.len() {
                    return Err(format!("{} takes {} arguments", udf.name(), params.len()));
                }
                let mut lowered = vec![];
                for (a, p) in args.iter().zip(&params) {
                    let ty = Self::ir_type(p)?;
                    let v = self.lower(a)?;
                    lowered.push(self.typed(v, ty));
                }
                let assumed: Vec<Id> = lowered.iter().map(|&a| self.b.assume_valid(a)).collect();
                let body = match udf.build_ir(&mut self.b, &assumed) {
                    None => return Err(format!("UDF {} has no JIT body (fallback only)", udf.name())),
                    Some(body) => body.map_err(|e| format!("UDF {}: {e}", udf.name()))?,
                };
                if Some(self.b.type_of(body)) != Type::from_arrow(&udf.return_type()) {
                    return Err(format!("UDF {}: the body's type differs from the return type", udf.name()));
                }
                Val::Node(self.b.strict(body, lowered))
            }
        })
    }

    /// The interpreter's operand type for `left op right` (see `eval.rs`), from the types the
    /// operands have when evaluated (which can differ from their planned types).
    fn operand_type(&self, left: (&Expr, Val), right: (&Expr, Val)) -> std::result::Result<DataType, Reason> {
        let value = |(e, v): (&Expr, Val)| -> ColumnarValue {
            match e {
                Expr::Literal(s) => ColumnarValue::Scalar(s.to_array(1)),
                _ => ColumnarValue::Array(new_empty_array(&self.runtime_type(v))),
            }
        };
        let side: LiteralSide = literal_side(left.0, right.0);
        operand_type(&value(left), &value(right), side).map_err(|e| e.to_string())
    }

    fn runtime_type(&self, v: Val) -> DataType {
        match v {
            Val::Node(id) => self.b.type_of(id).to_arrow(),
            Val::Null => DataType::Null,
        }
    }

    fn function(&mut self, func: ScalarFunction, args: &[Expr]) -> std::result::Result<Val, Reason> {
        let err = |e: sabot_jit::ir::IrError| e.to_string();
        let arg = |this: &mut Self, i: usize| -> std::result::Result<Id, Reason> {
            match this.lower(args.get(i).ok_or("missing argument")?)? {
                Val::Node(id) => Ok(id),
                Val::Null => Err(format!("{func} of an untyped null")),
            }
        };
        Ok(Val::Node(match func {
            ScalarFunction::Abs => {
                let a = arg(self, 0)?;
                let t = self.b.type_of(a);
                if t.is_signed_int() && t != Type::I64 {
                    // The interpreter computes in i64 and casts back, nulling MIN.
                    return Err(format!("abs of {t}"));
                }
                self.b.unary(UnaryOp::Abs, a).map_err(err)?
            }
            ScalarFunction::Sqrt | ScalarFunction::Floor | ScalarFunction::Ceil => {
                let a = arg(self, 0)?;
                if self.b.type_of(a) == Type::Bool {
                    return Err(format!("{func} of a boolean"));
                }
                let a = self.b.cast(a, Type::F64);
                let op = match func {
                    ScalarFunction::Sqrt => UnaryOp::Sqrt,
                    ScalarFunction::Floor => UnaryOp::Floor,
                    _ => UnaryOp::Ceil,
                };
                self.b.unary(op, a).map_err(err)?
            }
            ScalarFunction::Round => {
                let digits = match args.get(1) {
                    Some(Expr::Literal(v)) => v.as_f64().ok_or("round with null digits")?,
                    _ => return Err("round with non-literal digits".into()),
                };
                let a = arg(self, 0)?;
                if self.b.type_of(a) == Type::Bool {
                    return Err("round of a boolean".into());
                }
                let a = self.b.cast(a, Type::F64);
                self.b.round(a, digits as i32).map_err(err)?
            }
            ScalarFunction::Coalesce => {
                let mut lowered = vec![];
                for a in args {
                    lowered.push(self.lower(a)?);
                }
                let types: Vec<DataType> = lowered.iter().map(|v| self.runtime_type(*v)).collect();
                let target = types
                    .iter()
                    .try_fold(DataType::Null, |acc, t| crate::expr::common_type(&acc, t))
                    .ok_or("coalesce of incompatible types")?;
                let ty = Self::ir_type(&target)?;
                // The interpreter's casts here are the lenient kind (null on overflow): only
                // conversions that cannot fail are compiled.
                let mut acc = None;
                for (v, t) in lowered.iter().zip(&types).rev() {
                    let lossless = *t == DataType::Null
                        || match (Type::from_arrow(t), Type::from_arrow(&target)) {
                            (Some(from), Some(to)) => widens(from, to),
                            _ => false,
                        };
                    if !lossless {
                        return Err(format!("coalesce converting {t} to {target}"));
                    }
                    let v = self.typed(*v, ty);
                    acc = Some(match acc {
                        None => v,
                        Some(rest) => {
                            let present = self.b.unary(UnaryOp::IsNotNull, v).map_err(err)?;
                            self.b.select(present, v, rest).map_err(err)?
                        }
                    });
                }
                acc.ok_or("coalesce of nothing")?
            }
            other => return Err(format!("function {other} has no native instruction")),
        }))
    }
}

/// Whether every value of `from` converts to `to` without failing (so lenient and checked
/// casts agree).
fn widens(from: Type, to: Type) -> bool {
    match (from, to) {
        (f, t) if f == t => true,
        (f, t) if f.is_int() && t.is_int() => {
            let (fl, fh) = sabot_jit::ir::int_range(f).expect("integer");
            let (tl, th) = sabot_jit::ir::int_range(t).expect("integer");
            tl <= fl && fh <= th
        }
        (f, t) if f.is_int() && t.is_float() => true,
        (Type::F32, Type::F64) => true,
        _ => false,
    }
}

fn literal(b: &mut Builder, v: &ScalarValue) -> std::result::Result<Val, Reason> {
    Ok(Val::Node(match v {
        ScalarValue::Null => return Ok(Val::Null),
        v if v.is_null() => b.null(Lowering::ir_type(&v.data_type())?),
        ScalarValue::Boolean(Some(x)) => b.bool(*x),
        ScalarValue::Int8(Some(x)) => b.constant(Type::I8, *x as i64 as u64),
        ScalarValue::Int16(Some(x)) => b.constant(Type::I16, *x as i64 as u64),
        ScalarValue::Int32(Some(x)) => b.constant(Type::I32, *x as i64 as u64),
        ScalarValue::Int64(Some(x)) => b.constant(Type::I64, *x as u64),
        ScalarValue::UInt8(Some(x)) => b.constant(Type::U8, *x as u64),
        ScalarValue::UInt16(Some(x)) => b.constant(Type::U16, *x as u64),
        ScalarValue::UInt32(Some(x)) => b.constant(Type::U32, *x as u64),
        ScalarValue::UInt64(Some(x)) => b.constant(Type::U64, *x),
        ScalarValue::Float32(Some(x)) => b.f32(*x),
        ScalarValue::Float64(Some(x)) => b.f64(*x),
        other => return Err(format!("literal of type {}", other.data_type())),
    }))
}

fn describe(predicate: Option<&Expr>, exprs: &[Expr]) -> String {
    let mut parts: Vec<String> = predicate.iter().map(|p| format!("filter {p}")).collect();
    parts.extend(exprs.iter().map(|e| e.to_string()));
    parts.join(", ")
}

/// A filter and/or projection compiled for one input schema.
#[derive(Debug, Clone)]
pub struct JitExprs {
    program: Program,
    predicate: Option<Id>,
    /// Schema index of each kernel input.
    columns: Vec<usize>,
    /// The expressions, for error messages.
    text: String,
    /// Kernels by null pattern of the inputs (bit i: input i has nulls in the batch).
    kernels: Arc<std::sync::Mutex<HashMap<u64, Arc<Kernel>>>>,
}

impl JitExprs {
    /// Lowers `predicate` (a filter) and `exprs` (projected columns) over `schema`, and compiles
    /// the kernel for inputs without nulls to check that it compiles. `None` (with a debug log
    /// line saying why) when the JIT does not handle them.
    pub fn try_new(schema: &Schema, predicate: Option<&Expr>, exprs: &[Expr]) -> Option<JitExprs> {
        match Self::try_compile(schema, predicate, exprs) {
            Ok(jit) => Some(jit),
            Err(reason) => {
                tracing::debug!(exprs = %describe(predicate, exprs), %reason, "JIT falls back to the interpreter");
                None
            }
        }
    }

    /// Like [`JitExprs::try_new`], with the reason when the JIT does not handle the expressions.
    pub fn try_compile(
        schema: &Schema,
        predicate: Option<&Expr>,
        exprs: &[Expr],
    ) -> std::result::Result<JitExprs, String> {
        let mut jit = Self::lower(schema, predicate, exprs)?;
        jit.text = describe(predicate, exprs);
        let nullable = vec![false; jit.columns.len()];
        let k = jit.kernel(&nullable).map_err(|e| e.to_string())?;
        tracing::debug!(
            exprs = %jit.text,
            compile_us = k.compile_time().as_micros() as u64,
            lanes = k.lanes(),
            "compiled with the JIT"
        );
        Ok(jit)
    }

    fn lower(schema: &Schema, predicate: Option<&Expr>, exprs: &[Expr]) -> std::result::Result<JitExprs, Reason> {
        let mut l = Lowering { schema, b: Builder::new(&[]), columns: vec![], by_column: HashMap::new() };
        let predicate = match predicate {
            Some(p) => {
                if l.data_type(p)? != DataType::Boolean {
                    return Err(format!("filter predicate {p} is not boolean"));
                }
                Some(l.boolean(p)?)
            }
            None => None,
        };
        let mut outputs = vec![];
        for e in exprs {
            let v = l.lower(e)?;
            let Val::Node(id) = v else { return Err(format!("{e} is an untyped null")) };
            outputs.push(id);
        }
        if l.columns.len() > 64 {
            return Err("more than 64 input columns".into());
        }
        let columns = l.columns;
        Ok(JitExprs {
            program: l.b.finish(outputs),
            predicate,
            columns,
            text: String::new(),
            kernels: Arc::new(std::sync::Mutex::new(HashMap::new())),
        })
    }

    /// The output types of the projected expressions (the interpreter's array types).
    pub fn output_types(&self) -> Vec<DataType> {
        self.program.output_types().into_iter().map(Type::to_arrow).collect()
    }

    fn kernel(&self, nullable: &[bool]) -> std::result::Result<Arc<Kernel>, sabot_jit::CompileError> {
        let pattern = nullable.iter().enumerate().fold(0u64, |acc, (i, &n)| acc | ((n as u64) << i));
        if let Some(k) = self.kernels.lock().expect("jit kernels lock").get(&pattern) {
            return Ok(k.clone());
        }
        let spec = KernelSpec { program: self.program.clone(), predicate: self.predicate, nullable: nullable.to_vec() };
        let kernel = KernelCache::global().get_or_compile(&spec)?;
        self.kernels.lock().expect("jit kernels lock").insert(pattern, kernel.clone());
        Ok(kernel)
    }

    fn run(&self, batch: &RecordBatch) -> Result<sabot_jit::KernelOutput> {
        let inputs: Vec<&dyn Array> = self.columns.iter().map(|&i| batch.column(i).as_ref()).collect();
        let nullable: Vec<bool> = inputs.iter().map(|a| a.null_count() > 0).collect();
        let kernel = self.kernel(&nullable).map_err(|e| SabotError::plan(format!("JIT: {e}")))?;
        kernel.run_len(&inputs, batch.num_rows()).map_err(|source| SabotError::Eval { expr: self.text.clone(), source })
    }

    /// The projected columns over `batch` (no predicate).
    pub fn project(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        Ok(self.run(batch)?.columns)
    }

    /// The selection of `batch` and the projected columns for the selected rows.
    pub fn filter_project(&self, batch: &RecordBatch) -> Result<(BooleanArray, Vec<ArrayRef>)> {
        let out = self.run(batch)?;
        let selection = out.selection.ok_or_else(|| SabotError::plan("JIT: no predicate"))?;
        Ok((selection, out.columns))
    }
}
