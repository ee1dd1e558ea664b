//! Physical plans: operators, partitions and exchanges, and how they run.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arrow::datatypes::{DataType, SchemaRef};

use super::ExecConfig;
use super::exchange::{collect_ordered, gather};
use super::stream::{OperatorStream, PartitionStream, ScanStream, tag_union_input};
use crate::expr::common_type;
use crate::io::{ScanRequest, Source};
use crate::operator::{
    AggregateMode, AggregateOperator, FilterOperator, HashJoinProbe, JoinBuild, JoinColumn, JoinTable, LimitOperator,
    MapBatchesOperator, OperatorFactory, ProjectOperator, SortOperator, aggregate_supports_two_phase,
};
use crate::operator::{CountWindowOperator, SessionWindowOperator, WatermarkAssigner, WindowAggregateOperator};
use crate::plan::{JoinType, LogicalPlan};
use crate::window::WindowSpec;
use crate::{Result, SabotError};

/// A node of a physical plan.
#[derive(Clone)]
pub enum PhysicalPlan {
    /// Parallel morsel-driven scan.
    Scan {
        /// The table.
        source: Arc<dyn Source>,
        /// What to read.
        request: ScanRequest,
        /// Output schema.
        schema: SchemaRef,
    },
    /// One operator instance per input partition, chained in the partition's thread.
    Operator {
        /// The input.
        input: Box<PhysicalPlan>,
        /// Shown by `explain()`.
        name: String,
        /// Makes the instance of partition `i`.
        factory: OperatorFactory,
        /// Output schema.
        schema: SchemaRef,
    },
    /// All partitions into one; `ordered` restores source order.
    Gather {
        /// The input.
        input: Box<PhysicalPlan>,
        /// Whether source order is kept.
        ordered: bool,
    },
    /// A hash join: `build` is gathered into one table, `probe` partitions look rows up in it.
    HashJoin {
        /// Probe side (its partitioning is kept).
        probe: Box<PhysicalPlan>,
        /// Build side.
        build: Box<PhysicalPlan>,
        /// Join kind seen from the probe side.
        join_type: JoinType,
        /// Key column indices of the probe side.
        probe_keys: Vec<usize>,
        /// Key column indices of the build side.
        build_keys: Vec<usize>,
        /// The types keys are compared as.
        key_types: Vec<DataType>,
        /// Where output columns come from.
        output: Vec<JoinColumn>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// Hash-partitions rows by key across `parallelism` partitions: all rows of one key meet
    /// in one partition, in their order within each input partition.
    Repartition {
        /// The input.
        input: Box<PhysicalPlan>,
        /// The partitioning keys.
        keys: Vec<crate::expr::Expr>,
    },
    /// The partitions of every input, side by side.
    Union {
        /// The inputs.
        inputs: Vec<PhysicalPlan>,
    },
    /// A streaming join: partition `i` of `left` and partition `i` of `right` (partitioned
    /// alike by their join keys) feed one two-input operator instance.
    StreamJoin {
        /// Left input.
        left: Box<PhysicalPlan>,
        /// Right input.
        right: Box<PhysicalPlan>,
        /// Shown by `explain()`.
        name: String,
        /// Makes the instance of partition `i`.
        factory: crate::operator::TwoInputOperatorFactory,
        /// Read the whole (bounded) right side before the left one.
        right_first: bool,
        /// Output schema.
        schema: SchemaRef,
    },
}

impl PhysicalPlan {
    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            PhysicalPlan::Scan { schema, .. }
            | PhysicalPlan::Operator { schema, .. }
            | PhysicalPlan::HashJoin { schema, .. }
            | PhysicalPlan::StreamJoin { schema, .. } => schema.clone(),
            PhysicalPlan::Gather { input, .. } | PhysicalPlan::Repartition { input, .. } => input.schema(),
            PhysicalPlan::Union { inputs } => inputs[0].schema(),
        }
    }

    /// The number of output partitions under `config`.
    pub fn partitions(&self, config: &ExecConfig) -> usize {
        match self {
            PhysicalPlan::Scan { .. } => config.parallelism,
            PhysicalPlan::Operator { input, .. } => input.partitions(config),
            PhysicalPlan::Gather { .. } => 1,
            PhysicalPlan::Repartition { .. } => config.parallelism,
            PhysicalPlan::HashJoin { probe, .. } => probe.partitions(config),
            PhysicalPlan::Union { inputs } => inputs.iter().map(|i| i.partitions(config)).sum(),
            PhysicalPlan::StreamJoin { left, .. } => left.partitions(config),
        }
    }

    /// The children of this node (for a join: probe, then build).
    pub fn inputs(&self) -> Vec<&PhysicalPlan> {
        match self {
            PhysicalPlan::Scan { .. } => vec![],
            PhysicalPlan::Operator { input, .. }
            | PhysicalPlan::Gather { input, .. }
            | PhysicalPlan::Repartition { input, .. } => vec![input],
            PhysicalPlan::HashJoin { probe, build, .. } => vec![probe, build],
            PhysicalPlan::Union { inputs } => inputs.iter().collect(),
            PhysicalPlan::StreamJoin { left, right, .. } => vec![left, right],
        }
    }

    /// Whether the partitions carry rows in source order (sequence numbers increase along each
    /// partition), so that an order-preserving merge can restore the source order. A hash
    /// repartition mixes sources: after it, merges take batches as they come, since waiting for
    /// every partition's next batch could deadlock against the repartition's channels.
    pub fn preserves_order(&self) -> bool {
        match self {
            PhysicalPlan::Scan { source, .. } => !source.is_unbounded(),
            PhysicalPlan::Gather { .. } => true,
            PhysicalPlan::Repartition { .. } => false,
            PhysicalPlan::Operator { input, .. } => input.preserves_order(),
            PhysicalPlan::HashJoin { probe, .. } => probe.preserves_order(),
            PhysicalPlan::Union { inputs } => inputs.iter().all(|i| i.preserves_order()),
            // Rows of two sides interleave as they arrive.
            PhysicalPlan::StreamJoin { .. } => false,
        }
    }

    /// A one-line description of this node.
    pub fn describe(&self) -> String {
        match self {
            PhysicalPlan::Scan { source, request, schema } => {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let mut s =
                    format!("ParallelScan: {} {} columns=[{}]", source.name(), source.describe(), cols.join(", "));
                if !request.filters.is_empty() {
                    let f: Vec<String> = request.filters.iter().map(|e| e.to_string()).collect();
                    let _ = write!(s, " pruning=[{}]", f.join(", "));
                }
                s
            }
            PhysicalPlan::Operator { name, .. } => name.clone(),
            PhysicalPlan::Gather { ordered, .. } => {
                format!("Gather: {}", if *ordered { "order-preserving merge" } else { "any order" })
            }
            PhysicalPlan::HashJoin { join_type, probe_keys, build_keys, .. } => {
                format!(
                    "HashJoin: {join_type:?} probe keys {probe_keys:?} = build keys {build_keys:?} (build side gathered once)"
                )
            }
            PhysicalPlan::Repartition { keys, .. } => {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                format!("Repartition: hash({})", keys.join(", "))
            }
            PhysicalPlan::Union { .. } => "Union".into(),
            PhysicalPlan::StreamJoin { name, .. } => name.clone(),
        }
    }

    /// The plan as an indented tree with partition counts.
    pub fn display_indent(&self, config: &ExecConfig) -> String {
        let mut out = String::new();
        self.write_indent(&mut out, 0, config);
        out
    }

    fn write_indent(&self, out: &mut String, depth: usize, config: &ExecConfig) {
        let _ = writeln!(
            out,
            "{:indent$}{} [partitions={}]",
            "",
            self.describe(),
            self.partitions(config),
            indent = depth * 2
        );
        for input in self.inputs() {
            input.write_indent(out, depth + 1, config);
        }
    }

    /// Starts executing: returns one stream per output partition. Threads start at exchanges.
    pub fn execute(&self, config: &ExecConfig) -> Result<Vec<PartitionStream>> {
        match self {
            PhysicalPlan::Scan { source, request, .. } => {
                let request = ScanRequest {
                    batch_size: config.batch_size,
                    partitions: config.parallelism,
                    checkpoint_interval: config.checkpointing.as_ref().map(|c| c.interval),
                    checkpoint_trigger: config.coordinator.0.as_ref().map(|c| c.trigger().clone()),
                    key_group_store: config
                        .coordinator
                        .0
                        .as_ref()
                        .filter(|c| c.key_groups())
                        .and_then(|c| c.shared_root().map(std::path::Path::to_path_buf)),
                    ..request.clone()
                };
                let scan = source.scan(&request)?;
                let next = Arc::new(AtomicUsize::new(0));
                let partitions = config.parallelism.min(scan.morsel_count().max(1));
                Ok((0..partitions)
                    .map(|_| Box::new(ScanStream::new(scan.clone(), next.clone())) as PartitionStream)
                    .collect())
            }
            PhysicalPlan::Operator { input, factory, name, .. } => input
                .execute(config)?
                .into_iter()
                .enumerate()
                .map(|(i, stream)| {
                    let operator = OperatorStream::new(stream, factory(i)?).with_checkpoints(config, name, i);
                    Ok(Box::new(operator) as PartitionStream)
                })
                .collect(),
            PhysicalPlan::Gather { input, ordered } => {
                let name = input.describe().split(':').next().unwrap_or("gather").to_lowercase();
                let (capacity, idle, tick) = (config.channel_capacity, config.idle_timeout, config.timer_interval);
                Ok(vec![gather(&name, input.execute(config)?, *ordered, capacity, idle, tick)])
            }
            PhysicalPlan::HashJoin { probe, build, join_type, probe_keys, build_keys, key_types, output, schema } => {
                let probes = probe.execute(config)?;
                let build_plan = build.as_ref().clone();
                let build_config = config.clone();
                let (build_keys, build_types) = (build_keys.clone(), key_types.clone());
                let bridge = JoinBuild::new(
                    move || {
                        let batches = collect_ordered(
                            "join-build",
                            build_plan.execute(&build_config)?,
                            build_config.channel_capacity,
                        )?;
                        JoinTable::try_new(build_plan.schema(), &batches, &build_keys, &build_types)
                    },
                    probes.len(),
                );
                Ok(probes
                    .into_iter()
                    .map(|stream| {
                        let op = HashJoinProbe::new(
                            *join_type,
                            probe_keys.clone(),
                            key_types.clone(),
                            output.clone(),
                            schema.clone(),
                            bridge.clone(),
                        );
                        Box::new(OperatorStream::new(stream, Box::new(op))) as PartitionStream
                    })
                    .collect())
            }
            PhysicalPlan::Repartition { input, keys } => {
                Ok(super::exchange::repartition(input.execute(config)?, keys.clone(), config))
            }
            PhysicalPlan::Union { inputs } => {
                let mut out = vec![];
                for (i, input) in inputs.iter().enumerate() {
                    out.extend(input.execute(config)?.into_iter().map(|s| tag_union_input(s, i)));
                }
                Ok(out)
            }
            PhysicalPlan::StreamJoin { left, right, name, factory, right_first, .. } => {
                super::co_stream::execute(left, right, name, factory, *right_first, config)
            }
        }
    }
}

