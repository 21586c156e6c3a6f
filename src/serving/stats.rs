//! [`Stats`]: a server's live figures, counted in memory its forked children share, so a snapshot
//! taken in the parent is the whole server's — `Forking`'s per-request children and `PreFork`'s
//! workers included.
//!
//! Why shared memory rather than a pipe: a pipe needs a message per event and a reader in the
//! parent; a `MAP_SHARED` mapping made before the first fork needs neither — a child's count is one
//! relaxed atomic addition, the same as a thread's, and the parent reads it whenever asked, with no
//! loop of its own involved. The figures are monotonic counters and a few gauges, so no lock is
//! needed either. (The mapping is per server: a few KiB.)

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::addr::Addr;
use crate::sys::SharedCounters;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Requests admitted (passed `verify_request` and the per-peer limit) and handed on.
    Accepted,
    /// Refused by `verify_request`.
    RejectedVerify,
    /// Refused by the per-peer limit.
    RejectedPerPeer,
    /// Times the server reached its cap and stopped accepting (connections then wait in the
    /// kernel's backlog: nothing is refused).
    Capped,
    /// Requests whose handler started (for `Reactor`: connections opened).
    Started,
    /// Requests that ended, however (for `Reactor`: connections closed).
    Finished,
    /// Of those, how many failed (an error of the handler or of a layer).
    Failed,
    /// Of those, how many panicked.
    Panicked,
    /// Requests cut at a drain deadline.
    Cut,
    /// The durations of finished requests, summed, in microseconds.
    DurationSumMicros,
    /// Child processes started (`Forking`: one per request; `PreFork`: workers).
    ChildrenSpawned,
    /// Child processes that ended abnormally (a crash, a signal, an unexpected status).
    ChildrenFailed,
    /// Child processes killed by the server (at the drain deadline, or by a watchdog).
    ChildrenKilled,
}

/// What is set, not counted: the state of the strategy's workers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gauge {
    /// Threads, worker processes or children that exist now (busy or idle).
    WorkersLive,
    /// Accepted requests waiting in a queue for a worker (`Pool`).
    Queued,
    /// `Reactor` connections whose reading is paused (their own output is full) or held back.
    Paused,
    /// Bytes queued for `Reactor` connections, not yet taken by their sockets.
    QueuedBytes,
}

const COUNTERS: usize = 13;
const GAUGES: usize = 4;
/// Duration buckets: bucket `i` counts requests that took under `2^i` µs, the last one the rest —
/// 1 µs to about 36 minutes, on a log scale.
pub(crate) const BUCKETS: usize = 32;
/// Every counter and gauge has a cache line of its own (8 × 8 bytes), so workers counting different
/// things on different cores do not fight over one line; the buckets share lines, as a request
/// updates one of them.
const LINE: usize = 8;
const BUCKET_BASE: usize = (COUNTERS + GAUGES) * LINE;
const SLOTS: usize = BUCKET_BASE + BUCKETS;

impl Counter {
    fn slot(self) -> usize {
        self as usize * LINE
    }
}

impl Gauge {
    fn slot(self) -> usize {
        (COUNTERS + self as usize) * LINE
    }
}

/// The counters of one server, in shared memory.
pub(crate) struct Counters {
    slots: SharedCounters,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("accepted", &self.get(Counter::Accepted))
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// Maps the counters, all zero.
    ///
    /// # Errors
    /// `mmap(2)` failing.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Counters {
            slots: SharedCounters::new(SLOTS)?,
        })
    }

    fn slot(&self, i: usize) -> Option<&AtomicU64> {
        self.slots.get(i)
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if let Some(c) = self.slot(counter.slot()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.slot(counter.slot())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, gauge: Gauge, value: u64) {
        if let Some(g) = self.slot(gauge.slot()) {
            g.store(value, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_gauge(&self, gauge: Gauge, delta: i64) {
        if let Some(g) = self.slot(gauge.slot()) {
            // Two's complement: adding the wrapped delta subtracts when it is negative.
            g.fetch_add(delta as u64, Ordering::Relaxed);
        }
    }

    fn gauge(&self, gauge: Gauge) -> u64 {
        self.slot(gauge.slot())
            .map_or(0, |g| g.load(Ordering::Relaxed))
    }

    /// Counts a finished request's duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        // Not `as_micros()`: its u128 division is most of this function's cost.
        let micros = elapsed
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(elapsed.subsec_micros()));
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        if let Some(b) = self.slot(BUCKET_BASE + bucket.min(BUCKETS - 1)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.add(Counter::DurationSumMicros, micros);
    }

    fn buckets(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| {
            self.slot(BUCKET_BASE + i)
                .map_or(0, |b| b.load(Ordering::Relaxed))
        })
    }
}

/// Which figures make sense for a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Requests run inline: no workers to count.
    Inline,
    /// Threads in this process (`Threading`, `Pool`).
    Threads,
    /// Child processes (`Forking`, `PreFork`).
    Processes,
    /// Event loops (`Reactor`).
    EventLoop,
}

