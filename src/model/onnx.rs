//! The ONNX Runtime backend: the session is built once, with the provider and thread settings, then reused.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::{IoBinding, Session, SharedSessionInner};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};
use ort::AsPointer;

use crate::data::batcher::TokenBatch;
use crate::embedded;
use crate::error::Failure;
use crate::model::contract::{self, Contract, Elem, OutputKind, TensorSpec};
use crate::model::provider::{self, Provider};
use crate::model::{
    count_model_load, graph, pooling, probabilities_from_scores, rewrite, runtime, Backend,
    LoadSettings, ModelInfo, ModelOutput, ModelSource, HEAD_METADATA_KEY,
};

pub struct OnnxBackend {
    /// The loaded ONNX Runtime session, for [`run_shared`]: every batch not bound through `pinned` goes through
    /// it, from several threads. It keeps the session alive whether or not `pinned` holds the `Session` too.
    shared: Arc<SharedSessionInner>,
    output_name: CString,
    contract: Contract,
    info: ModelInfo,
    /// Set on CUDA (unless `io_binding: false`): tokens go up from, and the output comes back to, page-locked
    /// host memory, so both copies are DMA transfers rather than staged through pageable buffers. Locked per
    /// batch: a binding runs one batch at a time.
    pinned: Option<Mutex<PinnedIo>>,
}

/// What to do when ONNX Runtime refuses a model file for a reason [`load_fix`] does not know, for `test`,
/// `embed`, `fit` and `inspect` alike.
const LOAD_FIX: &str =
    "check that it is an ONNX model this runtime can load (scripts/export_onnx.py writes one)";

