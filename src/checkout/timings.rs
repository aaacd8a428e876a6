//! How long each step of one checkout request took, for its `Server-Timing` header: the
//! steps record themselves (`observe_step`) into the request's own list, if the caller
//! asked for one with [`recorded`]. The workers' steps, in other tasks, are not the
//! request's and record nothing.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static STEPS: RefCell<Vec<StepTiming>>;
}

/// One step that ran, and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    pub step: &'static str,
    pub duration: Duration,
}

/// Runs `work` (a checkout) and returns its output with the steps it ran, in order.
///
/// `work` is boxed: held by value, an async wrapper keeps a copy of the checkout's
/// state machine (9 KB) in each of its own states, and a hundred checkouts in flight
/// paid that three times over (measured with `-Zprint-type-sizes`).
pub fn recorded<F: Future>(work: F) -> impl Future<Output = (F::Output, Vec<StepTiming>)> {
    let work = Box::pin(work);
    STEPS.scope(RefCell::new(Vec::new()), async move {
        let output = work.await;
        let steps = STEPS.with(|steps| steps.take());
        (output, steps)
    })
}

/// Notes a step of the current checkout, if its caller is recording them.
pub(super) fn note(step: &'static str, duration: Duration) {
    let _ = STEPS.try_with(|steps| steps.borrow_mut().push(StepTiming { step, duration }));
}
