//! SIGBUS: a file mapped into memory was cut short under the run. ONNX Runtime maps a model's external
//! weights (`M.onnx.data`) rather than copying them, so an export written over them in place killed a
//! run with a bare "Bus error"; the run now says what happened and how to go on, and exits 1.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::error::EXIT_RUNTIME;
use crate::model::ModelSource;

/// The message the handler writes, set before each model loads; null until then.
static MESSAGE: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
/// Set by the first thread to fault, which writes the message and exits.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// What the handler writes for a run of `model`.
pub fn message(model: &ModelSource) -> String {
    let files: Vec<String> = crate::fingerprint::model_files(model)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let suspects = if files.is_empty() {
        "the model's files".to_string()
    } else {
        files.join(", ")
    };
    format!(
        "\nerror: bus error (SIGBUS): a file the run had mapped into memory was cut short while the run read it; \
         ONNX Runtime maps a model's external weights, so most likely one of {suspects} was overwritten in place\n  \
         fix: put the model's files back as they were (write a new export to another path, or move it over the old one), \
         then run the same command with --resume to go on from the last checkpoint\n"
    )
}

/// Installs the handler with the message for `model` (a later call, for the next model of a suite,
/// replaces the message).
pub fn install(model: &ModelSource) {
    #[cfg(unix)]
    {
        let text = Box::into_raw(Box::new(message(model).into_bytes()));
        // The previous message is leaked: a handler running on another thread may still be reading it.
        let previous = MESSAGE.swap(text, Ordering::SeqCst);
        if !previous.is_null() {
            return;
        }
        // SAFETY: the action is plain data, fully initialised; the handler only reads MESSAGE and calls
        // async-signal-safe functions. SA_ONSTACK: on the alternate stack std gives its threads.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_bus_error as Handler as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }
    #[cfg(not(unix))]
    let _ = model;
}

#[cfg(unix)]
type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

#[cfg(unix)]
extern "C" fn on_bus_error(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Linux says BUS_ADRERR for an access past the end of a mapped file. Any other bus error (a misaligned
    // access) is not this one: the default action is restored and the access, run again, kills the process
    // as it would have.
    #[cfg(target_os = "linux")]
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t; signal(2) is async-signal-safe.
    unsafe {
        if info.as_ref().is_some_and(|i| i.si_code != libc::BUS_ADRERR) {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            return;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = info;
    // Batches run on several threads, which may all fault: one reports, the others wait for the exit
    // (returning would run the faulting instruction again).
    if REPORTING.swap(true, Ordering::SeqCst) {
        loop {
            // SAFETY: pause(2) is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    let text = MESSAGE.load(Ordering::SeqCst);
    // SAFETY: a non-null MESSAGE points to a leaked Vec that is never freed; write(2) and _exit(2) are
    // async-signal-safe.
    unsafe {
        if let Some(text) = text.as_ref() {
            libc::write(2, text.as_ptr().cast(), text.len());
        }
        libc::_exit(i32::from(EXIT_RUNTIME));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_models_files_the_fix_and_resume() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let model = fixtures.join("contract/external_data.onnx");
        let text = message(&ModelSource::File(model.clone()));
        assert!(
            text.contains(&format!(
                "one of {}, {} was overwritten in place",
                model.display(),
                fixtures.join("contract/external_data.onnx.data").display()
            )),
            "{text}"
        );
        assert!(text.contains("fix: put the model's files back"), "{text}");
        assert!(text.contains("--resume"), "{text}");
        assert!(message(&ModelSource::Embedded).contains("one of the model's files"));
    }
}