/// A live view of a server's figures: cloneable, `Send`, readable at any time from any thread —
/// while the server serves, and after. Take it with [`Server::stats`](crate::Server::stats).
///
/// Counts made in forked children (`Forking`'s per-request children, `PreFork`'s workers) reach
/// it: they are kept in memory the children share with the parent, so under `PreFork` a snapshot
/// is the whole server's.
///
/// # Examples
///
/// ```
/// use socketserver::testing::{MockConn, MockStream};
/// use socketserver::{Sequential, Server, StreamRequest};
///
/// let transport = MockStream::new()?;
/// transport.push(MockConn::new().read("hi"));
/// transport.push(MockConn::new());
/// let mut server = Server::new(Sequential::new(), transport, |req: &mut StreamRequest| {
///     let mut buf = String::new();
///     std::io::Read::read_to_string(req, &mut buf)?;
///     anyhow::ensure!(!buf.is_empty(), "an empty request");
///     Ok(())
/// })?
/// .handle_error(|_, _| {});
/// let stats = server.stats();
/// server.handle_request()?;
/// server.handle_request()?;
/// let now = stats.snapshot();
/// assert_eq!((now.accepted, now.requests.finished, now.requests.failed), (2, 2, 1));
/// assert!(now.durations.p99().is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Inner>,
}

