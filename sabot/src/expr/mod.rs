//! Expressions: a small, inspectable tree evaluated over record batches.
//!
//! Expressions are built with [`col`], [`lit`] and the methods of [`Expr`]; the typed column
//! handles that `#[derive(Record)]` generates build the same trees with compile-time type checks.
//! They are evaluated column-at-a-time with Arrow's compute kernels ([`Expr::evaluate`]), follow
//! SQL null semantics, and stay plain data so that optimizers (and a JIT) can rewrite them.
//!
//! ```
//! use sabot::expr::{col, lit};
//! let e = col("amount").gt(lit(300)).and(col("category").eq(lit("A")));
//! assert_eq!(e.to_string(), "amount > 300 AND category = 'A'");
//! ```

mod aggregate;
mod eval;
mod function;
pub mod parse;
mod scalar;
mod types;
mod udaf;
pub mod udf;

use std::collections::BTreeSet;
use std::fmt;
use std::ops;
use std::sync::Arc;

use arrow::datatypes::DataType;

pub use aggregate::{AggExpr, AggFunc, avg, count, count_all, count_distinct, first, last, max, min, sum};
pub use eval::ColumnarValue;
#[cfg(feature = "jit")]
pub(crate) use eval::{LiteralSide, literal_side, operand_type};
pub use function::{ScalarFunction, coalesce, concat};
pub use parse::parse_expr;
pub use scalar::ScalarValue;
pub(crate) use types::common_type;
pub use udaf::{AggregateFunction, Udaf, udaf};
pub use udf::ScalarUdf;

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Multiply,
    /// `/`
    Divide,
    /// `%`
    Modulo,
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// Logical `AND` with SQL's three-valued logic.
    And,
    /// Logical `OR` with SQL's three-valued logic.
    Or,
}

impl BinaryOp {
    /// Whether the operator compares its operands (and yields a boolean).
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq)
    }

    /// Whether the operator is arithmetic.
    pub fn is_arithmetic(self) -> bool {
        matches!(self, BinaryOp::Plus | BinaryOp::Minus | BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo)
    }

    /// The comparison that holds when the operands are swapped (`a < b` ⇔ `b > a`).
    pub fn swap(self) -> Option<BinaryOp> {
        Some(match self {
            BinaryOp::Eq => BinaryOp::Eq,
            BinaryOp::NotEq => BinaryOp::NotEq,
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::LtEq => BinaryOp::GtEq,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::GtEq => BinaryOp::LtEq,
            _ => return None,
        })
    }

    fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => 3,
            BinaryOp::Plus | BinaryOp::Minus => 4,
            BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => 5,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Plus => "+",
            BinaryOp::Minus => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// An expression tree over the columns of a record batch.
///
/// ```
/// use sabot::expr::{col, lit, when};
/// let tier = when(col("amount").gt(lit(1000.0)), lit("high")).otherwise(lit("low"));
/// assert_eq!(tier.to_string(), "CASE WHEN amount > 1000.0 THEN 'high' ELSE 'low' END");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A column of the input, by name.
    Column(String),
    /// A constant.
    Literal(ScalarValue),
    /// `left op right`.
    Binary {
        /// Left operand.
        left: Box<Expr>,
        /// The operator.
        op: BinaryOp,
        /// Right operand.
        right: Box<Expr>,
    },
    /// Logical negation.
    Not(Box<Expr>),
    /// Arithmetic negation.
    Negative(Box<Expr>),
    /// `expr IS NULL`.
    IsNull(Box<Expr>),
    /// `expr IS NOT NULL`.
    IsNotNull(Box<Expr>),
    /// A conversion to another type (SQL `CAST`: failures are errors).
    Cast {
        /// The value to convert.
        expr: Box<Expr>,
        /// The target type.
        to: DataType,
    },
    /// `CASE WHEN c1 THEN v1 ... ELSE otherwise END`.
    Case {
        /// `(condition, value)` pairs, tried in order.
        branches: Vec<(Expr, Expr)>,
        /// The value when no condition holds (NULL when absent).
        otherwise: Option<Box<Expr>>,
    },
    /// A built-in scalar function.
    Function {
        /// The function.
        func: ScalarFunction,
        /// Its arguments.
        args: Vec<Expr>,
    },
    /// A scalar user-defined function (see `#[sabot::udf]`).
    ScalarUdf {
        /// The function.
        udf: Arc<dyn ScalarUdf>,
        /// Its arguments.
        args: Vec<Expr>,
    },
    /// A named expression: the output column's name.
    Alias(Box<Expr>, String),
}

/// A reference to the column `name`.
///
/// ```
/// use sabot::expr::col;
/// assert_eq!(col("price").output_name(), "price");
/// ```
pub fn col(name: impl Into<String>) -> Expr {
    Expr::Column(name.into())
}