/// All partitions into one, keeping the source order when the input has one.
fn gather_all(input: PhysicalPlan) -> PhysicalPlan {
    let ordered = input.preserves_order();
    PhysicalPlan::Gather { input: Box::new(input), ordered }
}

/// Rows of one key meet in one partition: hash-partitioned by `keys`, or all in one without keys.
fn by_key(input: PhysicalPlan, keys: &[crate::expr::Expr]) -> PhysicalPlan {
    if keys.is_empty() {
        gather_all(input)
    } else {
        PhysicalPlan::Repartition { input: Box::new(input), keys: keys.to_vec() }
    }
}

fn operator(input: PhysicalPlan, name: String, schema: SchemaRef, factory: OperatorFactory) -> PhysicalPlan {
    PhysicalPlan::Operator { input: Box::new(input), name, factory, schema }
}

/// Rough row-count estimate used to pick a join's build side.
fn estimate_rows(plan: &LogicalPlan) -> Option<usize> {
    match plan {
        LogicalPlan::Scan { source, filters, .. } => {
            source.num_rows().map(|n| if filters.is_empty() { n } else { n / 2 })
        }
        LogicalPlan::Filter { input, .. } => estimate_rows(input).map(|n| n / 2),
        LogicalPlan::Project { input, .. } | LogicalPlan::Sort { input, fetch: None, .. } => estimate_rows(input),
        LogicalPlan::Sort { fetch: Some(k), .. } => Some(*k),
        LogicalPlan::Limit { input, fetch, .. } => match (estimate_rows(input), fetch) {
            (Some(n), Some(f)) => Some(n.min(*f)),
            (n, f) => n.or(*f),
        },
        _ => None,
    }
}

