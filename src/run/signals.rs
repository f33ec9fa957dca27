//! SIGINT and SIGTERM: the first asks the run to stop after the current batch; a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{EXIT_SIGINT, EXIT_SIGTERM};

struct Flags {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
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
    };
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    // Registered before the flag itself: a signal arriving while the flag is already set exits at once.
    flag::register_conditional_shutdown(
        SIGINT,
        i32::from(EXIT_SIGINT),
        Arc::clone(&flags.interrupt),
    )?;
    flag::register_conditional_shutdown(
        SIGTERM,
        i32::from(EXIT_SIGTERM),
        Arc::clone(&flags.terminate),
    )?;
    flag::register(SIGINT, Arc::clone(&flags.interrupt))?;
    flag::register(SIGTERM, Arc::clone(&flags.terminate))?;
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
    } else {
        None
    }
}
