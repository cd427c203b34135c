//! The delays between connect attempts: [`Backoff`], the policy, and
//! [`Delays`], one run of its schedule.
//!
//! [`Backoff`] is also at the crate root.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::Duration,
};

use crate::error::ConfigError;

type MakeDelays = dyn Fn() -> Box<dyn Iterator<Item = Duration> + Send + Sync> + Send + Sync;

/// The policy that says how long to wait between connect attempts.
///
/// A delay counts from the *start* of the failed attempt (gRPC's rule), so an
/// attempt that overran its delay, say one that hit a 30 s connect timeout
/// with a 2 s delay, is followed by the next one at once.
///
/// # Presets
///
/// - [`Backoff::default()`]: first retry after 2 s (the fixed delay of
///   Perl's `Message::Passing::Role::ConnectionManager`), then ×1.6 up to
///   120 s, each delay with ±20 % jitter (gRPC's growth and spread).
/// - [`Backoff::exponential(initial, max)`](Backoff::exponential): gRPC's
///   connection backoff, ×1.6 with ±20 % jitter, tunable with
///   [`multiplier`](Backoff::multiplier) and [`jitter`](Backoff::jitter).
/// - [`Backoff::constant(d)`](Backoff::constant): the same delay every time,
///   exactly (no jitter unless asked for).
///
/// # Your own schedule
///
/// Any `Iterator<Item = Duration>` plugs in, such as a `backon` or
/// `tokio-retry` schedule, with [`Backoff::from_delays`] (the iterator is
/// cloned to start the schedule afresh) or [`Backoff::from_fn`] (called to
/// start it afresh). When the iterator ends the service gives up and closes,
/// as it does after [`max_attempts`](crate::ReconnectLayer::max_attempts).
///
/// # Jitter
///
/// With jitter `j`, a delay whose nominal value is `d` is drawn uniformly
/// from `d·(1−j) ..= d·(1+j)`, but never above the maximum delay: the
/// maximum is a hard ceiling. The random source is seeded afresh for every
/// schedule, so clients that lost the same server retry at different times.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use redial::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30))
///     .multiplier(2.0)
///     .jitter(0.0);
/// let delays: Vec<_> = backoff.iter().take(6).collect();
/// assert_eq!(delays, [1, 2, 4, 8, 16, 30].map(Duration::from_secs));
/// ```
#[derive(Clone)]
pub struct Backoff {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Exponential(Exponential),
    Custom(Arc<MakeDelays>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Exponential {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

// ===== impl Backoff =====

impl Backoff {
    /// The multiplier of [`Backoff::exponential`], gRPC's.
    pub const DEFAULT_MULTIPLIER: f64 = 1.6;
    /// The jitter of [`Backoff::exponential`] and of the default, gRPC's.
    pub const DEFAULT_JITTER: f64 = 0.2;

    /// The same delay before every retry, exactly, as Perl's
    /// `Message::Passing::Role::ConnectionManager` does. Add [`jitter`](Backoff::jitter) to spread clients.
    ///
    /// A zero delay is refused when the service is built.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            kind: Kind::Exponential(Exponential {
                initial: delay,
                max: delay,
                multiplier: 1.0,
                jitter: 0.0,
            }),
        }
    }

    /// Delays that start at `initial` and grow by
    /// [`DEFAULT_MULTIPLIER`](Self::DEFAULT_MULTIPLIER) (1.6) up to `max`,
    /// each with [`DEFAULT_JITTER`](Self::DEFAULT_JITTER) (±20 %): gRPC's
    /// connection backoff when `initial` is 1 s and `max` is 120 s.
    ///
    /// A zero `initial` or an `initial` above `max` is refused when the
    /// service is built.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            kind: Kind::Exponential(Exponential {
                initial,
                max,
                multiplier: Self::DEFAULT_MULTIPLIER,
                jitter: Self::DEFAULT_JITTER,
            }),
        }
    }

    /// Sets how much each delay grows over the one before. Must be a finite
    /// number of at least 1.0. Has no effect on a schedule of your own.
    ///
    /// Default is 1.6 for [`exponential`](Self::exponential), 1.0 for
    /// [`constant`](Self::constant).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        if let Kind::Exponential(e) = &mut self.kind {
            e.multiplier = multiplier;
        }
        self
    }

    /// Sets the jitter: each delay is drawn from `±jitter` around its
    /// nominal value (never above the maximum). Must be within `0.0..=1.0`;
    /// `0.0` makes the schedule exact. Has no effect on a schedule of your
    /// own.
    ///
    /// Default is 0.2 for [`exponential`](Self::exponential) and the default
    /// schedule, 0.0 for [`constant`](Self::constant).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        if let Kind::Exponential(e) = &mut self.kind {
            e.jitter = jitter;
        }
        self
    }

    /// A schedule of your own: the delays `iter` yields, in order. The
    /// iterator is cloned each time the schedule starts afresh (after a
    /// healthy connection, or on
    /// [`reset_backoff`](crate::Reconnect::reset_backoff)). When it ends, the
    /// service gives up.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::Backoff;
    ///
    /// // Three quick retries, then every minute.
    /// let quick = [100, 200, 400].map(Duration::from_millis).into_iter();
    /// let backoff = Backoff::from_delays(quick.chain(std::iter::repeat(Duration::from_secs(60))));
    /// assert_eq!(backoff.iter().nth(3), Some(Duration::from_secs(60)));
    /// ```
    pub fn from_delays<I>(iter: I) -> Self
    where
        I: Iterator<Item = Duration> + Clone + Send + Sync + 'static,
    {
        Self::from_fn(move || iter.clone())
    }

    /// A schedule of your own, started afresh by calling `make`. When the
    /// iterator it returns ends, the service gives up.
    pub fn from_fn<F, I>(make: F) -> Self
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Duration>,
        I::IntoIter: Send + Sync + 'static,
    {
        Self {
            kind: Kind::Custom(Arc::new(move || Box::new(make().into_iter()))),
        }
    }

    /// Starts the schedule: the delay before the first retry, then the one
    /// before the second, and so on. Each call seeds the jitter afresh.
    pub fn iter(&self) -> Delays {
        let kind = match &self.kind {
            Kind::Exponential(e) => DelaysKind::Exponential {
                params: *e,
                next: e.initial.as_secs_f64(),
                rng: Rng::new(),
            },
            Kind::Custom(make) => DelaysKind::Custom(make()),
        };
        Delays { kind }
    }

    /// Checks the settings: the initial delay must be above zero and at
    /// most the maximum, the multiplier finite and at least 1.0, the jitter
    /// within `0.0..=1.0`. A schedule of your own is not checked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Kind::Exponential(e) = &self.kind else {
            return Ok(());
        };
        if e.initial.is_zero() {
            return Err(ConfigError::DelayNotPositive);
        }
        if e.initial > e.max {
            return Err(ConfigError::InitialAboveMax {
                initial: e.initial,
                max: e.max,
            });
        }
        if !e.multiplier.is_finite() || e.multiplier < 1.0 {
            return Err(ConfigError::MultiplierBelowOne(e.multiplier));
        }
        if !(0.0..=1.0).contains(&e.jitter) {
            return Err(ConfigError::JitterOutOfRange(e.jitter));
        }
        Ok(())
    }

    /// How long a connection must stay up to count as proof of life and
    /// reset the schedule: the first retry delay (its nominal value).
    pub(crate) fn proof_of_life(&self) -> Duration {
        match &self.kind {
            Kind::Exponential(e) => e.initial,
            Kind::Custom(make) => make().next().unwrap_or_default(),
        }
    }
}

