//! The guard module under wasmtime: the embedded component, a pool of instances, a deadline and
//! a memory limit per call.
//!
//! Each instance holds one compiled policy (set by `init` when it is created) and nothing else.
//! A call that traps, runs past its deadline or hits the memory limit discards its instance; the
//! next call gets a fresh one made from the same pre-instantiated component.
//!
//! Deadlines are epochs: a ticker thread advances the engine's epoch every 10 ms and each call
//! may run for a number of ticks that grows with its input. Fuel would count work exactly, but
//! metering every basic block costs about a quarter of the guard's speed; a deadline bounds a
//! runaway call just as surely.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{StoreLimits, StoreLimitsBuilder};

mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({ world: "guard", path: "../guard-wasm/wit" });
}

pub use bindings::{Context, Role, Scheme, Segment, Trust};
use bindings::{Guard as GuardBindings, GuardError, GuardPre};

/// The guard component, built from `guard-wasm/component` when this crate was built.
pub static GUARD_WASM: &[u8] = include_bytes!(env!("SIGIL_GUARD_WASM_PATH"));

/// How often the epoch advances: the resolution of every deadline.
const TICK: Duration = Duration::from_millis(10);
/// Time for compiling the policy when an instance is made: a fixed cost, not the callers'.
const INIT_DEADLINE: Duration = Duration::from_secs(60);

/// Bounds on each call into the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Time every call gets.
    pub deadline_base: Duration,
    /// Extra time per MiB of input: work is linear in the input, so is the budget.
    pub deadline_per_mib: Duration,
    /// Largest input accepted, in bytes.
    pub max_input_bytes: usize,
    /// Instances kept alive, and made at most at once.
    pub max_instances: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            memory_bytes: 512 << 20,
            // Generous: tens of times what the guard needs on a loaded machine, so only a
            // runaway call meets it.
            deadline_base: Duration::from_secs(2),
            deadline_per_mib: Duration::from_secs(2),
            max_input_bytes: 64 << 20,
            max_instances: 16,
        }
    }
}

/// Why the engine could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// wasmtime could not be set up or the module could not be compiled.
    #[error("guard module could not be loaded: {0}")]
    Load(String),
    /// The policy was refused by the guard.
    #[error("policy refused: {0}")]
    Policy(String),
    /// The request was refused by the guard.
    #[error("request refused: {0}")]
    Input(String),
    /// The input is larger than the engine accepts.
    #[error("input is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Input size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest trapped, ran past its deadline or out of memory; its instance was discarded.
    #[error("guard call aborted, instance discarded: {0}")]
    Trap(String),
}

impl EngineError {
    /// A stable code for machines.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Load(_) => "engine_load",
            EngineError::Policy(_) => "invalid_policy",
            EngineError::Input(_) => "invalid_input",
            EngineError::TooLarge { .. } => "input_too_large",
            EngineError::Trap(_) => "guard_aborted",
        }
    }
}

/// A template refusal from the guard: stable code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateRefusal {
    /// Stable snake-case code (see `guard_core::VerifyError::code`).
    pub code: String,
    /// For people.
    pub message: String,
}

struct HostState {
    limits: StoreLimits,
}

struct Instance {
    store: Store<HostState>,
    guard: GuardBindings,
}

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Instances created.
    pub created: AtomicU64,
    /// Instances discarded after a trap.
    pub discarded: AtomicU64,
    /// Calls answered.
    pub calls: AtomicU64,
}