/// The fix for ONNX Runtime's refusal `message` of a model file: the IR version it names, a file cut short,
/// external data that does not match, else [`LOAD_FIX`].
fn load_fix(message: &str) -> String {
    let number_after = |label: &str| -> Option<u64> {
        let rest = &message[message.find(label)? + label.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    if let (Some(version), Some(supported)) = (
        number_after("Unsupported model IR version:"),
        number_after("max supported IR version:"),
    ) {
        return format!(
            "this runtime reads IR version {supported} or lower, the file is {version}: export it again with \
IR {supported} or lower (scripts/export_onnx.py writes 10; or in Python set `model.ir_version = {supported}` \
before `onnx.save`)"
        );
    }
    if message.contains("out of bounds or can not be read in full") {
        return "the model's external data file (the .data file named in it, beside the .onnx) is cut short or \
not the one exported with it: copy the .onnx and its data file again, together"
            .to_string();
    }
    if message.contains("Protobuf parsing failed") || message.contains("INVALID_PROTOBUF") {
        return "the file is not a whole ONNX model (cut short by a copy or a download, or not ONNX at all): copy or \
export it again; `python -c \"import onnx; onnx.checker.check_model('M.onnx')\"` checks one"
            .to_string();
    }
    LOAD_FIX.to_string()
}

/// One `OrtApi::Run` on a session shared between threads, returning the named output.
///
/// ort's `Session::run` takes `&mut self`, which rules out concurrent runs on one session. ONNX Runtime itself
/// documents `InferenceSession::Run` as safe to call from several threads at once, and on the CPU provider
/// (the only one esmbench runs concurrently; see `ScoringConfig::cpu_parallelism`) that is how Python users
/// share one session across threads (`InferenceSession.run` releases the GIL). This calls the C API directly
/// so one loaded model serves every batch in flight, instead of one copy of the weights per thread.
fn run_shared(
    session: &SharedSessionInner,
    inputs: [(&CStr, &TensorRef<'_, i64>); 2],
    output: &CStr,
) -> std::result::Result<DynValue, String> {
    let api = ort::api();
    let input_names = inputs.map(|(name, _)| name.as_ptr());
    let input_values = inputs.map(|(_, value)| value.ptr());
    let output_names = [output.as_ptr()];
    let mut output_value: *mut ort::sys::OrtValue = ptr::null_mut();
    // SAFETY: the session pointer is live for as long as `session` is; the name and value arrays outlive the
    // call and have the lengths passed; ONNX Runtime writes one owned OrtValue into `output_value`.
    let status = unsafe {
        (api.Run)(
            session.ptr().cast_mut(),
            ptr::null(),
            input_names.as_ptr(),
            input_values.as_ptr(),
            input_values.len(),
            output_names.as_ptr(),
            output_names.len(),
            &mut output_value,
        )
    };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an OrtStatus we own; its message is a C string that lives until release.
        let message = unsafe {
            let text = CStr::from_ptr((api.GetErrorMessage)(status.0))
                .to_string_lossy()
                .into_owned();
            (api.ReleaseStatus)(status.0);
            text
        };
        return Err(message);
    }
    let value = NonNull::new(output_value).ok_or("ONNX Runtime returned no output value")?;
    // SAFETY: `value` is the owned OrtValue Run just returned, released when the DynValue drops. The allocator
    // argument is only a keep-alive handle (the default CPU allocator, never released); the session that
    // allocated the value outlives it, since `run` extracts the output before returning.
    Ok(unsafe { DynValue::from_ptr(value, Some(&Allocator::default())) })
}

/// A CUDA session with its IO binding and the page-locked allocator its inputs are written into.
struct PinnedIo {
    session: Session,
    binding: IoBinding,
    input_allocator: Allocator,
    output: String,
    output_memory: MemoryInfo<'static>,
}

impl PinnedIo {
    fn new(session: Session, output: &str) -> ort::Result<PinnedIo> {
        let pinned = |memory_type| {
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                0,
                AllocatorType::Device,
                memory_type,
            )
        };
        Ok(PinnedIo {
            binding: session.create_binding()?,
            input_allocator: Allocator::new(&session, pinned(MemoryType::CPUInput)?)?,
            output: output.to_string(),
            output_memory: pinned(MemoryType::CPUOutput)?,
            session,
        })
    }

    /// Binds the batch, runs it and returns the bound output.
    fn run(&mut self, batch: &TokenBatch) -> Result<DynValue> {
        self.bind_tokens(batch)
            .map_err(|e| ort_failure("binding the batch", e))?;
        let mut outputs = self
            .session
            .run_binding(&self.binding)
            .map_err(|e| inference_failure(batch, e))?;
        outputs.remove(&self.output).ok_or_else(|| {
            Failure::runtime(format!("the model did not return `{}`", self.output)).into()
        })
    }

    fn bind_tokens(&mut self, batch: &TokenBatch) -> ort::Result<()> {
        let shape = [batch.len(), batch.seq_len];
        for (name, values) in [
            ("input_ids", &batch.input_ids),
            ("attention_mask", &batch.attention_mask),
        ] {
            let mut tensor = Tensor::<i64>::new(&self.input_allocator, shape)?;
            tensor.extract_tensor_mut().1.copy_from_slice(values);
            self.binding.bind_input(name, &tensor)?;
        }
        // Bound anew each batch: a bound output keeps its last shape, and batch shapes vary. ONNX Runtime
        // allocates it, in pinned memory, at this batch's shape.
        self.binding
            .bind_output_to_device(&self.output, &self.output_memory)
    }
}

fn spec_of(name: &str, dtype: &ValueType) -> TensorSpec {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_string(),
            elem: match ty {
                TensorElementType::Int64 => Elem::Int64,
                TensorElementType::Float32 => Elem::Float32,
                other => Elem::Other(format!("{other:?}").to_lowercase()),
            },
            shape: shape.to_vec(),
        },
        other => TensorSpec {
            name: name.to_string(),
            elem: Elem::Other(format!("{other:?}")),
            shape: vec![],
        },
    }
}

/// Inputs and outputs as the model declares them.
pub fn describe(session: &Session) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let inputs = session
        .inputs()
        .iter()
        .map(|o| spec_of(o.name(), o.dtype()))
        .collect();
    let outputs = session
        .outputs()
        .iter()
        .map(|o| spec_of(o.name(), o.dtype()))
        .collect();
    (inputs, outputs)
}