impl Default for Backoff {
    /// First retry after 2 s, ×1.6 up to 120 s, ±20 % jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_secs(2), Duration::from_secs(120))
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Exponential(e) => f
                .debug_struct("Backoff")
                .field("initial", &e.initial)
                .field("max", &e.max)
                .field("multiplier", &e.multiplier)
                .field("jitter", &e.jitter)
                .finish(),
            Kind::Custom(_) => f.debug_struct("Backoff").finish_non_exhaustive(),
        }
    }
}

// ===== impl Delays =====

/// The delays of one run of a [`Backoff`] schedule, from [`Backoff::iter`].
pub struct Delays {
    kind: DelaysKind,
}

enum DelaysKind {
    Exponential {
        params: Exponential,
        /// The nominal value of the next delay, in seconds.
        next: f64,
        rng: Rng,
    },
    Custom(Box<dyn Iterator<Item = Duration> + Send + Sync>),
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match &mut self.kind {
            DelaysKind::Custom(iter) => iter.next(),
            DelaysKind::Exponential { params, next, rng } => {
                let max = params.max.as_secs_f64();
                let nominal = next.min(max);
                *next = (nominal * params.multiplier).min(max);
                let secs = if params.jitter > 0.0 {
                    let low = nominal * (1.0 - params.jitter);
                    let high = (nominal * (1.0 + params.jitter)).min(max);
                    low + (high - low) * rng.next_f64()
                } else {
                    nominal
                };
                Some(Duration::try_from_secs_f64(secs).unwrap_or(params.max))
            }
        }
    }
}

