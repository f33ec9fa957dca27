//! Finding the ONNX Runtime shared library (ORT_DYLIB_PATH, then the setup location) and loading it once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Result;
use ort::environment::Environment;

use super::runtime_log;
use crate::error::Failure;

/// The ONNX Runtime version ort 2.0.0-rc.15 targets; scripts/setup_runtime.sh installs this one.
pub const ORT_VERSION: &str = "1.31.1";
/// Where scripts/setup_runtime.sh puts the library, relative to the project root.
pub const SETUP_DIR: &str = ".ort/lib";

fn library_file_name(name: &str) -> bool {
    if cfg!(target_os = "windows") {
        name.eq_ignore_ascii_case("onnxruntime.dll")
    } else if cfg!(target_os = "macos") {
        name.starts_with("libonnxruntime")
            && name.ends_with(".dylib")
            && !name.contains("providers")
    } else {
        name.starts_with("libonnxruntime.so")
    }
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| library_file_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    // Prefer the fully versioned file name (libonnxruntime.so.1.31.1) over links to it.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// ORT_DYLIB_PATH if set; otherwise `.ort/lib` in the current folder or any folder above it or above the executable.
pub fn locate_library() -> Result<PathBuf, Failure> {
    if let Some(value) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Failure::runtime(format!(
                "ORT_DYLIB_PATH={} does not name a file\n  fix: point it at libonnxruntime, or unset it and run scripts/setup_runtime.sh",
                path.display()
            )))
        };
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.extend(exe.parent().map(Path::to_path_buf));
    }
    for start in &starts {
        for dir in start.ancestors() {
            if let Some(lib) = library_in(&dir.join(SETUP_DIR)) {
                return Ok(lib);
            }
        }
    }
    Err(Failure::runtime(format!(
        "the ONNX Runtime library was not found (looked at ORT_DYLIB_PATH, then {SETUP_DIR} in this folder, the executable's folder and their parents)\n  \
fix: run `scripts/setup_runtime.sh` in the esmbench checkout (installs onnxruntime {ORT_VERSION} from PyPI into {SETUP_DIR}), \
or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so"
    )))
}

/// The variable ONNX Runtime reads, when its environment starts, to leave out its built-in telemetry.
pub const TELEMETRY_VARIABLE: &str = "ORT_DISABLE_TELEMETRY";

/// Sets ORT_DISABLE_TELEMETRY=1 unless the user set it. `DisableTelemetryEvents` (ort's `with_telemetry(false)`)
/// is not enough for the 1.31 Linux builds: their environment still writes a device id and an event store
/// under ~/.cache/Microsoft and, seconds into the run, resolves and contacts mobile.events.data.microsoft.com.
/// esmbench promises a run that reaches nothing outside the machine; an explicit value is the user's choice.
///
/// Changing the environment while another thread reads it is undefined behaviour in glibc, so the binary calls
/// this first thing in `main`, before any thread exists; [`environment`] calls it again for library callers
/// (tests in-process), where it is a no-op once the variable is set.
pub fn keep_telemetry_off() {
    if std::env::var_os(TELEMETRY_VARIABLE).is_none() {
        std::env::set_var(TELEMETRY_VARIABLE, "1");
    }
}

static ENVIRONMENT: OnceLock<(Environment, PathBuf)> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static (Environment, PathBuf)> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    // One thread starts the runtime; another arriving meanwhile waits and gets the same environment.
    let _starting = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = locate_library()?;
    keep_telemetry_off();
    let builder = ort::init_from(&path).map_err(|e| {
        Failure::runtime(format!(
            "cannot load ONNX Runtime from {}: {e}\n  fix: run scripts/setup_runtime.sh (onnxruntime {ORT_VERSION}) or point ORT_DYLIB_PATH at a compatible library",
            path.display()
        ))
    })?;
    let level = runtime_log::requested_level(std::env::var("ORT_LOG").ok().as_deref());
    let env = builder
        .with_name("esmbench")
        .with_telemetry(false)
        .with_logger(runtime_log::logger(level))
        .build()
        .map_err(|e| Failure::runtime(format!("ONNX Runtime environment failed to start: {e}")))?;
    // ort starts a custom logger at verbose; the runtime should not even format what the logger drops.
    env.set_log_level(level);
    Ok(ENVIRONMENT.get_or_init(|| (env, path)))
}