/// Whether ONNX Runtime's u8 x s8 kernel on this CPU adds pairs of products in saturating 16-bit integers: x86
/// without VNNI. There a file with signed 8-bit weights (`export_onnx.py --quantize int8-vnni`) drifted on
/// ESM-2 8M by 0.14 on average with a quarter of the labels flipped, so the session sets
/// `session.x64quantprecision`, which makes such weights unsigned at load. The runtime applies that option on
/// every x86 CPU it is given to, VNNI or not (its test is only that the u8 x u8 and u8 x s8 kernels differ), and
/// on a VNNI Xeon the converted file ran at float32's speed instead of twice it (benchmark Xeon runs 13 and 14),
/// so it is only given where the products saturate. VNNI (AVX-512 VNNI or AVX-VNNI) sums them exactly in 32 bits.
fn signed_int8_products_saturate() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The CUDA provider as esmbench configures it.
fn cuda_options() -> ep::CUDA {
    ep::CUDA::default()
        // Sequence lengths vary batch to batch: grow the arena by what is asked, not to the next power of two.
        .with_arena_extend_strategy(ep::ArenaExtendStrategy::SameAsRequested)
        // ONNX Runtime runs float32 MatMul in TF32 on Ampere and newer GPUs unless told not to; on an H200
        // that moved ESM-2 8M's probabilities by 1.7e-3 from PyTorch float32. A float32 model runs in
        // float32 (there, within 6.2e-7 of CPU); the fast GPU path is an --fp16 export.
        .with_tf32(false)
}

/// Registers one provider on the builder, or says why it cannot be used.
fn register(builder: &mut Option<SessionBuilder>, provider: Provider) -> Result<(), String> {
    let dispatch = match provider {
        Provider::Cpu => return Ok(()),
        Provider::Cuda => {
            if !ep::CUDA::is_available().unwrap_or(false) {
                return Err(
                    "this ONNX Runtime build has no CUDA provider (install onnxruntime-gpu)".into(),
                );
            }
            cuda_options().build().error_on_failure()
        }
        Provider::CoreMl => {
            if !ep::CoreML::is_available().unwrap_or(false) {
                return Err("this ONNX Runtime build has no CoreML provider (CoreML needs the macOS runtime)".into());
            }
            ep::CoreML::default().build().error_on_failure()
        }
    };
    let current = builder.take().expect("builder present");
    match current.with_execution_providers([dispatch]) {
        Ok(b) => {
            *builder = Some(b);
            Ok(())
        }
        Err(e) => {
            let message = e.to_string();
            *builder = Some(e.recover());
            Err(message)
        }
    }
}

fn poisoned() -> Failure {
    Failure::runtime("another batch failed while holding the CUDA IO binding")
}

/// A session that would not build. When its thread pool was refused a thread (by a limit the config check
/// could not see, such as ulimit -u) the file is not at fault, so that case gets the threads fix and the
/// runtime exit code.
fn load_failure(origin: &str, e: impl std::fmt::Display) -> Failure {
    let message = e.to_string();
    if message.contains("PosixThread") || message.contains("Resource temporarily unavailable") {
        return Failure::runtime(format!(
            "{origin}: ONNX Runtime could not start its thread pool: {message}\n  fix: {}",
            crate::threads::FIX
        ));
    }
    Failure::usage(format!(
        "{origin}: ONNX Runtime cannot load the model: {message}\n  fix: {}",
        load_fix(&message)
    ))
}

fn ort_failure(origin: &str, e: impl std::fmt::Display) -> Failure {
    Failure::runtime(format!("{origin}: ONNX Runtime: {e}"))
}

/// A batch the runtime refused. One it could not find memory for gets the fix: the attention scores grow with
/// the square of the longest row, so a `--max-residues` far above ESM's 1022 asks for gigabytes per row.
fn inference_failure(batch: &TokenBatch, e: impl std::fmt::Display) -> Failure {
    no_memory_fix(batch.len(), batch.seq_len, e)
}

fn no_memory_fix(rows: usize, seq_len: usize, e: impl std::fmt::Display) -> Failure {
    let message = e.to_string();
    if message.contains("Failed to allocate memory") {
        return Failure::runtime(format!(
            "inference: ONNX Runtime: {message}\n  fix: a batch of {} rows x {} tokens needed more memory than \
there is; attention grows with the square of a row's length: lower --max-residues (ESM's limit is 1022) or \
--max-tokens",
            rows, seq_len
        ));
    }
    ort_failure("inference", message)
}

/// The load-time rewrite of the serialized model ([`rewrite`]), with its probe passed: Ok(None) when
/// there is nothing to rewrite, Err(why) when the graph has the slow mask but the rewrite cannot be
/// proven for it.
fn planned_rewrite(
    env: &Environment,
    bytes: &[u8],
    weights_folder: Option<String>,
) -> Result<Option<rewrite::Rewrite>, String> {
    let Some(mut rewrite) = rewrite::plan(bytes)? else {
        return Ok(None);
    };
    rewrite.weights_folder = weights_folder;
    run_probe(env, &rewrite)?;
    Ok(Some(rewrite))
}

