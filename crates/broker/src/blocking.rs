//! Running code that waits on the disk from async code, without holding up the runtime.

/// Runs `f`, which may wait on the disk (an fsync, a read of cold pages), on the current
/// thread without stalling the async worker it was called on: on the multi-thread runtime
/// tokio's `block_in_place` first hands the worker's other tasks to another thread, as
/// `spawn_blocking` would run `f` elsewhere, but `f` may borrow. Elsewhere (a current-thread
/// runtime in tests, or no runtime) `f` just runs.
///
/// For short, rare waits whose data is borrowed; work that owns its data goes to
/// `tokio::task::spawn_blocking`.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_without_a_runtime() {
        assert_eq!(off_worker(|| 7), 7);
    }

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime() {
        assert_eq!(off_worker(|| 8), 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_call_does_not_stall_the_only_worker() {
        // On the only worker: a task spawned just before the blocking call can only run during
        // it if the worker's queue was handed to another thread.
        let blocked = tokio::spawn(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            let got = off_worker(|| rx.recv_timeout(std::time::Duration::from_secs(10)));
            other.await.unwrap();
            got
        });
        blocked.await.unwrap().expect("the other task ran while the worker waited");
    }
}
