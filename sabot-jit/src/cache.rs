//! A cache of compiled kernels keyed by their [`KernelSpec`] (the IR, the input types and
//! which inputs are nullable), so each distinct kernel is compiled once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::kernel::{CompileError, Kernel, KernelSpec};

/// Counters of a [`KernelCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (including remembered failures).
    pub hits: u64,
    /// Lookups that compiled.
    pub misses: u64,
    /// Kernels compiled successfully.
    pub compiled: u64,
    /// Time spent compiling, in total.
    pub compile_time: Duration,
    /// The longest compile.
    pub max_compile_time: Duration,
}

/// Compiled kernels (and remembered failures) by spec.
///
/// ```
/// use sabot_jit::ir::{Builder, Type};
/// use sabot_jit::{KernelCache, KernelSpec};
/// let mut b = Builder::new(&[Type::F64]);
/// let x = b.input(0);
/// let y = b.add(x, x).unwrap();
/// let spec = KernelSpec::project(b.finish(vec![y]), vec![false]);
/// let cache = KernelCache::new();
/// let k1 = cache.get_or_compile(&spec).unwrap();
/// let k2 = cache.get_or_compile(&spec).unwrap();
/// assert!(std::sync::Arc::ptr_eq(&k1, &k2));
/// assert_eq!(cache.stats().misses, 1);
/// ```
#[derive(Debug, Default)]
pub struct KernelCache {
    kernels: Mutex<HashMap<KernelSpec, Result<Arc<Kernel>, CompileError>>>,
    stats: Mutex<CacheStats>,
}

impl KernelCache {
    /// An empty cache.
    pub fn new() -> KernelCache {
        KernelCache::default()
    }

    /// The process-wide cache.
    pub fn global() -> &'static KernelCache {
        static GLOBAL: OnceLock<KernelCache> = OnceLock::new();
        GLOBAL.get_or_init(KernelCache::new)
    }

    /// The kernel for `spec`, compiled on first use.
    pub fn get_or_compile(&self, spec: &KernelSpec) -> Result<Arc<Kernel>, CompileError> {
        if let Some(found) = self.kernels.lock().expect("kernel cache lock").get(spec) {
            self.stats.lock().expect("kernel cache stats lock").hits += 1;
            return found.clone();
        }
        // Compiled outside the map's lock; two threads may race to compile the same spec, and
        // the first result stored wins.
        let compiled = Kernel::compile(spec.clone()).map(Arc::new);
        {
            let mut stats = self.stats.lock().expect("kernel cache stats lock");
            stats.misses += 1;
            if let Ok(k) = &compiled {
                stats.compiled += 1;
                stats.compile_time += k.compile_time();
                stats.max_compile_time = stats.max_compile_time.max(k.compile_time());
            }
        }
        let mut kernels = self.kernels.lock().expect("kernel cache lock");
        kernels.entry(spec.clone()).or_insert(compiled).clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("kernel cache stats lock")
    }

    /// The number of specs cached (compiled or failed).
    pub fn len(&self) -> usize {
        self.kernels.lock().expect("kernel cache lock").len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