/// The folder a model file's external data locations are relative to (its own), when ONNX Runtime can be
/// told it: the session option is UTF-8.
fn weights_folder(path: &Path) -> Option<String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_str().map(str::to_string),
        _ => Some(".".to_string()),
    }
}

/// The rewrite a run would make ([`rewrite::plan`]), its probe not yet run. None when the graph runs as
/// it is: nothing to rewrite, a file too large to read ([`graph::read_small`]), a graph this reader
/// cannot walk, or the slow mask in a graph the rewrite cannot prove (with a note saying why).
///
/// A model over protobuf's 2 GiB keeps its weights in external data files, so its .onnx is small: the
/// rewritten graph names the same files, which ONNX Runtime reads (maps) from the model's folder as it
/// does for the file itself.
fn rewrite_candidate(source: &ModelSource, origin: &str) -> Option<rewrite::Rewrite> {
    let (bytes, weights_folder): (Cow<'_, [u8]>, Option<String>) = match source {
        ModelSource::File(path) => (Cow::Owned(graph::read_small(path)?), weights_folder(path)),
        ModelSource::Embedded => (Cow::Borrowed(embedded::DEMO_MODEL), None),
    };
    // A file this reader cannot walk (corrupt, several graphs) says nothing about its attention layers,
    // so the note below, which names the slow mask, would be wrong; ONNX Runtime's load reports a file
    // that is really broken, and `esmbench inspect` gives the reader's reason.
    let model = graph::read(&bytes).ok()?;
    let mut rewrite = rewrite::plan_read(&model).unwrap_or_else(|reason| {
        note_running_as_is(origin, &reason);
        None
    })?;
    rewrite.weights_folder = weights_folder;
    Some(rewrite)
}

/// ONNX Runtime's session option naming the folder external data locations are relative to, for a model
/// given as bytes.
const WEIGHTS_FOLDER_KEY: &str = "session.model_external_initializers_file_folder_path";

fn with_weights_folder(
    builder: SessionBuilder,
    rewrite: &rewrite::Rewrite,
) -> ort::Result<SessionBuilder> {
    match &rewrite.weights_folder {
        Some(folder) => builder
            .with_config_entry(WEIGHTS_FOLDER_KEY, folder)
            .map_err(Into::into),
        None => Ok(builder),
    }
}

fn note_running_as_is(origin: &str, reason: &str) {
    crate::errln!(
        "note: {origin}: its attention layers add a mask expanded for each layer (transformers' exporter), which is slow on CPU; \
         esmbench runs the graph as it is because {reason}"
    );
}

/// Builds the session for the rewritten graph while its probe runs on another thread, so with two cores
/// the probe's time hides behind the build; the session comes back with the rewrite's summary. None,
/// with a note, when the probe fails: the caller then builds the file as it is. The rewritten bytes are
/// dropped here, as ONNX Runtime holds its own copy of the graph once the session is built.
fn commit_rewritten(
    env: &Environment,
    builder: &mut SessionBuilder,
    rewrite: rewrite::Rewrite,
    origin: &str,
) -> Option<(ort::Result<Session>, String)> {
    let (probe, session) = std::thread::scope(|scope| {
        let probe = crate::threads::in_scope(scope, "esmbench-probe", || run_probe(env, &rewrite));
        let session = builder.commit_from_memory(&rewrite.model);
        (probe.join(), session)
    });
    match probe.unwrap_or_else(|_| {
        Err("the rewrite's probe failed: the probe thread panicked".to_string())
    }) {
        Ok(()) => {
            let summary = rewrite.summary();
            crate::errln!(
                "note: {origin}: rewrote the graph in memory ({summary}); every original mask matches the new one on the probe batches. \
                 --no-graph-rewrite runs the file as it is"
            );
            Some((session, summary))
        }
        Err(reason) => {
            note_running_as_is(origin, &reason);
            None
        }
    }
}

