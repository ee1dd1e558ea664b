//! Checks on the parsed input that `syn` cannot express: attribute combinations, column names
//! and field types that can never be columns.

use std::collections::HashMap;

use syn::{Error, GenericArgument, PathArguments, Result, Type};

use crate::ast::{Errors, Input};

/// Validates `input`, reporting every problem at once.
pub fn check(input: &Input) -> Result<()> {
    let mut errors = Errors::default();
    let mut event_time: Option<&syn::Ident> = None;
    let mut columns: HashMap<&str, &syn::Ident> = HashMap::new();

    for field in &input.fields {
        let attrs = &field.attrs;
        if let Some(skip) = attrs.skip {
            if attrs.rename.is_some() || attrs.event_time.is_some() {
                errors.push(Error::new(
                    skip,
                    "a `skip` field is not a column: it cannot also be `rename`d or the `event_time`",
                ));
            }
            continue;
        }
        if let Some(span) = attrs.event_time {
            match event_time {
                Some(first) => errors.push(Error::new(
                    span,
                    format!("duplicate #[record(event_time)]: `{first}` is already the event-time field"),
                )),
                None => event_time = Some(field.ident),
            }
        }
        if field.column.is_empty() {
            errors.push(Error::new(field.column_span(), "a column name cannot be empty"));
        } else if let Some(first) = columns.insert(&field.column, field.ident) {
            errors.push(Error::new(
                field.column_span(),
                format!("duplicate column name `{}` (also used by field `{first}`)", field.column),
            ));
        }
        if let Err(err) = check_type(field.ty) {
            errors.push(err);
        }
    }
    errors.finish()
}

const SUPPORTED: &str = "supported: integers, floats, bool, String, Vec<u8>, Timestamp, Option<_> of these, \
    #[derive(Record)] structs; use #[record(skip)] for other fields";

/// Rejects types that can never implement `RecordField`, with a clearer message than the trait
/// error would give. Other unsupported types are caught by the trait bound, at the same span.
fn check_type(ty: &Type) -> Result<()> {
    let unsupported = |what: &str| Err(Error::new_spanned(ty, format!("unsupported field type: {what}\n{SUPPORTED}")));
    match ty {
        Type::Group(group) => check_type(&group.elem),
        Type::Paren(paren) => check_type(&paren.elem),
        Type::Reference(_) => unsupported("references cannot be stored in a record (use an owned type)"),
        Type::Tuple(tuple) if tuple.elems.is_empty() => unsupported("`()`"),
        Type::Tuple(_) => unsupported("tuples (use a nested #[derive(Record)] struct)"),
        Type::Array(_) | Type::Slice(_) => unsupported("arrays and slices (only Vec<u8> is a list type)"),
        Type::Ptr(_) | Type::FnPtr(_) | Type::TraitObject(_) | Type::ImplTrait(_) | Type::Never(_) => {
            unsupported("this kind of type")
        }
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return Ok(());
            };
            let name = last.ident.to_string();
            let first_arg = match &last.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                }),
                _ => None,
            };
            match name.as_str() {
                "Option" => first_arg.map_or(Ok(()), check_type),
                "Vec" => match first_arg {
                    Some(Type::Path(p)) if p.path.is_ident("u8") => Ok(()),
                    Some(_) => unsupported("`Vec<T>` other than `Vec<u8>` (lists are not supported)"),
                    None => Ok(()),
                },
                "HashMap" | "BTreeMap" | "HashSet" | "BTreeSet" | "VecDeque" | "LinkedList" | "BinaryHeap" => {
                    unsupported(&format!("`{name}` (collections are not supported)"))
                }
                "usize" | "isize" | "i128" | "u128" | "char" | "str" => unsupported(&format!("`{name}`")),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
