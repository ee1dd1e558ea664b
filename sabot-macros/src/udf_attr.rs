//! `#[udf]`: a plain Rust scalar function that also runs as an expression, JIT-compiled.
//!
//! From the function's body (a subset of Rust: numeric and boolean parameters, `let` and
//! `let mut`, assignments and `+=`-style updates, arithmetic, comparisons, `&&`/`||`/`!`,
//! `if`/`else` expressions, `as` casts between numbers, `for i in a..b` loops, and the methods
//! `sqrt`, `abs`, `floor`, `ceil`, `trunc`, `round`) the macro generates two translations:
//! builder calls producing the JIT's IR, and a checked Rust function with the engine's
//! arithmetic (integer overflow and division by zero are errors) used by the interpreter. A body
//! outside the subset is a compile error at the offending span, unless the attribute says
//! `#[udf(fallback)]`: then the function runs only through the interpreter, as written.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{BinOp, Block, Expr, FnArg, ItemFn, Lit, Pat, RangeLimits, ReturnType, Stmt, Type, UnOp};

const TYPES: [&str; 11] = ["f64", "f32", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool"];

fn type_name(ty: &Type) -> syn::Result<String> {
    if let Type::Path(p) = ty
        && p.qself.is_none()
        && let Some(id) = p.path.get_ident()
        && TYPES.contains(&id.to_string().as_str())
    {
        return Ok(id.to_string());
    }
    Err(syn::Error::new(
        ty.span(),
        format!("`{}` is not a supported UDF type (use one of {})", quote!(#ty), TYPES.join(", ")),
    ))
}

fn ir_type(name: &str) -> TokenStream {
    let variant = match name {
        "f64" => "F64",
        "f32" => "F32",
        "i8" => "I8",
        "i16" => "I16",
        "i32" => "I32",
        "i64" => "I64",
        "u8" => "U8",
        "u16" => "U16",
        "u32" => "U32",
        "u64" => "U64",
        _ => "Bool",
    };
    let v = format_ident!("{}", variant);
    quote!(::sabot::expr::udf::ir::Type::#v)
}

pub fn expand(attr: TokenStream, item: ItemFn) -> syn::Result<TokenStream> {
    let fallback_only = match attr.to_string().as_str() {
        "" => false,
        "fallback" => true,
        _ => return Err(syn::Error::new(attr.span(), "expected `#[udf]` or `#[udf(fallback)]`")),
    };
    let sig = &item.sig;
    if !sig.generics.params.is_empty() || sig.asyncness.is_some() || matches!(sig.safety, syn::Safety::Unsafe(_)) {
        return Err(syn::Error::new(sig.span(), "a #[udf] must be a plain, non-generic, safe fn"));
    }
    let mut params = vec![];
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new(input.span(), "a #[udf] takes no `self`"));
        };
        let Pat::Ident(pi) = pt.pat.as_ref() else {
            return Err(syn::Error::new(pt.pat.span(), "a #[udf] parameter must be a plain name"));
        };
        params.push((pi.ident.clone(), (*pt.ty).clone(), type_name(&pt.ty)?));
    }
    let ReturnType::Type(_, ret) = &sig.output else {
        return Err(syn::Error::new(sig.span(), "a #[udf] returns a value"));
    };
    type_name(ret)?;
    let name = &sig.ident;
    let name_str = name.to_string();
    let vis = &item.vis;
    let names: Vec<_> = params.iter().map(|p| p.0.clone()).collect();
    let tys: Vec<_> = params.iter().map(|p| p.1.clone()).collect();
    let idx: Vec<usize> = (0..params.len()).collect();
    let cols: Vec<_> = (0..params.len()).map(|i| format_ident!("__a{}", i)).collect();

    let (checked_body, ir_fn) = if fallback_only {
        (quote!(::std::result::Result::Ok(super::#name(#(#names),*))), quote!())
    } else {
        let mut t = Translator { scopes: vec![names.iter().map(|n| n.to_string()).collect()], counter: 0 };
        let ir_body = t.block_ir(&item.block)?;
        let checked = checked_block(&item.block)?;
        let ret_ty = ir_type(&type_name(ret)?);
        let param_vars: Vec<_> = names.iter().map(|n| format_ident!("__v_{}", n)).collect();
        let ir_fn = quote! {
            ::sabot::__udf_jit! {
                /// The body as JIT IR over the (non-null) parameter nodes.
                pub fn build_ir(
                    __b: &mut ::sabot::expr::udf::ir::Builder,
                    __params: &[::sabot::expr::udf::ir::Id],
                ) -> ::std::result::Result<::sabot::expr::udf::ir::Id, ::sabot::expr::udf::ir::IrError> {
                    use ::sabot::expr::udf::ir::Op;
                    #( #[allow(unused_mut)] let mut #param_vars = Op::Node(__params[#idx]); )*
                    let __out = #ir_body;
                    ::sabot::expr::udf::ir::resolve(__b, __out, ::std::option::Option::Some(#ret_ty))
                }
            }
        };
        (quote!(::std::result::Result::Ok(#checked)), ir_fn)
    };
    let build_ir_impl = if fallback_only {
        quote!()
    } else {
        quote! {
            ::sabot::__udf_jit! {
                fn build_ir(
                    &self,
                    b: &mut ::sabot::expr::udf::ir::Builder,
                    params: &[::sabot::expr::udf::ir::Id],
                ) -> ::std::option::Option<::std::result::Result<::sabot::expr::udf::ir::Id, ::sabot::expr::udf::ir::IrError>> {
                    ::std::option::Option::Some(build_ir(b, params))
                }
            }
        }
    };
    let doc = format!("`{name_str}` as an expression: [`call`] builds calls of it over column expressions.");
    Ok(quote! {
        #item

        #[doc = #doc]
        #[allow(non_snake_case, non_camel_case_types, unused_parens, unused_braces, clippy::all)]
        #vis mod #name {
            #[allow(unused_imports)]
            use super::*;

            /// The function as a [`::sabot::expr::ScalarUdf`].
            #[derive(Debug, Clone, Copy, Default)]
            pub struct Udf;

            /// A call of the function on expressions (arguments are cast to its parameter types).
            pub fn call(#(#names: ::sabot::expr::Expr),*) -> ::sabot::expr::Expr {
                ::sabot::expr::Expr::ScalarUdf { udf: ::std::sync::Arc::new(Udf), args: ::std::vec![#(#names),*] }
            }

            /// The function as a shared [`::sabot::expr::ScalarUdf`].
            pub fn udf() -> ::std::sync::Arc<dyn ::sabot::expr::ScalarUdf> {
                ::std::sync::Arc::new(Udf)
            }

            /// The body with the engine's checked arithmetic (what the interpreter runs).
            pub fn checked(#(#names: #tys),*) -> ::std::result::Result<#ret, ::sabot::expr::udf::ArrowError> {
                #checked_body
            }

            #ir_fn

            impl ::sabot::expr::ScalarUdf for Udf {
                fn name(&self) -> &str {
                    #name_str
                }
                fn arg_types(&self) -> ::std::vec::Vec<::sabot::expr::udf::DataType> {
                    ::std::vec![#(<#tys as ::sabot::expr::udf::UdfValue>::data_type()),*]
                }
                fn return_type(&self) -> ::sabot::expr::udf::DataType {
                    <#ret as ::sabot::expr::udf::UdfValue>::data_type()
                }
                fn invoke(
                    &self,
                    args: &[::sabot::expr::udf::ArrayRef],
                ) -> ::std::result::Result<::sabot::expr::udf::ArrayRef, ::sabot::expr::udf::ArrowError> {
                    let nulls = ::sabot::expr::udf::union_nulls(args);
                    #( let #cols = <#tys as ::sabot::expr::udf::UdfValue>::values(args[#idx].as_ref())?; )*
                    let len = args.first().map_or(0, |a| a.len());
                    let mut out = ::std::vec::Vec::with_capacity(len);
                    for i in 0..len {
                        if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
                            out.push(checked(#(#cols[i]),*)?);
                        } else {
                            out.push(::std::default::Default::default());
                        }
                    }
                    ::std::result::Result::Ok(<#ret as ::sabot::expr::udf::UdfValue>::to_array(out, nulls))
                }
                #build_ir_impl
            }
        }
    })
}

fn unsupported(span: Span, what: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("{what} is not supported in a #[udf] body (write `#[udf(fallback)]` to run it interpreted only)"),
    )
}

fn binding(pat: &Pat) -> syn::Result<(syn::Ident, Option<String>)> {
    match pat {
        Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => Ok((pi.ident.clone(), None)),
        Pat::Type(pt) => {
            let (id, _) = binding(&pt.pat)?;
            Ok((id, Some(type_name(&pt.ty)?)))
        }
        other => Err(unsupported(other.span(), "this pattern")),
    }
}

/// Variables assigned in a block (the state of a loop).
fn assigned(block: &Block, out: &mut Vec<String>) {
    fn expr(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Assign(a) => {
                if let Expr::Path(p) = a.left.as_ref()
                    && let Some(id) = p.path.get_ident()
                {
                    out.push(id.to_string());
                }
            }
            Expr::Binary(b) if is_compound(&b.op).is_some() => {
                if let Expr::Path(p) = b.left.as_ref()
                    && let Some(id) = p.path.get_ident()
                {
                    out.push(id.to_string());
                }
            }
            Expr::ForLoop(f) => assigned(&f.body, out),
            Expr::Block(b) => assigned(&b.block, out),
            _ => {}
        }
    }
    for s in &block.stmts {
        if let Stmt::Expr(e, _) = s {
            expr(e, out);
        }
    }
}

fn is_compound(op: &BinOp) -> Option<TokenStream> {
    Some(match op {
        BinOp::AddAssign(_) => quote!(Add),
        BinOp::SubAssign(_) => quote!(Sub),
        BinOp::MulAssign(_) => quote!(Mul),
        BinOp::DivAssign(_) => quote!(Div),
        BinOp::RemAssign(_) => quote!(Rem),
        _ => return None,
    })
}

struct Translator {
    scopes: Vec<Vec<String>>,
    counter: usize,
}

impl Translator {
    fn known(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|n| n == name))
    }

    fn var(name: &syn::Ident) -> syn::Ident {
        format_ident!("__v_{}", name)
    }

    /// A block as an IR expression (`Op`), its statements updating the variables.
    fn block_ir(&mut self, block: &Block) -> syn::Result<TokenStream> {
        self.scopes.push(vec![]);
        let mut stmts = vec![];
        let mut value = None;
        let n = block.stmts.len();
        for (i, s) in block.stmts.iter().enumerate() {
            match s {
                Stmt::Local(local) => {
                    let (id, ty) = binding(&local.pat)?;
                    let init = local.init.as_ref().ok_or_else(|| unsupported(local.span(), "`let` without a value"))?;
                    if init.diverge.is_some() {
                        return Err(unsupported(local.span(), "`let ... else`"));
                    }
                    let v = self.expr_ir(&init.expr)?;
                    let v = match ty {
                        Some(t) => {
                            let t = ir_type(&t);
                            quote!({ let __x = #v; Op::Node(::sabot::expr::udf::ir::resolve(__b, __x, ::std::option::Option::Some(#t))?) })
                        }
                        None => v,
                    };
                    let var = Self::var(&id);
                    stmts.push(quote!(#[allow(unused_mut)] let mut #var = #v;));
                    self.scopes.last_mut().expect("scope").push(id.to_string());
                }
                Stmt::Expr(e, semi) => {
                    let last = i + 1 == n && semi.is_none();
                    if last {
                        value = Some(self.expr_ir(e)?);
                    } else {
                        stmts.push(self.stmt_ir(e)?);
                    }
                }
                Stmt::Item(item) => return Err(unsupported(item.span(), "an item")),
                Stmt::Macro(m) => return Err(unsupported(m.span(), "a macro")),
            }
        }
        self.scopes.pop();
        let value = value.ok_or_else(|| unsupported(block.span(), "a block without a final value"))?;
        Ok(quote!({ #(#stmts)* #value }))
    }

    fn stmt_ir(&mut self, e: &Expr) -> syn::Result<TokenStream> {
        match e {
            Expr::Assign(a) => {
                let id = self.target(&a.left)?;
                let v = self.expr_ir(&a.right)?;
                let var = Self::var(&id);
                Ok(quote!(#var = #v;))
            }
            Expr::Binary(b) if is_compound(&b.op).is_some() => {
                let op = is_compound(&b.op).expect("compound");
                let id = self.target(&b.left)?;
                let v = self.expr_ir(&b.right)?;
                let var = Self::var(&id);
                Ok(
                    quote!(#var = { let __r = #v; ::sabot::expr::udf::ir::bin(__b, ::sabot::expr::udf::ir::BinaryOp::#op, #var, __r)? };),
                )
            }
            Expr::ForLoop(f) => self.for_ir(f),
            other => Err(unsupported(other.span(), "a statement other than an assignment or a `for` loop")),
        }
    }

    fn target(&self, e: &Expr) -> syn::Result<syn::Ident> {
        if let Expr::Path(p) = e
            && let Some(id) = p.path.get_ident()
            && self.known(&id.to_string())
        {
            return Ok(id.clone());
        }
        Err(unsupported(e.span(), "assigning to this"))
    }

    fn for_ir(&mut self, f: &syn::ExprForLoop) -> syn::Result<TokenStream> {
        if f.label.is_some() {
            return Err(unsupported(f.span(), "a labelled loop"));
        }
        let (index, _) = binding(&f.pat)?;
        let Expr::Range(range) = f.expr.as_ref() else {
            return Err(unsupported(f.expr.span(), "a loop over something other than a range `a..b`"));
        };
        let (Some(start), Some(end)) = (&range.start, &range.end) else {
            return Err(unsupported(range.span(), "an open range"));
        };
        let inclusive = matches!(range.limits, RangeLimits::Closed(_));
        let start = self.expr_ir(start)?;
        let end = self.expr_ir(end)?;
        let mut state = vec![];
        assigned(&f.body, &mut state);
        state.retain(|n| self.known(n));
        state.dedup();
        let mut seen = vec![];
        state.retain(|n| {
            let fresh = !seen.contains(n);
            seen.push(n.clone());
            fresh
        });
        if state.is_empty() {
            return Err(unsupported(f.span(), "a loop that assigns no variable"));
        }
        self.counter += 1;
        let k = self.counter;
        let idx_var = format_ident!("__idx{}", k);
        let svars: Vec<_> = (0..state.len()).map(|i| format_ident!("__s{}_{}", k, i)).collect();
        let inits: Vec<_> = (0..state.len()).map(|i| format_ident!("__init{}_{}", k, i)).collect();
        let vars: Vec<_> = state.iter().map(|n| format_ident!("__v_{}", n)).collect();
        let positions: Vec<u32> = (0..state.len() as u32).collect();
        self.scopes.push(vec![index.to_string()]);
        let mut body = vec![];
        for s in &f.body.stmts {
            match s {
                Stmt::Local(local) => {
                    let (id, ty) = binding(&local.pat)?;
                    let init = local.init.as_ref().ok_or_else(|| unsupported(local.span(), "`let` without a value"))?;
                    let v = self.expr_ir(&init.expr)?;
                    let v = match ty {
                        Some(t) => {
                            let t = ir_type(&t);
                            quote!({ let __x = #v; Op::Node(::sabot::expr::udf::ir::resolve(__b, __x, ::std::option::Option::Some(#t))?) })
                        }
                        None => v,
                    };
                    let var = Self::var(&id);
                    body.push(quote!(#[allow(unused_mut)] let mut #var = #v;));
                    self.scopes.last_mut().expect("scope").push(id.to_string());
                }
                Stmt::Expr(e, _) => body.push(self.stmt_ir(e)?),
                Stmt::Item(item) => return Err(unsupported(item.span(), "an item")),
                Stmt::Macro(m) => return Err(unsupported(m.span(), "a macro")),
            }
        }
        self.scopes.pop();
        let index_var = Self::var(&index);
        let end = if inclusive {
            quote!({ let __e = #end; ::sabot::expr::udf::ir::bin(__b, ::sabot::expr::udf::ir::BinaryOp::Add, __e, Op::Int(1))? })
        } else {
            end
        };
        Ok(quote! {
            {
                let __start = #start;
                let __start = ::sabot::expr::udf::ir::index(__b, __start)?;
                let __end = #end;
                let __end = ::sabot::expr::udf::ir::index(__b, __end)?;
                let #idx_var = __b.var(::sabot::expr::udf::ir::Type::I64);
                #( let (#svars, #inits) = ::sabot::expr::udf::ir::state(__b, #vars)?; )*
                let __next = {
                    #[allow(unused_mut)]
                    let mut #index_var = Op::Node(__b.get(#idx_var));
                    #( #vars = Op::Node(__b.get(#svars)); )*
                    #(#body)*
                    ::std::vec![#( ::sabot::expr::udf::ir::resolve(__b, #vars, ::std::option::Option::Some(__b.type_of(#inits)))? ),*]
                };
                let __loop = __b.for_range(#idx_var, __start, __end, ::std::vec![#( (#svars, #inits) ),*], __next)?;
                #( #vars = Op::Node(__b.loop_out(__loop, #positions)?); )*
            }
        })
    }

    fn expr_ir(&mut self, e: &Expr) -> syn::Result<TokenStream> {
        let ir = quote!(::sabot::expr::udf::ir);
        Ok(match e {
            Expr::Lit(l) => match &l.lit {
                Lit::Int(i) => {
                    let v: i128 = i.base10_parse()?;
                    let suffix = i.suffix();
                    if suffix.is_empty() {
                        quote!(Op::Int(#v))
                    } else {
                        let t = ir_type(&type_name(&syn::parse_str::<Type>(suffix)?)?);
                        quote!(Op::Node(__b.int(#t, #v)?))
                    }
                }
                Lit::Float(f) => {
                    let v: f64 = f.base10_parse()?;
                    if f.suffix() == "f32" {
                        quote!(Op::Node(__b.f32(#v as f32)))
                    } else if f.suffix().is_empty() {
                        quote!(Op::Float(#v))
                    } else {
                        quote!(Op::Node(__b.f64(#v)))
                    }
                }
                Lit::Bool(b) => {
                    let v = b.value;
                    quote!(Op::Bool(#v))
                }
                other => return Err(unsupported(other.span(), "this literal")),
            },
            Expr::Path(p) => {
                let Some(id) = p.path.get_ident().filter(|id| self.known(&id.to_string())) else {
                    return Err(unsupported(p.span(), "a path that is not a local variable"));
                };
                let var = Self::var(id);
                quote!(#var)
            }
            Expr::Paren(p) => self.expr_ir(&p.expr)?,
            Expr::Group(g) => self.expr_ir(&g.expr)?,
            Expr::Binary(b) => {
                let (l, r) = (self.expr_ir(&b.left)?, self.expr_ir(&b.right)?);
                let op = match b.op {
                    BinOp::Add(_) => quote!(Add),
                    BinOp::Sub(_) => quote!(Sub),
                    BinOp::Mul(_) => quote!(Mul),
                    BinOp::Div(_) => quote!(Div),
                    BinOp::Rem(_) => quote!(Rem),
                    BinOp::Eq(_) => quote!(IeeeEq),
                    BinOp::Ne(_) => quote!(IeeeNe),
                    BinOp::Lt(_) => quote!(IeeeLt),
                    BinOp::Le(_) => quote!(IeeeLe),
                    BinOp::Gt(_) => quote!(IeeeGt),
                    BinOp::Ge(_) => quote!(IeeeGe),
                    BinOp::And(_) => return Ok(quote!({ let __l = #l; let __r = #r; #ir::and(__b, __l, __r)? })),
                    BinOp::Or(_) => return Ok(quote!({ let __l = #l; let __r = #r; #ir::or(__b, __l, __r)? })),
                    _ => return Err(unsupported(b.op.span(), "this operator")),
                };
                quote!({ let __l = #l; let __r = #r; #ir::bin(__b, #ir::BinaryOp::#op, __l, __r)? })
            }
            Expr::Unary(u) => {
                let x = self.expr_ir(&u.expr)?;
                match u.op {
                    UnOp::Neg(_) => quote!({ let __x = #x; #ir::neg(__b, __x)? }),
                    UnOp::Not(_) => quote!({ let __x = #x; #ir::not(__b, __x)? }),
                    _ => return Err(unsupported(u.op.span(), "this operator")),
                }
            }
            Expr::Cast(c) => {
                let t = ir_type(&type_name(&c.ty)?);
                let x = self.expr_ir(&c.expr)?;
                quote!({ let __x = #x; #ir::cast(__b, __x, #t)? })
            }
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                if !["sqrt", "abs", "floor", "ceil", "trunc", "round"].contains(&method.as_str()) {
                    return Err(unsupported(m.method.span(), &format!("the method `{method}`")));
                }
                if !m.args.is_empty() || m.turbofish.is_some() {
                    return Err(unsupported(m.span(), "arguments to this method"));
                }
                let x = self.expr_ir(&m.receiver)?;
                quote!({ let __x = #x; #ir::method(__b, #method, __x)? })
            }
            Expr::If(i) => {
                let c = self.expr_ir(&i.cond)?;
                let t = self.block_ir(&i.then_branch)?;
                let Some((_, else_branch)) = &i.else_branch else {
                    return Err(unsupported(i.span(), "`if` without `else`"));
                };
                let o = self.expr_ir(else_branch)?;
                quote!({ let __c = #c; let __t = #t; let __o = #o; #ir::if_else(__b, __c, __t, __o)? })
            }
            Expr::Block(b) if b.label.is_none() => self.block_ir(&b.block)?,
            Expr::Call(c) => return Err(unsupported(c.func.span(), "a function call")),
            other => return Err(unsupported(other.span(), "this expression")),
        })
    }
}

/// The body with checked arithmetic (`?` on the engine's operations).
fn checked_block(block: &Block) -> syn::Result<TokenStream> {
    let mut stmts = vec![];
    for s in &block.stmts {
        stmts.push(match s {
            Stmt::Local(local) => {
                let pat = &local.pat;
                let init = local.init.as_ref().ok_or_else(|| unsupported(local.span(), "`let` without a value"))?;
                let v = checked_expr(&init.expr)?;
                quote!(let #pat = #v;)
            }
            Stmt::Expr(e, semi) => {
                let v = checked_expr(e)?;
                quote!(#v #semi)
            }
            other => return Err(unsupported(other.span(), "this statement")),
        });
    }
    Ok(quote!({ #(#stmts)* }))
}

fn checked_expr(e: &Expr) -> syn::Result<TokenStream> {
    let rt = quote!(::sabot::expr::udf::rt);
    Ok(match e {
        Expr::Lit(_) | Expr::Path(_) => quote!(#e),
        Expr::Paren(p) => {
            let x = checked_expr(&p.expr)?;
            quote!((#x))
        }
        Expr::Group(g) => checked_expr(&g.expr)?,
        Expr::Assign(a) => {
            let (l, r) = (&a.left, checked_expr(&a.right)?);
            quote!(#l = #r)
        }
        Expr::Binary(b) => {
            let l = checked_expr(&b.left)?;
            let r = checked_expr(&b.right)?;
            let span = b.op.span();
            let f = |name: &str| format_ident!("{}", name, span = span);
            let call = |name: &str| {
                let f = f(name);
                quote_spanned!(span=> #rt::#f(#l, #r)?)
            };
            match b.op {
                BinOp::Add(_) => call("add"),
                BinOp::Sub(_) => call("sub"),
                BinOp::Mul(_) => call("mul"),
                BinOp::Div(_) => call("div"),
                BinOp::Rem(_) => call("rem"),
                BinOp::AddAssign(_)
                | BinOp::SubAssign(_)
                | BinOp::MulAssign(_)
                | BinOp::DivAssign(_)
                | BinOp::RemAssign(_) => {
                    let name = match b.op {
                        BinOp::AddAssign(_) => "add",
                        BinOp::SubAssign(_) => "sub",
                        BinOp::MulAssign(_) => "mul",
                        BinOp::DivAssign(_) => "div",
                        _ => "rem",
                    };
                    let f = f(name);
                    let target = &b.left;
                    quote_spanned!(span=> #target = #rt::#f(#target, #r)?)
                }
                _ => {
                    let op = &b.op;
                    quote!(#l #op #r)
                }
            }
        }
        Expr::Unary(u) => {
            let x = checked_expr(&u.expr)?;
            match u.op {
                UnOp::Neg(_) => quote!(#rt::neg(#x)?),
                _ => {
                    let op = &u.op;
                    quote!(#op #x)
                }
            }
        }
        Expr::Cast(c) => {
            let x = checked_expr(&c.expr)?;
            let t = &c.ty;
            quote!(#rt::cast::<_, #t>(#x)?)
        }
        Expr::MethodCall(m) => {
            let x = checked_expr(&m.receiver)?;
            let method = &m.method;
            if method == "abs" { quote!(#rt::abs(#x)?) } else { quote!((#x).#method()) }
        }
        Expr::If(i) => {
            let c = checked_expr(&i.cond)?;
            let t = checked_block(&i.then_branch)?;
            let (_, o) = i.else_branch.as_ref().ok_or_else(|| unsupported(i.span(), "`if` without `else`"))?;
            let o = checked_expr(o)?;
            quote!(if #c #t else #o)
        }
        Expr::Block(b) => checked_block(&b.block)?,
        Expr::ForLoop(f) => {
            let pat = &f.pat;
            let Expr::Range(r) = f.expr.as_ref() else {
                return Err(unsupported(f.expr.span(), "a loop over something other than a range"));
            };
            let start = checked_expr(r.start.as_ref().ok_or_else(|| unsupported(r.span(), "an open range"))?)?;
            let end = checked_expr(r.end.as_ref().ok_or_else(|| unsupported(r.span(), "an open range"))?)?;
            let limits = &r.limits;
            let body = checked_block(&f.body)?;
            quote!(for #pat in (#start) #limits (#end) #body)
        }
        other => return Err(unsupported(other.span(), "this expression")),
    })
}

/// Parses the attribute's arguments and the function, then expands.
pub fn udf(attr: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = syn::parse2::<ItemFn>(item.clone());
    match parsed {
        Ok(f) => expand(attr, f).unwrap_or_else(|e| {
            let err = e.into_compile_error();
            quote!(#item #err)
        }),
        Err(e) => e.into_compile_error(),
    }
}