/// Runs the rewrite's probe model on CPU over [`rewrite::probe_batches`] and checks every output;
/// Err says why the probe failed, in words that finish "runs the file as it is because ...".
fn run_probe(env: &Environment, rewrite: &rewrite::Rewrite) -> Result<(), String> {
    probe_outputs_match(env, rewrite)
        .map_err(|reason| format!("the rewrite's probe failed: {reason}"))
}

fn probe_outputs_match(env: &Environment, rewrite: &rewrite::Rewrite) -> Result<(), String> {
    let mut session = Session::builder(env)
        .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
        .and_then(|b| with_weights_folder(b, rewrite))
        .and_then(|mut b| b.commit_from_memory(&rewrite.probe))
        .map_err(|e| format!("ONNX Runtime cannot load it: {e}"))?;
    for batch in rewrite::probe_batches() {
        let shape = [batch.rows, batch.width];
        let ids = TensorRef::from_array_view((shape, batch.input_ids.as_slice()))
            .map_err(|e| e.to_string())?;
        let mask = TensorRef::from_array_view((shape, batch.attention_mask.as_slice()))
            .map_err(|e| e.to_string())?;
        let outputs = session
            .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
            .map_err(|e| format!("ONNX Runtime cannot run it: {e}"))?;
        for name in rewrite.probe_outputs() {
            let (shape, values) = outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("mask {name:?} is not float32: {e}"))?;
            rewrite::check_probe_output(name, shape, values, &batch)?;
        }
    }
    Ok(())
}

impl OnnxBackend {
    pub fn load(settings: &LoadSettings) -> Result<OnnxBackend> {
        let started = Instant::now();
        let origin = settings.source.display_name();
        // Without the rewrite, the advice is read alongside the session build, which takes longer, so it
        // costs no start-up time.
        let advising = match &settings.source {
            ModelSource::File(path) if !settings.graph_rewrite => {
                let path = path.clone();
                Some(crate::threads::in_background(
                    "esmbench-advice",
                    move || graph::advice(&path),
                ))
            }
            _ => None,
        };
        let (env, _) = runtime::environment()?;
        let builder = Session::builder(env)
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| {
                b.with_intra_op_spinning(settings.intra_op_spinning)
                    .map_err(Into::into)
            })
            // Variable-length batches: a memory pattern planned for one shape is wasted on the next.
            .and_then(|b| b.with_memory_pattern(false).map_err(Into::into))
            .and_then(|b| {
                if signed_int8_products_saturate() {
                    b.with_precise_qmm().map_err(Into::into)
                } else {
                    Ok(b)
                }
            })
            .map_err(|e| ort_failure(&origin, e))?;
        let mut slot = Some(builder);
        let selection = provider::select(settings.device, |p| register(&mut slot, p))?;
        let fallback = (!selection.passed_over.is_empty()
            && settings.device.device != provider::Device::Auto)
            .then(|| {
                let reasons: Vec<String> = selection
                    .passed_over
                    .iter()
                    .map(|(p, r)| format!("{}: {r}", p.ort_name()))
                    .collect();
                reasons.join("; ")
            });
        if let Some(reason) = &fallback {
            crate::errln!(
                "WARNING: --device {} is not usable ({reason}); running on {} because CPU fallback is allowed. Throughput will be far lower.",
                settings.device.device.name(),
                selection.provider.ort_name()
            );
        }
        // Providers other than CPU run one batch at a time; CPU splits the threads across the batches in flight.
        let (parallel_batches, intra_threads) = if selection.provider == Provider::Cpu {
            settings.cpu_parallelism
        } else {
            if settings.parallel_batches_asked.is_some_and(|k| k > 1) {
                crate::errln!(
                    "WARNING: --parallel-batches applies to CPU runs; {} runs one batch at a time. Raise --max-tokens to give it larger batches instead.",
                    selection.provider.ort_name()
                );
            }
            (1, settings.threads)
        };
        let builder = slot
            .expect("builder present")
            .with_intra_threads(intra_threads)
            .map_err(|e| ort_failure(&origin, e))?;
        // After the provider checks, so a run refused for its device says nothing about its graph.
        let candidate = settings
            .graph_rewrite
            .then(|| rewrite_candidate(&settings.source, &origin))
            .flatten();
        let mut builder = match &candidate {
            Some(rewrite) => with_weights_folder(builder, rewrite),
            None => Ok(builder),
        }
        .map_err(|e| ort_failure(&origin, e))?;
        let rewritten =
            candidate.and_then(|rewrite| commit_rewritten(env, &mut builder, rewrite, &origin));
        let (session, graph_rewrite) = match (rewritten, &settings.source) {
            (Some((session, summary)), _) => (session, Some(summary)),
            (None, ModelSource::File(path)) => (builder.commit_from_file(path), None),
            (None, ModelSource::Embedded) => {
                (builder.commit_from_memory(embedded::DEMO_MODEL), None)
            }
        };
        let session = session.map_err(|e| load_failure(&origin, e))?;
        count_model_load();
        let (inputs, outputs) = describe(&session);
        let contract = contract::check(&origin, &inputs, &outputs)?;
        if let Some(Ok(Some(advice))) = advising.map(crate::threads::Background::join) {
            crate::errln!("note: {origin}: {advice}");
        }
        let (metadata_head, position_limit) = match session.metadata() {
            Ok(m) => (
                m.custom(HEAD_METADATA_KEY),
                m.custom(super::ARCHITECTURE_METADATA_KEY)
                    .and_then(|text| super::learned_position_limit(&text)),
            ),
            Err(_) => (None, None),
        };
        if let Some(limit) = position_limit.filter(|&limit| settings.max_residues > limit) {
            return Err(Failure::usage(format!(
                "{origin}: --max-residues {} is more than this model can read: its learned position embeddings \
(ESM-1b/ESM-1v style) end at {limit} residues, and a longer row would fail the run when its batch comes\n  \
fix: use --max-residues {limit} or less (longer rows are then truncated, or refused with --no-truncate)",
                settings.max_residues
            ))
            .into());
        }
        let shared = session.inner();
        let pinned = (selection.provider == Provider::Cuda && settings.io_binding)
            .then(|| PinnedIo::new(session, &contract.output))
            .transpose()
            .map_err(|e| ort_failure(&format!("{origin}: CUDA IO binding"), e))?;
        let info = ModelInfo {
            kind: contract.kind,
            output: contract.output.clone(),
            hidden: contract.hidden,
            device_requested: settings.device.device.name().to_string(),
            execution_provider: selection.provider.ort_name().to_string(),
            fallback,
            load_seconds: started.elapsed().as_secs_f64(),
            metadata_head,
            threads: settings.threads,
            parallel_batches,
            max_tokens: settings
                .max_tokens
                .unwrap_or_else(|| selection.provider.default_max_tokens(contract.hidden)),
            io_binding: pinned.is_some(),
            graph_rewrite,
        };
        let output_name = CString::new(contract.output.clone())
            .map_err(|_| Failure::usage(format!("{origin}: the output name has a NUL byte")))?;
        Ok(OnnxBackend {
            shared,
            output_name,
            contract,
            info,
            pinned: pinned.map(Mutex::new),
        })
    }
}