/// Turns an optimized logical plan into a physical plan.
pub fn create_physical_plan(plan: &LogicalPlan, config: &ExecConfig) -> Result<PhysicalPlan> {
    Ok(match plan {
        LogicalPlan::Scan { source, projection, filters, schema } => PhysicalPlan::Scan {
            source: source.clone(),
            request: ScanRequest {
                projection: projection.clone(),
                filters: filters.clone(),
                batch_size: 0,
                partitions: 0,
                checkpoint_interval: None,
                checkpoint_trigger: None,
                key_group_store: None,
            },
            schema: schema.clone(),
        },
        LogicalPlan::Filter { input, predicate } => {
            #[cfg(feature = "jit")]
            if config.jit
                && let Some(op) = crate::operator::JitCalcOperator::try_new(&input.schema(), Some(predicate), None)
            {
                let factory: OperatorFactory = Arc::new(move |_| Ok(Box::new(op.clone()) as _));
                let name = plan.describe().replacen("Filter:", "Filter[jit]:", 1);
                return Ok(operator(create_physical_plan(input, config)?, name, plan.schema(), factory));
            }
            let predicate = predicate.clone();
            let factory: OperatorFactory = Arc::new(move |_| {
                Ok(Box::new(FilterOperator::new(predicate.clone())) as Box<dyn crate::operator::Operator>)
            });
            operator(create_physical_plan(input, config)?, plan.describe(), plan.schema(), factory)
        }
        LogicalPlan::Project { input, exprs, schema } => {
            #[cfg(feature = "jit")]
            if config.jit {
                // A projection over a filter fuses with it: one pass computes both.
                if let LogicalPlan::Filter { input: below, predicate } = input.as_ref()
                    && let Some(op) = crate::operator::JitCalcOperator::try_new(
                        &below.schema(),
                        Some(predicate),
                        Some((exprs, schema.clone())),
                    )
                {
                    let factory: OperatorFactory = Arc::new(move |_| Ok(Box::new(op.clone()) as _));
                    let name = format!(
                        "FilterProject[jit]: {} | {}",
                        input.describe().trim_start_matches("Filter: "),
                        plan.describe().trim_start_matches("Project: ")
                    );
                    return Ok(operator(create_physical_plan(below, config)?, name, schema.clone(), factory));
                }
                if let Some(op) =
                    crate::operator::JitCalcOperator::try_new(&input.schema(), None, Some((exprs, schema.clone())))
                {
                    let factory: OperatorFactory = Arc::new(move |_| Ok(Box::new(op.clone()) as _));
                    let name = plan.describe().replacen("Project:", "Project[jit]:", 1);
                    return Ok(operator(create_physical_plan(input, config)?, name, schema.clone(), factory));
                }
            }
            let (exprs, out) = (exprs.clone(), schema.clone());
            let factory: OperatorFactory =
                Arc::new(move |_| Ok(Box::new(ProjectOperator::new(exprs.clone(), out.clone())) as _));
            operator(create_physical_plan(input, config)?, plan.describe(), schema.clone(), factory)
        }
        LogicalPlan::MapBatches { input, name, func, schema } => {
            let (name, func) = (name.clone(), func.clone());
            let factory: OperatorFactory =
                Arc::new(move |_| Ok(Box::new(MapBatchesOperator::new(name.clone(), func.clone())) as _));
            operator(create_physical_plan(input, config)?, plan.describe(), schema.clone(), factory)
        }
        LogicalPlan::Limit { input, skip, fetch } => {
            let schema = plan.schema();
            let local_fetch = fetch.map(|f| f + skip);
            let local: OperatorFactory = Arc::new(move |_| Ok(Box::new(LimitOperator::new(0, local_fetch)) as _));
            let (skip, fetch) = (*skip, *fetch);
            let global: OperatorFactory = Arc::new(move |_| Ok(Box::new(LimitOperator::new(skip, fetch)) as _));
            let partial = operator(create_physical_plan(input, config)?, "LocalLimit".into(), schema.clone(), local);
            let gathered = gather_all(partial);
            operator(gathered, plan.describe(), schema, global)
        }
        LogicalPlan::Sort { input, keys, fetch } => {
            let schema = plan.schema();
            let mut child = create_physical_plan(input, config)?;
            if fetch.is_some() {
                let (s, k, f) = (schema.clone(), keys.clone(), *fetch);
                let local: OperatorFactory =
                    Arc::new(move |_| Ok(Box::new(SortOperator::new(s.clone(), k.clone(), f)) as _));
                child = operator(child, format!("LocalTopK: fetch={}", fetch.unwrap_or(0)), schema.clone(), local);
            }
            let gathered = PhysicalPlan::Gather { input: Box::new(child), ordered: false };
            let (s, k, f) = (schema.clone(), keys.clone(), *fetch);
            let global: OperatorFactory =
                Arc::new(move |_| Ok(Box::new(SortOperator::new(s.clone(), k.clone(), f)) as _));
            operator(gathered, plan.describe(), schema, global)
        }
        LogicalPlan::Aggregate { input, group_by, aggregates, schema } => {
            let child = create_physical_plan(input, config)?;
            let in_schema = input.schema();
            let two_phase = aggregates.iter().all(|a| aggregate_supports_two_phase(a.func));
            let make = |mode: AggregateMode| -> Result<OperatorFactory> {
                // Validate once while planning, so type errors surface before execution.
                let probe = AggregateOperator::try_new(mode, &in_schema, group_by.clone(), aggregates.clone())?;
                let _ = probe.output_schema();
                let (s, g, a) = (in_schema.clone(), group_by.clone(), aggregates.clone());
                Ok(Arc::new(move |_| Ok(Box::new(AggregateOperator::try_new(mode, &s, g.clone(), a.clone())?) as _)))
            };
            if two_phase {
                let partial_schema = AggregateOperator::try_new(
                    AggregateMode::Partial,
                    &in_schema,
                    group_by.clone(),
                    aggregates.clone(),
                )?
                .output_schema();
                let partial = operator(child, "PartialAggregate".into(), partial_schema, make(AggregateMode::Partial)?);
                let gathered = PhysicalPlan::Gather { input: Box::new(partial), ordered: false };
                operator(gathered, format!("Final{}", plan.describe()), schema.clone(), make(AggregateMode::Final)?)
            } else {
                let gathered = gather_all(child);
                operator(gathered, plan.describe(), schema.clone(), make(AggregateMode::Single)?)
            }
        }
        LogicalPlan::Join { left, right, on, join_type, schema } => {
            plan_join(left, right, on, *join_type, schema, config)?
        }
        LogicalPlan::Watermark { input, time_column, strategy } => {
            let (column, strategy) = (time_column.clone(), strategy.clone());
            let factory: OperatorFactory =
                Arc::new(move |_| Ok(Box::new(WatermarkAssigner::new(&column, &strategy)) as _));
            operator(create_physical_plan(input, config)?, plan.describe(), plan.schema(), factory)
        }
        LogicalPlan::KeyedProcess { input, keys, name, factory, schema } => {
            let child = create_physical_plan(input, config)?;
            let exchanged = by_key(child, keys);
            let (name, factory, backend) = (name.clone(), factory.clone(), config.state_backend.clone());
            let make: OperatorFactory = Arc::new(move |partition| factory(format!("{name}-{partition}"), &backend));
            operator(exchanged, plan.describe(), schema.clone(), make)
        }
        LogicalPlan::Window { input, keys, time_column, spec, aggregates, allowed_lateness, late_data, schema } => {
            let child = create_physical_plan(input, config)?;
            let exchanged = by_key(child, keys);
            let in_schema = input.schema();
            let (keys, aggregates, spec, lateness) = (keys.clone(), aggregates.clone(), *spec, *allowed_lateness);
            let (time, late, backend) = (time_column.clone(), late_data.clone(), config.state_backend.clone());
            // The window's state lives in `backend`.
            let make = move |backend: &crate::state::StateBackend| -> Result<Box<dyn crate::operator::Operator>> {
                let time = || {
                    time.clone().ok_or_else(|| SabotError::plan(format!("{spec} windows need an event-time column")))
                };
                Ok(match spec {
                    WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. } => Box::new(
                        WindowAggregateOperator::try_new(
                            spec,
                            &time()?,
                            in_schema.clone(),
                            keys.clone(),
                            aggregates.clone(),
                            lateness,
                            late.clone(),
                        )?
                        .with_state_backend(backend)?,
                    ),
                    WindowSpec::Session { gap } => Box::new(
                        SessionWindowOperator::try_new(
                            gap,
                            &time()?,
                            in_schema.clone(),
                            keys.clone(),
                            aggregates.clone(),
                            lateness,
                            late.clone(),
                        )?
                        .with_state_backend(backend)?,
                    ),
                    WindowSpec::Count { size } => Box::new(
                        CountWindowOperator::try_new(size, in_schema.clone(), keys.clone(), aggregates.clone())?
                            .with_state_backend(backend)?,
                    ),
                })
            };
            // Checked once now, on the heap (planning opens no store), so errors surface early.
            make(&crate::state::StateBackend::Memory)?;
            operator(exchanged, plan.describe(), schema.clone(), Arc::new(move |_| make(&backend)))
        }
        LogicalPlan::Union { inputs, .. } => PhysicalPlan::Union {
            inputs: inputs.iter().map(|i| create_physical_plan(i, config)).collect::<Result<_>>()?,
        },
        LogicalPlan::StreamJoin { .. } => super::co_stream::plan_stream_join(plan, config)?,
    })
}