struct Inner {
    counters: Counters,
    strategy: &'static str,
    shape: Shape,
    local_addr: Addr,
    /// What was last handed to the `metrics` facade, so only what is new is recorded.
    #[cfg(feature = "metrics")]
    published: parking_lot::Mutex<[u64; BUCKETS]>,
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("strategy", &self.inner.strategy)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Stats {
    pub(crate) fn new(
        counters: Counters,
        strategy: &'static str,
        shape: Shape,
        local_addr: Addr,
    ) -> Stats {
        Stats {
            inner: Arc::new(Inner {
                counters,
                strategy,
                shape,
                local_addr,
                #[cfg(feature = "metrics")]
                published: parking_lot::Mutex::new([0; BUCKETS]),
            }),
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Hands the figures to the [`metrics`](https://docs.rs/metrics) facade, whatever recorder the
    /// program installed (a Prometheus exporter, statsd, …): counters as `absolute` values, gauges
    /// set, and the durations recorded into a histogram — each new request once, at its bucket's
    /// upper bound, so an exporter given the same bounds ([`BUCKET_BOUNDS_SECONDS`]) counts them
    /// exactly. Every figure is labelled with `strategy` and `addr`.
    ///
    /// Call it before each scrape, or every few seconds for a push-based recorder: the figures are
    /// kept in memory the server's forked children share, so publishing from the parent includes
    /// their requests — which a recorder in a child process could never deliver. With no recorder
    /// installed it costs a snapshot and a few no-op calls.
    ///
    /// | name | kind | what |
    /// |---|---|---|
    /// | `socketserver_connections_accepted_total` | counter | connections (datagrams) admitted |
    /// | `socketserver_connections_rejected_total{reason="verify"\|"per_peer"}` | counter | refused before any worker |
    /// | `socketserver_capped_total` | counter | times accepting paused at the cap |
    /// | `socketserver_requests_started_total`, `_finished_total`, `_failed_total`, `_panicked_total`, `_cut_total` | counter | requests |
    /// | `socketserver_connections_open` | gauge | being served now |
    /// | `socketserver_workers_busy`, `_idle`, `socketserver_queue_depth` | gauge | `Threading`/`Pool` threads |
    /// | `socketserver_children_live`, `socketserver_children_spawned_total`, `_exited_abnormally_total`, `_killed_total` | gauge, counters | `Forking`/`PreFork` processes |
    /// | `socketserver_reactor_paused`, `socketserver_reactor_queued_output_bytes` | gauge | `Reactor` |
    /// | `socketserver_request_duration_seconds` | histogram | handler start to end |
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let stats = server.stats();
    /// stats.publish(); // no recorder installed: nothing to do, and nothing fails
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    pub fn publish(&self) {
        use metrics::{counter, gauge, histogram};
        describe();
        let now = self.snapshot();
        let labels = [
            ("strategy", now.strategy.to_string()),
            ("addr", now.local_addr.to_string()),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut all: Vec<(&'static str, String)> = labels.to_vec();
            all.push((extra.0, extra.1.to_string()));
            all
        };
        counter!("socketserver_connections_accepted_total", &labels).absolute(now.accepted);
        counter!(
            "socketserver_connections_rejected_total",
            &with(("reason", "verify"))
        )
        .absolute(now.rejected.verify);
        counter!(
            "socketserver_connections_rejected_total",
            &with(("reason", "per_peer"))
        )
        .absolute(now.rejected.per_peer);
        counter!("socketserver_capped_total", &labels).absolute(now.capped);
        let r = now.requests;
        counter!("socketserver_requests_started_total", &labels).absolute(r.started);
        counter!("socketserver_requests_finished_total", &labels).absolute(r.finished);
        counter!("socketserver_requests_failed_total", &labels).absolute(r.failed);
        counter!("socketserver_requests_panicked_total", &labels).absolute(r.panicked);
        counter!("socketserver_requests_cut_total", &labels).absolute(r.cut);
        gauge!("socketserver_connections_open", &labels).set(now.open as f64);
        if let Some(w) = now.workers {
            gauge!("socketserver_workers_busy", &labels).set(w.busy as f64);
            gauge!("socketserver_workers_idle", &labels).set(w.idle as f64);
            gauge!("socketserver_queue_depth", &labels).set(w.queued as f64);
        }
        if let Some(c) = now.children {
            gauge!("socketserver_children_live", &labels).set(c.live as f64);
            counter!("socketserver_children_spawned_total", &labels).absolute(c.spawned);
            counter!("socketserver_children_exited_abnormally_total", &labels)
                .absolute(c.exited_abnormally);
            counter!("socketserver_children_killed_total", &labels).absolute(c.killed);
        }
        if let Some(e) = now.reactor {
            gauge!("socketserver_reactor_paused", &labels).set(e.paused as f64);
            gauge!("socketserver_reactor_queued_output_bytes", &labels)
                .set(e.queued_output_bytes as f64);
        }
        let durations = histogram!("socketserver_request_duration_seconds", &labels);
        let mut published = self.inner.published.lock();
        for (i, (&n, seen)) in now
            .durations
            .buckets
            .iter()
            .zip(published.iter_mut())
            .enumerate()
        {
            if n > *seen {
                let new = usize::try_from(n - *seen).unwrap_or(usize::MAX);
                durations.record_many(BUCKET_BOUNDS_SECONDS[i], new);
                *seen = n;
            }
        }
    }

    /// The figures now.
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.inner.counters;
        let started = c.get(Counter::Started);
        let finished = c.get(Counter::Finished);
        let cut = c.get(Counter::Cut);
        // A request ends once: it finishes, or it is cut.
        let busy = started.saturating_sub(finished).saturating_sub(cut);
        let live = c.gauge(Gauge::WorkersLive);
        let workers = Workers {
            busy,
            idle: live.saturating_sub(busy),
            queued: c.gauge(Gauge::Queued),
        };
        let shape = self.inner.shape;
        Snapshot {
            strategy: self.inner.strategy,
            local_addr: self.inner.local_addr.clone(),
            accepted: c.get(Counter::Accepted),
            open: busy,
            rejected: Rejected {
                verify: c.get(Counter::RejectedVerify),
                per_peer: c.get(Counter::RejectedPerPeer),
            },
            capped: c.get(Counter::Capped),
            requests: Requests {
                started,
                finished,
                failed: c.get(Counter::Failed),
                panicked: c.get(Counter::Panicked),
                cut,
            },
            durations: Durations {
                buckets: c.buckets(),
                sum: Duration::from_micros(c.get(Counter::DurationSumMicros)),
            },
            workers: (shape == Shape::Threads).then_some(workers),
            children: (shape == Shape::Processes).then(|| Children {
                live,
                busy,
                spawned: c.get(Counter::ChildrenSpawned),
                exited_abnormally: c.get(Counter::ChildrenFailed),
                killed: c.get(Counter::ChildrenKilled),
            }),
            reactor: (shape == Shape::EventLoop).then(|| EventLoop {
                open: busy,
                paused: c.gauge(Gauge::Paused),
                queued_output_bytes: c.gauge(Gauge::QueuedBytes),
            }),
        }
    }
}

/// The figures' help texts, told to the recorder with every publication (a recorder installed after
/// the first one still gets them; it keeps one per name).
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for (name, help) in [
        (
            "socketserver_connections_accepted_total",
            "Connections (datagrams) admitted and handed to a worker.",
        ),
        (
            "socketserver_connections_rejected_total",
            "Connections refused before any worker saw them, by reason.",
        ),
        (
            "socketserver_capped_total",
            "Times accepting paused at the strategy's cap.",
        ),
        (
            "socketserver_requests_started_total",
            "Requests whose handler started (Reactor: connections opened).",
        ),
        (
            "socketserver_requests_finished_total",
            "Requests that ended by themselves, well or not.",
        ),
        (
            "socketserver_requests_failed_total",
            "Finished requests that failed.",
        ),
        (
            "socketserver_requests_panicked_total",
            "Finished requests whose handler panicked.",
        ),
        (
            "socketserver_requests_cut_total",
            "Requests cut at a drain deadline.",
        ),
        (
            "socketserver_children_spawned_total",
            "Child processes started.",
        ),
        (
            "socketserver_children_exited_abnormally_total",
            "Child processes that ended abnormally.",
        ),
        (
            "socketserver_children_killed_total",
            "Child processes killed by the server.",
        ),
    ] {
        describe_counter!(name, help);
    }
    for (name, help) in [
        (
            "socketserver_connections_open",
            "Requests (Reactor: connections) being served now.",
        ),
        (
            "socketserver_workers_busy",
            "Threads serving a request now.",
        ),
        (
            "socketserver_workers_idle",
            "Threads waiting for a request.",
        ),
        (
            "socketserver_queue_depth",
            "Accepted requests waiting for a thread.",
        ),
        ("socketserver_children_live", "Child processes alive now."),
        (
            "socketserver_reactor_paused",
            "Event-loop connections whose reading is paused.",
        ),
    ] {
        describe_gauge!(name, help);
    }
    describe_gauge!(
        "socketserver_reactor_queued_output_bytes",
        Unit::Bytes,
        "Bytes queued for event-loop connections, not yet taken by their sockets."
    );
    describe_histogram!(
        "socketserver_request_duration_seconds",
        Unit::Seconds,
        "How long requests took, handler start to end (Reactor: connection lifetimes)."
    );
}

/// A server's figures at one moment (see [`Stats::snapshot`]).
///
/// # Examples
///
/// See [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The strategy's name: `"Threading"`, `"PreFork"`, ….
    pub strategy: &'static str,
    /// The address the server listens on.
    pub local_addr: Addr,
    /// Connections (datagrams, for datagram transports) admitted and handed to a worker.
    pub accepted: u64,
    /// Connections being served now (requests in flight; for `Reactor`, open connections).
    pub open: u64,
    /// Connections refused before any worker saw them.
    pub rejected: Rejected,
    /// How many times the server reached its cap and stopped accepting for a while (connections
    /// then wait in the kernel's listen backlog; none is refused).
    pub capped: u64,
    /// What became of requests.
    pub requests: Requests,
    /// How long requests took, handler start to end (for `Reactor`, connections' lifetimes).
    pub durations: Durations,
    /// `Threading` and `Pool`: the threads.
    pub workers: Option<Workers>,
    /// `Forking` and `PreFork`: the child processes.
    pub children: Option<Children>,
    /// `Reactor`: the event loop's connections.
    pub reactor: Option<EventLoop>,
}

/// Connections refused, by whom (see [`Snapshot::rejected`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// By [`verify_request`](crate::Server::verify_request).
    pub verify: u64,
    /// By [`max_connections_per_peer`](crate::Server::max_connections_per_peer).
    pub per_peer: u64,
}

/// Requests, counted (see [`Snapshot::requests`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Requests {
    /// Whose handler started.
    pub started: u64,
    /// That ended by themselves — well, failing or panicking. Every started request ends once:
    /// it finishes or it is cut, so `started == finished + cut + open`.
    pub finished: u64,
    /// Of those, failed (the handler's error, a layer's, a failed reply).
    pub failed: u64,
    /// Of those, panicked.
    pub panicked: u64,
    /// Cut at a drain deadline (and not counted as finished).
    pub cut: u64,
}