/// Advances an engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sigil-guard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| EngineError::Load(format!("cannot start the deadline ticker: {e}")))?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Ticks for a deadline, rounded up, plus one for the tick already under way.
fn ticks(deadline: Duration) -> u64 {
    let tick = TICK.as_nanos().max(1);
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The guard, compiled once, with a pool of instances that each hold the compiled policy.
pub struct GuardEngine {
    engine: Engine,
    _ticker: Ticker,
    pre: GuardPre<HostState>,
    policy_json: String,
    limits: EngineLimits,
    idle: Mutex<Vec<Instance>>,
    stats: EngineStats,
}

impl std::fmt::Debug for GuardEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardEngine")
            .field("limits", &self.limits)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn guard_error(e: GuardError) -> EngineError {
    match e {
        GuardError::InvalidPolicy(m) => EngineError::Policy(m),
        GuardError::InvalidInput(m) => EngineError::Input(m),
        GuardError::NotInitialized => EngineError::Input("guard instance not initialized".into()),
        GuardError::AlreadyInitialized => {
            EngineError::Input("guard instance already initialized".into())
        }
    }
}

impl GuardEngine {
    /// Compiles the embedded module and checks the policy in a first instance.
    pub fn new(policy_json: &str, limits: EngineLimits) -> Result<Self, EngineError> {
        Self::from_module(GUARD_WASM, policy_json, limits)
    }

    /// Like [`GuardEngine::new`] with another build of the guard component.
    pub fn from_module(
        module: &[u8],
        policy_json: &str,
        limits: EngineLimits,
    ) -> Result<Self, EngineError> {
        let load = |e: wasmtime::Error| EngineError::Load(format!("{e:#}"));
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances * 2)
            .total_core_instances(limits.max_instances * 8)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 8)
            .max_memory_size(limits.memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(load)?;
        let component = Component::from_binary(&engine, module).map_err(load)?;
        // The guard imports nothing: an empty linker proves it can reach no host function.
        let linker: Linker<HostState> = Linker::new(&engine);
        let pre = GuardPre::new(linker.instantiate_pre(&component).map_err(load)?).map_err(load)?;
        let ticker = Ticker::start(engine.clone())?;
        let engine = GuardEngine {
            engine,
            _ticker: ticker,
            pre,
            policy_json: policy_json.to_string(),
            limits,
            idle: Mutex::new(Vec::new()),
            stats: EngineStats::default(),
        };
        let first = engine.instantiate()?;
        engine.release(first);
        Ok(engine)
    }

    /// Fills the pool with every instance it may hold, so no call pays for making one (each
    /// compiles the policy's rules). Returns how many instances are idle now.
    pub fn warm(&self) -> Result<usize, EngineError> {
        let want = self.limits.max_instances as usize;
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(want);
        for _ in idle..want {
            let instance = self.instantiate()?;
            self.release(instance);
        }
        Ok(self.idle.lock().map(|i| i.len()).unwrap_or(0))
    }

    /// The limits in force.
    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    fn instantiate(&self) -> Result<Instance, EngineError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostState { limits });
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(ticks(INIT_DEADLINE));
        let guard = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| EngineError::Load(format!("{e:#}")))?;
        guard
            .call_init(&mut store, &self.policy_json)
            .map_err(|e| EngineError::Trap(format!("{e:#}")))?
            .map_err(guard_error)?;
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        Ok(Instance { store, guard })
    }

    fn release(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.limits.max_instances as usize {
                idle.push(instance);
            }
        }
    }

    fn with_instance<T>(
        &self,
        input_bytes: usize,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> Result<T, EngineError> {
        if input_bytes > self.limits.max_input_bytes {
            return Err(EngineError::TooLarge {
                size: input_bytes,
                limit: self.limits.max_input_bytes,
            });
        }
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut instance = match pooled {
            Some(i) => i,
            None => self.instantiate()?,
        };
        let mib = u32::try_from(input_bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
        let deadline = self
            .limits
            .deadline_base
            .saturating_add(self.limits.deadline_per_mib.saturating_mul(mib));
        instance.store.set_epoch_deadline(ticks(deadline));
        match call(&mut instance) {
            Ok(value) => {
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                self.release(instance);
                Ok(value)
            }
            Err(e) => {
                // A store that trapped refuses further calls; dropping it frees its slot.
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                Err(EngineError::Trap(format!("{e:#}")))
            }
        }
    }

    /// Assesses segments; returns guard-core's `{assessment, profile}` JSON.
    pub fn assess(&self, segments: &[Segment], context: &Context) -> Result<String, EngineError> {
        let bytes = segments.iter().map(|s| s.text.len()).sum::<usize>()
            + context.profile.as_ref().map_or(0, String::len);
        self.with_instance(bytes, |i| {
            i.guard.call_assess(&mut i.store, segments, context)
        })?
        .map_err(guard_error)
    }

    /// Assesses plain text as one untrusted segment.
    pub fn assess_text(&self, text: &str, now: &str) -> Result<String, EngineError> {
        let segment = Segment {
            text: text.to_string(),
            trust: Trust::Untrusted,
            role: None,
            source: None,
        };
        let context = Context {
            tenant: None,
            user: None,
            now: now.to_string(),
            profile: None,
        };
        self.assess(std::slice::from_ref(&segment), &context)
    }

    /// Assesses a request in the contract's JSON.
    pub fn assess_json(&self, request: &str) -> Result<String, EngineError> {
        self.with_instance(request.len(), |i| {
            i.guard.call_assess_json(&mut i.store, request)
        })?
        .map_err(guard_error)
    }

    /// Verifies a signed template inside the guard.
    pub fn verify_template(
        &self,
        envelope: &[u8],
        template: &[u8],
        public_key: &[u8],
        scheme: Scheme,
        now: Option<&str>,
    ) -> Result<Result<String, TemplateRefusal>, EngineError> {
        let result = self.with_instance(envelope.len() + template.len(), |i| {
            i.guard
                .call_verify_template(&mut i.store, envelope, template, public_key, scheme, now)
        })?;
        Ok(result.map_err(|e| TemplateRefusal {
            code: e.code,
            message: e.message,
        }))
    }

    /// Verifies a template against a keyring, template policy and high-water mark, given as the
    /// JSON request of `guard_core::verify_request_json`, inside the guard.
    pub fn verify_json(
        &self,
        request: &str,
    ) -> Result<Result<String, TemplateRefusal>, EngineError> {
        let result = self.with_instance(request.len(), |i| {
            i.guard.call_verify_json(&mut i.store, request)
        })?;
        Ok(result.map_err(|e| TemplateRefusal {
            code: e.code,
            message: e.message,
        }))
    }

    /// Checks an offline bundle and its template (`guard_core::transparency::verify_bundle_json`)
    /// inside the guard.
    pub fn verify_bundle_json(
        &self,
        request: &str,
    ) -> Result<Result<String, TemplateRefusal>, EngineError> {
        let result = self.with_instance(request.len(), |i| {
            i.guard.call_verify_bundle_json(&mut i.store, request)
        })?;
        Ok(result.map_err(|e| TemplateRefusal {
            code: e.code,
            message: e.message,
        }))
    }

    /// One guarded call (verify, render, assess) from the JSON request of
    /// `guard_core::template::guard_json`, inside the guard.
    pub fn guard_json(
        &self,
        request: &str,
    ) -> Result<Result<String, TemplateRefusal>, EngineError> {
        let result = self.with_instance(request.len(), |i| {
            i.guard.call_guard_json(&mut i.store, request)
        })?;
        Ok(result.map_err(|e| TemplateRefusal {
            code: e.code,
            message: e.message,
        }))
    }

    /// One behaviour event for a profile (`guard_core::Guard::observe_json`), inside the guard.
    pub fn observe_json(&self, request: &str) -> Result<String, EngineError> {
        self.with_instance(request.len(), |i| {
            i.guard.call_observe_json(&mut i.store, request)
        })?
        .map_err(guard_error)
    }

    /// Number of rules the compiled policy runs.
    pub fn rule_count(&self) -> Result<u32, EngineError> {
        self.with_instance(0, |i| i.guard.call_rule_count(&mut i.store))?
            .map_err(guard_error)
    }
}