impl Backend for OnnxBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, batch: &TokenBatch) -> Result<ModelOutput> {
        let value = match &self.pinned {
            Some(pinned) => pinned.lock().map_err(|_| poisoned())?.run(batch)?,
            None => {
                let shape = [batch.len(), batch.seq_len];
                let ids = TensorRef::from_array_view((shape, batch.input_ids.as_slice()))?;
                let mask = TensorRef::from_array_view((shape, batch.attention_mask.as_slice()))?;
                run_shared(
                    &self.shared,
                    [(c"input_ids", &ids), (c"attention_mask", &mask)],
                    &self.output_name,
                )
                .map_err(|e| inference_failure(batch, e))?
            }
        };
        let array = value
            .try_extract_array::<f32>()
            .map_err(|e| ort_failure("reading the output", e))?;
        let rows = batch.len();
        match self.contract.kind {
            OutputKind::HiddenStates => {
                let hidden = array.into_dimensionality::<ndarray::Ix3>().map_err(|e| {
                    Failure::runtime(format!("last_hidden_state has an unexpected shape: {e}"))
                })?;
                let (got_rows, got_len, width) = hidden.dim();
                check_output_shape(
                    &self.contract.output,
                    &[got_rows, got_len, width],
                    &[Some(rows), Some(batch.seq_len), self.info.hidden],
                )?;
                Ok(ModelOutput::Embeddings(pooling::mean_pool_residues(
                    hidden,
                    &batch.lengths(),
                )))
            }
            OutputKind::Pooled => {
                let pooled = array.into_dimensionality::<ndarray::Ix2>().map_err(|e| {
                    Failure::runtime(format!("the pooled output has an unexpected shape: {e}"))
                })?;
                let (got_rows, width) = pooled.dim();
                check_output_shape(
                    &self.contract.output,
                    &[got_rows, width],
                    &[Some(rows), self.info.hidden],
                )?;
                Ok(ModelOutput::Embeddings(pooled.to_owned()))
            }
            kind => {
                let values: Vec<f32> = array.iter().copied().collect();
                let per_row = if kind.is_two_class() { 2 } else { 1 };
                if values.len() != rows * per_row {
                    return Err(Failure::runtime(format!(
                        "the model's output `{}` has {} values for a batch of {rows} rows (expected {})\n  \
fix: export the model so that it gives one score per input row (see `esmbench inspect`)",
                        self.contract.output,
                        values.len(),
                        rows * per_row
                    ))
                    .into());
                }
                Ok(ModelOutput::Probabilities(probabilities_from_scores(
                    kind,
                    &values,
                    batch.len(),
                )))
            }
        }
    }
}

