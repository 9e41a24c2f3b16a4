//! The autoscaler's decision, apart from its I/O: given the pool's size, its
//! limits and its load, what one tick should do. `autoscaler.rs` gathers the
//! inputs and carries the decision out.

use std::time::Duration;

/// What the autoscaler sees at one tick.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    /// Workers that are not draining.
    pub workers: usize,
    pub min: usize,
    pub max: usize,
    /// A size pinned by `quiver workers scale N`.
    pub pinned: Option<usize>,
    /// Running fragments plus the tasks waiting for a free slot.
    pub running: u32,
    /// `busy_fragments`: the load per worker at which the pool counts as busy.
    pub per_worker: u32,
    /// The last change is younger than `cooldown_secs`.
    pub cooling_down: bool,
    /// How long the idlest healthy worker has been idle.
    pub idlest: Option<Duration>,
    /// `idle_secs`.
    pub idle_limit: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Hold,
    /// Start this many workers. `resets_cooldown` is false for a pinned size.
    Start {
        count: usize,
        reason: String,
        resets_cooldown: bool,
    },
    /// Drain and remove the idlest healthy worker.
    RetireIdlest {
        reason: String,
    },
    /// Drain and remove this many workers, the least useful first (a pinned size).
    RetireLeastBusy {
        count: usize,
        reason: String,
    },
}

/// Whether `running` fragments keep `workers` workers busy at `per_worker` each.
/// With no worker at all, any load is busy.
pub(super) fn is_busy(running: u32, per_worker: u32, workers: usize) -> bool {
    if workers == 0 {
        return running > 0;
    }
    let capacity = per_worker
        .max(1)
        .saturating_mul(u32::try_from(workers).unwrap_or(u32::MAX));
    running >= capacity
}

/// How many workers `running` fragments need at `per_worker` each.
pub(super) fn needed(running: u32, per_worker: u32) -> usize {
    running.div_ceil(per_worker.max(1)) as usize
}