impl fmt::Debug for Delays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DelaysKind::Exponential { params, next, .. } => f
                .debug_struct("Delays")
                .field(
                    "next",
                    &Duration::try_from_secs_f64(*next).unwrap_or(params.max),
                )
                .field("max", &params.max)
                .field("jitter", &params.jitter)
                .finish(),
            DelaysKind::Custom(_) => f.debug_struct("Delays").finish_non_exhaustive(),
        }
    }
}

/// `d` spread uniformly over ±`fraction` of itself, for deadlines that many
/// connections would otherwise reach at once.
pub(crate) fn jittered(d: Duration, fraction: f64) -> Duration {
    jittered_at(d, fraction, Rng::new().next_f64())
}

/// `d` at the point `u` of the band ±`fraction` around it: its low end at
/// 0, its high end at 1 (a draw is in `[0, 1)`).
fn jittered_at(d: Duration, fraction: f64, u: f64) -> Duration {
    let factor = 1.0 + fraction * (2.0 * u - 1.0);
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}

// ===== impl Spread =====

/// Where one connection of a [`Pool`](crate::Pool) of `size` stands in the
/// spread of their redials: the first redial of each run of the schedule
/// (after a healthy connection was lost, or after the first failure of an
/// outage) comes `offset` later than it would alone, in the `index`-th of
/// `size` equal slots of half the first delay. The slots do not overlap, so
/// no two connections of a pool that lost the same server redial at the
/// same instant; the point within the slot is random, so two pools (two
/// processes) do not line up either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spread {
    index: u32,
    size: u32,
}

impl Spread {
    pub(crate) fn new(index: usize, size: usize) -> Self {
        let size = u32::try_from(size).unwrap_or(u32::MAX).max(1);
        let index = u32::try_from(index).unwrap_or(u32::MAX).min(size - 1);
        Self { index, size }
    }

    /// How much later than alone this connection's first redial comes:
    /// within the middle eight tenths of `[w·i/n, w·(i+1)/n)`, where `w` is
    /// half of `first_delay`. The margins keep neighbours apart by more
    /// than the timer's millisecond, unless the slots are tiny.
    pub(crate) fn offset(&self, first_delay: Duration) -> Duration {
        let slot = first_delay.as_secs_f64() / 2.0 / f64::from(self.size);
        let within = 0.1 + 0.8 * Rng::new().next_f64();
        let at = slot * (f64::from(self.index) + within);
        Duration::try_from_secs_f64(at).unwrap_or_default()
    }
}

