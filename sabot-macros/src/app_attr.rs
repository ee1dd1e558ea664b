//! `#[sabot::app]` and `#[agent(...)]`: a Faust-style app declared as a module of agents.
//!
//! `#[sabot::app]` goes on an inline module. Its `#[agent("topic", ...)]` functions are the
//! agents: a sync `fn(Stream<I>) -> ...` is a stream agent (`Agent::stream`), an
//! `async fn(AgentStream<I>) -> ...` consumes records one by one (`Agent::records`). The macro
//! removes the `#[agent]` attributes, leaves every item as written, and adds to the module a
//! `pub fn app() -> ::sabot::app::App` registering the agents, plus (unless `main = false`)
//! `fn main` next to the module running the app's command line.
//!
//! The app macro consumes the `#[agent]` attributes before they are resolved, so the `agent`
//! macro itself only runs on a misplaced `#[agent]`, and reports it.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{
    Error, FnArg, GenericArgument, Ident, ImplItem, Item, ItemFn, ItemMod, LitStr, PathArguments, Result, ReturnType,
    Type, parse_quote,
};

use crate::app_ast::{self, Agent, AppArgs, Kind};

/// The message of a misplaced `#[agent]`.
const MISPLACED: &str = "#[agent] must be on a function inside a #[sabot::app] module";

/// The `#[sabot::app]` attribute: the module with its `app()` (and `main`), or the errors.
pub fn app(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut args = AppArgs::default();
    let mut errors = vec![];
    if let Err(err) = app_ast::parse_app_args(attr, &mut args) {
        errors.push(err);
    }
    let module = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Mod(module)) if module.content.is_some() => module,
        Ok(other) => {
            errors.push(Error::new_spanned(
                item_head(&other),
                "#[sabot::app] goes on an inline module: `mod name { ... }`",
            ));
            return compile_errors(errors, item);
        }
        Err(err) => {
            errors.push(err);
            return compile_errors(errors, item);
        }
    };
    expand(module, &args, errors)
}