/// A model whose output does not match the batch it was given (a graph with a fixed batch size or sequence
/// length, or a hidden size other than its declared one) would be pooled or indexed out of bounds.
fn check_output_shape(output: &str, got: &[usize], expected: &[Option<usize>]) -> Result<()> {
    let matches = got
        .iter()
        .zip(expected)
        .all(|(g, e)| e.is_none_or(|e| e == *g));
    if matches {
        return Ok(());
    }
    let show = |dims: Vec<String>| format!("[{}]", dims.join(", "));
    Err(Failure::runtime(format!(
        "the model's output `{output}` has shape {} for this batch, expected {}\n  \
fix: export the model with dynamic batch and sequence axes (see `esmbench inspect`)",
        show(got.iter().map(ToString::to_string).collect()),
        show(
            expected
                .iter()
                .map(|e| e.map_or("any".to_string(), |e| e.to_string()))
                .collect()
        ),
    ))
    .into())
}

/// What `esmbench inspect` shows: declared inputs and outputs, metadata, and the contract check.
pub struct Description {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub metadata: Vec<(String, String)>,
    pub contract: Result<Contract, Failure>,
    /// A known slow pattern in the graph and its fix ([`graph::advice`]).
    pub advice: Option<String>,
    /// What `esmbench test` would do to the graph at load: the rewrite it would run, or why it would
    /// run the file as it is; None when there is nothing to rewrite.
    pub graph_rewrite: Option<String>,
}