/// A constant expression.
///
/// ```
/// use sabot::expr::{lit, ScalarValue};
/// assert_eq!(lit(5i64), sabot::expr::Expr::Literal(ScalarValue::Int64(Some(5))));
/// ```
pub fn lit(value: impl Into<ScalarValue>) -> Expr {
    Expr::Literal(value.into())
}

/// Starts a `CASE WHEN` expression; finish it with [`CaseBuilder::otherwise`] or [`CaseBuilder::end`].
///
/// ```
/// use sabot::expr::{col, lit, when};
/// let sign = when(col("x").lt(lit(0)), lit(-1)).when(col("x").gt(lit(0)), lit(1)).otherwise(lit(0));
/// assert!(sign.to_string().starts_with("CASE WHEN x < 0 THEN -1 WHEN x > 0"));
/// ```
pub fn when(condition: Expr, value: Expr) -> CaseBuilder {
    CaseBuilder { branches: vec![(condition, value)] }
}

/// Builder returned by [`when`].
#[derive(Debug, Clone)]
pub struct CaseBuilder {
    branches: Vec<(Expr, Expr)>,
}

impl CaseBuilder {
    /// Adds another `WHEN condition THEN value` branch.
    pub fn when(mut self, condition: Expr, value: Expr) -> CaseBuilder {
        self.branches.push((condition, value));
        self
    }

    /// Finishes with the value used when no branch matches.
    pub fn otherwise(self, value: Expr) -> Expr {
        Expr::Case { branches: self.branches, otherwise: Some(Box::new(value)) }
    }

    /// Finishes with NULL when no branch matches.
    pub fn end(self) -> Expr {
        Expr::Case { branches: self.branches, otherwise: None }
    }
}

impl Expr {
    fn binary(self, op: BinaryOp, other: Expr) -> Expr {
        Expr::Binary { left: Box::new(self), op, right: Box::new(other) }
    }

    /// `self = other`
    pub fn eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Eq, other)
    }
    /// `self != other`
    pub fn not_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::NotEq, other)
    }
    /// `self < other`
    pub fn lt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Lt, other)
    }
    /// `self <= other`
    pub fn lt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::LtEq, other)
    }
    /// `self > other`
    pub fn gt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Gt, other)
    }
    /// `self >= other`
    pub fn gt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::GtEq, other)
    }
    /// `self AND other`
    pub fn and(self, other: Expr) -> Expr {
        self.binary(BinaryOp::And, other)
    }
    /// `self OR other`
    pub fn or(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Or, other)
    }
    /// `low <= self AND self <= high`
    pub fn between(self, low: Expr, high: Expr) -> Expr {
        self.clone().gt_eq(low).and(self.lt_eq(high))
    }
    /// `self IS NULL`
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }
    /// `self IS NOT NULL`
    pub fn is_not_null(self) -> Expr {
        Expr::IsNotNull(Box::new(self))
    }
    /// `CAST(self AS to)`
    pub fn cast(self, to: DataType) -> Expr {
        Expr::Cast { expr: Box::new(self), to }
    }
    /// Names the output column.
    pub fn alias(self, name: impl Into<String>) -> Expr {
        Expr::Alias(Box::new(self.unalias()), name.into())
    }

    /// The expression without a top-level alias.
    pub fn unalias(self) -> Expr {
        match self {
            Expr::Alias(inner, _) => *inner,
            other => other,
        }
    }

    /// The column this expression reads unchanged (through an alias), if it is one.
    pub fn as_column(&self) -> Option<&str> {
        match self {
            Expr::Column(name) => Some(name),
            Expr::Alias(inner, _) => inner.as_column(),
            _ => None,
        }
    }

    /// The name of the column this expression produces: its alias, its column name, or its text.
    pub fn output_name(&self) -> String {
        match self {
            Expr::Alias(_, name) => name.clone(),
            Expr::Column(name) => name.clone(),
            other => other.to_string(),
        }
    }

    /// The distinct column names this expression reads.
    pub fn columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| {
            if let Expr::Column(name) = e {
                out.insert(name.clone());
            }
        });
        out
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Column(_) | Expr::Literal(_) => {}
            Expr::Binary { left, right, .. } => {
                left.visit(f);
                right.visit(f);
            }
            Expr::Not(e) | Expr::Negative(e) | Expr::IsNull(e) | Expr::IsNotNull(e) | Expr::Alias(e, _) => e.visit(f),
            Expr::Cast { expr, .. } => expr.visit(f),
            Expr::Case { branches, otherwise } => {
                for (c, v) in branches {
                    c.visit(f);
                    v.visit(f);
                }
                if let Some(o) = otherwise {
                    o.visit(f);
                }
            }
            Expr::Function { args, .. } | Expr::ScalarUdf { args, .. } => args.iter().for_each(|a| a.visit(f)),
        }
    }

    /// Rebuilds the tree bottom-up, replacing each node by `f(node)`.
    pub fn transform(self, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
        let rebuilt = match self {
            leaf @ (Expr::Column(_) | Expr::Literal(_)) => leaf,
            Expr::Binary { left, op, right } => {
                Expr::Binary { left: Box::new(left.transform(f)), op, right: Box::new(right.transform(f)) }
            }
            Expr::Not(e) => Expr::Not(Box::new(e.transform(f))),
            Expr::Negative(e) => Expr::Negative(Box::new(e.transform(f))),
            Expr::IsNull(e) => Expr::IsNull(Box::new(e.transform(f))),
            Expr::IsNotNull(e) => Expr::IsNotNull(Box::new(e.transform(f))),
            Expr::Alias(e, name) => Expr::Alias(Box::new(e.transform(f)), name),
            Expr::Cast { expr, to } => Expr::Cast { expr: Box::new(expr.transform(f)), to },
            Expr::Case { branches, otherwise } => Expr::Case {
                branches: branches.into_iter().map(|(c, v)| (c.transform(f), v.transform(f))).collect(),
                otherwise: otherwise.map(|o| Box::new(o.transform(f))),
            },
            Expr::Function { func, args } => {
                Expr::Function { func, args: args.into_iter().map(|a| a.transform(f)).collect() }
            }
            Expr::ScalarUdf { udf, args } => {
                Expr::ScalarUdf { udf, args: args.into_iter().map(|a| a.transform(f)).collect() }
            }
        };
        f(rebuilt)
    }

    /// Splits a conjunction `a AND b AND c` into `[a, b, c]`.
    pub fn split_conjunction(&self) -> Vec<&Expr> {
        match self {
            Expr::Binary { left, op: BinaryOp::And, right } => {
                let mut parts = left.split_conjunction();
                parts.extend(right.split_conjunction());
                parts
            }
            Expr::Alias(inner, _) => inner.split_conjunction(),
            other => vec![other],
        }
    }

    /// Joins predicates with `AND`; `None` when there are none.
    pub fn conjunction(parts: impl IntoIterator<Item = Expr>) -> Option<Expr> {
        parts.into_iter().reduce(|a, b| a.and(b))
    }

    /// Replaces column references by the expressions they were defined as (`name -> expr`).
    pub fn substitute(self, definitions: &dyn Fn(&str) -> Option<Expr>) -> Expr {
        self.transform(&mut |e| match e {
            Expr::Column(ref name) => definitions(name).map(Expr::unalias).unwrap_or(e),
            other => other,
        })
    }
}