/// The `#[agent]` attribute on its own: always misplaced (inside a `#[sabot::app]` module the
/// app macro consumes it first).
pub fn agent(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let err = Error::new(Span::call_site(), MISPLACED).into_compile_error();
    quote!(#err #item)
}

/// The input item followed by the errors.
fn compile_errors(errors: Vec<Error>, item: TokenStream) -> TokenStream {
    let err = errors.into_iter().map(Error::into_compile_error);
    quote!(#item #(#err)*)
}

/// The tokens that name an item (`fn f`, `struct S`, ...), for errors about the whole item.
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Fn(f) => {
            let (token, ident) = (&f.sig.fn_token, &f.sig.ident);
            quote!(#token #ident)
        }
        Item::Struct(s) => {
            let (token, ident) = (&s.struct_token, &s.ident);
            quote!(#token #ident)
        }
        Item::Enum(e) => {
            let (token, ident) = (&e.enum_token, &e.ident);
            quote!(#token #ident)
        }
        Item::Trait(t) => {
            let (token, ident) = (&t.trait_token, &t.ident);
            quote!(#token #ident)
        }
        Item::Mod(m) => {
            let (token, ident, semi) = (&m.mod_token, &m.ident, &m.semi);
            quote!(#token #ident #semi)
        }
        Item::Impl(i) => {
            let (token, ty) = (&i.impl_token, &i.self_ty);
            quote!(#token #ty)
        }
        other => {
            let span = other.span();
            quote_spanned!(span=> item)
        }
    }
}

/// Expands a parsed module: strips and reads its `#[agent]`s, then adds `app()` and `main`.
fn expand(mut module: ItemMod, args: &AppArgs, mut errors: Vec<Error>) -> TokenStream {
    let mod_ident = module.ident.clone();
    let name = args
        .name
        .as_ref()
        .map_or_else(|| LitStr::new(&mod_ident.unraw().to_string().replace('_', "-"), mod_ident.span()), LitStr::clone);
    let mut agents = vec![];
    let mut has_app_fn = false;
    if let Some((_, items)) = &mut module.content {
        for item in items.iter_mut() {
            match item {
                Item::Fn(f) => {
                    if f.sig.ident == "app" {
                        has_app_fn = true;
                        errors.push(Error::new_spanned(
                            &f.sig.ident,
                            "a #[sabot::app] module generates `app()`: rename this function",
                        ));
                    }
                    let attrs = app_ast::take_agent_attrs(&mut f.attrs);
                    if attrs.is_empty() {
                        continue;
                    }
                    let parsed = app_ast::agent_args(&attrs, &mut errors);
                    let kind = check_signature(f, &mut errors);
                    if let (Some(args), Some(kind)) = (parsed, kind) {
                        if let (Kind::Records, Some((span, _))) = (kind, &args.sink) {
                            errors.push(Error::new(
                                *span,
                                "an async agent consumes its stream; `sink` is for agents that return a Stream",
                            ));
                        }
                        let output_span = match &f.sig.output {
                            ReturnType::Type(_, ty) => ty.span(),
                            ReturnType::Default => f.sig.ident.span(),
                        };
                        let ident = f.sig.ident.clone();
                        agents.push(Agent { ident, kind, args, output_span, cfgs: app_ast::cfg_attrs(f) });
                    }
                }
                other => reject_nested_agents(other, &mut errors),
            }
        }
        if agents.is_empty() && errors.is_empty() {
            errors.push(Error::new_spanned(
                quote!(#mod_ident),
                "a #[sabot::app] module needs at least one #[agent] function",
            ));
        }
    }

    let failed = !errors.is_empty();
    let registrations = agents.iter().map(register);
    let doc = format!(" The app `{}` with its agents (generated by `#[sabot::app]`).", name.value());
    // With errors, `app()` is still declared (so uses of it elsewhere do not add errors) but
    // registers nothing.
    let body = if failed {
        quote!(::sabot::app::App::new(#name))
    } else {
        quote! {
            let app = ::sabot::app::App::new(#name);
            #( #registrations )*
            app
        }
    };
    if let Some((_, items)) = &mut module.content
        && !has_app_fn
    {
        items.push(parse_quote! {
            #[doc = #doc]
            pub fn app() -> ::sabot::app::App {
                #body
            }
        });
    }
    let main = args.main.then(|| {
        quote! {
            fn main() -> ::std::process::ExitCode {
                #mod_ident::app().main()
            }
        }
    });
    let err = errors.into_iter().map(Error::into_compile_error);
    quote!(#module #main #(#err)*)
}

/// One `let app = app.agent(...);`, under the function's `#[cfg]`s.
fn register(agent: &Agent) -> TokenStream {
    let ident = &agent.ident;
    let name = LitStr::new(&agent.name(), ident.span());
    let topic = &agent.args.topic;
    let constructor = match agent.kind {
        Kind::Stream => Ident::new("stream", agent.output_span),
        Kind::Records => Ident::new("records", agent.output_span),
    };
    let sink = agent.args.sink.as_ref().map(|(_, s)| quote!(.sink(#s)));
    let group = agent.args.group.as_ref().map(|g| quote!(.group(#g)));
    let dead_letter = agent.args.dead_letter.as_ref().map(|d| quote!(.dead_letter(#d)));
    let key = agent.args.key.as_ref().map(|k| quote!(.key(#k)));
    let cfgs = &agent.cfgs;
    let call = quote_spanned!(agent.output_span=> ::sabot::app::Agent::#constructor(#name, #topic, #ident));
    quote! {
        #( #cfgs )*
        let app = app.agent(#call #sink #group #dead_letter #key);
    }
}

/// Checks an agent function's signature, returning its kind: sync with one `Stream<T>`
/// parameter, or async with one `AgentStream<T>` parameter; no generics, no `self`.
fn check_signature(f: &ItemFn, errors: &mut Vec<Error>) -> Option<Kind> {
    let sig = &f.sig;
    let kind = if sig.asyncness.is_some() { Kind::Records } else { Kind::Stream };
    let mut ok = true;
    let mut fail = |err: Error| {
        errors.push(err);
        ok = false;
    };
    if let syn::Safety::Unsafe(token) = &sig.safety {
        fail(Error::new_spanned(token, "an #[agent] cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        fail(Error::new_spanned(abi, "an #[agent] cannot be an `extern` fn"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        fail(Error::new_spanned(
            &sig.generics,
            "an #[agent] cannot be generic: its input and output are concrete Record types",
        ));
    }
    let expected = match kind {
        Kind::Stream => "`Stream<T>`",
        Kind::Records => "`AgentStream<T>`",
    };
    let one_param = format!("an #[agent] takes exactly one parameter, its input {expected}");
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        None => fail(Error::new(sig.paren_token.span.join(), one_param)),
        Some(FnArg::Receiver(receiver)) => fail(Error::new_spanned(
            receiver,
            format!("an #[agent] is a free function: it takes its input {expected}, not `self`"),
        )),
        Some(FnArg::Typed(param)) => {
            if let Err(err) = check_param_type(&param.ty, kind) {
                fail(err);
            }
            let extra: Vec<_> = inputs.collect();
            if let (Some(first), Some(last)) = (extra.first(), extra.last()) {
                fail(Error::new_spanned(quote!(#first #last), one_param));
            }
        }
    }
    ok.then_some(kind)
}

/// The parameter's type must be `Stream<T>` (sync) or `AgentStream<T>` (async), by the last
/// segment of its path, with one type argument.
fn check_param_type(ty: &Type, kind: Kind) -> Result<()> {
    let (want, other) = match kind {
        Kind::Stream => ("Stream", "AgentStream"),
        Kind::Records => ("AgentStream", "Stream"),
    };
    let segment = match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    };
    let has_one_type_arg = |args: &PathArguments| match args {
        PathArguments::AngleBracketed(a) => {
            a.args.len() == 1 && matches!(a.args.first(), Some(GenericArgument::Type(_)))
        }
        _ => false,
    };
    match segment {
        Some(s) if s.ident == want && has_one_type_arg(&s.arguments) => Ok(()),
        Some(s) if s.ident == want => {
            Err(Error::new_spanned(ty, format!("the input of an #[agent] is `{want}<T>` with its Record type `T`")))
        }
        Some(s) if s.ident == other => Err(Error::new_spanned(
            ty,
            match kind {
                Kind::Stream => {
                    "a sync #[agent] takes a `Stream<T>`; an `AgentStream<T>` is the input of an `async fn` agent"
                }
                Kind::Records => {
                    "an async #[agent] takes an `AgentStream<T>`; a `Stream<T>` is the input of a sync (non-async) agent"
                }
            },
        )),
        _ => Err(Error::new_spanned(
            ty,
            match kind {
                Kind::Stream => "a sync #[agent] takes its input as a `Stream<T>` (T a Record type)",
                Kind::Records => "an async #[agent] takes its input as an `AgentStream<T>` (T a Record type)",
            },
        )),
    }
}

/// Reports `#[agent]`s where the app macro does not look for them: on items other than
/// functions, in impls and in nested modules (the attributes are removed, so the only error is
/// this one).
fn reject_nested_agents(item: &mut Item, errors: &mut Vec<Error>) {
    let misplaced = |attrs: &mut Vec<syn::Attribute>, errors: &mut Vec<Error>| {
        for attr in app_ast::take_agent_attrs(attrs) {
            errors.push(Error::new_spanned(
                attr,
                "#[agent] goes on a function at the top level of the #[sabot::app] module",
            ));
        }
    };
    match item {
        Item::Impl(i) => {
            misplaced(&mut i.attrs, errors);
            for item in &mut i.items {
                if let ImplItem::Fn(f) = item {
                    misplaced(&mut f.attrs, errors);
                }
            }
        }
        Item::Mod(m) => {
            misplaced(&mut m.attrs, errors);
            if let Some((_, items)) = &mut m.content {
                for item in items {
                    if let Item::Fn(f) = item {
                        misplaced(&mut f.attrs, errors);
                    } else {
                        reject_nested_agents(item, errors);
                    }
                }
            }
        }
        Item::Struct(s) => misplaced(&mut s.attrs, errors),
        Item::Enum(e) => misplaced(&mut e.attrs, errors),
        Item::Const(c) => misplaced(&mut c.attrs, errors),
        Item::Static(s) => misplaced(&mut s.attrs, errors),
        Item::Type(t) => misplaced(&mut t.attrs, errors),
        Item::Use(u) => misplaced(&mut u.attrs, errors),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn errors_of(out: &TokenStream) -> Vec<String> {
        let text = out.to_string();
        text.match_indices("compile_error !")
            .map(|(i, _)| {
                let rest = &text[i..];
                let start = rest.find('"').map_or(0, |s| s + 1);
                let end = rest[start..].find("\" }").map_or(rest.len(), |e| start + e);
                rest[start..end].replace("\\\"", "\"")
            })
            .collect()
    }

    #[test]
    fn expands_module_app_and_main() {
        let out = app(
            quote!(name = "fraud-detection"),
            quote! {
                mod fraud {
                    use super::*;
                    #[agent("transactions", sink = "alerts")]
                    fn detect(stream: Stream<Transaction>) -> sabot::Result<Stream<Alert>> { Ok(stream.map(Alert::from)) }
                    #[sabot::agent("transactions", group = "g", dead_letter = "dlq")]
                    async fn audit(stream: AgentStream<Transaction>) -> sabot::Result<()> { drop(stream); Ok(()) }
                    struct Helper;
                }
            },
        );
        assert!(errors_of(&out).is_empty(), "{out}");
        let file: syn::File = syn::parse2(out).expect("the expansion parses");
        let [Item::Mod(module), Item::Fn(main)] = file.items.as_slice() else { panic!("a module and main") };
        assert_eq!(main.sig.ident, "main");
        assert_eq!(
            quote!(#main).to_string(),
            quote!(
                fn main() -> ::std::process::ExitCode {
                    fraud::app().main()
                }
            )
            .to_string()
        );
        let items = &module.content.as_ref().expect("inline").1;
        assert_eq!(items.len(), 5);
        for item in items {
            if let Item::Fn(f) = item {
                assert!(f.attrs.iter().all(|a| !app_ast::is_agent_attr(a)));
            }
        }
        let Some(Item::Fn(app_fn)) = items.last() else { panic!("app() last") };
        let body = &app_fn.block;
        let expected = quote!({
            let app = ::sabot::app::App::new("fraud-detection");
            let app = app.agent(::sabot::app::Agent::stream("detect", "transactions", detect).sink("alerts"));
            let app =
                app.agent(::sabot::app::Agent::records("audit", "transactions", audit).group("g").dead_letter("dlq"));
            app
        });
        assert_eq!(quote!(#body).to_string(), expected.to_string());
    }

    #[test]
    fn default_name_and_no_main() {
        let out = app(
            quote!(main = false),
            // A trailing comma after the keys is accepted.
            r#"mod my_app { #[agent("t", sink = "o",)] fn a(s: Stream<T>) -> Stream<T> { s } }"#
                .parse()
                .expect("tokens"),
        );
        let text = out.to_string();
        assert!(text.contains("App :: new (\"my-app\")"), "{text}");
        assert!(!text.contains("fn main"), "{text}");
        assert!(text.contains(". sink (\"o\")"), "{text}");
    }

    #[test]
    fn reports_errors() {
        let cases = [
            (
                quote!(nmae = "x"),
                quote!(
                    mod m {
                        #[agent("t")]
                        fn a(s: Stream<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["unknown app attribute `nmae`; expected `name` or `main`"],
            ),
            (
                quote!(name = "x", name = "y"),
                quote!(
                    mod m {
                        #[agent("t")]
                        fn a(s: Stream<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["duplicate app attribute `name`"],
            ),
            (
                quote!(),
                quote!(
                    fn f() {}
                ),
                vec!["#[sabot::app] goes on an inline module: `mod name { ... }`"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        fn f() {}
                    }
                ),
                vec!["a #[sabot::app] module needs at least one #[agent] function"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t", sink = "o")]
                        async fn a(s: AgentStream<T>) {}
                    }
                ),
                vec!["an async agent consumes its stream; `sink` is for agents that return a Stream"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t", sinks = "o")]
                        fn a(s: Stream<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["unknown agent attribute `sinks`; expected `sink`, `group`, `dead_letter` or `key`"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t", sink = "o", sink = "p")]
                        fn a(s: Stream<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["duplicate agent attribute `sink`"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent(sink = "o")]
                        fn a(s: Stream<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["an #[agent] needs its input topic first: #[agent(\"topic\")]"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t")]
                        fn a(s: Stream<T>, t: Stream<T>, u: u8) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["an #[agent] takes exactly one parameter, its input `Stream<T>`"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t")]
                        fn a(s: Vec<T>) -> Stream<T> {
                            s
                        }
                    }
                ),
                vec!["a sync #[agent] takes its input as a `Stream<T>` (T a Record type)"],
            ),
            (
                quote!(),
                quote!(
                    mod m {
                        #[agent("t")]
                        fn a<T>(s: Stream<T>) -> Stream<T> {
                            s
                        }
                        #[agent("t")]
                        fn app(self) {}
                    }
                ),
                vec![
                    "an #[agent] cannot be generic: its input and output are concrete Record types",
                    "a #[sabot::app] module generates `app()`: rename this function",
                    "an #[agent] is a free function: it takes its input `Stream<T>`, not `self`",
                ],
            ),
        ];
        for (attr, item, expected) in cases {
            let out = app(attr, item);
            assert_eq!(errors_of(&out), expected, "{out}");
        }
        let out = agent(
            quote!("t"),
            quote!(
                fn a() {}
            ),
        );
        assert_eq!(errors_of(&out), vec![MISPLACED]);
    }
}
