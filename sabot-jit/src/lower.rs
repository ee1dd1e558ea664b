//! Lowering a [`Program`] to one Cranelift function: the whole loop over the buffers.
//!
//! The generated function takes a pointer to [`Args`] and returns an error mask (0 when every
//! row succeeded). Its shape:
//!
//! ```text
//! for each block of 64 rows:
//!     load one validity word per nullable input (and one value word per boolean input)
//!     for pairs of rows (when the program vectorizes): the row body on 2-lane vectors
//!     for the remaining rows: the row body on scalars
//!     store the block's selection word; stop early if an error was seen
//! ```
//!
//! The row body computes every output (and the filter predicate) from the inputs with no
//! calls: a null is a validity bit carried next to each value (or known statically to be
//! absent), errors are flags OR-ed into a register (masked by validity, so null rows never
//! fail), and division by zero cannot trap because the divisor is replaced before dividing.
//! With a predicate the outputs are compacted: row `i`'s values are written at the number of
//! rows selected before it, without branches.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, Endianness, InstBuilder, MemFlagsData, Signature, Type as ClType, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

use crate::ir::{BinaryOp, Id, Node, Program, Type, UnaryOp, Var, int_range};

/// Error mask bit: integer division by zero.
pub const ERR_DIVIDE_BY_ZERO: u64 = 1;
/// Error mask bit: integer overflow.
pub const ERR_OVERFLOW: u64 = 2;
/// Error mask bit: a cast out of range.
pub const ERR_CAST: u64 = 4;

/// What the compiled function reads and writes (`#[repr(C)]`, offsets are part of the ABI).
#[repr(C)]
#[derive(Debug)]
pub struct Args {
    /// Rows.
    pub len: u64,
    /// Per input: the first row's value (primitives), or 64-bit words of bits (booleans).
    pub values: *const *const u8,
    /// Per input: 64-bit validity words starting at row 0 (only read for nullable inputs).
    pub validity: *const *const u64,
    /// Per output: values (booleans: zeroed 64-bit words of bits).
    pub out_values: *const *mut u8,
    /// Per output: zeroed validity words (only written for outputs that may be null).
    pub out_validity: *const *mut u64,
    /// Selection words (with a predicate).
    pub selection: *mut u64,
    /// Set to the number of selected rows (with a predicate).
    pub count: *mut u64,
}

/// The signature of compiled kernels.
pub type KernelFn = unsafe extern "C" fn(*const Args) -> u64;

/// Why a program cannot be lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// What the lowering learned about the kernel besides its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// Per output: whether it may be null (its validity is written).
    pub output_nullable: Vec<bool>,
    /// Rows per vector iteration (1: scalar only).
    pub lanes: u8,
}

pub(crate) fn signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::I64));
    sig
}

