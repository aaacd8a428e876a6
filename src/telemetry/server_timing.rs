//! How long each step of one checkout request took, for its `Server-Timing` header: the
//! steps record themselves (the checkout's `observe_step`) into the request's own list,
//! if the caller asked for one with [`recorded`]; so do the rungs of the ladder of cures
//! (each attempt of a retried call, a breaker's refusal, a fallback), with a
//! description. The workers' steps, in other tasks, are not the request's and record
//! nothing.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static STEPS: RefCell<Vec<StepTiming>>;
}

/// One step that ran, how long it took, and what happened in it if that is news.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    pub step: &'static str,
    pub duration: Duration,
    pub description: Option<String>,
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
pub fn note(step: &'static str, duration: Duration) {
    push(StepTiming {
        step,
        duration,
        description: None,
    });
}

/// Notes a step with what happened in it (`attempt 2: failed`, `queued`).
pub fn note_described(step: &'static str, duration: Duration, description: String) {
    push(StepTiming {
        step,
        duration,
        description: Some(description),
    });
}

fn push(timing: StepTiming) {
    let _ = STEPS.try_with(|steps| steps.borrow_mut().push(timing));
}