/// splitmix64: enough randomness to spread retries, seeded from the
/// standard library's per-instance random hasher keys, so no extra
/// dependency is needed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5EED);
        Self(hasher.finish())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must not be 0. The modulo's bias is
    /// negligible for the small `n` it is used with.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn next_f64(&mut self) -> f64 {
        // 53 random bits into [0, 1).
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn default_is_two_seconds_growing_by_1_6_up_to_120_s() {
        let delays: Vec<_> = Backoff::default().jitter(0.0).iter().take(12).collect();
        let expected = secs(&[
            2.0,
            3.2,
            5.12,
            8.192,
            13.1072,
            20.97152,
            33.554432,
            53.6870912,
            85.89934592,
            120.0,
            120.0,
            120.0,
        ]);
        assert_eq!(delays, expected);
    }

    #[test]
    fn constant_is_exact() {
        let d = Duration::from_millis(1500);
        assert!(Backoff::constant(d).iter().take(100).all(|x| x == d));
    }

    #[test]
    fn jitter_stays_in_band_and_under_max() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..100 {
            let mut nominal = 1.0f64;
            for d in b.iter().take(10) {
                let d = d.as_secs_f64();
                assert!(d >= nominal * 0.8 - 1e-9 && d <= (nominal * 1.2).min(10.0) + 1e-9);
                nominal = (nominal * 1.6).min(10.0);
            }
        }
    }

    #[test]
    fn validate_names_the_rule() {
        let zero = Backoff::constant(Duration::ZERO).validate();
        assert_eq!(zero, Err(ConfigError::DelayNotPositive));
        let inverted = Backoff::exponential(Duration::from_secs(5), Duration::from_secs(1));
        assert!(matches!(
            inverted.validate(),
            Err(ConfigError::InitialAboveMax { .. })
        ));
        let jitter = Backoff::default().jitter(1.5).validate().unwrap_err();
        assert_eq!(
            jitter.to_string(),
            "backoff jitter must be within 0.0..=1.0, got 1.5"
        );
        let nan = Backoff::default().multiplier(f64::NAN).validate();
        assert!(matches!(nan, Err(ConfigError::MultiplierBelowOne(_))));
        assert_eq!(Backoff::default().validate(), Ok(()));
    }

    #[test]
    fn spread_slots_do_not_overlap() {
        let first = Duration::from_secs(2);
        for _ in 0..100 {
            for i in 0..4 {
                let offset = Spread::new(i, 4).offset(first);
                let low = Duration::from_millis(250 * i as u64 + 25);
                assert!(offset >= low && offset < low + Duration::from_millis(200));
            }
        }
        assert!(Spread::new(0, 1).offset(first) < Duration::from_secs(1));
    }

    #[test]
    fn two_schedules_are_seeded_apart() {
        let b = Backoff::default();
        let a: Vec<_> = b.iter().take(4).collect();
        let c: Vec<_> = b.iter().take(4).collect();
        assert_ne!(a, c);
    }

    /// The generator is splitmix64: from seed 0 it gives the reference
    /// sequence (Steele, Lea and Flood's, as published with xoshiro).
    #[test]
    fn rng_is_splitmix64() {
        let mut rng = Rng(0);
        let first: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F,
                0xF88B_B8A8_724C_81EC,
            ]
        );
    }

    /// `below(n)` gives every value of `0..n` and nothing else.
    #[test]
    fn below_covers_its_range_only() {
        let mut rng = Rng(0);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            seen[rng.below(7)] += 1;
        }
        // Each about 1,000; a generator this far off is broken.
        assert!(seen.iter().all(|&n| (800..1_200).contains(&n)), "{seen:?}");
    }

    /// A jittered deadline lies where its draw says in the band: the low
    /// end at 0, the deadline itself at ½, the high end at 1.
    #[test]
    fn jittered_maps_its_draw_onto_the_band() {
        let age = Duration::from_secs(60);
        let at = |u| jittered_at(age, 0.1, u).as_secs_f64();
        assert!((at(0.0) - 54.0).abs() < 1e-9, "{}", at(0.0));
        assert!((at(0.5) - 60.0).abs() < 1e-9, "{}", at(0.5));
        assert!((at(1.0) - 66.0).abs() < 1e-9, "{}", at(1.0));
        for _ in 0..100 {
            let d = jittered(age, 0.1);
            assert!(d >= Duration::from_secs(54) && d < Duration::from_secs(66));
        }
    }
}