/// `esmbench inspect`: loads the model on CPU and describes it (no data is read).
pub fn inspect(path: &Path) -> Result<Description> {
    let (env, _) = runtime::environment()?;
    let origin = path.display().to_string();
    let session = Session::builder(env)
        .map_err(|e| ort_failure(&origin, e))?
        .commit_from_file(path)
        .map_err(|e| load_failure(&origin, e))?;
    count_model_load();
    let (inputs, outputs) = describe(&session);
    let mut metadata = Vec::new();
    if let Ok(m) = session.metadata() {
        for key in m.custom_keys().unwrap_or_default() {
            let value = m.custom(&key).unwrap_or_default();
            metadata.push((key, value));
        }
        if let Some(p) = m.producer() {
            metadata.push(("producer".into(), p));
        }
    }
    let contract = contract::check(&origin, &inputs, &outputs);
    // One read for the advice and the rewrite plan.
    let bytes = graph::read_small(path);
    Ok(Description {
        inputs,
        outputs,
        metadata,
        contract,
        advice: bytes
            .as_deref()
            .and_then(|b| graph::advice_for(path, b, false)),
        graph_rewrite: bytes.as_deref().and_then(|b| {
            match planned_rewrite(env, b, weights_folder(path)) {
                Ok(Some(rewrite)) => Some(format!(
                    "{}; the probe found every original mask matching the new one",
                    rewrite.summary()
                )),
                Ok(None) => None,
                Err(reason) => Some(format!("none, the file runs as it is because {reason}")),
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_must_follow_the_batch_axes_and_the_declared_hidden_size() {
        assert!(check_output_shape("h", &[3, 12, 320], &[Some(3), Some(12), Some(320)]).is_ok());
        assert!(check_output_shape("h", &[3, 12, 320], &[Some(3), Some(12), None]).is_ok());
        let refused = |got: &[usize], expected: &[Option<usize>]| {
            check_output_shape("h", got, expected)
                .unwrap_err()
                .downcast::<Failure>()
                .unwrap()
                .message
        };
        assert!(refused(&[1, 12, 320], &[Some(3), Some(12), None])
            .starts_with("the model's output `h` has shape [1, 12, 320] for this batch, expected [3, 12, any]"));
        assert!(refused(&[3, 2, 320], &[Some(3), Some(12), Some(320)]).contains("[3, 2, 320]"));
        assert!(refused(&[3, 160], &[Some(3), Some(320)]).contains("expected [3, 320]"));
    }

    #[test]
    fn a_pool_refused_a_thread_is_not_called_a_bad_model_file() {
        // ONNX Runtime 1.31's words when pthread_create fails while its intra-op pool starts.
        let refused = "/onnxruntime_src/onnxruntime/core/platform/posix/env.cc:327 onnxruntime::{anonymous}::PosixThread::PosixThread(\
                       const char*, int, unsigned int (*)(int, Eigen::ThreadPoolInterface*), Eigen::ThreadPoolInterface*, \
                       const onnxruntime::ThreadOptions&) pthread_create failed, error code: 11 error msg: Resource temporarily unavailable";
        let failure = load_failure("m.onnx", refused);
        assert_eq!(failure.kind, crate::error::FailureKind::Runtime);
        assert!(
            failure.message.contains("could not start its thread pool"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains(crate::threads::FIX),
            "{}",
            failure.message
        );
        let corrupt = load_failure(
            "m.onnx",
            "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model failed",
        );
        assert_eq!(corrupt.kind, crate::error::FailureKind::Usage);
        assert!(
            corrupt
                .message
                .contains("fix: the file is not a whole ONNX model"),
            "{}",
            corrupt.message
        );
    }

    /// Regression: a row of 100,000 residues under `--max-residues 100000` stopped the run with the runtime's
    /// raw "Failed to allocate memory for requested buffer of size 160006400256" and no fix.
    #[test]
    fn regression_a_batch_the_runtime_has_no_memory_for_gets_the_fix() {
        let failure = no_memory_fix(
            1,
            100_002,
            "Failed to allocate memory for requested buffer of size 160006400256",
        );
        assert_eq!(failure.kind, crate::error::FailureKind::Runtime);
        assert!(
            failure
                .message
                .contains("fix: a batch of 1 rows x 100002 tokens needed more memory")
                && failure.message.contains("lower --max-residues"),
            "{}",
            failure.message
        );
        let other = no_memory_fix(1, 100_002, "some kernel failed");
        assert!(!other.message.contains("fix:"), "{}", other.message);
    }

    /// Regression: every refused model got one fix naming "IR version 10 or lower", where this runtime reads
    /// up to 13, and a file cut short or a damaged external data file were sent to check the IR version.
    #[test]
    fn regression_a_refused_model_gets_the_fix_for_its_reason() {
        let cases = [
            (
                "Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:181 \
onnxruntime::Model::Model(...) Unsupported model IR version: 14, max supported IR version: 13",
                "this runtime reads IR version 13 or lower, the file is 14",
            ),
            (
                "Load model from m.onnx failed: tensor_proto_utils: External data ... out of bounds or can not be read in full",
                "external data file",
            ),
            (
                "Load model from m.onnx failed:Protobuf parsing failed.",
                "not a whole ONNX model",
            ),
            ("Load model from m.onnx failed: something new", LOAD_FIX),
        ];
        for (message, fix) in cases {
            let failure = load_failure("m.onnx", message);
            assert_eq!(failure.kind, crate::error::FailureKind::Usage);
            assert!(
                failure.message.contains(&format!("fix: {fix}")) || failure.message.contains(fix),
                "{}",
                failure.message
            );
            assert!(
                !failure.message.contains("IR version 10 or lower"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn cuda_runs_float32_in_float32_with_an_arena_that_grows_by_what_is_asked() {
        let options = format!("{:?}", cuda_options());
        assert!(options.contains(r#""use_tf32": "false""#), "{options}");
        assert!(
            options.contains(r#""arena_extend_strategy": "kSameAsRequested""#),
            "{options}"
        );
    }
}
