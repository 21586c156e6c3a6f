//! The event-loop model: [`MessageHandler`] and what it works with, [`Conn`], served by the
//! [`Reactor`](crate::Reactor) strategy.
//!
//! A message handler is *called* — once when a connection opens, once per decoded message, once when
//! it closes — and replies by queuing bytes through [`Conn`], to its own connection or any other open
//! one ([`Conn::send_to`], [`Conn::broadcast_except`]); it never blocks. This is the model for many
//! mostly idle connections, and for connections that talk to each other (chat, pub/sub).
//!
//! Inside:
//! - `event_loop` — the loop: epoll wait, accept, read, timers; flush and close on the engine's word.
//! - `engine` — what happens between socket and handler: layers, decoding, callbacks, pacing senders,
//!   closing; shared with the test driver.
//! - `registry` — the open connections and the work handler callbacks leave for the loop.
//! - `send` — what sending can fail with, and what a broadcast did.
//! - `peer` — one connection's state; `output` — its bounded, lazily allocated send queue.
//! - `slab` — generation-checked storage, so stale ids and events never hit a reused slot.
//! - `timers` — idle deadlines, checked lazily so activity costs nothing.
//! - `linger` — the connections a drain closed, kept until their peers close too (no reset).
//! - `mesh` — a reactor's several loops and the mail between them: a new connection handed to a
//!   loop, a message or broadcast for another loop's connections, holding back a sender.

mod conn;
pub(crate) mod engine;
pub(crate) mod event_loop;
mod id;
mod linger;
mod mesh;
mod message;
mod output;
mod peer;
mod registry;
mod send;
mod slab;
mod timers;

pub use conn::Conn;
pub use id::ConnId;
pub use message::MessageHandler;
pub use send::{Broadcast, SendError};
