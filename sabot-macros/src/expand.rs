//! Code generation for `#[derive(Record)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{DeriveInput, Result};

use crate::ast::{Field, Input};
use crate::validate;

/// Expands the derive, or returns the (combined) errors.
pub fn derive(input: &DeriveInput) -> Result<TokenStream> {
    let input = Input::from_syn(input)?;
    validate::check(&input)?;
    Ok(expand(&input))
}

fn expand(input: &Input) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let view = format_ident!("{}View", ident);
    let arrays = format_ident!("{}Arrays", ident);
    let columns = format_ident!("{}Columns", ident);
    let private = quote!(::sabot::record::__private);
    let arrow = quote!(#private::arrow);
    let field_trait = quote!(::sabot::record::RecordField);

    let cols: Vec<&Field> = input.fields.iter().filter(|f| f.is_column()).collect();
    let skipped: Vec<&Field> = input.fields.iter().filter(|f| !f.is_column()).collect();
    let col_idents: Vec<_> = cols.iter().map(|f| f.ident).collect();
    let col_types: Vec<_> = cols.iter().map(|f| f.ty).collect();
    let col_names: Vec<&str> = cols.iter().map(|f| f.column.as_str()).collect();

    // Every mention of a field's type is spanned at that type, so that an unsupported type
    // is reported on the user's field.
    let as_field = |f: &Field| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> <#ty as #field_trait>)
    };
    let projections: Vec<_> = cols.iter().map(|f| as_field(f)).collect();
    let field_checks = cols.iter().map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> #private::assert_field::<#ty>();)
    });
    let event_time = input.fields.iter().find(|f| f.is_column() && f.attrs.event_time.is_some());
    let event_time_check = event_time.map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> #private::assert_event_time::<#ty>();)
    });
    let event_time_fn = event_time.map(|f| {
        let name = &f.column;
        quote! {
            fn event_time_column() -> #private::Option<&'static str> {
                #private::Some(#name)
            }
        }
    });

    let view_fields = cols.iter().zip(&projections).map(|(f, p)| {
        let (fident, doc) = (f.ident, format!("Column `{}`.", f.column));
        quote!(#[doc = #doc] pub #fident: #p::View<'a>,)
    });
    let array_fields = cols.iter().zip(&projections).map(|(f, p)| {
        let fident = f.ident;
        quote!(#fident: #p::Array<'a>,)
    });
    let column_fields = cols.iter().map(|f| {
        let (fident, ty) = (f.ident, f.ty);
        let doc = format!("Column `{}`.", f.column);
        quote_spanned!(ty.span()=> #[doc = #doc] pub #fident: ::sabot::record::Col<#ty>,)
    });
    // A struct without columns still needs to use its lifetime.
    let (marker_field, marker_value) = if cols.is_empty() {
        (quote!(_lifetime: ::core::marker::PhantomData<&'a ()>,), quote!(_lifetime: ::core::marker::PhantomData,))
    } else {
        (quote!(), quote!())
    };
    let skipped_values = skipped.iter().map(|f| {
        let (fident, ty) = (f.ident, f.ty);
        quote_spanned!(ty.span()=> #fident: <#ty as #private::Default>::default(),)
    });

    let ident_str = ident.to_string();
    let view_doc = format!("A borrowed, zero-copy view of one `{ident_str}` row (from `Record::view`).");
    let arrays_doc = format!("The columns of a `{ident_str}` batch, downcast once (from `Record::arrays`).");
    let columns_doc = format!("Typed column handles of `{ident_str}` (from `Record::cols`).");

    quote! {
        #[doc = #view_doc]
        #[derive(Clone, Copy, Debug, PartialEq)]
        #[allow(dead_code)]
        #vis struct #view<'a> {
            #(#view_fields)*
            #marker_field
        }

        #[doc = #arrays_doc]
        #[allow(dead_code)]
        #vis struct #arrays<'a> {
            #(#array_fields)*
            #marker_field
        }

        #[doc = #columns_doc]
        #[derive(Clone, Copy, Debug)]
        #[allow(dead_code)]
        #vis struct #columns {
            #(#column_fields)*
        }

        const _: () = {
            #(#field_checks)*
            #event_time_check
        };

        #[automatically_derived]
        impl ::sabot::Record for #ident {
            type View<'a> = #view<'a>;
            type Arrays<'a> = #arrays<'a>;
            type Columns = #columns;

            fn schema() -> #arrow::datatypes::SchemaRef {
                static SCHEMA: #private::OnceLock<#arrow::datatypes::SchemaRef> = #private::OnceLock::new();
                SCHEMA
                    .get_or_init(|| {
                        #private::Arc::new(#arrow::datatypes::Schema::new(#private::Vec::<#arrow::datatypes::Field>::from([
                            #(#projections::field(#col_names),)*
                        ])))
                    })
                    .clone()
            }

            fn to_batch(rows: &[Self]) -> #arrow::record_batch::RecordBatch {
                #private::to_batch(rows)
            }

            fn from_batch(batch: &#arrow::record_batch::RecordBatch) -> ::sabot::Result<#private::Vec<Self>> {
                #private::from_batch(batch)
            }

            fn arrays(batch: &#arrow::record_batch::RecordBatch) -> ::sabot::Result<Self::Arrays<'_>> {
                #private::arrays::<Self>(batch)
            }

            #[inline]
            fn view<'a>(arrays: &Self::Arrays<'a>, row: usize) -> Self::View<'a> {
                let _ = (&arrays, row);
                #view {
                    #(#col_idents: #projections::view_value(&arrays.#col_idents, row),)*
                    #marker_value
                }
            }

            fn cols() -> Self::Columns {
                #columns {
                    #(#col_idents: ::sabot::record::Col::new(#col_names),)*
                }
            }

            #event_time_fn
        }

        #[automatically_derived]
        impl #private::RecordImpl for #ident {
            fn arrays_from<'a>(source: &#private::Source<'a>) -> ::sabot::Result<Self::Arrays<'a>> {
                let _ = source;
                #private::Ok(#arrays {
                    #(#col_idents: source.column::<#col_types>(#col_names)?,)*
                    #marker_value
                })
            }

            fn read_row(arrays: &Self::Arrays<'_>, row: usize) -> ::sabot::Result<Self> {
                let _ = (&arrays, row);
                #private::Ok(Self {
                    #(#col_idents: #projections::read_value(#col_names, &arrays.#col_idents, row)?,)*
                    #(#skipped_values)*
                })
            }

            fn columns_from_values<'v, I>(rows: I) -> #private::Vec<#arrow::array::ArrayRef>
            where
                I: ::core::iter::Iterator<Item = &'v Self> + ::core::clone::Clone,
            {
                let _ = &rows;
                #private::Vec::from([
                    #(#projections::from_values(rows.clone().map(|r| &r.#col_idents)),)*
                ])
            }

            fn columns_from_options<'v, I>(rows: I) -> #private::Vec<#arrow::array::ArrayRef>
            where
                I: ::core::iter::Iterator<Item = #private::Option<&'v Self>> + ::core::clone::Clone,
            {
                let _ = &rows;
                #private::Vec::from([
                    #(#projections::from_options(rows.clone().map(|r| r.map(|r| &r.#col_idents))),)*
                ])
            }
        }

        #[automatically_derived]
        impl #field_trait for #ident {
            type NonNull = Self;
            type Array<'a> = ::sabot::record::StructColumn<'a, Self>;
            type View<'a> = #view<'a>;

            fn data_type() -> #arrow::datatypes::DataType {
                #private::struct_data_type::<Self>()
            }

            fn from_values<'v, I>(values: I) -> #arrow::array::ArrayRef
            where
                I: ::core::iter::Iterator<Item = &'v Self> + ::core::clone::Clone,
            {
                #private::struct_from_values(values)
            }

            fn from_options<'v, I>(values: I) -> #arrow::array::ArrayRef
            where
                I: ::core::iter::Iterator<Item = #private::Option<&'v Self>> + ::core::clone::Clone,
            {
                #private::struct_from_options(values)
            }

            fn downcast<'a>(column: &str, array: &'a dyn #arrow::array::Array) -> ::sabot::Result<Self::Array<'a>> {
                #private::struct_downcast(column, array)
            }

            #[inline]
            fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
                array.is_valid(row)
            }

            #[inline]
            fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
                #private::struct_view(array, row)
            }

            fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> ::sabot::Result<Self> {
                #private::struct_read(column, array, row)
            }
        }
    }
}