pub(super) fn decide(o: &Observed) -> Decision {
    let n = o.workers;
    if let Some(target) = o.pinned {
        // An explicit size is applied at once, without cooldown.
        let reason = format!("scaled to {target} on request");
        return match n.cmp(&target) {
            std::cmp::Ordering::Less => Decision::Start {
                count: target - n,
                reason,
                resets_cooldown: false,
            },
            std::cmp::Ordering::Greater => Decision::RetireLeastBusy {
                count: n - target,
                reason,
            },
            std::cmp::Ordering::Equal => Decision::Hold,
        };
    }
    if n < o.min {
        return Decision::Start {
            count: o.min - n,
            reason: "below workers.min".into(),
            resets_cooldown: true,
        };
    }
    if o.cooling_down {
        return Decision::Hold;
    }
    let per_worker = o.per_worker.max(1);
    // At zero workers (min = 0) the queries that need one start it (`wake`).
    if n > 0 && n < o.max && is_busy(o.running, per_worker, n) {
        let wanted = needed(o.running, per_worker).clamp(n + 1, o.max);
        return Decision::Start {
            count: wanted - n,
            reason: format!(
                "{} fragments running on {n} workers (busy at {per_worker} per worker)",
                o.running
            ),
            resets_cooldown: true,
        };
    }
    // One worker fewer must not be busy: fragments are placed when a query is
    // planned, so an idle worker may only be idle because it started after the
    // load was placed elsewhere; retiring it would start another at the next tick.
    if n > o.min && !is_busy(o.running, per_worker, n - 1) {
        if let Some(idle) = o.idlest.filter(|idle| *idle >= o.idle_limit) {
            return Decision::RetireIdlest {
                reason: format!("idle for {}s", idle.as_secs()),
            };
        }
    }
    Decision::Hold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, running: u32) -> Observed {
        Observed {
            workers,
            min: 0,
            max: 4,
            pinned: None,
            running,
            per_worker: 2,
            cooling_down: false,
            idlest: Some(Duration::from_secs(120)),
            idle_limit: Duration::from_secs(60),
        }
    }

    fn started(d: &Decision) -> usize {
        match d {
            Decision::Start { count, .. } => *count,
            _ => 0,
        }
    }

    #[test]
    fn busy_means_the_load_fills_every_worker() {
        assert!(is_busy(2, 1, 2));
        assert!(!is_busy(1, 1, 2));
        assert!(is_busy(8, 4, 2));
        assert!(!is_busy(7, 4, 2));
        // No worker: anything running or waiting is busy.
        assert!(is_busy(1, 4, 0));
        assert!(!is_busy(0, 4, 0));
        // busy_fragments = 0 counts as 1.
        assert!(is_busy(1, 0, 1));
    }

    #[test]
    fn a_busy_pool_grows_to_what_the_load_needs_within_max() {
        assert_eq!(started(&decide(&pool(1, 2))), 1);
        // 7 fragments at 2 per worker need 4 workers.
        assert_eq!(started(&decide(&pool(1, 7))), 3);
        // Never past max.
        assert_eq!(started(&decide(&pool(1, 100))), 3);
        assert_eq!(decide(&pool(4, 100)), Decision::Hold);
        // Not busy: no start.
        assert_eq!(started(&decide(&pool(2, 3))), 0);
    }

    #[test]
    fn zero_workers_are_woken_by_queries_not_by_the_tick() {
        assert_eq!(started(&decide(&pool(0, 5))), 0);
        let mut p = pool(0, 0);
        p.min = 1;
        assert_eq!(started(&decide(&p)), 1);
    }

    #[test]
    fn an_idle_worker_goes_only_when_the_rest_would_not_be_busy() {
        // 2 fragments on 2 workers at 1 per worker: one worker fewer is busy.
        let mut p = pool(2, 2);
        p.per_worker = 1;
        p.max = 2;
        assert_eq!(decide(&p), Decision::Hold);
        p.running = 1;
        assert_eq!(decide(&p), Decision::Hold);
        p.running = 0;
        assert!(matches!(decide(&p), Decision::RetireIdlest { .. }));
        // The last worker stays while anything runs or waits, and goes when idle.
        assert_eq!(decide(&pool(1, 1)), Decision::Hold);
        assert!(matches!(decide(&pool(1, 0)), Decision::RetireIdlest { .. }));
        // 3 fragments on 3 workers at 2 per worker: 2 workers take them.
        assert!(matches!(decide(&pool(3, 3)), Decision::RetireIdlest { .. }));
        assert_eq!(decide(&pool(3, 4)), Decision::Hold);
    }

    #[test]
    fn nothing_retires_below_min_before_idle_secs_or_while_cooling_down() {
        let mut p = pool(1, 0);
        p.min = 1;
        assert_eq!(decide(&p), Decision::Hold);
        let mut p = pool(2, 0);
        p.idlest = Some(Duration::from_secs(59));
        assert_eq!(decide(&p), Decision::Hold);
        p.idlest = None;
        assert_eq!(decide(&p), Decision::Hold);
        let mut p = pool(2, 0);
        p.cooling_down = true;
        assert_eq!(decide(&p), Decision::Hold);
        // Cooldown does not delay reaching min.
        p.min = 3;
        assert_eq!(started(&decide(&p)), 1);
    }

    #[test]
    fn a_pinned_size_is_applied_at_once() {
        let mut p = pool(1, 0);
        p.pinned = Some(3);
        p.cooling_down = true;
        assert_eq!(
            decide(&p),
            Decision::Start {
                count: 2,
                reason: "scaled to 3 on request".into(),
                resets_cooldown: false
            }
        );
        p.workers = 4;
        assert_eq!(
            decide(&p),
            Decision::RetireLeastBusy {
                count: 1,
                reason: "scaled to 3 on request".into()
            }
        );
        p.workers = 3;
        p.running = 100;
        assert_eq!(decide(&p), Decision::Hold);
    }

    /// Replays a recorded load, one tick a second, applying each decision the way
    /// the autoscaler does (a start takes effect at once, a retired worker leaves;
    /// workers go idle together when the load drops to zero). Returns the pool's
    /// size after each tick.
    fn replay(load: &[u32], min: usize, max: usize, start: usize) -> Vec<usize> {
        let (cooldown, idle_limit) = (5u64, Duration::from_secs(10));
        let (mut n, mut last_change, mut idle_since) = (start, None::<u64>, 0u64);
        let mut sizes = vec![];
        for (tick, &running) in load.iter().enumerate() {
            let tick = tick as u64;
            if running > 0 {
                idle_since = tick;
            }
            let observed = Observed {
                workers: n,
                min,
                max,
                pinned: None,
                running,
                per_worker: 2,
                cooling_down: last_change.is_some_and(|t| tick - t < cooldown),
                idlest: (n > 0).then(|| Duration::from_secs(tick - idle_since)),
                idle_limit,
            };
            match decide(&observed) {
                Decision::Start {
                    count,
                    resets_cooldown,
                    ..
                } => {
                    n += count;
                    if resets_cooldown {
                        last_change = Some(tick);
                    }
                }
                Decision::RetireIdlest { .. } => {
                    n -= 1;
                    last_change = Some(tick);
                }
                Decision::RetireLeastBusy { count, .. } => n -= count,
                Decision::Hold => {}
            }
            sizes.push(n);
        }
        sizes
    }

    #[test]
    fn a_recorded_burst_grows_at_once_and_shrinks_one_worker_per_cooldown() {
        // 2 idle seconds, 6 seconds of 6 fragments, then nothing for 30 seconds.
        let mut load = vec![0, 0, 6, 6, 6, 6, 6, 6];
        load.extend([0; 30]);
        let sizes = replay(&load, 1, 4, 1);
        // Tick 2: 6 fragments need 3 workers at 2 each: 2 more at once. Tick 7, after
        // the 5 s cooldown: 6 fragments still fill 3 workers, so a fourth.
        assert_eq!(&sizes[..8], &[1, 1, 3, 3, 3, 3, 3, 4]);
        // Idle after tick 7: the first retirement once idle for idle_secs (10 s, tick
        // 17), then one per cooldown, down to min and no further.
        assert_eq!(sizes[16], 4);
        assert_eq!(sizes[17], 3);
        assert_eq!(sizes[21], 3);
        assert_eq!(sizes[22], 2);
        assert_eq!(sizes[26], 2);
        assert_eq!(sizes[27], 1);
        assert!(sizes[27..].iter().all(|&s| s == 1), "{sizes:?}");
    }

    #[test]
    fn a_pool_at_zero_is_left_to_the_queries_that_wake_it() {
        // min = 0: load alone does not start a worker (the query's `wake` does),
        // and a woken worker goes again after idle_secs.
        let sizes = replay(&[3, 3, 3], 0, 4, 0);
        assert_eq!(sizes, vec![0, 0, 0]);
        let mut load = vec![1, 1];
        load.extend([0; 12]);
        let sizes = replay(&load, 0, 4, 1);
        assert_eq!(sizes[10], 1);
        assert_eq!(sizes.last(), Some(&0), "{sizes:?}");
    }

    #[test]
    fn load_that_hovers_at_the_threshold_does_not_flap() {
        // 4 fragments on 2 workers at 2 each is busy: a third starts; then the load
        // alternates between 3 and 4 and the pool neither grows past what 4 needs
        // nor retires a worker while one fewer would be busy.
        let load: Vec<u32> = (0..40).map(|t| if t % 2 == 0 { 4 } else { 3 }).collect();
        let sizes = replay(&load, 1, 8, 2);
        assert_eq!(sizes[0], 3);
        assert!(sizes.iter().all(|&s| s == 3), "{sizes:?}");
    }
}