fn plan_join(
    left: &Arc<LogicalPlan>,
    right: &Arc<LogicalPlan>,
    on: &[(String, String)],
    join_type: JoinType,
    schema: &SchemaRef,
    config: &ExecConfig,
) -> Result<PhysicalPlan> {
    let (ls, rs) = (left.schema(), right.schema());
    let index = |s: &arrow::datatypes::Schema, name: &str| {
        s.index_of(name).map_err(|_| SabotError::plan(format!("join key {name} not found")))
    };
    let left_keys = on.iter().map(|(l, _)| index(&ls, l)).collect::<Result<Vec<_>>>()?;
    let right_keys = on.iter().map(|(_, r)| index(&rs, r)).collect::<Result<Vec<_>>>()?;
    let key_types = left_keys
        .iter()
        .zip(&right_keys)
        .map(|(&l, &r)| {
            common_type(ls.field(l).data_type(), rs.field(r).data_type())
                .ok_or_else(|| SabotError::plan("join keys cannot be compared"))
        })
        .collect::<Result<Vec<_>>>()?;
    // Build on the smaller side when it is known; only inner joins are symmetric.
    let swap = join_type == JoinType::Inner
        && matches!((estimate_rows(left), estimate_rows(right)), (Some(l), Some(r)) if l < r);
    let (left_cols, right_cols) = crate::plan::join_output_columns(&ls, &rs, on, join_type);
    let coalesce_keys = matches!(join_type, JoinType::Right | JoinType::Full);
    let mut output = vec![];
    for &c in &left_cols {
        let name = ls.field(c).name();
        let same_named_key = on.iter().position(|(l, r)| l == name && l == r);
        output.push(match (same_named_key, swap) {
            (Some(k), false) if coalesce_keys => JoinColumn::Key { probe: c, build: right_keys[k] },
            (_, false) => JoinColumn::Probe(c),
            (_, true) => JoinColumn::Build(c),
        });
    }
    for &c in &right_cols {
        output.push(if swap { JoinColumn::Probe(c) } else { JoinColumn::Build(c) });
    }
    let (probe, build, probe_keys, build_keys) =
        if swap { (right, left, right_keys, left_keys) } else { (left, right, left_keys, right_keys) };
    Ok(PhysicalPlan::HashJoin {
        probe: Box::new(create_physical_plan(probe, config)?),
        build: Box::new(create_physical_plan(build, config)?),
        join_type,
        probe_keys,
        build_keys,
        key_types,
        output,
        schema: schema.clone(),
    })
}
