//! The derive's input, parsed from `syn` into what the expansion needs.

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{Data, DeriveInput, Error, Fields, Ident, LitStr, Result, Type, Visibility};

/// A `#[derive(Record)]` struct.
pub struct Input<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub fields: Vec<Field<'a>>,
}

/// One named field of the struct.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    pub attrs: Attrs,
    /// The column name: the `rename`, or the field's name without `r#`.
    pub column: String,
}

/// The field's `#[record(...)]` attributes, each with the span of its key for errors.
#[derive(Default)]
pub struct Attrs {
    pub rename: Option<LitStr>,
    pub event_time: Option<Span>,
    pub skip: Option<Span>,
}

impl<'a> Field<'a> {
    /// Whether the field is a column (not `#[record(skip)]`).
    pub fn is_column(&self) -> bool {
        self.attrs.skip.is_none()
    }

    /// The span that best names the column: its `rename` literal, or the field's name.
    pub fn column_span(&self) -> Span {
        self.attrs.rename.as_ref().map_or_else(|| self.ident.span(), LitStr::span)
    }
}

impl<'a> Input<'a> {
    /// Parses `input`, rejecting what is not a non-generic struct with named fields.
    pub fn from_syn(input: &'a DeriveInput) -> Result<Self> {
        let mut errors = Errors::default();
        for attr in &input.attrs {
            if attr.path().is_ident("record") {
                errors.push(Error::new_spanned(
                    attr,
                    "#[record(...)] attributes go on fields; the struct itself takes none",
                ));
            }
        }
        let data = match &input.data {
            Data::Struct(data) => data,
            Data::Enum(data) => {
                return Err(Error::new(
                    data.enum_token.span(),
                    "#[derive(Record)] only supports structs with named fields, not enums",
                ));
            }
            Data::Union(data) => {
                return Err(Error::new(
                    data.union_token.span(),
                    "#[derive(Record)] only supports structs with named fields, not unions",
                ));
            }
        };
        if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
            errors.push(Error::new_spanned(
                &input.generics,
                "#[derive(Record)] does not support generic parameters or lifetimes",
            ));
        }
        let named = match &data.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(_) | Fields::Unit => {
                errors.push(Error::new(
                    input.ident.span(),
                    "#[derive(Record)] only supports structs with named fields (`struct T { a: i64 }`)",
                ));
                return Err(errors.finish().unwrap_err());
            }
        };
        let mut fields = Vec::with_capacity(named.named.len());
        for field in &named.named {
            let ident = field.ident.as_ref().expect("named fields have names");
            let attrs = match parse_attrs(field) {
                Ok(attrs) => attrs,
                Err(err) => {
                    errors.push(err);
                    Attrs::default()
                }
            };
            let column = attrs.rename.as_ref().map_or_else(|| ident.unraw().to_string(), LitStr::value);
            fields.push(Field { ident, ty: &field.ty, attrs, column });
        }
        errors.finish()?;
        Ok(Input { ident: &input.ident, vis: &input.vis, fields })
    }
}

fn parse_attrs(field: &syn::Field) -> Result<Attrs> {
    let mut attrs = Attrs::default();
    for attr in &field.attrs {
        if !attr.path().is_ident("record") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            let key = &meta.path;
            let duplicate = |what: &str| Error::new(key.span(), format!("duplicate `{what}` attribute"));
            if key.is_ident("rename") {
                let name: LitStr = meta.value()?.parse()?;
                if attrs.rename.is_some() {
                    return Err(duplicate("rename"));
                }
                attrs.rename = Some(name);
            } else if key.is_ident("event_time") {
                if attrs.event_time.is_some() {
                    return Err(duplicate("event_time"));
                }
                attrs.event_time = Some(key.span());
            } else if key.is_ident("skip") {
                if attrs.skip.is_some() {
                    return Err(duplicate("skip"));
                }
                attrs.skip = Some(key.span());
            } else {
                let name = key.get_ident().map_or_else(|| "?".to_string(), Ident::to_string);
                return Err(meta.error(format!(
                    "unknown record attribute `{name}`; expected `rename = \"...\"`, `event_time` or `skip`"
                )));
            }
            Ok(())
        })?;
    }
    Ok(attrs)
}

/// Collects several errors into one.
#[derive(Default)]
pub struct Errors(Option<Error>);

impl Errors {
    pub fn push(&mut self, err: Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    pub fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
