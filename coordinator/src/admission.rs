//! Admission control: how many queries run at once, overall and per user, and a
//! bounded queue for the rest (Trino's resource groups, in a simple form). A query
//! that finds the queue full, or waits in it longer than `queue_timeout_secs`, is
//! refused with `ResourceExhausted` and a message that says which limit it hit.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tonic::Status;

/// The limits, from `[server]`.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// None: no limit.
    pub max_running: Option<usize>,
    pub max_running_per_user: Option<usize>,
    pub max_queued: usize,
    pub queue_timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    queued: usize,
    per_user: HashMap<String, usize>,
}

/// The server's admission gate.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
    freed: Notify,
}

/// A query's place among the running ones; dropped when its result stream ends.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Admission>,
    user: Option<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut s = self.gate.state.lock();
            s.running = s.running.saturating_sub(1);
            if let Some(user) = &self.user {
                if let Some(n) = s.per_user.get_mut(user) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        s.per_user.remove(user);
                    }
                }
            }
        }
        self.gate.freed.notify_waiters();
    }
}

/// Counts a waiting query as queued until it gives up or is cancelled; one that
/// gets to run leaves the queue by [`Queued::leave`], under the lock it already holds.
struct Queued<'a>(Option<&'a Admission>);

impl Queued<'_> {
    fn leave(mut self, s: &mut State) {
        s.queued = s.queued.saturating_sub(1);
        self.0 = None;
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.0 {
            {
                let mut s = gate.state.lock();
                s.queued = s.queued.saturating_sub(1);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::default(),
            freed: Notify::new(),
        })
    }

    fn fits(&self, s: &State, user: Option<&str>) -> bool {
        let total = self.limits.max_running.is_none_or(|max| s.running < max);
        let own = match (self.limits.max_running_per_user, user) {
            (Some(max), Some(u)) => s.per_user.get(u).copied().unwrap_or(0) < max,
            _ => true,
        };
        total && own
    }

    fn take(self: &Arc<Self>, s: &mut State, user: Option<&str>) -> Permit {
        s.running += 1;
        if let Some(u) = user {
            *s.per_user.entry(u.to_string()).or_default() += 1;
        }
        Permit {
            gate: self.clone(),
            user: user.map(str::to_string),
        }
    }

    /// Queries running and waiting now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.running, state.queued)
    }

    /// Waits for a place to run; `on_queued` is called once if the query has to wait.
    pub async fn admit(
        self: &Arc<Self>,
        user: Option<&str>,
        on_queued: impl FnOnce(),
    ) -> Result<Permit, Status> {
        let queued = {
            let mut s = self.state.lock();
            if self.fits(&s, user) {
                return Ok(self.take(&mut s, user));
            }
            if s.queued >= self.limits.max_queued {
                return Err(Status::resource_exhausted(format!(
                    "too many queries: {} running and {} queued, the most server.max_queued_queries allows; try again later",
                    s.running, s.queued
                )));
            }
            s.queued += 1;
            Queued(Some(self))
        };
        on_queued();
        let deadline = tokio::time::Instant::now() + self.limits.queue_timeout;
        loop {
            // Registered before the check, so a permit freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state.lock();
                if self.fits(&s, user) {
                    queued.leave(&mut s);
                    return Ok(self.take(&mut s, user));
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Status::resource_exhausted(format!(
                    "the query waited {} s in the queue (server.queue_timeout_secs) without a free place to run; try again later",
                    self.limits.queue_timeout.as_secs_f64()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_running: usize, max_queued: usize, per_user: Option<usize>) -> Arc<Admission> {
        Admission::new(Limits {
            max_running: Some(max_running),
            max_running_per_user: per_user,
            max_queued,
            queue_timeout: Duration::from_millis(300),
        })
    }

    #[tokio::test]
    async fn a_query_over_the_limit_queues_then_runs() {
        let g = gate(1, 1, None);
        let first = g
            .admit(Some("a"), || panic!("the first query runs at once"))
            .await
            .expect("runs");
        let mut queued = false;
        let g2 = g.clone();
        let second = tokio::spawn(async move { g2.admit(Some("b"), || {}).await.map(|_p| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(g.counts(), (1, 1));
        // The queue holds one: a third is refused at once.
        let err = g.admit(Some("c"), || queued = true).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("server.max_queued_queries"),
            "{err:?}"
        );
        assert!(!queued);
        drop(first);
        second
            .await
            .expect("join")
            .expect("the queued query runs once the first ends");
        assert_eq!(g.counts(), (0, 0));
    }

    #[tokio::test]
    async fn waiting_too_long_is_refused_and_per_user_limits_apply() {
        let g = gate(10, 5, Some(1));
        let _mine = g.admit(Some("ann"), || {}).await.expect("runs");
        // Another user is not held up by ann's limit.
        let _other = g
            .admit(Some("bob"), || panic!("bob runs at once"))
            .await
            .expect("runs");
        let err = g.admit(Some("ann"), || {}).await.unwrap_err();
        assert!(
            err.message().contains("server.queue_timeout_secs"),
            "{err:?}"
        );
        assert_eq!(g.counts(), (2, 0));
    }
}
