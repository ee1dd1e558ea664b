use proc_macro::TokenStream; #[proc_macro_derive(Record, attributes(record))] pub fn r(_i: TokenStream)->TokenStream{TokenStream::new()}
