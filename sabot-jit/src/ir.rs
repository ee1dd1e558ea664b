//! A small typed IR for scalar functions of one row.
//!
//! A [`Program`] is an arena of [`Node`]s built with a [`Builder`], which type-checks every node
//! and shares identical nodes (hash-consing), so a sub-expression used twice — by a filter and by
//! the projection after it, say — is computed once per row.
//!
//! Semantics (those of Sabot's interpreter, which the differential tests hold it to):
//! - values may be null; arithmetic, comparisons, casts and math functions are null when an
//!   operand is null; `and`/`or` follow SQL's three-valued logic; `is_null` is never null;
//! - integer overflow, integer division by zero and failed casts are errors of the whole
//!   evaluation, except in rows where an operand is null (those rows are null);
//! - floats are IEEE (`x / 0.0` is infinite, no error) and compare in IEEE total order
//!   (`NaN = NaN`, `-0.0 < 0.0`), like Arrow's comparison kernels;
//! - [`Builder::select`] evaluates both branches (errors of either count, like SQL `CASE` in the
//!   interpreter); [`Builder::if_else`] evaluates only the taken one (Rust's `if`, for UDFs).
//!
//! ```
//! use sabot_jit::ir::{Builder, Type};
//! let mut b = Builder::new(&[Type::F64, Type::F64]);
//! let (bid, ask) = (b.input(0), b.input(1));
//! let spread = b.sub(ask, bid).unwrap();
//! let mid = b.add(ask, bid).unwrap();
//! let two = b.f64(2.0);
//! let mid = b.div(mid, two).unwrap();
//! let bps = b.div(spread, mid).unwrap();
//! let scale = b.f64(1e4);
//! let bps = b.mul(bps, scale).unwrap();
//! let program = b.finish(vec![bps]);
//! assert_eq!(program.output_types(), vec![Type::F64]);
//! ```

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::DataType;

/// The type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    /// A boolean.
    Bool,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl Type {
    /// Whether this is an integer type.
    pub fn is_int(self) -> bool {
        !matches!(self, Type::Bool | Type::F32 | Type::F64)
    }

    /// Whether this is a signed integer type.
    pub fn is_signed_int(self) -> bool {
        matches!(self, Type::I8 | Type::I16 | Type::I32 | Type::I64)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Type::F32 | Type::F64)
    }

    /// Whether this is a number (integer or float).
    pub fn is_numeric(self) -> bool {
        self != Type::Bool
    }

    /// The width in bits (1 for booleans).
    pub fn bits(self) -> u32 {
        match self {
            Type::Bool => 1,
            Type::I8 | Type::U8 => 8,
            Type::I16 | Type::U16 => 16,
            Type::I32 | Type::U32 | Type::F32 => 32,
            Type::I64 | Type::U64 | Type::F64 => 64,
        }
    }

    /// The IR type of an Arrow type, if the JIT handles it.
    pub fn from_arrow(t: &DataType) -> Option<Type> {
        Some(match t {
            DataType::Boolean => Type::Bool,
            DataType::Int8 => Type::I8,
            DataType::Int16 => Type::I16,
            DataType::Int32 => Type::I32,
            DataType::Int64 => Type::I64,
            DataType::UInt8 => Type::U8,
            DataType::UInt16 => Type::U16,
            DataType::UInt32 => Type::U32,
            DataType::UInt64 => Type::U64,
            DataType::Float32 => Type::F32,
            DataType::Float64 => Type::F64,
            _ => return None,
        })
    }

    /// The Arrow type of this IR type.
    pub fn to_arrow(self) -> DataType {
        match self {
            Type::Bool => DataType::Boolean,
            Type::I8 => DataType::Int8,
            Type::I16 => DataType::Int16,
            Type::I32 => DataType::Int32,
            Type::I64 => DataType::Int64,
            Type::U8 => DataType::UInt8,
            Type::U16 => DataType::UInt16,
            Type::U32 => DataType::UInt32,
            Type::U64 => DataType::UInt64,
            Type::F32 => DataType::Float32,
            Type::F64 => DataType::Float64,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Type::Bool => "bool",
            Type::I8 => "i8",
            Type::I16 => "i16",
            Type::I32 => "i32",
            Type::I64 => "i64",
            Type::U8 => "u8",
            Type::U16 => "u16",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::F32 => "f32",
            Type::F64 => "f64",
        };
        f.write_str(s)
    }
}

