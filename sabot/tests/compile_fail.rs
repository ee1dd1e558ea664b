//! Compile-fail tests for `#[derive(Record)]` and typed column expressions (trybuild).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p sabot --test compile_fail`
//! and review the `.stderr` diffs.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
