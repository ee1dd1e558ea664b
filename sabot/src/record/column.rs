//! Typed column handles and expressions: [`Col`] and [`TypedExpr`].
//!
//! `#[derive(Record)]` generates a struct of [`Col`]s (`Trade::cols()`); comparing or combining
//! them builds ordinary [`Expr`] trees, but only between values of the same Rust type:
//!
//! ```
//! use sabot::Record;
//!
//! #[derive(Record)]
//! struct Trade { symbol: String, price: f64, qty: i64 }
//!
//! let c = Trade::cols();
//! let big = c.price.gt(100.0).and(c.qty.gt_eq(10)).and(c.symbol.starts_with("AB"));
//! assert_eq!(big.to_string(), "price > 100.0 AND qty >= 10 AND starts_with(symbol, 'AB')");
//! assert_eq!((c.price * 2.0).alias("double").to_string(), "price * 2.0 AS double");
//! ```
//!
//! ```compile_fail
//! # use sabot::Record;
//! # #[derive(Record)]
//! # struct Trade { price: f64 }
//! let e = Trade::cols().price.gt("abc"); // a string is not an `f64` operand
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops;

use super::{RecordField, Timestamp};
use crate::expr::{Expr, ScalarValue, col, lit};

/// A handle on the column `name` whose values are of Rust type `T` (the field's type).
///
/// Methods build [`TypedExpr`]s; operands must have `T`'s non-optional type
/// ([`RecordField::NonNull`]): a `T` value, another `Col` or a `TypedExpr` of that type.
///
/// ```
/// use sabot::record::Col;
/// let price: Col<f64> = Col::new("price");
/// let tax: Col<Option<f64>> = Col::new("tax");
/// assert_eq!(price.lt_eq(tax).to_string(), "price <= tax");
/// assert_eq!((price + tax).to_string(), "price + tax");
/// ```
pub struct Col<T> {
    name: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Col<T> {
    /// The handle on column `name`.
    ///
    /// ```
    /// let c = sabot::record::Col::<i64>::new("qty");
    /// assert_eq!(c.name(), "qty");
    /// ```
    pub const fn new(name: &'static str) -> Self {
        Col { name, _type: PhantomData }
    }

    /// The column's name.
    ///
    /// ```
    /// assert_eq!(sabot::record::Col::<bool>::new("ok").name(), "ok");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The untyped column reference.
    ///
    /// ```
    /// use sabot::expr::col;
    /// assert_eq!(sabot::record::Col::<u8>::new("b").expr(), col("b"));
    /// ```
    pub fn expr(&self) -> Expr {
        col(self.name)
    }
}

impl<T> Clone for Col<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Col<T> {}

impl<T> fmt::Debug for Col<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Col<{}>({:?})", std::any::type_name::<T>(), self.name)
    }
}

impl<T> fmt::Display for Col<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl<T> From<Col<T>> for Expr {
    fn from(c: Col<T>) -> Expr {
        c.expr()
    }
}

/// An [`Expr`] whose values have Rust type `T` (checked when it is built, not when it runs).
///
/// ```
/// use sabot::record::{Col, TypedExpr};
/// let qty = Col::<i64>::new("qty");
/// let e: TypedExpr<bool> = (qty * 2).gt(qty).not();
/// assert_eq!(e.to_string(), "NOT (qty * 2 > qty)");
/// let untyped: sabot::expr::Expr = e.into();
/// ```
pub struct TypedExpr<T> {
    expr: Expr,
    _type: PhantomData<fn() -> T>,
}

impl<T> TypedExpr<T> {
    /// Wraps `expr`, trusting the caller that its values have type `T`.
    ///
    /// ```
    /// use sabot::expr::{col, lit};
    /// use sabot::record::TypedExpr;
    /// let e = TypedExpr::<f64>::new_unchecked(col("x") + lit(1.0));
    /// assert_eq!(e.gt(2.0).to_string(), "x + 1.0 > 2.0");
    /// ```
    pub fn new_unchecked(expr: Expr) -> Self {
        TypedExpr { expr, _type: PhantomData }
    }

    /// The untyped expression.
    ///
    /// ```
    /// use sabot::record::Col;
    /// assert_eq!(Col::<i32>::new("a").gt(1).expr().to_string(), "a > 1");
    /// ```
    pub fn expr(&self) -> Expr {
        self.expr.clone()
    }

    /// The untyped expression, without cloning.
    ///
    /// ```
    /// use sabot::record::Col;
    /// let e = Col::<i32>::new("a").is_null().into_expr();
    /// assert_eq!(e.to_string(), "a IS NULL");
    /// ```
    pub fn into_expr(self) -> Expr {
        self.expr
    }
}

impl<T> Clone for TypedExpr<T> {
    fn clone(&self) -> Self {
        TypedExpr::new_unchecked(self.expr.clone())
    }
}

