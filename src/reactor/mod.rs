//! The event loop behind the [`Reactor`](crate::Reactor) strategy.
//!
//! - [`event_loop`] — the loop: epoll wait, accept, read → decode → `on_message`, flush, close.
//! - [`connections`] — the open connections and the work handler callbacks leave for the loop.
//! - [`peer`] — one connection's state; [`output`] — its bounded, lazily allocated send queue.
//! - [`slab`] — generation-checked storage, so stale ids and events never hit a reused slot.
//! - [`timers`] — idle deadlines, checked lazily so activity costs nothing.

pub(crate) mod connections;
pub(crate) mod event_loop;
pub(crate) mod output;
pub(crate) mod peer;
pub(crate) mod slab;
pub(crate) mod timers;

pub(crate) use connections::Connections;
