//! Real-time scheduling and locked memory for the heartbeat thread, as
//! Heartbeat did: a heartbeat sent late or read late is a false failover.
//! Both are best effort: without the privilege the agent runs normally and
//! `keepup status` says `realtime: false`.

#![allow(unsafe_code)]

/// Puts the calling thread in SCHED_FIFO at `priority` and locks the
/// process's memory. Returns whether both succeeded.
pub fn make_current_thread_realtime(priority: i32) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads `param` only during the call; pid 0 is
    // the calling thread. No memory is shared or retained.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(format!(
            "SCHED_FIFO refused: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: mlockall takes flags only and touches no Rust-visible memory.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        return Err(format!(
            "mlockall refused: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
