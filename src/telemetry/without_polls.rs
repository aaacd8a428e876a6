//! A layer that is not told when a span is entered or left.
//!
//! An `#[instrument]`ed future enters its span at every poll, and a checkout's step
//! polls once per statement round trip at least, through three or four nested spans.
//! Under a per-layer filter each of those enters and exits costs the layer a lookup of
//! the span in the registry before the layer is even asked, and `tracing-opentelemetry`
//! also locks the span's data to stamp an end time at every exit. Neither of our layers
//! needs to hear of polls (see [`super::init`]): the registry itself still tracks which
//! span is current, which is what parents spans and puts trace ids on log lines.

use std::any::TypeId;

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};

/// `inner`, every callback passed on but `on_enter` and `on_exit`.
pub struct WithoutPolls<L>(pub L);

impl<L, S> Layer<S> for WithoutPolls<L>
where
    L: Layer<S>,
    S: Subscriber,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }

    /// Passed on, so that what looks for a layer inside — `tracing-opentelemetry`'s
    /// context lookup, the registry's per-layer filter bookkeeping — still finds it.
    ///
    /// # Safety
    /// The pointer is the inner layer's answer for the same `id`, unchanged.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(std::ptr::from_ref(self).cast());
        }
        // SAFETY: the inner layer's own answer for the same type id.
        unsafe { self.0.downcast_raw(id) }
    }
}