/// A histogram of request durations on fixed log-scale buckets (see [`Snapshot::durations`]):
/// bucket `i` counts requests that took under 2<sup>i</sup> µs, from 1 µs to about 36 minutes.
///
/// # Examples
///
/// See [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations {
    buckets: [u64; BUCKETS],
    sum: Duration,
}

impl Durations {
    /// How many requests were measured.
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// All their durations added up.
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bucket's upper bound (exclusive) with its count, shortest first; the last bound is the
    /// largest `Duration` (it takes everything longer).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{Sequential, Server, StreamRequest, testing::MockStream};
    /// # let server = Server::new(Sequential::new(), MockStream::new()?, |_r: &mut StreamRequest| Ok(()))?;
    /// let durations = server.stats().snapshot().durations;
    /// let (first, _) = durations.buckets().next().unwrap();
    /// assert_eq!(first, std::time::Duration::from_micros(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| (bucket_bound(i), n))
    }

    /// The duration under which a fraction `q` (0 to 1) of requests finished, as the upper bound of
    /// the bucket it falls in (an over-estimate by at most a factor of two); `None` with no request.
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        self.buckets.iter().enumerate().find_map(|(i, &n)| {
            seen += n;
            (seen >= rank).then(|| bucket_bound(i))
        })
    }

    /// The median (see [`quantile`](Self::quantile)).
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The 90th percentile (see [`quantile`](Self::quantile)).
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn p90(&self) -> Option<Duration> {
        self.quantile(0.9)
    }

    /// The 99th percentile (see [`quantile`](Self::quantile)).
    ///
    /// # Examples
    ///
    /// See [`Stats`].
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

