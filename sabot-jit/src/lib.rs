//! `sabot-jit`: scalar expressions and UDFs compiled by Cranelift into fused loops over Arrow
//! buffers.
//!
//! A [`ir::Program`] (built with [`ir::Builder`]) describes a function of one row. A
//! [`KernelSpec`] adds an optional filter predicate and which inputs may be null; [`Kernel`]
//! compiles it into one native function that loops over whole Arrow arrays — no call per row,
//! intermediate values kept in registers, 2-lane SIMD with a scalar tail when the program allows,
//! validity bitmaps read and written a 64-bit word per 64 rows — and [`KernelCache`] compiles each
//! spec once.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Array, AsArray, Float64Array};
//! use arrow::datatypes::Float64Type;
//! use sabot_jit::ir::{Builder, Type};
//! use sabot_jit::{Kernel, KernelSpec};
//!
//! // filter(a - b > 0.5) and compute (a - b) * 2 for the kept rows, in one pass
//! let mut b = Builder::new(&[Type::F64, Type::F64]);
//! let (x, y) = (b.input(0), b.input(1));
//! let d = b.sub(x, y).unwrap();
//! let half = b.f64(0.5);
//! let keep = b.binary(sabot_jit::ir::BinaryOp::Gt, d, half).unwrap();
//! let two = b.f64(2.0);
//! let out = b.mul(d, two).unwrap();
//! let spec = KernelSpec::filter(b.finish(vec![out]), keep, vec![false, false]);
//! let kernel = Kernel::compile(spec).unwrap();
//! let a = Float64Array::from(vec![1.0, 2.0, 3.0]);
//! let c = Float64Array::from(vec![1.0, 1.0, 1.0]);
//! let (selection, columns) = kernel.filter_project(&[&a, &c]).unwrap();
//! assert_eq!(selection.true_count(), 2);
//! assert_eq!(columns[0].as_primitive::<Float64Type>().values(), &[2.0, 4.0]);
//! ```

#![warn(missing_docs)]

mod cache;
pub mod ir;
mod kernel;
pub mod lower;

pub use cache::{CacheStats, KernelCache};
pub use kernel::{CompileError, Kernel, KernelOutput, KernelSpec, SharedKernel};
