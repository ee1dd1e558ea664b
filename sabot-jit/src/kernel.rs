//! Compiled kernels and their safe API over Arrow arrays.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::ArrayData;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, make_array};
use arrow::buffer::{BooleanBuffer, Buffer, MutableBuffer, NullBuffer};
use arrow::datatypes::*;
use arrow::error::ArrowError;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;

use crate::ir::{Id, Program, Type};
use crate::lower::{self, Args, ERR_CAST, ERR_DIVIDE_BY_ZERO, ERR_OVERFLOW, KernelFn, Lowered};

/// What to compile: a program, an optional filter predicate among its nodes, and which inputs
/// come with a validity bitmap.
///
/// With a predicate, the kernel computes the selection and the program's outputs for the
/// selected rows only, compacted (a fused filter + projection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// The function of one row; its outputs are the projected columns.
    pub program: Program,
    /// A boolean node of the program: rows where it is true (not null) are kept.
    pub predicate: Option<Id>,
    /// Per input: whether it may have nulls (a kernel for nullable inputs also takes arrays
    /// without nulls; one for non-nullable inputs rejects arrays with nulls).
    pub nullable: Vec<bool>,
}

impl KernelSpec {
    /// A projection of the program's outputs.
    pub fn project(program: Program, nullable: Vec<bool>) -> KernelSpec {
        KernelSpec { program, predicate: None, nullable }
    }

    /// A filter on `predicate`, computing the program's outputs for the kept rows.
    pub fn filter(program: Program, predicate: Id, nullable: Vec<bool>) -> KernelSpec {
        KernelSpec { program, predicate: Some(predicate), nullable }
    }
}

/// Why a kernel could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// The program uses something the JIT does not support.
    Unsupported(String),
    /// Cranelift rejected the generated code.
    Codegen(String),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::Unsupported(s) => write!(f, "unsupported: {s}"),
            CompileError::Codegen(s) => write!(f, "code generation failed: {s}"),
        }
    }
}

impl std::error::Error for CompileError {}

/// The process's JIT module: every kernel is a function of it (code lives as long as the
/// process, which is what the kernel cache wants).
struct Jit {
    module: JITModule,
    builder_ctx: FunctionBuilderContext,
}

// SAFETY: the module is only used under the mutex; the raw pointers it holds point to code and
// symbol tables that are not tied to a thread.
unsafe impl Send for Jit {}

fn jit() -> Result<&'static Mutex<Jit>, CompileError> {
    static JIT: OnceLock<Result<Mutex<Jit>, String>> = OnceLock::new();
    JIT.get_or_init(|| {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| e.to_string());
        set(&mut flags, "opt_level", "speed")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        let isa = cranelift_native::builder()
            .map_err(|e| e.to_string())?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        Ok(Mutex::new(Jit { module: JITModule::new(builder), builder_ctx: FunctionBuilderContext::new() }))
    })
    .as_ref()
    .map_err(|e| CompileError::Codegen(format!("no JIT for this host: {e}")))
}

/// A compiled kernel.
pub struct Kernel {
    spec: KernelSpec,
    func: KernelFn,
    lowered: Lowered,
    compile_time: Duration,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("outputs", &self.spec.program.outputs.len())
            .field("predicate", &self.spec.predicate.is_some())
            .field("lanes", &self.lowered.lanes)
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

/// The result of running a kernel.
#[derive(Debug, Clone)]
pub struct KernelOutput {
    /// With a predicate: the selected rows.
    pub selection: Option<BooleanArray>,
    /// The outputs (with a predicate: for the selected rows only).
    pub columns: Vec<ArrayRef>,
}

impl Kernel {
    /// Compiles `spec` (see also [`crate::KernelCache`], which compiles each spec once).
    pub fn compile(spec: KernelSpec) -> Result<Kernel, CompileError> {
        Self::compile_with(spec, true)
    }