/// The duration histogram's bucket bounds, in seconds: 1 µs, 2 µs, 4 µs, … 2<sup>30</sup> µs (about
/// 18 minutes), then everything longer (recorded at 2<sup>31</sup> µs). Give a `metrics` exporter these
/// bounds for the `socketserver_request_duration_seconds` histogram and its buckets count exactly
/// what [`Durations`] counts.
///
/// # Examples
///
/// ```
/// use socketserver::stats::BUCKET_BOUNDS_SECONDS;
/// assert_eq!(BUCKET_BOUNDS_SECONDS[0], 0.000_001);
/// assert_eq!(BUCKET_BOUNDS_SECONDS.len(), 32);
/// ```
pub const BUCKET_BOUNDS_SECONDS: [f64; BUCKETS] = {
    let mut bounds = [0.0; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        bounds[i] = (1u64 << i) as f64 / 1_000_000.0;
        i += 1;
    }
    bounds
};

/// The upper bound of bucket `i`.
fn bucket_bound(i: usize) -> Duration {
    if i + 1 >= BUCKETS {
        Duration::MAX
    } else {
        Duration::from_micros(1 << i)
    }
}

/// `Threading` and `Pool` threads (see [`Snapshot::workers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Workers {
    /// Running a request.
    pub busy: u64,
    /// Alive and waiting for one.
    pub idle: u64,
    /// Requests accepted and waiting in `Pool`'s queue.
    pub queued: u64,
}

/// `Forking` children and `PreFork` workers (see [`Snapshot::children`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Children {
    /// Alive now.
    pub live: u64,
    /// Of those, inside a request.
    pub busy: u64,
    /// Started since the server started.
    pub spawned: u64,
    /// Ended abnormally (a crash, a signal, an unexpected exit status).
    pub exited_abnormally: u64,
    /// Killed by the server: at the drain deadline, or by a watchdog.
    pub killed: u64,
}

/// A `Reactor`'s connections (see [`Snapshot::reactor`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventLoop {
    /// Open now.
    pub open: u64,
    /// Whose reading is paused (their output is full) or held back (what they sent waits for
    /// others).
    pub paused: u64,
    /// Bytes queued for connections, not yet taken by their sockets.
    pub queued_output_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_log_buckets_and_quantiles_read_them() {
        let counters = Counters::new().unwrap();
        for micros in [0, 1, 3, 900, 1_000, 5_000] {
            counters.observe(Duration::from_micros(micros));
        }
        let d = Durations {
            buckets: counters.buckets(),
            sum: Duration::from_micros(counters.get(Counter::DurationSumMicros)),
        };
        assert_eq!(d.count(), 6);
        assert_eq!(d.sum(), Duration::from_micros(6_904));
        // 0 µs → under 1 µs; 1 → under 2; 3 → under 4; 900 and 1000 → under 1024; 5000 → under 8192.
        assert_eq!(d.p50(), Some(Duration::from_micros(4)));
        assert_eq!(d.p90(), Some(Duration::from_micros(8_192)));
        assert_eq!(d.quantile(0.0), Some(Duration::from_micros(1)));
        let empty = Durations {
            buckets: [0; BUCKETS],
            sum: Duration::ZERO,
        };
        assert_eq!(empty.p99(), None);
    }
}