impl<T> fmt::Debug for TypedExpr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypedExpr<{}>({:?})", std::any::type_name::<T>(), self.expr)
    }
}

impl<T> fmt::Display for TypedExpr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl<T> From<TypedExpr<T>> for Expr {
    fn from(e: TypedExpr<T>) -> Expr {
        e.expr
    }
}

/// A value usable where an expression of type `T` is expected: a `T` literal, a [`Col`] or a
/// [`TypedExpr`] of type `T` (strings also accept `&str`, binary also accepts `&[u8]`).
///
/// ```
/// use sabot::record::{Col, Operand};
/// fn to_expr(o: impl Operand<f64>) -> String { o.into_operand().to_string() }
/// assert_eq!(to_expr(1.5), "1.5");
/// assert_eq!(to_expr(Col::<Option<f64>>::new("p")), "p");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an operand of type `{T}`",
    label = "expected a `{T}` value, a `Col` or a `TypedExpr` of type `{T}`",
    note = "typed column expressions only combine values of the same Rust type"
)]
pub trait Operand<T> {
    /// The operand as an untyped expression.
    fn into_operand(self) -> Expr;
}

macro_rules! literal_operands {
    ($($t:ty => $($from:ty),+;)*) => {$($(
        impl Operand<$t> for $from {
            fn into_operand(self) -> Expr {
                lit(ScalarValue::from(self))
            }
        }
    )+)*};
}

literal_operands! {
    bool => bool;
    i8 => i8;
    i16 => i16;
    i32 => i32;
    i64 => i64;
    u8 => u8;
    u16 => u16;
    u32 => u32;
    u64 => u64;
    f32 => f32;
    f64 => f64;
    String => String, &str;
    Vec<u8> => Vec<u8>;
    Timestamp => Timestamp;
}

impl Operand<String> for &String {
    fn into_operand(self) -> Expr {
        lit(self.as_str())
    }
}

impl Operand<Vec<u8>> for &[u8] {
    fn into_operand(self) -> Expr {
        lit(self.to_vec())
    }
}

impl<U: RecordField> Operand<U::NonNull> for Col<U> {
    fn into_operand(self) -> Expr {
        self.expr()
    }
}

impl<U: RecordField> Operand<U::NonNull> for TypedExpr<U> {
    fn into_operand(self) -> Expr {
        self.expr
    }
}

/// The numeric types: those with arithmetic (`+ - * /`, unary `-`).
///
/// ```
/// fn is_numeric<T: sabot::record::Numeric>() {}
/// is_numeric::<f64>();
/// is_numeric::<u8>();
/// ```
pub trait Numeric: RecordField {}
impl Numeric for i8 {}
impl Numeric for i16 {}
impl Numeric for i32 {}
impl Numeric for i64 {}
impl Numeric for u8 {}
impl Numeric for u16 {}
impl Numeric for u32 {}
impl Numeric for u64 {}
impl Numeric for f32 {}
impl Numeric for f64 {}