    /// Compiles `spec`, using 2-lane SIMD when `vectorize` and the program allows it.
    pub fn compile_with(spec: KernelSpec, vectorize: bool) -> Result<Kernel, CompileError> {
        let start = Instant::now();
        if let Some(p) = spec.predicate
            && spec.program.type_of(p) != Type::Bool
        {
            return Err(CompileError::Unsupported("the predicate is not boolean".into()));
        }
        let mut guard = jit()?.lock().map_err(|_| CompileError::Codegen("the JIT lock is poisoned".into()))?;
        let Jit { module, builder_ctx } = &mut *guard;
        let sig = lower::signature(module.target_config().default_call_conv);
        let mut ctx = module.make_context();
        ctx.func.signature = sig.clone();
        let lowered = {
            let mut fb = FunctionBuilder::new(&mut ctx.func, builder_ctx);
            let lowered = lower::build(&mut fb, &spec.program, &spec.nullable, spec.predicate, vectorize);
            match lowered {
                Ok(l) => {
                    fb.finalize(module.isa().frontend_config());
                    l
                }
                Err(e) => {
                    // Leave the builder context reusable (`fb` borrows it and ends here).
                    let _ = fb;
                    *builder_ctx = FunctionBuilderContext::new();
                    return Err(CompileError::Unsupported(e.0));
                }
            }
        };
        let id = module.declare_anonymous_function(&sig).map_err(|e| CompileError::Codegen(e.to_string()))?;
        let defined = module.define_function(id, &mut ctx);
        module.clear_context(&mut ctx);
        defined.map_err(|e| CompileError::Codegen(format!("{e:?}")))?;
        module.finalize_definitions().map_err(|e| CompileError::Codegen(e.to_string()))?;
        let code = module.get_finalized_function(id);
        // SAFETY: the function was generated with `lower::signature`, i.e. `KernelFn`.
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
        Ok(Kernel { spec, func, lowered, compile_time: start.elapsed() })
    }

    /// What was compiled.
    pub fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    /// How long compiling took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Rows per vector iteration (1 when the kernel is scalar).
    pub fn lanes(&self) -> u8 {
        self.lowered.lanes
    }

    /// Evaluates the outputs over every row (a kernel without predicate).
    pub fn project(&self, inputs: &[&dyn Array]) -> Result<Vec<ArrayRef>, ArrowError> {
        if self.spec.predicate.is_some() {
            return Err(ArrowError::InvalidArgumentError("project needs a kernel without predicate".into()));
        }
        Ok(self.run(inputs)?.columns)
    }

    /// The rows where the predicate is true (a kernel with a predicate; outputs are ignored).
    pub fn filter(&self, inputs: &[&dyn Array]) -> Result<BooleanArray, ArrowError> {
        self.run(inputs)?
            .selection
            .ok_or_else(|| ArrowError::InvalidArgumentError("filter needs a kernel with a predicate".into()))
    }

    /// The selection and the outputs for the selected rows, in one pass.
    pub fn filter_project(&self, inputs: &[&dyn Array]) -> Result<(BooleanArray, Vec<ArrayRef>), ArrowError> {
        let out = self.run(inputs)?;
        let selection = out
            .selection
            .ok_or_else(|| ArrowError::InvalidArgumentError("filter_project needs a kernel with a predicate".into()))?;
        Ok((selection, out.columns))
    }

    /// Runs the kernel over `inputs` (one array per program input, of its type, equal lengths).
    pub fn run(&self, inputs: &[&dyn Array]) -> Result<KernelOutput, ArrowError> {
        let len = inputs.first().map(|a| a.len()).ok_or_else(|| {
            ArrowError::InvalidArgumentError("a kernel without inputs needs a length: use run_len".into())
        })?;
        self.run_len(inputs, len)
    }