/// A node's index in its [`Program`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u32);

/// A variable bound by `let` or a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// Operators with one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// Arithmetic negation (integer overflow is an error; unsigned types are rejected).
    Neg,
    /// Logical negation (null stays null).
    Not,
    /// Absolute value (integer overflow is an error).
    Abs,
    /// Square root (floats).
    Sqrt,
    /// Round down (floats).
    Floor,
    /// Round up (floats).
    Ceil,
    /// Round toward zero (floats).
    Trunc,
    /// Whether the operand is null (never null).
    IsNull,
    /// Whether the operand is not null (never null).
    IsNotNull,
}

/// Operators with two operands of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integers: truncating; division by zero and `MIN / -1` are errors)
    Div,
    /// `%` (integers only; division by zero is an error, `MIN % -1` is 0)
    Rem,
    /// `=` (floats: IEEE total order, as Arrow's kernels compare)
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==` with IEEE semantics for floats (`NaN != NaN`, `-0.0 == 0.0`); Rust's `==`.
    IeeeEq,
    /// `!=` with IEEE semantics for floats.
    IeeeNe,
    /// `<` with IEEE semantics for floats (false when either is NaN).
    IeeeLt,
    /// `<=` with IEEE semantics for floats.
    IeeeLe,
    /// `>` with IEEE semantics for floats.
    IeeeGt,
    /// `>=` with IEEE semantics for floats.
    IeeeGe,
    /// Logical `and` (three-valued).
    And,
    /// Logical `or` (three-valued).
    Or,
}

impl BinaryOp {
    /// Whether the operator compares its operands.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::IeeeEq
                | BinaryOp::IeeeNe
                | BinaryOp::IeeeLt
                | BinaryOp::IeeeLe
                | BinaryOp::IeeeGt
                | BinaryOp::IeeeGe
        )
    }
}

/// One node of a [`Program`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// Input column `i`.
    Input(u32),
    /// A constant: integers sign- or zero-extended to 64 bits, floats as their bits, bools as 0/1.
    Const(Type, u64),
    /// The null of a type.
    Null(Type),
    /// A bound variable.
    Var(Var),
    /// `op(arg)`
    Unary(UnaryOp, Id),
    /// `left op right`
    Binary(BinaryOp, Id, Id),
    /// `round(arg, digits)`: half away from zero at `digits` decimal places (floats).
    Round(Id, i32),
    /// A checked conversion (SQL `CAST`: out of range is an error).
    Cast(Id, Type),
    /// `if cond { then } else { otherwise }`; a null condition takes `otherwise`. `lazy`: errors
    /// of the branch not taken are ignored (Rust semantics); otherwise both count (SQL `CASE`).
    If {
        /// The condition.
        cond: Id,
        /// The value when the condition is true.
        then: Id,
        /// The value otherwise.
        otherwise: Id,
        /// Whether only the taken branch is evaluated.
        lazy: bool,
    },
    /// `let var = value; body`.
    Let(Var, Id, Id),
    /// `body`, null when any of `args` is null (and only evaluated where none is): the call of
    /// a null-strict function whose parameters are [`Node::AssumeValid`] of `args`.
    Strict(Id, Vec<Id>),
    /// The value of `arg` where it is not null (inside [`Node::Strict`]).
    AssumeValid(Id),
    /// A bounded loop: `index` runs over `start..end` (no iteration when `end <= start`); the
    /// state variables start at their initial values and take the `next` values after each
    /// iteration. Read the results with [`Node::LoopOut`].
    Loop {
        /// The loop counter (`i64`).
        index: Var,
        /// First value of the counter (`i64`).
        start: Id,
        /// End of the range, exclusive (`i64`).
        end: Id,
        /// State variables and their initial values.
        state: Vec<(Var, Id)>,
        /// The state's values after one iteration, in terms of the index and the state.
        next: Vec<Id>,
    },
    /// The final value of state variable `k` of a loop.
    LoopOut(Id, u32),
}

/// An error building IR: the types do not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrError(pub String);

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IrError {}

fn err<T>(msg: impl Into<String>) -> Result<T, IrError> {
    Err(IrError(msg.into()))
}

/// A typed function of one row: its input types, its nodes and its outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Program {
    /// The types of the input columns.
    pub inputs: Vec<Type>,
    /// The nodes; every node's operands come before it.
    pub nodes: Vec<Node>,
    /// The type of every node (loops have the type of their first state variable).
    pub types: Vec<Type>,
    /// The output nodes.
    pub outputs: Vec<Id>,
}

impl Program {
    /// The node `id`.
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// The type of node `id`.
    pub fn type_of(&self, id: Id) -> Type {
        self.types[id.0 as usize]
    }

    /// The types of the outputs.
    pub fn output_types(&self) -> Vec<Type> {
        self.outputs.iter().map(|&o| self.type_of(o)).collect()
    }
}

/// Builds a [`Program`], checking types and sharing identical nodes.
#[derive(Debug, Clone)]
pub struct Builder {
    program: Program,
    dedup: HashMap<Node, Id>,
    vars: Vec<Type>,
}

impl Builder {
    /// A builder for a function of input columns of `inputs` types.
    pub fn new(inputs: &[Type]) -> Builder {
        Builder {
            program: Program { inputs: inputs.to_vec(), nodes: vec![], types: vec![], outputs: vec![] },
            dedup: HashMap::new(),
            vars: vec![],
        }
    }

    /// Adds an input column of type `ty` and returns its index.
    pub fn add_input(&mut self, ty: Type) -> u32 {
        self.program.inputs.push(ty);
        (self.program.inputs.len() - 1) as u32
    }

    /// The input types so far.
    pub fn inputs(&self) -> &[Type] {
        &self.program.inputs
    }

    /// The type of node `id`.
    pub fn type_of(&self, id: Id) -> Type {
        self.program.type_of(id)
    }

    /// The node `id`.
    pub fn node(&self, id: Id) -> &Node {
        self.program.node(id)
    }

    fn push(&mut self, node: Node, ty: Type) -> Id {
        if let Some(&id) = self.dedup.get(&node) {
            return id;
        }
        let id = Id(self.program.nodes.len() as u32);
        self.program.nodes.push(node.clone());
        self.program.types.push(ty);
        self.dedup.insert(node, id);
        id
    }

    /// Finishes with the given outputs.
    pub fn finish(mut self, outputs: Vec<Id>) -> Program {
        self.program.outputs = outputs;
        self.program
    }

    /// Input column `i` (panics if out of range).
    pub fn input(&mut self, i: u32) -> Id {
        let ty = self.program.inputs[i as usize];
        self.push(Node::Input(i), ty)
    }

    /// A constant of type `ty` from its 64-bit pattern (see [`Node::Const`]).
    pub fn constant(&mut self, ty: Type, bits: u64) -> Id {
        let bits = match ty {
            Type::Bool => bits & 1,
            Type::F32 => bits & 0xffff_ffff,
            _ => bits,
        };
        self.push(Node::Const(ty, bits), ty)
    }

    /// An `f64` constant.
    pub fn f64(&mut self, v: f64) -> Id {
        self.constant(Type::F64, v.to_bits())
    }

    /// An `f32` constant.
    pub fn f32(&mut self, v: f32) -> Id {
        self.constant(Type::F32, v.to_bits() as u64)
    }

    /// An `i64` constant.
    pub fn i64(&mut self, v: i64) -> Id {
        self.constant(Type::I64, v as u64)
    }

    /// An integer constant of type `ty` (checked against its range).
    pub fn int(&mut self, ty: Type, v: i128) -> Result<Id, IrError> {
        let (lo, hi) = int_range(ty).ok_or_else(|| IrError(format!("{ty} is not an integer type")))?;
        if v < lo || v > hi {
            return err(format!("{v} is out of range for {ty}"));
        }
        Ok(self.constant(ty, v as i64 as u64))
    }

    /// A boolean constant.
    pub fn bool(&mut self, v: bool) -> Id {
        self.constant(Type::Bool, v as u64)
    }

    /// The null of type `ty`.
    pub fn null(&mut self, ty: Type) -> Id {
        self.push(Node::Null(ty), ty)
    }

    /// A fresh variable of type `ty`.
    pub fn var(&mut self, ty: Type) -> Var {
        self.vars.push(ty);
        Var((self.vars.len() - 1) as u32)
    }

    /// A reference to variable `v`.
    pub fn get(&mut self, v: Var) -> Id {
        let ty = self.vars[v.0 as usize];
        self.push(Node::Var(v), ty)
    }

    /// `let var = value; body`
    pub fn let_in(&mut self, var: Var, value: Id, body: Id) -> Result<Id, IrError> {
        if self.vars[var.0 as usize] != self.type_of(value) {
            return err(format!("let binds a {} to a {} variable", self.type_of(value), self.vars[var.0 as usize]));
        }
        let ty = self.type_of(body);
        Ok(self.push(Node::Let(var, value, body), ty))
    }

    /// `op(arg)`
    pub fn unary(&mut self, op: UnaryOp, arg: Id) -> Result<Id, IrError> {
        let t = self.type_of(arg);
        let ty = match op {
            UnaryOp::Neg if t.is_signed_int() || t.is_float() => t,
            UnaryOp::Abs if t.is_numeric() => t,
            UnaryOp::Not if t == Type::Bool => t,
            UnaryOp::Sqrt | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Trunc if t.is_float() => t,
            UnaryOp::IsNull | UnaryOp::IsNotNull => Type::Bool,
            _ => return err(format!("{op:?} does not apply to {t}")),
        };
        Ok(self.push(Node::Unary(op, arg), ty))
    }

    /// `left op right` (operands of the same type).
    pub fn binary(&mut self, op: BinaryOp, left: Id, right: Id) -> Result<Id, IrError> {
        let (lt, rt) = (self.type_of(left), self.type_of(right));
        if lt != rt {
            return err(format!("{op:?} needs operands of one type, found {lt} and {rt}"));
        }
        let ty = match op {
            BinaryOp::And | BinaryOp::Or if lt == Type::Bool => Type::Bool,
            op if op.is_comparison() => Type::Bool,
            BinaryOp::Rem if lt.is_int() => lt,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div if lt.is_numeric() => lt,
            _ => return err(format!("{op:?} does not apply to {lt}")),
        };
        Ok(self.push(Node::Binary(op, left, right), ty))
    }

    /// `a + b`
    pub fn add(&mut self, a: Id, b: Id) -> Result<Id, IrError> {
        self.binary(BinaryOp::Add, a, b)
    }
    /// `a - b`
    pub fn sub(&mut self, a: Id, b: Id) -> Result<Id, IrError> {
        self.binary(BinaryOp::Sub, a, b)
    }
    /// `a * b`
    pub fn mul(&mut self, a: Id, b: Id) -> Result<Id, IrError> {
        self.binary(BinaryOp::Mul, a, b)
    }
    /// `a / b`
    pub fn div(&mut self, a: Id, b: Id) -> Result<Id, IrError> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `round(arg, digits)` for floats.
    pub fn round(&mut self, arg: Id, digits: i32) -> Result<Id, IrError> {
        let t = self.type_of(arg);
        if !t.is_float() {
            return err(format!("round does not apply to {t}"));
        }
        Ok(self.push(Node::Round(arg, digits), t))
    }

    /// `CAST(arg AS to)`.
    pub fn cast(&mut self, arg: Id, to: Type) -> Id {
        if self.type_of(arg) == to {
            return arg;
        }
        self.push(Node::Cast(arg, to), to)
    }

    fn branch(&mut self, cond: Id, then: Id, otherwise: Id, lazy: bool) -> Result<Id, IrError> {
        if self.type_of(cond) != Type::Bool {
            return err(format!("a condition must be bool, found {}", self.type_of(cond)));
        }
        let (tt, ot) = (self.type_of(then), self.type_of(otherwise));
        if tt != ot {
            return err(format!("if branches have different types {tt} and {ot}"));
        }
        Ok(self.push(Node::If { cond, then, otherwise, lazy }, tt))
    }

    /// `if cond { then } else { otherwise }` evaluating only the taken branch.
    pub fn if_else(&mut self, cond: Id, then: Id, otherwise: Id) -> Result<Id, IrError> {
        self.branch(cond, then, otherwise, true)
    }

    /// `CASE WHEN cond THEN then ELSE otherwise END` evaluating both branches.
    pub fn select(&mut self, cond: Id, then: Id, otherwise: Id) -> Result<Id, IrError> {
        self.branch(cond, then, otherwise, false)
    }

    /// Marks `arg` as not null (see [`Node::Strict`]).
    pub fn assume_valid(&mut self, arg: Id) -> Id {
        let t = self.type_of(arg);
        self.push(Node::AssumeValid(arg), t)
    }

    /// `body`, null where any of `args` is null (see [`Node::Strict`]).
    pub fn strict(&mut self, body: Id, args: Vec<Id>) -> Id {
        let t = self.type_of(body);
        self.push(Node::Strict(body, args), t)
    }

    /// A loop over `start..end` (both `i64`); returns the loop node, whose results are read
    /// with [`Builder::loop_out`]. `next` computes the state after an iteration from
    /// [`Builder::get`] of `index` and of the state variables.
    pub fn for_range(
        &mut self,
        index: Var,
        start: Id,
        end: Id,
        state: Vec<(Var, Id)>,
        next: Vec<Id>,
    ) -> Result<Id, IrError> {
        if self.vars[index.0 as usize] != Type::I64
            || self.type_of(start) != Type::I64
            || self.type_of(end) != Type::I64
        {
            return err("a loop's index and range must be i64");
        }
        if state.is_empty() || state.len() != next.len() {
            return err("a loop needs as many next values as state variables (at least one)");
        }
        for ((v, init), n) in state.iter().zip(&next) {
            let vt = self.vars[v.0 as usize];
            if self.type_of(*init) != vt || self.type_of(*n) != vt {
                return err(format!("loop state of type {vt} gets a value of another type"));
            }
        }
        let ty = self.vars[state[0].0.0 as usize];
        Ok(self.push(Node::Loop { index, start, end, state, next }, ty))
    }

    /// The final value of state variable `k` of `lp`.
    pub fn loop_out(&mut self, lp: Id, k: u32) -> Result<Id, IrError> {
        let Node::Loop { state, .. } = self.node(lp) else { return err("loop_out of a node that is not a loop") };
        let Some((v, _)) = state.get(k as usize) else { return err("loop_out of a missing state variable") };
        let ty = self.vars[v.0 as usize];
        Ok(self.push(Node::LoopOut(lp, k), ty))
    }
}

/// The range of an integer type.
pub fn int_range(ty: Type) -> Option<(i128, i128)> {
    Some(match ty {
        Type::I8 => (i8::MIN as i128, i8::MAX as i128),
        Type::I16 => (i16::MIN as i128, i16::MAX as i128),
        Type::I32 => (i32::MIN as i128, i32::MAX as i128),
        Type::I64 => (i64::MIN as i128, i64::MAX as i128),
        Type::U8 => (0, u8::MAX as i128),
        Type::U16 => (0, u16::MAX as i128),
        Type::U32 => (0, u32::MAX as i128),
        Type::U64 => (0, u64::MAX as i128),
        _ => return None,
    })
}
