//! Compile-fail tests for `#[derive(Record)]`, `#[udf]` and typed column expressions (trybuild).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p sabot --test compile_fail`
//! and review the `.stderr` diffs.
//!
//! trybuild compiles its cases with the features of this build; with `rocksdb` on, that would
//! build RocksDB's C++ a second time in trybuild's own target directory, so `scripts/test.sh`
//! runs this test in a separate invocation without that feature.

#[cfg(not(feature = "rocksdb"))]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
