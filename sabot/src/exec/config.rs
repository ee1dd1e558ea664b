//! Execution settings.

/// Switches for the optimizer's rules (all on by default); turning one off never changes
/// results, only plans and speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimizerConfig {
    /// Read only the columns the plan uses.
    pub projection_pushdown: bool,
    /// Move filters towards the sources, below projections and joins, and into scans.
    pub filter_pushdown: bool,
    /// Merge adjacent filters and adjacent projections into one operator each.
    pub fuse_stateless: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig { projection_pushdown: true, filter_pushdown: true, fuse_stateless: true }
    }
}

impl OptimizerConfig {
    /// Every rule off: the plan runs as written.
    pub fn disabled() -> Self {
        OptimizerConfig { projection_pushdown: false, filter_pushdown: false, fuse_stateless: false }
    }
}

/// How a pipeline runs.
///
/// ```
/// use sabot::exec::ExecConfig;
/// let config = ExecConfig::default().with_parallelism(2).with_batch_size(8192);
/// assert_eq!(config.parallelism, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    /// Parallel partitions per pipeline (default: the number of cores).
    pub parallelism: usize,
    /// Preferred rows per batch (a morsel is read in batches of this size).
    pub batch_size: usize,
    /// Batches buffered between two threads; bounds memory and propagates backpressure.
    pub channel_capacity: usize,
    /// The optimizer's rules.
    pub optimizer: OptimizerConfig,
    /// An input partition silent for this long stops holding back the merged watermark
    /// (`None`: never; a silent input then stalls event time, as in Flink without idleness).
    pub idle_timeout: Option<std::time::Duration>,
    /// Compile filters and projections into native kernels (`sabot-jit`, feature `jit`) when
    /// they are supported; results are the same either way (default: on).
    pub jit: bool,
    /// Where keyed state lives (`process()` operators).
    pub state_backend: crate::state::StateBackend,
    /// How often a partition behind an exchange wakes up when no data arrives: it repeats its
    /// watermark as a heartbeat, so processing-time timers fire on an idle stream.
    pub timer_interval: std::time::Duration,
    /// Checkpoints (off by default): where, how often, and what to restore on start.
    pub checkpointing: Option<crate::checkpoint::CheckpointConfig>,
    /// The coordinator of the running pipeline (set by the driver when it starts).
    pub(crate) coordinator: Coordinator,
}

/// The running pipeline's checkpoint coordinator; configs compare equal whatever it is.
#[derive(Clone, Default)]
pub(crate) struct Coordinator(pub(crate) Option<std::sync::Arc<crate::checkpoint::CheckpointCoordinator>>);

impl PartialEq for Coordinator {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Coordinator {}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Coordinator(running)" } else { "Coordinator(none)" })
    }
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            batch_size: 64 * 1024,
            channel_capacity: 4,
            optimizer: OptimizerConfig::default(),
            idle_timeout: None,
            state_backend: crate::state::StateBackend::default(),
            jit: true,
            timer_interval: std::time::Duration::from_millis(100),
            checkpointing: None,
            coordinator: Coordinator::default(),
        }
    }
}

impl ExecConfig {
    /// Sets [`ExecConfig::parallelism`] (at least 1).
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// Sets [`ExecConfig::batch_size`] (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets [`ExecConfig::state_backend`].
    pub fn with_state_backend(mut self, backend: crate::state::StateBackend) -> Self {
        self.state_backend = backend;
        self
    }

    /// Sets [`ExecConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Sets [`ExecConfig::jit`].
    pub fn with_jit(mut self, jit: bool) -> Self {
        self.jit = jit;
        self
    }

    /// Turns checkpoints on (see [`crate::checkpoint`]).
    pub fn with_checkpointing(mut self, checkpointing: crate::checkpoint::CheckpointConfig) -> Self {
        self.checkpointing = Some(checkpointing);
        self
    }

    /// Sets [`ExecConfig::optimizer`].
    pub fn with_optimizer(mut self, optimizer: OptimizerConfig) -> Self {
        self.optimizer = optimizer;
        self
    }
}