/// Whether the program can run on 2-lane 64-bit vectors.
fn vectorizable(p: &Program, nodes: &[Id]) -> bool {
    let mut seen = vec![false; p.nodes.len()];
    let mut stack: Vec<Id> = nodes.to_vec();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.0 as usize], true) {
            continue;
        }
        let t = p.type_of(id);
        if !matches!(t, Type::Bool | Type::I64 | Type::F64) {
            return false;
        }
        let ok = match p.node(id) {
            Node::Input(_) | Node::Const(..) | Node::Null(_) | Node::Var(_) => true,
            Node::Unary(op, a) => {
                stack.push(*a);
                match op {
                    UnaryOp::Abs => t == Type::F64,
                    _ => true,
                }
            }
            Node::Binary(op, a, b) => {
                let operand = p.type_of(*a);
                stack.extend([*a, *b]);
                match op {
                    BinaryOp::Mul | BinaryOp::Div => operand == Type::F64,
                    BinaryOp::Rem => false,
                    _ => true,
                }
            }
            Node::If { cond, then, otherwise, .. } => {
                stack.extend([*cond, *then, *otherwise]);
                true
            }
            Node::Let(_, v, body) => {
                stack.extend([*v, *body]);
                true
            }
            Node::Strict(body, args) => {
                stack.push(*body);
                stack.extend(args.iter().copied());
                true
            }
            Node::AssumeValid(a) => {
                stack.push(*a);
                true
            }
            // Loops over a constant range run both lanes together.
            Node::Loop { start, end, state, next, .. } => {
                let constant = |id: &Id| matches!(p.node(*id), Node::Const(..));
                stack.extend(state.iter().map(|(_, init)| *init));
                stack.extend(next.iter().copied());
                constant(start) && constant(end)
            }
            Node::LoopOut(lp, _) => {
                stack.push(*lp);
                true
            }
            Node::Cast(a, to) => {
                stack.push(*a);
                p.type_of(*a) == Type::I64 && *to == Type::F64
            }
            Node::Round(..) => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A lowered value: its value and, unless it is statically non-null, its validity (a boolean in
/// the lane representation: `i8` 0/1 for scalars, all-ones lanes for vectors).
#[derive(Clone, Copy, Debug)]
struct Val {
    v: Value,
    valid: Option<Value>,
}

struct Row {
    /// Absolute row index of lane 0 (`i64`).
    row: Value,
    /// Row index within the block (`i64`).
    j: Value,
}

struct Ctx<'a, 'b> {
    p: &'a Program,
    nullable: &'a [bool],
    fb: &'a mut FunctionBuilder<'b>,
    lanes: u8,
    /// Per input: the values pointer.
    in_ptr: &'a [Value],
    /// Per input: this block's validity word.
    in_valid: &'a [Option<Value>],
    /// Per boolean input: this block's value word.
    in_bits: &'a [Option<Value>],
    err: Variable,
    /// Memoized values per (node, context).
    memo: HashMap<(Id, u32), Val>,
    loops: HashMap<(Id, u32), Vec<Value>>,
    /// The context stack (innermost last); each context has its active mask.
    ctx: Vec<(u32, Option<Value>)>,
    next_ctx: u32,
    vars: HashMap<Var, Val>,
    row: Row,
    /// Inside a loop body: values must be non-null there.
    in_loop: u32,
}

fn scalar_type(t: Type) -> ClType {
    match t {
        Type::Bool | Type::I8 | Type::U8 => types::I8,
        Type::I16 | Type::U16 => types::I16,
        Type::I32 | Type::U32 => types::I32,
        Type::I64 | Type::U64 => types::I64,
        Type::F32 => types::F32,
        Type::F64 => types::F64,
    }
}

fn byte_width(t: Type) -> i64 {
    (t.bits() / 8).max(1) as i64
}

fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<'a, 'b> Ctx<'a, 'b> {
    fn cl(&self, t: Type) -> ClType {
        if self.lanes == 1 {
            scalar_type(t)
        } else {
            match t {
                Type::Bool | Type::I64 | Type::U64 => types::I64X2,
                _ => types::F64X2,
            }
        }
    }

    fn splat_or(&mut self, scalar: Value, t: ClType) -> Value {
        if self.lanes == 1 { scalar } else { self.fb.ins().splat(t, scalar) }
    }

    fn bool_const(&mut self, b: bool) -> Value {
        if self.lanes == 1 {
            self.fb.ins().iconst(types::I8, b as i64)
        } else {
            let s = self.fb.ins().iconst(types::I64, if b { -1 } else { 0 });
            self.fb.ins().splat(types::I64X2, s)
        }
    }

    fn constant(&mut self, t: Type, bits: u64) -> Value {
        let s = match t {
            Type::F64 => self.fb.ins().f64const(f64::from_bits(bits)),
            Type::F32 => self.fb.ins().f32const(f32::from_bits(bits as u32)),
            Type::Bool => return self.bool_const(bits != 0),
            _ => {
                let ty = scalar_type(t);
                let masked = if ty == types::I64 { bits as i64 } else { (bits & ((1u64 << ty.bits()) - 1)) as i64 };
                self.fb.ins().iconst(ty, masked)
            }
        };
        let ct = self.cl(t);
        self.splat_or(s, ct)
    }

    fn not(&mut self, b: Value) -> Value {
        if self.lanes == 1 { self.fb.ins().bxor_imm_s(b, 1) } else { self.fb.ins().bnot(b) }
    }

    fn and_opt(&mut self, a: Option<Value>, b: Option<Value>) -> Option<Value> {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => Some(self.fb.ins().band(a, b)),
        }
    }

    fn valid_or_true(&mut self, v: Option<Value>) -> Value {
        match v {
            Some(v) => v,
            None => self.bool_const(true),
        }
    }

    /// `select(c, a, b)` in the lane representation.
    fn select(&mut self, c: Value, a: Value, b: Value) -> Value {
        if self.lanes == 1 {
            self.fb.ins().select(c, a, b)
        } else {
            let ty = self.fb.func.dfg.value_type(a);
            let mask = if ty == types::I64X2 { c } else { self.fb.ins().bitcast(ty, little(), c) };
            self.fb.ins().bitselect(mask, a, b)
        }
    }

    fn active(&self) -> Option<Value> {
        self.ctx.last().and_then(|c| c.1)
    }

    fn push_ctx(&mut self, active: Option<Value>) {
        self.next_ctx += 1;
        self.ctx.push((self.next_ctx, active));
    }

    fn pop_ctx(&mut self) {
        self.ctx.pop();
    }

    /// Records error `kind` where `cond` holds in a valid, active row.
    fn flag(&mut self, cond: Value, valid: Option<Value>, kind: u64) {
        let active = self.active();
        let m = self.and_opt(valid, active);
        let c = match m {
            Some(m) => self.fb.ins().band(cond, m),
            None => cond,
        };
        let any = if self.lanes == 1 { c } else { self.fb.ins().vany_true(c) };
        let wide = self.fb.ins().uextend(types::I64, any);
        let bits = self.fb.ins().ishl_imm_s(wide, kind.trailing_zeros() as i64);
        let e = self.fb.use_var(self.err);
        let e = self.fb.ins().bor(e, bits);
        self.fb.def_var(self.err, e);
    }

    /// The bits `j..j+lanes` of a block word as a lane boolean.
    fn word_bits(&mut self, word: Value) -> Value {
        let shifted = self.fb.ins().ushr(word, self.row.j);
        if self.lanes == 1 {
            let bit = self.fb.ins().band_imm_s(shifted, 1);
            self.fb.ins().ireduce(types::I8, bit)
        } else {
            let s = self.fb.ins().splat(types::I64X2, shifted);
            let lane_bits = self.fb.func.dfg.constants.insert([1u64.to_le_bytes(), 2u64.to_le_bytes()].concat().into());
            let lane_bits = self.fb.ins().vconst(types::I64X2, lane_bits);
            let m = self.fb.ins().band(s, lane_bits);
            let zero = self.fb.ins().iconst(types::I64, 0);
            let zero = self.fb.ins().splat(types::I64X2, zero);
            self.fb.ins().icmp(IntCC::NotEqual, m, zero)
        }
    }

    fn lookup(&self, id: Id) -> Option<Val> {
        self.ctx.iter().rev().find_map(|(c, _)| self.memo.get(&(id, *c)).copied())
    }

    fn lower(&mut self, id: Id) -> Result<Val, Unsupported> {
        if let Some(v) = self.lookup(id) {
            return Ok(v);
        }
        let v = self.lower_node(id)?;
        if self.in_loop > 0 && v.valid.is_some() {
            return Err(Unsupported("a nullable value inside a loop".into()));
        }
        let c = self.ctx.last().map(|c| c.0).unwrap_or(0);
        self.memo.insert((id, c), v);
        Ok(v)
    }

    fn lower_node(&mut self, id: Id) -> Result<Val, Unsupported> {
        let p = self.p;
        let t = p.type_of(id);
        Ok(match p.node(id) {
            Node::Input(i) => self.input(*i as usize),
            Node::Const(ty, bits) => Val { v: self.constant(*ty, *bits), valid: None },
            Node::Null(ty) => {
                let v = self.constant(*ty, 0);
                Val { v, valid: Some(self.bool_const(false)) }
            }
            Node::Var(var) => {
                *self.vars.get(var).ok_or_else(|| Unsupported(format!("variable {} is not bound", var.0)))?
            }
            Node::Unary(op, a) => {
                let a = self.lower(*a)?;
                self.unary(*op, p.type_of_arg(id), a)?
            }
            Node::Binary(op, a, b) => {
                let operand = p.type_of(*a);
                let (a, b) = (self.lower(*a)?, self.lower(*b)?);
                self.binary(*op, operand, a, b)?
            }
            Node::Round(a, digits) => {
                if t != Type::F64 {
                    return Err(Unsupported("round of f32".into()));
                }
                let a = self.lower(*a)?;
                let scale = 10f64.powi(*digits);
                let s = self.fb.ins().f64const(scale);
                let x = self.fb.ins().fmul(a.v, s);
                let r = self.fb.ins().trunc(x);
                let d = self.fb.ins().fsub(x, r);
                let d = self.fb.ins().fabs(d);
                let half = self.fb.ins().f64const(0.5);
                let away = self.fb.ins().fcmp(FloatCC::GreaterThanOrEqual, d, half);
                let one = self.fb.ins().f64const(1.0);
                let step = self.fb.ins().fcopysign(one, x);
                let bumped = self.fb.ins().fadd(r, step);
                let rounded = self.fb.ins().select(away, bumped, r);
                Val { v: self.fb.ins().fdiv(rounded, s), valid: a.valid }
            }
            Node::Cast(a, to) => {
                let from = p.type_of(*a);
                let a = self.lower(*a)?;
                self.cast(from, *to, a)?
            }
            Node::If { cond, then, otherwise, lazy } => {
                let c = self.lower(*cond)?;
                let c = match c.valid {
                    Some(valid) => self.fb.ins().band(c.v, valid),
                    None => c.v,
                };
                let (tv, ov) = if *lazy {
                    let act = self.active();
                    let taken = self.and_opt(Some(c), act);
                    self.push_ctx(taken);
                    let tv = self.lower(*then);
                    self.pop_ctx();
                    let nc = self.not(c);
                    let not_taken = self.and_opt(Some(nc), act);
                    self.push_ctx(not_taken);
                    let ov = self.lower(*otherwise);
                    self.pop_ctx();
                    (tv?, ov?)
                } else {
                    (self.lower(*then)?, self.lower(*otherwise)?)
                };
                let v = self.select(c, tv.v, ov.v);
                let valid = match (tv.valid, ov.valid) {
                    (None, None) => None,
                    (x, y) => {
                        let x = self.valid_or_true(x);
                        let y = self.valid_or_true(y);
                        Some(self.select(c, x, y))
                    }
                };
                Val { v, valid }
            }
            Node::Let(var, value, body) => {
                let value = self.lower(*value)?;
                self.vars.insert(*var, value);
                let out = self.lower(*body);
                self.vars.remove(var);
                out?
            }
            Node::Strict(body, args) => {
                let mut valid = None;
                for a in args {
                    let a = self.lower(*a)?;
                    valid = self.and_opt(valid, a.valid);
                }
                let act = self.active();
                let act = self.and_opt(valid, act);
                self.push_ctx(act);
                let out = self.lower(*body);
                self.pop_ctx();
                let out = out?;
                Val { v: out.v, valid: self.and_opt(valid, out.valid) }
            }
            Node::AssumeValid(a) => {
                let a = self.lower(*a)?;
                Val { v: a.v, valid: None }
            }
            Node::Loop { .. } => {
                let outs = self.lower_loop(id)?;
                Val { v: outs[0], valid: None }
            }
            Node::LoopOut(lp, k) => {
                let c = self.ctx.last().map(|c| c.0).unwrap_or(0);
                let outs = match self.ctx.iter().rev().find_map(|(c, _)| self.loops.get(&(*lp, *c))) {
                    Some(outs) => outs.clone(),
                    None => {
                        let outs = self.lower_loop(*lp)?;
                        self.loops.insert((*lp, c), outs.clone());
                        outs
                    }
                };
                Val { v: outs[*k as usize], valid: None }
            }
        })
    }

    fn lower_loop(&mut self, id: Id) -> Result<Vec<Value>, Unsupported> {
        let Node::Loop { index, start, end, state, next } = self.p.node(id).clone() else {
            return Err(Unsupported("not a loop".into()));
        };
        let s = self.lower(start)?;
        let e = self.lower(end)?;
        let mut inits = vec![];
        for (_, init) in &state {
            inits.push(self.lower(*init)?);
        }
        if s.valid.is_some() || e.valid.is_some() || inits.iter().any(|v| v.valid.is_some()) {
            return Err(Unsupported("a loop over nullable values".into()));
        }
        let header = self.fb.create_block();
        let body = self.fb.create_block();
        let exit = self.fb.create_block();
        // The counter is a scalar (with vectors, the range is constant: the same for all lanes).
        let idx = self.fb.append_block_param(header, types::I64);
        let (first, last) = if self.lanes == 1 {
            (s.v, e.v)
        } else {
            (self.fb.ins().extractlane(s.v, 0), self.fb.ins().extractlane(e.v, 0))
        };
        let mut params = vec![];
        for (v, _) in &state {
            let ty = self.cl(self.p.type_of(self.first_use_of_var(*v, &state)));
            params.push(self.fb.append_block_param(header, ty));
        }
        let mut exits = vec![];
        for p in &params {
            let ty = self.fb.func.dfg.value_type(*p);
            exits.push(self.fb.append_block_param(exit, ty));
        }
        let mut args: Vec<cranelift_codegen::ir::BlockArg> = vec![first.into()];
        args.extend(inits.iter().map(|v| cranelift_codegen::ir::BlockArg::from(v.v)));
        self.fb.ins().jump(header, &args);

        self.fb.switch_to_block(header);
        let more = self.fb.ins().icmp(IntCC::SignedLessThan, idx, last);
        let exit_args: Vec<cranelift_codegen::ir::BlockArg> = params.iter().map(|p| (*p).into()).collect();
        self.fb.ins().brif(more, body, &[], exit, &exit_args);

        self.fb.switch_to_block(body);
        self.fb.seal_block(body);
        let index_value = self.splat_or(idx, types::I64X2);
        self.vars.insert(index, Val { v: index_value, valid: None });
        for ((v, _), p) in state.iter().zip(&params) {
            self.vars.insert(*v, Val { v: *p, valid: None });
        }
        let act = self.active();
        self.push_ctx(act);
        self.in_loop += 1;
        let mut nexts = vec![];
        let mut failed = None;
        for n in &next {
            match self.lower(*n) {
                Ok(v) if v.valid.is_some() => {
                    failed = Some(Unsupported("a nullable value inside a loop".into()));
                    break;
                }
                Ok(v) => nexts.push(v.v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.in_loop -= 1;
        self.pop_ctx();
        self.vars.remove(&index);
        for (v, _) in &state {
            self.vars.remove(v);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let one = self.fb.ins().iadd_imm_s(idx, 1);
        let mut back: Vec<cranelift_codegen::ir::BlockArg> = vec![one.into()];
        back.extend(nexts.iter().map(|v| cranelift_codegen::ir::BlockArg::from(*v)));
        self.fb.ins().jump(header, &back);
        self.fb.seal_block(header);
        self.fb.switch_to_block(exit);
        self.fb.seal_block(exit);
        Ok(exits)
    }

    /// A node of the state's type (the initial value) to learn the variable's type.
    fn first_use_of_var(&self, v: Var, state: &[(Var, Id)]) -> Id {
        state.iter().find(|(s, _)| *s == v).map(|(_, init)| *init).expect("state variable")
    }

    fn input(&mut self, i: usize) -> Val {
        let t = self.p.inputs[i];
        let valid = self.in_valid[i].map(|w| self.word_bits(w));
        let v = if t == Type::Bool {
            let word = self.in_bits[i].expect("boolean input word");
            self.word_bits(word)
        } else {
            let offset = self.fb.ins().imul_imm_s(self.row.row, byte_width(t));
            let addr = self.fb.ins().iadd(self.in_ptr[i], offset);
            let ty = self.cl(t);
            self.fb.ins().load(ty, data_flags(), addr, 0)
        };
        let _ = self.nullable;
        Val { v, valid }
    }

    fn unary(&mut self, op: UnaryOp, t: Type, a: Val) -> Result<Val, Unsupported> {
        let v = match op {
            UnaryOp::Neg if t.is_float() => self.fb.ins().fneg(a.v),
            UnaryOp::Neg => {
                let min = int_range(t).expect("integer").0;
                let m = self.constant(t, min as i64 as u64);
                let is_min = self.fb.ins().icmp(IntCC::Equal, a.v, m);
                self.flag(is_min, a.valid, ERR_OVERFLOW);
                self.fb.ins().ineg(a.v)
            }
            UnaryOp::Not => self.not(a.v),
            UnaryOp::Abs if t.is_float() => self.fb.ins().fabs(a.v),
            UnaryOp::Abs if !t.is_signed_int() => a.v,
            UnaryOp::Abs => {
                let min = int_range(t).expect("integer").0;
                let m = self.constant(t, min as i64 as u64);
                let is_min = self.fb.ins().icmp(IntCC::Equal, a.v, m);
                self.flag(is_min, a.valid, ERR_OVERFLOW);
                self.fb.ins().iabs(a.v)
            }
            UnaryOp::Sqrt => self.fb.ins().sqrt(a.v),
            UnaryOp::Floor => self.fb.ins().floor(a.v),
            UnaryOp::Ceil => self.fb.ins().ceil(a.v),
            UnaryOp::Trunc => self.fb.ins().trunc(a.v),
            UnaryOp::IsNull => {
                let v = match a.valid {
                    Some(valid) => self.not(valid),
                    None => self.bool_const(false),
                };
                return Ok(Val { v, valid: None });
            }
            UnaryOp::IsNotNull => {
                let v = self.valid_or_true(a.valid);
                return Ok(Val { v, valid: None });
            }
        };
        Ok(Val { v, valid: a.valid })
    }

    /// An integer value extended to 64 bits (by its signedness).
    fn widen(&mut self, t: Type, v: Value) -> Value {
        if scalar_type(t) == types::I64 {
            v
        } else if t.is_signed_int() {
            self.fb.ins().sextend(types::I64, v)
        } else {
            self.fb.ins().uextend(types::I64, v)
        }
    }

    /// Float bits mapped so that signed integer order is IEEE total order.
    fn total_order_key(&mut self, t: Type, x: Value) -> Value {
        let it = if self.lanes == 2 {
            types::I64X2
        } else if t == Type::F32 {
            types::I32
        } else {
            types::I64
        };
        let bits = self.fb.ins().bitcast(it, little(), x);
        let sign = self.fb.ins().sshr_imm_s(bits, (t.bits() - 1) as i64);
        let mask = self.fb.ins().ushr_imm_s(sign, 1);
        self.fb.ins().bxor(bits, mask)
    }

    fn binary(&mut self, op: BinaryOp, t: Type, a: Val, b: Val) -> Result<Val, Unsupported> {
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let v = if op == BinaryOp::And { self.fb.ins().band(a.v, b.v) } else { self.fb.ins().bor(a.v, b.v) };
            if a.valid.is_none() && b.valid.is_none() {
                return Ok(Val { v, valid: None });
            }
            let va = self.valid_or_true(a.valid);
            let vb = self.valid_or_true(b.valid);
            // A known false (and) or known true (or) operand decides the result.
            let (da, db) = if op == BinaryOp::And { (self.not(a.v), self.not(b.v)) } else { (a.v, b.v) };
            let both = self.fb.ins().band(va, vb);
            let ka = self.fb.ins().band(va, da);
            let kb = self.fb.ins().band(vb, db);
            let k = self.fb.ins().bor(ka, kb);
            let valid = self.fb.ins().bor(both, k);
            return Ok(Val { v, valid: Some(valid) });
        }
        let valid = self.and_opt(a.valid, b.valid);
        if op.is_comparison()
            && t.is_float()
            && !matches!(op, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
        {
            let cc = match op {
                BinaryOp::IeeeEq => FloatCC::Equal,
                BinaryOp::IeeeNe => FloatCC::NotEqual,
                BinaryOp::IeeeLt => FloatCC::LessThan,
                BinaryOp::IeeeLe => FloatCC::LessThanOrEqual,
                BinaryOp::IeeeGt => FloatCC::GreaterThan,
                _ => FloatCC::GreaterThanOrEqual,
            };
            return Ok(Val { v: self.fb.ins().fcmp(cc, a.v, b.v), valid });
        }
        if op.is_comparison() {
            let (x, y, signed) = if t.is_float() {
                (self.total_order_key(t, a.v), self.total_order_key(t, b.v), true)
            } else {
                (a.v, b.v, !matches!(t, Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::Bool))
            };
            use BinaryOp::*;
            let cc = match (op, signed) {
                (Eq | IeeeEq, _) => IntCC::Equal,
                (Ne | IeeeNe, _) => IntCC::NotEqual,
                (Lt | IeeeLt, true) => IntCC::SignedLessThan,
                (Le | IeeeLe, true) => IntCC::SignedLessThanOrEqual,
                (Gt | IeeeGt, true) => IntCC::SignedGreaterThan,
                (Ge | IeeeGe, true) => IntCC::SignedGreaterThanOrEqual,
                (Lt | IeeeLt, false) => IntCC::UnsignedLessThan,
                (Le | IeeeLe, false) => IntCC::UnsignedLessThanOrEqual,
                (Gt | IeeeGt, false) => IntCC::UnsignedGreaterThan,
                (Ge | IeeeGe, false) => IntCC::UnsignedGreaterThanOrEqual,
                _ => unreachable!("comparison"),
            };
            return Ok(Val { v: self.fb.ins().icmp(cc, x, y), valid });
        }
        if t.is_float() {
            let v = match op {
                BinaryOp::Add => self.fb.ins().fadd(a.v, b.v),
                BinaryOp::Sub => self.fb.ins().fsub(a.v, b.v),
                BinaryOp::Mul => self.fb.ins().fmul(a.v, b.v),
                BinaryOp::Div => self.fb.ins().fdiv(a.v, b.v),
                _ => return Err(Unsupported(format!("{op:?} of floats"))),
            };
            return Ok(Val { v, valid });
        }
        let signed = t.is_signed_int();
        let v = match op {
            BinaryOp::Add | BinaryOp::Sub if self.lanes == 2 => {
                // Signed overflow: the result's sign differs from both operands' (add) or from
                // the minuend's when the operands' signs differ (sub).
                let (r, x) = if op == BinaryOp::Add {
                    let r = self.fb.ins().iadd(a.v, b.v);
                    let ar = self.fb.ins().bxor(a.v, r);
                    let br = self.fb.ins().bxor(b.v, r);
                    (r, self.fb.ins().band(ar, br))
                } else {
                    let r = self.fb.ins().isub(a.v, b.v);
                    let ab = self.fb.ins().bxor(a.v, b.v);
                    let ar = self.fb.ins().bxor(a.v, r);
                    (r, self.fb.ins().band(ab, ar))
                };
                let zero = self.constant(Type::I64, 0);
                let of = self.fb.ins().icmp(IntCC::SignedLessThan, x, zero);
                self.flag(of, valid, ERR_OVERFLOW);
                r
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul if t.bits() < 64 => {
                // Exact in 64 bits, then checked against the type's range.
                let (x, y) = (self.widen(t, a.v), self.widen(t, b.v));
                let r = match op {
                    BinaryOp::Add => self.fb.ins().iadd(x, y),
                    BinaryOp::Sub => self.fb.ins().isub(x, y),
                    _ => self.fb.ins().imul(x, y),
                };
                let (lo, hi) = int_range(t).expect("integer");
                let of = if signed {
                    let below = self.fb.ins().icmp_imm_s(IntCC::SignedLessThan, r, lo as i64);
                    let above = self.fb.ins().icmp_imm_s(IntCC::SignedGreaterThan, r, hi as i64);
                    self.fb.ins().bor(below, above)
                } else {
                    self.fb.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, r, hi as i64)
                };
                self.flag(of, valid, ERR_OVERFLOW);
                self.fb.ins().ireduce(scalar_type(t), r)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => {
                let (r, of) = match (op, signed) {
                    (BinaryOp::Add, true) => self.fb.ins().sadd_overflow(a.v, b.v),
                    (BinaryOp::Add, false) => self.fb.ins().uadd_overflow(a.v, b.v),
                    (BinaryOp::Sub, true) => self.fb.ins().ssub_overflow(a.v, b.v),
                    (BinaryOp::Sub, false) => self.fb.ins().usub_overflow(a.v, b.v),
                    (_, true) => self.fb.ins().smul_overflow(a.v, b.v),
                    (_, false) => self.fb.ins().umul_overflow(a.v, b.v),
                };
                self.flag(of, valid, ERR_OVERFLOW);
                r
            }
            BinaryOp::Div | BinaryOp::Rem => {
                let zero_c = self.constant(t, 0);
                let zero = self.fb.ins().icmp(IntCC::Equal, b.v, zero_c);
                self.flag(zero, valid, ERR_DIVIDE_BY_ZERO);
                let mut bad = zero;
                if signed {
                    let m1 = self.constant(t, u64::MAX);
                    let minus_one = self.fb.ins().icmp(IntCC::Equal, b.v, m1);
                    if op == BinaryOp::Div {
                        let min = int_range(t).expect("integer").0 as i64 as u64;
                        let min = self.constant(t, min);
                        let is_min = self.fb.ins().icmp(IntCC::Equal, a.v, min);
                        let of = self.fb.ins().band(is_min, minus_one);
                        self.flag(of, valid, ERR_OVERFLOW);
                        bad = self.fb.ins().bor(bad, of);
                    } else {
                        // x % -1 is 0, and so is x % 1: dividing by 1 cannot overflow.
                        bad = self.fb.ins().bor(bad, minus_one);
                    }
                }
                let one = self.constant(t, 1);
                let divisor = self.fb.ins().select(bad, one, b.v);
                let (x, y) = (self.widen(t, a.v), self.widen(t, divisor));
                let r = match (op, signed) {
                    (BinaryOp::Div, true) => self.fb.ins().sdiv(x, y),
                    (BinaryOp::Div, false) => self.fb.ins().udiv(x, y),
                    (_, true) => self.fb.ins().srem(x, y),
                    (_, false) => self.fb.ins().urem(x, y),
                };
                if t.bits() < 64 { self.fb.ins().ireduce(scalar_type(t), r) } else { r }
            }
            _ => return Err(Unsupported(format!("{op:?} of {t}"))),
        };
        Ok(Val { v, valid })
    }

    fn cast(&mut self, from: Type, to: Type, a: Val) -> Result<Val, Unsupported> {
        if from == to {
            return Ok(a);
        }
        let (fty, tty) = (scalar_type(from), scalar_type(to));
        let v = match (from, to) {
            (Type::Bool, t) if t.is_int() => {
                if tty == types::I8 {
                    a.v
                } else {
                    self.fb.ins().uextend(tty, a.v)
                }
            }
            (Type::Bool, t) if t.is_float() => {
                let wide = self.fb.ins().uextend(types::I64, a.v);
                self.fb.ins().fcvt_from_sint(tty, wide)
            }
            (f, Type::Bool) if f.is_int() => self.fb.ins().icmp_imm_s(IntCC::NotEqual, a.v, 0),
            (f, Type::Bool) if f.is_float() => {
                let zero = self.constant(f, 0);
                self.fb.ins().fcmp(FloatCC::NotEqual, a.v, zero)
            }
            (f, t) if f.is_int() && t.is_int() => {
                let (flo, fhi) = int_range(f).expect("integer");
                let (tlo, thi) = int_range(t).expect("integer");
                let signed = f.is_signed_int();
                let mut bad = None;
                if tlo > flo {
                    let cc = if signed { IntCC::SignedLessThan } else { IntCC::UnsignedLessThan };
                    let bound = self.constant(f, tlo as i64 as u64);
                    let c = self.fb.ins().icmp(cc, a.v, bound);
                    bad = Some(c);
                }
                if thi < fhi {
                    let cc = if signed { IntCC::SignedGreaterThan } else { IntCC::UnsignedGreaterThan };
                    let bound = self.constant(f, thi as i64 as u64);
                    let c = self.fb.ins().icmp(cc, a.v, bound);
                    bad = Some(match bad {
                        Some(b) => self.fb.ins().bor(b, c),
                        None => c,
                    });
                }
                if let Some(bad) = bad {
                    self.flag(bad, a.valid, ERR_CAST);
                }
                if tty.bits() < fty.bits() {
                    self.fb.ins().ireduce(tty, a.v)
                } else if tty.bits() > fty.bits() {
                    if signed { self.fb.ins().sextend(tty, a.v) } else { self.fb.ins().uextend(tty, a.v) }
                } else {
                    a.v
                }
            }
            (Type::I64, Type::F64) if self.lanes == 2 => {
                // No 64-bit integer to float vector conversion without AVX-512: per lane.
                let lo = self.fb.ins().extractlane(a.v, 0);
                let hi = self.fb.ins().extractlane(a.v, 1);
                let lo = self.fb.ins().fcvt_from_sint(types::F64, lo);
                let hi = self.fb.ins().fcvt_from_sint(types::F64, hi);
                let v = self.fb.ins().splat(types::F64X2, lo);
                self.fb.ins().insertlane(v, hi, 1)
            }
            (f, t) if f.is_int() && t.is_float() => {
                if f == Type::U64 {
                    self.fb.ins().fcvt_from_uint(tty, a.v)
                } else {
                    let wide = self.widen(f, a.v);
                    self.fb.ins().fcvt_from_sint(tty, wide)
                }
            }
            (Type::F32, Type::F64) => self.fb.ins().fpromote(types::F64, a.v),
            (Type::F64, Type::F32) => self.fb.ins().fdemote(types::F32, a.v),
            (f, t) if f.is_float() && t.is_int() => {
                // num-traits' checked float-to-int bounds (what Arrow's checked cast uses).
                let (lo, hi) = int_range(t).expect("integer");
                let (lo, hi) = (lo as f64, hi as f64);
                let wider = f.bits() > t.bits();
                let (lo_bound, lo_inclusive, hi_bound) = if t.is_signed_int() {
                    if wider { (lo - 1.0, false, hi + 1.0) } else { (lo, true, hi) }
                } else if wider {
                    (-1.0, false, hi + 1.0)
                } else {
                    (-1.0, false, hi)
                };
                let (lo_c, hi_c) = if f == Type::F32 {
                    (self.fb.ins().f32const(lo_bound as f32), self.fb.ins().f32const(hi_bound as f32))
                } else {
                    (self.fb.ins().f64const(lo_bound), self.fb.ins().f64const(hi_bound))
                };
                let lo_cc = if lo_inclusive { FloatCC::GreaterThanOrEqual } else { FloatCC::GreaterThan };
                let above = self.fb.ins().fcmp(lo_cc, a.v, lo_c);
                let below = self.fb.ins().fcmp(FloatCC::LessThan, a.v, hi_c);
                let ok = self.fb.ins().band(above, below);
                let bad = self.fb.ins().bxor_imm_s(ok, 1);
                self.flag(bad, a.valid, ERR_CAST);
                if t == Type::U64 {
                    self.fb.ins().fcvt_to_uint_sat(types::I64, a.v)
                } else {
                    let wide = self.fb.ins().fcvt_to_sint_sat(types::I64, a.v);
                    if tty == types::I64 { wide } else { self.fb.ins().ireduce(tty, wide) }
                }
            }
            _ => return Err(Unsupported(format!("cast from {from} to {to}"))),
        };
        Ok(Val { v, valid: a.valid })
    }
}

trait TypeOfArg {
    fn type_of_arg(&self, id: Id) -> Type;
}

impl TypeOfArg for Program {
    /// The type of the (first) operand of node `id`.
    fn type_of_arg(&self, id: Id) -> Type {
        match self.node(id) {
            Node::Unary(_, a) | Node::Binary(_, a, _) | Node::Cast(a, _) | Node::Round(a, _) => self.type_of(*a),
            _ => self.type_of(id),
        }
    }
}

/// Builds the kernel function into `fb` (an empty function with the [`signature`]).
pub(crate) fn build(
    fb: &mut FunctionBuilder<'_>,
    p: &Program,
    nullable: &[bool],
    predicate: Option<Id>,
    try_vectorize: bool,
) -> Result<Lowered, Unsupported> {
    if nullable.len() != p.inputs.len() {
        return Err(Unsupported("one nullability flag per input is needed".into()));
    }
    let mut roots: Vec<Id> = p.outputs.clone();
    roots.extend(predicate);
    let lanes = if try_vectorize
        && vectorizable(p, &roots)
        && p.inputs.iter().all(|t| matches!(t, Type::Bool | Type::I64 | Type::F64))
    {
        2
    } else {
        1
    };

    let ptr = types::I64;
    let entry = fb.create_block();
    fb.append_block_params_for_function_params(entry);
    fb.switch_to_block(entry);
    fb.seal_block(entry);
    let args = fb.block_params(entry)[0];
    let flags = MemFlagsData::trusted();
    let len = fb.ins().load(types::I64, flags, args, 0);
    let values = fb.ins().load(ptr, flags, args, 8);
    let validity = fb.ins().load(ptr, flags, args, 16);
    let out_values = fb.ins().load(ptr, flags, args, 24);
    let out_validity = fb.ins().load(ptr, flags, args, 32);
    let selection = fb.ins().load(ptr, flags, args, 40);
    let count = fb.ins().load(ptr, flags, args, 48);
    let n_in = p.inputs.len();
    let mut in_ptr = vec![];
    let mut in_valid_ptr = vec![];
    for (i, &is_nullable) in nullable.iter().enumerate().take(n_in) {
        in_ptr.push(fb.ins().load(ptr, flags, values, (i * 8) as i32));
        in_valid_ptr.push(if is_nullable { Some(fb.ins().load(ptr, flags, validity, (i * 8) as i32)) } else { None });
    }
    let mut out_ptr = vec![];
    let mut out_valid_ptr = vec![];
    for k in 0..p.outputs.len() {
        out_ptr.push(fb.ins().load(ptr, flags, out_values, (k * 8) as i32));
        out_valid_ptr.push(fb.ins().load(ptr, flags, out_validity, (k * 8) as i32));
    }

    let err = fb.declare_var(types::I64);
    let k_var = fb.declare_var(types::I64);
    let block_var = fb.declare_var(types::I64);
    let j_var = fb.declare_var(types::I64);
    let sel_acc = fb.declare_var(types::I64);
    let zero = fb.ins().iconst(types::I64, 0);
    for v in [err, k_var, block_var, j_var, sel_acc] {
        fb.def_var(v, zero);
    }

    let block_head = fb.create_block();
    let block_body = fb.create_block();
    let exit = fb.create_block();
    fb.ins().jump(block_head, &[]);

    // for each block of 64 rows
    fb.switch_to_block(block_head);
    let b = fb.use_var(block_var);
    let base = fb.ins().ishl_imm_s(b, 6);
    let more = fb.ins().icmp(IntCC::UnsignedLessThan, base, len);
    fb.ins().brif(more, block_body, &[], exit, &[]);

    fb.switch_to_block(block_body);
    fb.seal_block(block_body);
    let left = fb.ins().isub(len, base);
    let sixty_four = fb.ins().iconst(types::I64, 64);
    let cnt = fb.ins().umin(left, sixty_four);
    let word_offset = fb.ins().ishl_imm_s(b, 3);
    let mut in_valid = vec![];
    let mut in_bits = vec![];
    for i in 0..n_in {
        in_valid.push(in_valid_ptr[i].map(|vp| {
            let addr = fb.ins().iadd(vp, word_offset);
            fb.ins().load(types::I64, flags, addr, 0)
        }));
        in_bits.push(if p.inputs[i] == Type::Bool {
            let addr = fb.ins().iadd(in_ptr[i], word_offset);
            Some(fb.ins().load(types::I64, flags, addr, 0))
        } else {
            None
        });
    }
    fb.def_var(sel_acc, zero);
    fb.def_var(j_var, zero);

    let mut output_nullable = vec![false; p.outputs.len()];
    let mut emit_rows = |fb: &mut FunctionBuilder<'_>, lanes: u8, limit: Value| -> Result<(), Unsupported> {
        let head = fb.create_block();
        let body = fb.create_block();
        let done = fb.create_block();
        fb.ins().jump(head, &[]);
        fb.switch_to_block(head);
        let j = fb.use_var(j_var);
        let go = fb.ins().icmp(IntCC::UnsignedLessThan, j, limit);
        fb.ins().brif(go, body, &[], done, &[]);
        fb.switch_to_block(body);
        fb.seal_block(body);
        let j = fb.use_var(j_var);
        let row = fb.ins().iadd(base, j);
        let mut cx = Ctx {
            p,
            nullable,
            fb,
            lanes,
            in_ptr: &in_ptr,
            in_valid: &in_valid,
            in_bits: &in_bits,
            err,
            memo: HashMap::new(),
            loops: HashMap::new(),
            ctx: vec![(0, None)],
            next_ctx: 0,
            vars: HashMap::new(),
            row: Row { row, j },
            in_loop: 0,
        };
        // The selection of this row (lanes), as a lane boolean.
        let mut sel = None;
        if let Some(pred) = predicate {
            let pv = cx.lower(pred)?;
            let s = match pv.valid {
                Some(valid) => cx.fb.ins().band(pv.v, valid),
                None => pv.v,
            };
            let bits =
                if lanes == 1 { cx.fb.ins().uextend(types::I64, s) } else { cx.fb.ins().vhigh_bits(types::I64, s) };
            let bits = cx.fb.ins().ishl(bits, j);
            let acc = cx.fb.use_var(sel_acc);
            let acc = cx.fb.ins().bor(acc, bits);
            cx.fb.def_var(sel_acc, acc);
            sel = Some(s);
            cx.push_ctx(Some(s));
        }
        let mut outs = vec![];
        for &o in &p.outputs {
            outs.push(cx.lower(o)?);
        }
        for (k, out) in outs.iter().enumerate() {
            if out.valid.is_some() {
                output_nullable[k] = true;
            }
        }
        let fb = cx.fb;
        // Stores: per lane, at the row (projection) or at the running count (compaction).
        for lane in 0..lanes {
            let (index, take) = match sel {
                Some(s) => {
                    let bit = if lanes == 1 {
                        fb.ins().uextend(types::I64, s)
                    } else {
                        let l = fb.ins().extractlane(s, lane);
                        fb.ins().band_imm_s(l, 1)
                    };
                    (fb.use_var(k_var), Some(bit))
                }
                None => (fb.ins().iadd_imm_s(row, lane as i64), None),
            };
            for (k, out) in outs.iter().enumerate() {
                let t = p.type_of(p.outputs[k]);
                let lane_value = |fb: &mut FunctionBuilder<'_>, v: Value| {
                    if lanes == 1 { v } else { fb.ins().extractlane(v, lane) }
                };
                let set_bit = |fb: &mut FunctionBuilder<'_>, words: Value, bit: Value| {
                    // bit `index` of `words` := bit (0/1, i64)
                    let w = fb.ins().ushr_imm_s(index, 6);
                    let w = fb.ins().ishl_imm_s(w, 3);
                    let addr = fb.ins().iadd(words, w);
                    // Cleared first: with compaction, unselected rows write at the same index.
                    let old = fb.ins().load(types::I64, flags, addr, 0);
                    let one = fb.ins().iconst(types::I64, 1);
                    let mask = fb.ins().ishl(one, index);
                    let cleared = fb.ins().band_not(old, mask);
                    let shifted = fb.ins().ishl(bit, index);
                    let new = fb.ins().bor(cleared, shifted);
                    fb.ins().store(flags, new, addr, 0);
                };
                let to_bit = |fb: &mut FunctionBuilder<'_>, v: Value| {
                    if lanes == 1 {
                        fb.ins().uextend(types::I64, v)
                    } else {
                        let l = fb.ins().extractlane(v, lane);
                        fb.ins().band_imm_s(l, 1)
                    }
                };
                if t == Type::Bool {
                    let bit = to_bit(fb, out.v);
                    set_bit(fb, out_ptr[k], bit);
                } else if lanes == 2 && sel.is_none() {
                    if lane == 0 {
                        let offset = fb.ins().imul_imm_s(row, byte_width(t));
                        let addr = fb.ins().iadd(out_ptr[k], offset);
                        fb.ins().store(data_flags(), out.v, addr, 0);
                    }
                } else {
                    let v = lane_value(fb, out.v);
                    let offset = fb.ins().imul_imm_s(index, byte_width(t));
                    let addr = fb.ins().iadd(out_ptr[k], offset);
                    fb.ins().store(data_flags(), v, addr, 0);
                }
                if let Some(valid) = out.valid {
                    let bit = to_bit(fb, valid);
                    set_bit(fb, out_valid_ptr[k], bit);
                }
            }
            if let Some(bit) = take {
                let k = fb.use_var(k_var);
                let k = fb.ins().iadd(k, bit);
                fb.def_var(k_var, k);
            }
        }
        let j = fb.use_var(j_var);
        let j = fb.ins().iadd_imm_s(j, lanes as i64);
        fb.def_var(j_var, j);
        fb.ins().jump(head, &[]);
        fb.seal_block(head);
        fb.switch_to_block(done);
        fb.seal_block(done);
        Ok(())
    };
    if lanes == 2 {
        let even = fb.ins().band_imm_s(cnt, !1);
        emit_rows(fb, 2, even)?;
    }
    emit_rows(fb, 1, cnt)?;

    if predicate.is_some() {
        let addr = fb.ins().iadd(selection, word_offset);
        let acc = fb.use_var(sel_acc);
        fb.ins().store(flags, acc, addr, 0);
    }
    let b = fb.use_var(block_var);
    let b = fb.ins().iadd_imm_s(b, 1);
    fb.def_var(block_var, b);
    let e = fb.use_var(err);
    fb.ins().brif(e, exit, &[], block_head, &[]);
    fb.seal_block(block_head);

    fb.switch_to_block(exit);
    fb.seal_block(exit);
    if predicate.is_some() {
        let k = fb.use_var(k_var);
        fb.ins().store(flags, k, count, 0);
    }
    let e = fb.use_var(err);
    fb.ins().return_(&[e]);
    Ok(Lowered { output_nullable, lanes })
}
