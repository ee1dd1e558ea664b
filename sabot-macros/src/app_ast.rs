//! `#[sabot::app]`'s input, parsed from `syn`: the app's arguments, and each `#[agent(...)]`
//! function of the module with its arguments.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::spanned::Spanned as _;
use syn::{Attribute, Error, Ident, ItemFn, LitBool, LitStr, Meta, Result, Token};

/// The arguments of `#[sabot::app(name = "...", main = false)]`.
pub struct AppArgs {
    /// The app's name, if given.
    pub name: Option<LitStr>,
    /// Whether to generate `fn main` next to the module (`main = false` turns it off).
    pub main: bool,
}

impl Default for AppArgs {
    fn default() -> Self {
        AppArgs { name: None, main: true }
    }
}

/// Parses the app's arguments into `args`. On error, `args` keeps what was parsed before it (so
/// the caller can still emit a `main` that matches what the user asked for).
pub fn parse_app_args(tokens: TokenStream, args: &mut AppArgs) -> Result<()> {
    let mut main_span: Option<Span> = None;
    let parser = syn::meta::parser(|meta| {
        let key = &meta.path;
        let name = key.get_ident().map_or_else(|| quote::quote!(#key).to_string().replace(' ', ""), Ident::to_string);
        let duplicate = || Error::new(key.span(), format!("duplicate app attribute `{name}`"));
        if key.is_ident("name") {
            let value: LitStr = meta.value()?.parse()?;
            if args.name.is_some() {
                return Err(duplicate());
            }
            if value.value().is_empty() {
                return Err(Error::new(value.span(), "an app name cannot be empty"));
            }
            args.name = Some(value);
        } else if key.is_ident("main") {
            let value: LitBool = meta.value()?.parse()?;
            if main_span.is_some() {
                return Err(duplicate());
            }
            main_span = Some(key.span());
            args.main = value.value;
        } else {
            return Err(meta.error(format!("unknown app attribute `{name}`; expected `name` or `main`")));
        }
        Ok(())
    });
    parser.parse2(tokens)
}

/// The arguments of `#[agent("topic", sink = "...", group = "...", dead_letter = "...", key = "...")]`.
pub struct AgentArgs {
    /// The input topic.
    pub topic: LitStr,
    /// The output topic, with the span of the `sink` key.
    pub sink: Option<(Span, LitStr)>,
    /// The consumer group.
    pub group: Option<LitStr>,
    /// The dead-letter topic.
    pub dead_letter: Option<LitStr>,
    /// The column the input topic's messages are keyed (partitioned) by.
    pub key: Option<LitStr>,
}

/// How an agent consumes its input, from the function's signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sync `fn(Stream<I>) -> Stream<O>` (or `sabot::Result<Stream<O>>`): `Agent::stream`.
    Stream,
    /// An `async fn(AgentStream<I>) -> ()` (or `sabot::Result<()>`): `Agent::records`.
    Records,
}

/// One `#[agent(...)]` function of the module.
pub struct Agent {
    /// The function's name (also the agent's name, without `r#`).
    pub ident: Ident,
    /// Sync (`Stream`) or async (`Records`).
    pub kind: Kind,
    /// The `#[agent(...)]` arguments.
    pub args: AgentArgs,
    /// The span of the function's return type (its name when it returns `()`): type errors
    /// in the registration (a return type that is no agent output) point there.
    pub output_span: Span,
    /// The function's `#[cfg(...)]` attributes, repeated on its registration.
    pub cfgs: Vec<Attribute>,
}

impl Agent {
    /// The agent's name: the function's name without `r#`.
    pub fn name(&self) -> String {
        self.ident.unraw().to_string()
    }
}

/// Whether `attr` is an `#[agent]` attribute (matched by the last segment of its path, so
/// `#[agent]`, `#[sabot::agent]` and `#[sabot::app::agent]` all are).
pub fn is_agent_attr(attr: &Attribute) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == "agent")
}

/// Removes the `#[agent]` attributes from `attrs`, returning them.
pub fn take_agent_attrs(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (agent, rest): (Vec<_>, Vec<_>) = std::mem::take(attrs).into_iter().partition(is_agent_attr);
    *attrs = rest;
    agent
}

const NEEDS_TOPIC: &str = "an #[agent] needs its input topic first: #[agent(\"topic\")]";

/// Parses the arguments of one `#[agent(...)]` attribute.
pub fn parse_agent_args(attr: &Attribute) -> Result<AgentArgs> {
    let list = match &attr.meta {
        Meta::List(list) => list,
        Meta::Path(path) => return Err(Error::new_spanned(path, NEEDS_TOPIC)),
        Meta::NameValue(nv) => return Err(Error::new_spanned(nv, NEEDS_TOPIC)),
    };
    let delimiter_span = list.delimiter.span().join();
    let parse = |input: ParseStream| -> Result<AgentArgs> {
        if !input.peek(LitStr) {
            let span = if input.is_empty() { delimiter_span } else { input.span() };
            return Err(Error::new(span, NEEDS_TOPIC));
        }
        let topic: LitStr = input.parse()?;
        if topic.value().is_empty() {
            return Err(Error::new(topic.span(), "a topic name cannot be empty"));
        }
        let mut args = AgentArgs { topic, sink: None, group: None, dead_letter: None, key: None };
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key = Ident::parse_any(input)?;
            let name = key.unraw().to_string();
            let slot = match name.as_str() {
                "sink" => None,
                "group" => Some(&mut args.group),
                "dead_letter" => Some(&mut args.dead_letter),
                "key" => Some(&mut args.key),
                _ => {
                    return Err(Error::new(
                        key.span(),
                        format!("unknown agent attribute `{name}`; expected `sink`, `group`, `dead_letter` or `key`"),
                    ));
                }
            };
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            let taken = match &slot {
                Some(slot) => slot.is_some(),
                None => args.sink.is_some(),
            };
            if taken {
                return Err(Error::new(key.span(), format!("duplicate agent attribute `{name}`")));
            }
            if value.value().is_empty() {
                return Err(Error::new(value.span(), format!("the `{name}` topic cannot be empty")));
            }
            match slot {
                Some(slot) => *slot = Some(value),
                None => args.sink = Some((key.span(), value)),
            }
        }
        Ok(args)
    };
    attr.parse_args_with(parse)
}

/// The function's `#[cfg(...)]` attributes.
pub fn cfg_attrs(item: &ItemFn) -> Vec<Attribute> {
    item.attrs.iter().filter(|a| a.path().is_ident("cfg")).cloned().collect()
}

/// Parses every `#[agent]` attribute in `attrs` (already taken off the item), reporting a
/// second one as a duplicate. Returns the first one's arguments, if it parsed.
pub fn agent_args(attrs: &[Attribute], errors: &mut Vec<Error>) -> Option<AgentArgs> {
    let mut first = None;
    for (i, attr) in attrs.iter().enumerate() {
        if i > 0 {
            errors.push(Error::new_spanned(attr, "duplicate #[agent] attribute: a function is one agent"));
            continue;
        }
        match parse_agent_args(attr) {
            Ok(args) => first = Some(args),
            Err(err) => errors.push(err),
        }
    }
    first
}
