//! The fraud-detection example's binary, for tests that run workers as child processes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `<target>/debug/examples/fraud_detection`, next to this test's `<target>/debug/deps/`;
/// fails if it is missing or older than the sources it is built from.
pub fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("the test runs from <target>/<profile>/deps");
    let binary = profile_dir.join("examples").join(format!("fraud_detection{}", std::env::consts::EXE_SUFFIX));
    let build = "run `cargo build --example fraud_detection` (plain `cargo test` builds the examples first)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("the example binary {} is missing: {build}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples/fraud_detection", "sabot/src", "sabot-macros/src", "sabot-jit/src"] {
        if let Some((source, _)) = newest_file(&root.join(dir)).filter(|(_, modified)| *modified > built) {
            panic!("the example binary {} is older than {}: {build}", binary.display(), source.display());
        }
    }
    binary
}

/// The most recently modified file under `dir`.
fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().map(|modified| (path, modified))
        };
        if let Some(c) = candidate.filter(|c| newest.as_ref().is_none_or(|n| c.1 > n.1)) {
            newest = Some(c);
        }
    }
    newest
}