/// Methods shared by [`Col`] and [`TypedExpr`]; `$ty` is the handle's type parameter.
macro_rules! typed_methods {
    ($handle:ident) => {
        impl<T: RecordField> $handle<T> {
            /// `self = other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<String>::new("s").eq("x").to_string(), "s = 'x'");
            /// ```
            #[allow(clippy::should_implement_trait)]
            pub fn eq(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).eq(other.into_operand()))
            }

            /// `self != other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<bool>::new("b").not_eq(true).to_string(), "b != true");
            /// ```
            pub fn not_eq(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).not_eq(other.into_operand()))
            }

            /// `self < other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<i64>::new("a").lt(Col::<i64>::new("b")).to_string(), "a < b");
            /// ```
            pub fn lt(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).lt(other.into_operand()))
            }

            /// `self <= other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<u32>::new("a").lt_eq(7).to_string(), "a <= 7");
            /// ```
            pub fn lt_eq(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).lt_eq(other.into_operand()))
            }

            /// `self > other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<f64>::new("price").gt(100.0).to_string(), "price > 100.0");
            /// ```
            pub fn gt(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).gt(other.into_operand()))
            }

            /// `self >= other`.
            ///
            /// ```
            /// use sabot::record::{Col, Timestamp};
            /// let ts = Col::<Timestamp>::new("ts");
            /// assert_eq!(ts.gt_eq(Timestamp::from_millis(5)).to_string(), "ts >= 5ms");
            /// ```
            pub fn gt_eq(self, other: impl Operand<T::NonNull>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).gt_eq(other.into_operand()))
            }

            /// `low <= self AND self <= high`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<i32>::new("x").between(1, 5).to_string(), "x >= 1 AND x <= 5");
            /// ```
            pub fn between(
                self,
                low: impl Operand<T::NonNull>,
                high: impl Operand<T::NonNull>,
            ) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).between(low.into_operand(), high.into_operand()))
            }

            /// `self IS NULL`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<Option<i64>>::new("x").is_null().to_string(), "x IS NULL");
            /// ```
            pub fn is_null(self) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).is_null())
            }

            /// `self IS NOT NULL`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<Option<i64>>::new("x").is_not_null().to_string(), "x IS NOT NULL");
            /// ```
            pub fn is_not_null(self) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).is_not_null())
            }

            /// Names the output column.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<f64>::new("p").alias("price").to_string(), "p AS price");
            /// ```
            pub fn alias(self, name: impl Into<String>) -> TypedExpr<T::NonNull> {
                TypedExpr::new_unchecked(Expr::from(self).alias(name))
            }
        }

        impl<T: RecordField<NonNull = bool>> $handle<T> {
            /// `self AND other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// let (a, b) = (Col::<bool>::new("a"), Col::<Option<bool>>::new("b"));
            /// assert_eq!(a.and(b).to_string(), "a AND b");
            /// ```
            pub fn and(self, other: impl Operand<bool>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).and(other.into_operand()))
            }

            /// `self OR other`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// let x = Col::<i64>::new("x");
            /// assert_eq!(x.lt(0).or(x.gt(9)).to_string(), "x < 0 OR x > 9");
            /// ```
            pub fn or(self, other: impl Operand<bool>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).or(other.into_operand()))
            }

            /// `NOT self`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<bool>::new("ok").not().to_string(), "NOT (ok)");
            /// ```
            #[allow(clippy::should_implement_trait)]
            pub fn not(self) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(!Expr::from(self))
            }
        }

        impl<T: RecordField<NonNull = String>> $handle<T> {
            /// Whether the string starts with `prefix`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<String>::new("s").starts_with("ab").to_string(), "starts_with(s, 'ab')");
            /// ```
            pub fn starts_with(self, prefix: impl Operand<String>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).starts_with(prefix.into_operand()))
            }

            /// Whether the string ends with `suffix`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// assert_eq!(Col::<String>::new("s").ends_with("z").to_string(), "ends_with(s, 'z')");
            /// ```
            pub fn ends_with(self, suffix: impl Operand<String>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).ends_with(suffix.into_operand()))
            }

            /// Whether the string contains `needle`.
            ///
            /// ```
            /// use sabot::record::Col;
            /// let s = Col::<Option<String>>::new("s");
            /// assert_eq!(s.contains("x").to_string(), "contains(s, 'x')");
            /// ```
            pub fn contains(self, needle: impl Operand<String>) -> TypedExpr<bool> {
                TypedExpr::new_unchecked(Expr::from(self).contains(needle.into_operand()))
            }
        }

        impl<T> ops::Neg for $handle<T>
        where
            T: RecordField,
            T::NonNull: Numeric,
        {
            type Output = TypedExpr<T::NonNull>;
            fn neg(self) -> Self::Output {
                TypedExpr::new_unchecked(-Expr::from(self))
            }
        }

        impl<T> ops::Not for $handle<T>
        where
            T: RecordField<NonNull = bool>,
        {
            type Output = TypedExpr<bool>;
            fn not(self) -> Self::Output {
                TypedExpr::new_unchecked(!Expr::from(self))
            }
        }

        impl<T, R> ops::BitAnd<R> for $handle<T>
        where
            T: RecordField<NonNull = bool>,
            R: Operand<bool>,
        {
            type Output = TypedExpr<bool>;
            fn bitand(self, rhs: R) -> Self::Output {
                TypedExpr::new_unchecked(Expr::from(self).and(rhs.into_operand()))
            }
        }

        impl<T, R> ops::BitOr<R> for $handle<T>
        where
            T: RecordField<NonNull = bool>,
            R: Operand<bool>,
        {
            type Output = TypedExpr<bool>;
            fn bitor(self, rhs: R) -> Self::Output {
                TypedExpr::new_unchecked(Expr::from(self).or(rhs.into_operand()))
            }
        }

        typed_methods!(@arith $handle, Add, add);
        typed_methods!(@arith $handle, Sub, sub);
        typed_methods!(@arith $handle, Mul, mul);
        typed_methods!(@arith $handle, Div, div);
    };
    (@arith $handle:ident, $tr:ident, $method:ident) => {
        impl<T, R> ops::$tr<R> for $handle<T>
        where
            T: RecordField,
            T::NonNull: Numeric,
            R: Operand<T::NonNull>,
        {
            type Output = TypedExpr<T::NonNull>;
            fn $method(self, rhs: R) -> Self::Output {
                TypedExpr::new_unchecked(ops::$tr::$method(Expr::from(self), rhs.into_operand()))
            }
        }
    };
}

typed_methods!(Col);
typed_methods!(TypedExpr);