impl From<ScalarValue> for Expr {
    fn from(v: ScalarValue) -> Self {
        Expr::Literal(v)
    }
}

macro_rules! arith {
    ($tr:ident, $method:ident, $op:ident) => {
        impl ops::$tr for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.binary(BinaryOp::$op, rhs)
            }
        }
    };
}
arith!(Add, add, Plus);
arith!(Sub, sub, Minus);
arith!(Mul, mul, Multiply);
arith!(Div, div, Divide);
arith!(Rem, rem, Modulo);

impl ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        Expr::Negative(Box::new(self))
    }
}

impl ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn operand(f: &mut fmt::Formatter<'_>, e: &Expr, parent: BinaryOp, right: bool) -> fmt::Result {
            match e {
                Expr::Binary { op, .. }
                    if op.precedence() < parent.precedence() || (right && op.precedence() == parent.precedence()) =>
                {
                    write!(f, "({e})")
                }
                _ => write!(f, "{e}"),
            }
        }
        match self {
            Expr::Column(name) => f.write_str(name),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Binary { left, op, right } => {
                operand(f, left, *op, false)?;
                write!(f, " {} ", op.symbol())?;
                operand(f, right, *op, true)
            }
            Expr::Not(e) => write!(f, "NOT ({e})"),
            Expr::Negative(e) => write!(f, "-({e})"),
            Expr::IsNull(e) => write!(f, "{e} IS NULL"),
            Expr::IsNotNull(e) => write!(f, "{e} IS NOT NULL"),
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
            Expr::Case { branches, otherwise } => {
                f.write_str("CASE")?;
                for (c, v) in branches {
                    write!(f, " WHEN {c} THEN {v}")?;
                }
                if let Some(o) = otherwise {
                    write!(f, " ELSE {o}")?;
                }
                f.write_str(" END")
            }
            Expr::ScalarUdf { udf, args } => {
                write!(f, "{}(", udf.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Function { func, args } => {
                write!(f, "{func}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Alias(e, name) => write!(f, "{e} AS {name}"),
        }
    }
}
