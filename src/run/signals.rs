//! SIGINT, SIGTERM and SIGHUP: the first asks the run to stop after the current batch; a second one exits at once.
//!
//! SIGHUP (the terminal or ssh session closed) is handled only when the process did not start with it
//! ignored: under `nohup` it stays ignored, so the run goes on as the user asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM};

struct Flags {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process). Without them a signal kills the run with nothing flushed.
pub fn install() -> std::io::Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags {
        interrupt: Arc::new(AtomicBool::new(false)),
        terminate: Arc::new(AtomicBool::new(false)),
        hangup: Arc::new(AtomicBool::new(false)),
    };
    use signal_hook::consts::{SIGINT, SIGTERM};
    #[allow(unused_mut)] // no SIGHUP outside Unix
    let mut handled = vec![
        (SIGINT, EXIT_SIGINT, &flags.interrupt),
        (SIGTERM, EXIT_SIGTERM, &flags.terminate),
    ];
    #[cfg(unix)]
    if !ignored_at_start(signal_hook::consts::SIGHUP) {
        handled.push((signal_hook::consts::SIGHUP, EXIT_SIGHUP, &flags.hangup));
    }
    for (signal, code, flag) in handled {
        // Registered before the flag itself: a signal arriving while the flag is already set exits at once.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(code),
            Arc::clone(flag),
        )?;
        signal_hook::flag::register(signal, Arc::clone(flag))?;
    }
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The exit code and name of a stop request, if one arrived.
pub fn requested() -> Option<(u8, &'static str)> {
    let flags = FLAGS.get()?;
    if flags.interrupt.load(Ordering::Relaxed) {
        Some((EXIT_SIGINT, "SIGINT"))
    } else if flags.terminate.load(Ordering::Relaxed) {
        Some((EXIT_SIGTERM, "SIGTERM"))
    } else if flags.hangup.load(Ordering::Relaxed) {
        Some((EXIT_SIGHUP, "SIGHUP"))
    } else {
        None
    }
}

/// Whether `signal` was set to be ignored when the process started (as `nohup` does for SIGHUP).
#[cfg(unix)]
fn ignored_at_start(signal: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `current`, which is plain data.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}