    /// Runs the kernel over `len` rows of `inputs` (which must all have `len` rows; a program
    /// without inputs still produces `len` rows).
    pub fn run_len(&self, inputs: &[&dyn Array], len: usize) -> Result<KernelOutput, ArrowError> {
        let program = &self.spec.program;
        if inputs.len() != program.inputs.len() {
            return Err(ArrowError::InvalidArgumentError(format!(
                "kernel takes {} inputs, got {}",
                program.inputs.len(),
                inputs.len()
            )));
        }
        let words = len.div_ceil(64);
        // Keeps realigned bitmaps alive while the kernel runs.
        let mut owned: Vec<Vec<u64>> = vec![];
        let mut values: Vec<*const u8> = vec![];
        let mut validity: Vec<*const u64> = vec![];
        for (i, (array, &ty)) in inputs.iter().zip(&program.inputs).enumerate() {
            if array.len() != len {
                return Err(ArrowError::InvalidArgumentError("kernel inputs differ in length".into()));
            }
            if *array.data_type() != ty.to_arrow() {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "kernel input {i} is {}, expected {}",
                    array.data_type(),
                    ty.to_arrow()
                )));
            }
            let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
            match (&nulls, self.spec.nullable[i]) {
                (Some(n), true) => {
                    owned.push(bit_words(n.inner()));
                    validity.push(owned.last().expect("pushed").as_ptr());
                }
                (Some(_), false) => {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "kernel input {i} has nulls but the kernel was compiled for none"
                    )));
                }
                (None, true) => {
                    owned.push(vec![u64::MAX; words]);
                    validity.push(owned.last().expect("pushed").as_ptr());
                }
                (None, false) => validity.push(std::ptr::null()),
            }
            if ty == Type::Bool {
                owned.push(bit_words(array.as_boolean().values()));
                values.push(owned.last().expect("pushed").as_ptr() as *const u8);
            } else {
                values.push(values_ptr(*array, ty));
            }
        }
        let outputs = program.output_types();
        let mut out_values: Vec<MutableBuffer> = vec![];
        let mut out_validity: Vec<Vec<u64>> = vec![];
        for (k, &t) in outputs.iter().enumerate() {
            out_values.push(if t == Type::Bool {
                MutableBuffer::from_len_zeroed(words * 8)
            } else {
                MutableBuffer::with_capacity(len * (t.bits() as usize / 8))
            });
            out_validity.push(if self.lowered.output_nullable[k] { vec![0u64; words] } else { vec![] });
        }
        let mut selection = vec![0u64; if self.spec.predicate.is_some() { words } else { 0 }];
        let mut count = 0u64;
        let out_ptrs: Vec<*mut u8> = out_values.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let out_valid_ptrs: Vec<*mut u64> = out_validity.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let args = Args {
            len: len as u64,
            values: values.as_ptr(),
            validity: validity.as_ptr(),
            out_values: out_ptrs.as_ptr(),
            out_validity: out_valid_ptrs.as_ptr(),
            selection: selection.as_mut_ptr(),
            count: &mut count,
        };
        // SAFETY: every pointer covers `len` rows (or `ceil(len / 64)` words) as the generated
        // code expects: inputs were checked for type and length above, outputs were allocated
        // for `len` rows, and the code writes no further than that.
        let errors = unsafe { (self.func)(&args) };
        drop(owned);
        if errors & ERR_DIVIDE_BY_ZERO != 0 {
            return Err(ArrowError::DivideByZero);
        }
        if errors & ERR_OVERFLOW != 0 {
            return Err(ArrowError::ArithmeticOverflow("integer overflow in a compiled expression".into()));
        }
        if errors & ERR_CAST != 0 {
            return Err(ArrowError::CastError("value out of range in a compiled cast".into()));
        }
        let (selection, rows) = if self.spec.predicate.is_some() {
            let buffer = BooleanBuffer::new(Buffer::from_vec(selection), 0, len);
            (Some(BooleanArray::new(buffer, None)), count as usize)
        } else {
            (None, len)
        };
        let mut columns = vec![];
        for ((t, values), validity) in outputs.iter().zip(out_values).zip(out_validity) {
            let nulls = if validity.is_empty() {
                None
            } else {
                Some(NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(validity), 0, rows)))
                    .filter(|n| n.null_count() > 0)
            };
            let mut values = values;
            if *t != Type::Bool {
                // SAFETY: the kernel wrote rows `0..rows` of this buffer.
                unsafe { values.set_len(rows * (t.bits() as usize / 8)) };
            }
            let data = ArrayData::builder(t.to_arrow()).len(rows).add_buffer(values.into()).nulls(nulls).build()?;
            columns.push(make_array(data));
        }
        Ok(KernelOutput { selection, columns })
    }
}

/// The bits of `buffer` as 64-bit words starting at its first bit.
fn bit_words(buffer: &BooleanBuffer) -> Vec<u64> {
    buffer.bit_chunks().iter_padded().collect()
}

/// The address of the first value of a primitive array of IR type `t`.
fn values_ptr(array: &dyn Array, t: Type) -> *const u8 {
    macro_rules! ptr {
        ($arrow:ty) => {
            array.as_primitive::<$arrow>().values().as_ptr() as *const u8
        };
    }
    match t {
        Type::I8 => ptr!(Int8Type),
        Type::I16 => ptr!(Int16Type),
        Type::I32 => ptr!(Int32Type),
        Type::I64 => ptr!(Int64Type),
        Type::U8 => ptr!(UInt8Type),
        Type::U16 => ptr!(UInt16Type),
        Type::U32 => ptr!(UInt32Type),
        Type::U64 => ptr!(UInt64Type),
        Type::F32 => ptr!(Float32Type),
        Type::F64 => ptr!(Float64Type),
        Type::Bool => unreachable!("boolean inputs are passed as words"),
    }
}

/// A kernel shared between threads.
pub type SharedKernel = Arc<Kernel>;
